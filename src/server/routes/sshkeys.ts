import type { FastifyInstance } from "fastify";
import { BadRequestError, UnauthorizedError } from "../../api/errors.js";
import { parsePublicKey, SSH_KEY_NAME } from "../../lib/sshkey.js";
import type { SshKeyStore } from "../../ports/sshkeys.js";
import type { TokenInfo } from "../../ports/store.js";
import { route, rule } from "../routetable.js";
import { BASE } from "./params.js";

/**
 * `loom ssh-key add|list|delete`: the caller's own SSH public keys (a user is a token's name).
 * Each route reads and changes the caller's keys only, so any user token may call them (rule
 * "self"); API keys and workloads' credentials are refused by the guard.
 */
export function sshKeyRoutes(app: FastifyInstance, deps: { sshKeys: SshKeyStore }): void {
  const user = (p: TokenInfo | undefined): string => {
    if (!p) throw new UnauthorizedError("SSH keys are a user's: send your token");
    return p.name;
  };
  route(app, {
    method: "GET",
    url: `${BASE}/sshkeys`,
    rule: rule.self("sshkeys", "read"),
    handler: async (req) => ({ items: await deps.sshKeys.list(user(req.principal)) }),
  });
  route<{ Body: { name?: unknown; key?: unknown } }>(app, {
    method: "POST",
    url: `${BASE}/sshkeys`,
    rule: rule.self("sshkeys", "write"),
    handler: async (req, reply) => {
      const { name, key } = req.body ?? {};
      if (typeof key !== "string")
        throw new BadRequestError('send {"key": "<an OpenSSH public key>"} (loom ssh-key add FILE.pub does)');
      let parsed: ReturnType<typeof parsePublicKey>;
      try {
        parsed = parsePublicKey(key);
      } catch (err) {
        throw new BadRequestError((err as Error).message);
      }
      if (name !== undefined && (typeof name !== "string" || !SSH_KEY_NAME.test(name)))
        throw new BadRequestError(
          "name must be 1-63 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
        );
      // Unnamed: the key's comment (you@host) where it makes a name, else from its fingerprint.
      const fromComment = parsed.comment && SSH_KEY_NAME.test(parsed.comment) ? parsed.comment : undefined;
      const keyName =
        (name as string | undefined) ??
        fromComment ??
        `key-${parsed.fingerprint.slice(7, 15).replace(/[^A-Za-z0-9]/g, "x")}`;
      const added = await deps.sshKeys.add(user(req.principal), keyName, parsed);
      reply.code(201);
      return added;
    },
  });
  route<{ Params: { name: string } }>(app, {
    method: "DELETE",
    url: `${BASE}/sshkeys/:name`,
    rule: rule.self("sshkeys", "write"),
    handler: async (req) => {
      await deps.sshKeys.delete(user(req.principal), req.params.name);
      return { deleted: req.params.name };
    },
  });
}

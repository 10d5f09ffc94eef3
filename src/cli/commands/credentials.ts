import type { Command } from "commander";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { age, table } from "../print.js";
import { BASE } from "../resources.js";

interface Listed {
  id: string;
  name: string;
  role: string;
  project?: string;
  services?: string[];
  createdAt: string;
  expiresAt?: string;
  lastUsedAt?: string;
}

/** Tokens or keys as a table: never their secret (the server does not keep it). */
function listing(items: Listed[], keys: boolean): string {
  const now = Date.now();
  const expires = (t: Listed) => {
    if (!t.expiresAt) return "never";
    const left = Date.parse(t.expiresAt) - now;
    // age() formats a span that ended now; the same span from now on reads the same.
    return left <= 0 ? "expired" : `in ${age(new Date(now - left).toISOString(), now)}`;
  };
  return table([
    keys
      ? ["ID", "NAME", "SERVICES", "AGE", "EXPIRES", "LAST USED"]
      : ["ID", "NAME", "ROLE", "PROJECT", "AGE", "EXPIRES", "LAST USED"],
    ...items.map((t) => [
      t.id,
      t.name,
      ...(keys ? [t.services?.join(",") ?? "*"] : [t.role, t.project ?? "*"]),
      age(t.createdAt, now),
      expires(t),
      t.lastUsedAt ? `${age(t.lastUsedAt, now)} ago` : "-",
    ]),
  ]);
}

/** `loom token create|list|revoke`: API tokens (an unscoped admin manages them). */
export function registerToken(program: Command, deps: CliDeps): void {
  const token = program
    .command("token")
    .description("API tokens (admin): loom token create NAME | list | revoke ID");
  token
    .command("create")
    .description("create a token; its secret is printed once")
    .argument("<name>", "who or what the token is for")
    .option("--role <role>", "admin, editor or viewer", "editor")
    .option("-p, --project <project>", "the one project the token reaches (default: every project)")
    .option("--ttl <duration>", 'refused after this long: seconds, or "30m", "12h", "7d" (default: never)')
    .action(async (name: string, opts: { role: string; project?: string; ttl?: string }) => {
      const { api } = deps.client();
      const created = await api.request<{ token: string }>("POST", `${BASE}/tokens`, {
        name,
        role: opts.role,
        ...(opts.project ? { project: opts.project } : {}),
        ...(opts.ttl ? { ttl: opts.ttl } : {}),
      });
      deps.stdout.write(`${created.token}\n`);
    });
  token
    .command("list")
    .description("list tokens (never their secrets)")
    .option("-p, --project <project>", "only the tokens scoped to this project")
    .action(async (opts: { project?: string }) => {
      const { api } = deps.client();
      const query = opts.project ? `?project=${encodeURIComponent(opts.project)}` : "";
      const res = await api.request<{ items: Listed[] }>("GET", `${BASE}/tokens${query}`);
      deps.stdout.write(listing(res.items, false));
    });
  token
    .command("revoke")
    .description("revoke a token by its id (loom token list): refused everywhere within a second")
    .argument("<id>", "the token's id")
    .action(async (id: string) => {
      const { api } = deps.client();
      await api.request("DELETE", `${BASE}/tokens/${encodeURIComponent(id)}`);
      deps.stdout.write(`token ${id} revoked\n`);
    });
}

/** `loom apikey create|list|revoke -p PROJECT`: keys for the inference gateway's endpoints. */
export function registerApikey(program: Command, deps: CliDeps): void {
  const apikey = program
    .command("apikey")
    .description(
      "a project's API keys for the inference gateway: loom apikey create NAME | list | revoke ID",
    );
  const keysOf = (project: string | undefined) => {
    const { api, defaultProject } = deps.client();
    const p = project ?? defaultProject;
    return { api, project: p, path: `${BASE}/projects/${encodeURIComponent(p)}/apikeys` };
  };
  apikey
    .command("create")
    .description("create a key; printed once")
    .argument("<name>", "who or what the key is for")
    .option("-p, --project <project>", "the project whose endpoints the key reaches")
    .option("--service <name...>", "only these InferenceServices (default: every one of the project)")
    .option("--ttl <duration>", 'refused after this long: seconds, or "30m", "12h", "7d" (default: never)')
    .option("--rpm <n>", "at most this many requests a minute, across every gateway (429 beyond)")
    .option("--tpm <n>", "at most this many tokens (prompt + completion) a minute, across every gateway")
    .action(async (name: string, opts: KeyCreateOptions) => {
      const { api, path } = keysOf(opts.project);
      const rateLimit = {
        ...(opts.rpm !== undefined ? { requestsPerMinute: wholeNumber("--rpm", opts.rpm) } : {}),
        ...(opts.tpm !== undefined ? { tokensPerMinute: wholeNumber("--tpm", opts.tpm) } : {}),
      };
      const created = await api.request<{ key: string }>("POST", path, {
        name,
        ...(opts.service ? { services: opts.service } : {}),
        ...(opts.ttl ? { ttl: opts.ttl } : {}),
        ...(Object.keys(rateLimit).length ? { rateLimit } : {}),
      });
      deps.stdout.write(`${created.key}\n`);
    });
  apikey
    .command("list")
    .description("list the project's keys (never their secrets)")
    .option("-p, --project <project>", "the project")
    .action(async (opts: { project?: string }) => {
      const { api, path } = keysOf(opts.project);
      const res = await api.request<{ items: Listed[] }>("GET", path);
      deps.stdout.write(listing(res.items, true));
    });
  apikey
    .command("revoke")
    .description("revoke a key by its id (loom apikey list): refused everywhere within a second")
    .argument("<id>", "the key's id")
    .option("-p, --project <project>", "the project")
    .action(async (id: string, opts: { project?: string }) => {
      const { api, path, project } = keysOf(opts.project);
      await api.request("DELETE", `${path}/${encodeURIComponent(id)}`);
      deps.stdout.write(`API key ${id} of project ${project} revoked\n`);
    });
}

interface KeyCreateOptions {
  project?: string;
  service?: string[];
  ttl?: string;
  rpm?: string;
  tpm?: string;
}

/** A flag's value as a whole number of at least 1 (the server says the same, later and less plainly). */
function wholeNumber(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new CliError(`${flag} must be a whole number of at least 1, not "${value}"`);
  return n;
}

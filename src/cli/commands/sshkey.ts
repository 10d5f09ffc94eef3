import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { age, table } from "../print.js";
import { BASE } from "../resources.js";

interface Listed {
  name: string;
  type: string;
  fingerprint: string;
  comment?: string;
  createdAt: string;
}

/** The public key `loom ssh-key add` takes when given none: ssh-keygen's default files, in its order. */
export function defaultPublicKey(home = homedir()): string | undefined {
  return ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"].map((f) => join(home, ".ssh", f)).find(existsSync);
}

/**
 * `loom ssh-key add [FILE] | list | delete NAME`: your SSH public keys, which `loom ssh` logs in
 * with (the workloads of projects you edit authorize them). Only ever the public half is sent.
 */
export function registerSshKey(program: Command, deps: CliDeps): void {
  const cmd = program
    .command("ssh-key")
    .description("your SSH public keys for loom ssh: loom ssh-key add [FILE.pub] | list | delete NAME");
  cmd
    .command("add")
    .description("register a public key (default ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub)")
    .argument("[file]", "the public key file (.pub); - reads it from stdin")
    .option("--name <name>", "what to call it (default: its comment, such as you@laptop)")
    .action(async (file: string | undefined, opts: { name?: string }) => {
      const path = file ?? defaultPublicKey();
      if (!path)
        throw new CliError(
          "no public key in ~/.ssh (id_ed25519.pub, id_ecdsa.pub or id_rsa.pub): make one with " +
            "ssh-keygen -t ed25519, then run loom ssh-key add again (or give the .pub file: loom ssh-key add FILE)",
        );
      if (path !== "-" && !path.endsWith(".pub") && existsSync(`${path}.pub`))
        throw new CliError(
          `${path} looks like a private key: give its public half, loom ssh-key add ${path}.pub`,
        );
      let key: string;
      try {
        key = readFileSync(path === "-" ? 0 : path, "utf8");
      } catch (err) {
        throw new CliError(`cannot read ${path}: ${(err as Error).message}`);
      }
      // Checked here too: a private key must never leave this machine, not even to be refused.
      if (key.includes("PRIVATE KEY"))
        throw new CliError(
          `${path} is a private key: give its public half (the .pub file); nothing was sent`,
        );
      const { api } = deps.client();
      const added = await api.request<Listed>("POST", `${BASE}/sshkeys`, {
        key,
        ...(opts.name ? { name: opts.name } : {}),
      });
      deps.stdout.write(`ssh key "${added.name}" added (${added.type} ${added.fingerprint})\n`);
    });
  cmd
    .command("list")
    .description("list your registered keys")
    .action(async () => {
      const { api } = deps.client();
      const res = await api.request<{ items: Listed[] }>("GET", `${BASE}/sshkeys`);
      const now = Date.now();
      deps.stdout.write(
        table([
          ["NAME", "TYPE", "FINGERPRINT", "AGE"],
          ...res.items.map((k) => [k.name, k.type, k.fingerprint, age(k.createdAt, now)]),
        ]),
      );
    });
  cmd
    .command("delete")
    .description("delete one of your keys by name (loom ssh-key list)")
    .argument("<name>", "the key's name")
    .action(async (name: string) => {
      const { api } = deps.client();
      await api.request("DELETE", `${BASE}/sshkeys/${encodeURIComponent(name)}`);
      deps.stdout.write(`ssh key "${name}" deleted\n`);
    });
}

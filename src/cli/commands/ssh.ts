import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import type { Command } from "commander";
import { configPath } from "../config.js";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { kindAndName } from "../resources.js";
import { openTunnel, tunnelPath } from "./portforward.js";

/** Where runtimes/loom-sshd/loom-sshd.sh listens inside a workload unless told otherwise. */
export const DEFAULT_SSH_PORT = 2222;

interface SshOpts {
  project?: string;
  worker?: string;
  port: string;
  proxy?: boolean;
  user: string;
  identity?: string;
}

/**
 * `loom ssh KIND/NAME [-- CMD]`: the real `ssh` client to the sshd a workload runs
 * (runtimes/loom-sshd), through Loom's port-forward tunnel as its ProxyCommand;
 * `loom ssh --proxy KIND/NAME` is that ProxyCommand (stdin and stdout are the tunnel), for
 * ~/.ssh/config and desktop VS Code Remote-SSH:
 *   Host ws-NAME
 *     ProxyCommand loom ssh --proxy ws/NAME
 */
export function registerSsh(program: Command, deps: CliDeps): void {
  program
    .command("ssh")
    .description(
      "ssh into a workload running loom-sshd, through Loom's API (or be ssh's ProxyCommand: --proxy)",
    )
    .argument("<target>", "KIND/NAME: tj/NAME, ws/NAME")
    .argument("[command...]", "a command to run instead of a shell (after --)")
    .option("-p, --project <project>", "project to look in")
    .option("--worker <n>", "which worker (or replica) of the workload (default 0)")
    .option("--port <port>", "the port sshd listens on inside the workload", String(DEFAULT_SSH_PORT))
    .option("--proxy", "be a ProxyCommand: carry stdin and stdout over the tunnel")
    .option(
      "-l, --user <user>",
      "the user to log in as (loom-sshd's is 'loom' where the uid has no name)",
      "loom",
    )
    .option("-i, --identity <file>", "private key for ssh (default: ssh's own)")
    .action(async (target: string, command: string[], opts: SshOpts) => {
      const { def, name } = kindAndName(target, undefined, "ssh");
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new CliError("--port must be 1 to 65535");
      if (!opts.proxy) return runSsh(target, command, opts);
      const { api, defaultProject } = deps.client();
      const tunnel = await openTunnel(
        api,
        tunnelPath(def, opts.project ?? defaultProject, name, port, opts.worker),
      );
      process.stdin.pipe(tunnel);
      tunnel.pipe(process.stdout);
      await new Promise<void>((resolve) => {
        tunnel.on("close", resolve);
        tunnel.on("error", resolve);
      });
      process.stdin.destroy();
    });
}

/** Runs the real ssh with this CLI as its ProxyCommand; exits with ssh's status. */
async function runSsh(target: string, command: string[], opts: SshOpts): Promise<void> {
  const self = [process.execPath, process.argv[1]!, "ssh", "--proxy", target, "--port", opts.port];
  if (opts.project) self.push("-p", opts.project);
  if (opts.worker) self.push("--worker", opts.worker);
  const args = [
    "-o",
    `ProxyCommand=${self.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ")}`,
    // The host key is the workload's own, made when its sshd first starts: learnt on first use,
    // kept in Loom's own known_hosts beside the CLI's config rather than in ~/.ssh's.
    "-o",
    "StrictHostKeyChecking=accept-new",
    "-o",
    `UserKnownHostsFile=${join(dirname(configPath()), "known_hosts")}`,
    "-o",
    `HostKeyAlias=loom-${target.replace("/", "-")}`,
    ...(opts.identity ? ["-i", opts.identity] : []),
    `${opts.user}@${target.replace("/", "-")}`,
    ...command,
  ];
  const child = spawn("ssh", args, { stdio: "inherit" });
  const code = await new Promise<number>((resolve, reject) => {
    child.on("error", (err) =>
      reject(new CliError(`cannot run ssh (${err.message}): install OpenSSH's client`)),
    );
    child.on("exit", (c) => resolve(c ?? 255));
  });
  process.exitCode = code;
}

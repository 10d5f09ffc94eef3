import { createServer, type Socket } from "node:net";
import type { Command } from "commander";
import type { KindDef } from "../../api/kinds.js";
import { PORTFORWARD_PROTOCOL } from "../../server/routes/portforward.js";
import type { Api, CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { itemPath, kindAndName } from "../resources.js";

/** `[LOCAL:]REMOTE`: LOCAL empty means any free port; absent, the same as REMOTE. */
export function parsePorts(spec: string): { local: number; remote: number } {
  const m = /^(?:(\d*):)?(\d+)$/.exec(spec);
  const port = (s: string) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new CliError(`${s} is not a TCP port number`);
    return n;
  };
  if (!m) throw new CliError(`ports must be [LOCAL:]REMOTE, e.g. 8888 or 9000:8888 or :8888 (got ${spec})`);
  const remote = port(m[2]!);
  if (remote === 0) throw new CliError("the remote port must be 1 to 65535");
  return { local: m[1] === undefined ? remote : m[1] === "" ? 0 : port(m[1]), remote };
}

/** The tunnel's path on Loom's API. */
export function tunnelPath(
  def: KindDef,
  project: string,
  name: string,
  port: number,
  worker?: string,
): string {
  const q = new URLSearchParams({ port: String(port) });
  if (worker !== undefined) q.set("worker", worker);
  return `${itemPath(def, project, name)}/portforward?${q}`;
}

/** Opens a tunnel through Loom's API (an HTTP upgrade); the caller's API must support it. */
export function openTunnel(api: Api, path: string): Promise<Socket> {
  if (!api.tunnel) throw new CliError("port-forward needs a connection to Loom's API (loom up, or LOOM_URL)");
  return api.tunnel(path, PORTFORWARD_PROTOCOL);
}

/** Joins a local connection and a tunnel, end for end; either's error ends both. */
export function join(local: Socket, tunnel: Socket): void {
  const close = () => {
    local.destroy();
    tunnel.destroy();
  };
  local.on("error", close);
  tunnel.on("error", close);
  local.on("close", () => tunnel.destroy());
  tunnel.on("close", () => local.destroy());
  local.pipe(tunnel);
  tunnel.pipe(local);
}

/** `loom port-forward KIND/NAME [LOCAL:]REMOTE`: a local port tunnelled to a workload's port. */
export function registerPortForward(program: Command, deps: CliDeps): void {
  program
    .command("port-forward")
    .description("forward a local port to a port a workload listens on, through Loom's API (any TCP)")
    .argument("<target>", "KIND/NAME: tj/NAME, isvc/NAME, ws/NAME")
    .argument("<ports>", "[LOCAL:]REMOTE, e.g. 8888, 9000:8888, or :8888 for any free local port")
    .option("-p, --project <project>", "project to look in")
    .option("--worker <n>", "which worker (or replica) of the workload (default 0)")
    .option("--address <addr>", "local address to listen on", "127.0.0.1")
    .action(
      async (target: string, ports: string, opts: { project?: string; worker?: string; address: string }) => {
        const { def, name } = kindAndName(target, undefined, "port-forward");
        const { local, remote } = parsePorts(ports);
        const { api, defaultProject } = deps.client();
        const project = opts.project ?? defaultProject;
        // Said now, not at the first connection: the workload is there (or why not).
        await api.request("GET", itemPath(def, project, name));
        const path = tunnelPath(def, project, name, remote, opts.worker);
        const server = createServer({ allowHalfOpen: true }, (conn) => {
          conn.pause();
          openTunnel(api, path).then(
            (tunnel) => {
              join(conn, tunnel);
              conn.resume();
            },
            (err: Error) => {
              deps.stderr.write(`error forwarding port ${remote}: ${err.message}\n`);
              conn.destroy();
            },
          );
        });
        await new Promise<void>((resolve, reject) => {
          server.once("error", (err: NodeJS.ErrnoException) =>
            reject(new CliError(`cannot listen on ${opts.address}:${local} (${err.code ?? err.message})`)),
          );
          server.listen(local, opts.address, () => resolve());
        });
        const bound = (server.address() as { port: number }).port;
        deps.stdout.write(`Forwarding from ${opts.address}:${bound} -> ${remote}\n`);
        // Runs until interrupted, as kubectl port-forward does.
        await new Promise<void>((resolve) => {
          process.once("SIGINT", resolve);
          process.once("SIGTERM", resolve);
        });
        server.close();
      },
    );
}

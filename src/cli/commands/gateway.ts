import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import type { Command } from "commander";
import { createLogger } from "../../lib/log.js";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";

interface GatewayOpts {
  api: string;
  tokenFile?: string;
  host: string;
  port: string;
  workers: string;
}

/** `loom gateway`: one more inference gateway replica (or several, node:cluster) following Loom's API. */
export function registerGateway(program: Command, deps: CliDeps): void {
  program
    .command("gateway")
    .description(
      "run one more inference gateway replica against Loom's API (on Kubernetes: the loom-gateway Deployment)",
    )
    .requiredOption("--api <url>", "Loom's API: `loom up`'s URL, or the operator's Service")
    .option("--token-file <file>", "a file holding an admin token (default: LOOM_TOKEN)")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (0 picks one)", "7480")
    .option(
      "--workers <n>",
      "processes sharing the port (node:cluster), each a gateway replica of its own; 0: one per CPU",
      "1",
    )
    .action(async (opts: GatewayOpts) => {
      const token = opts.tokenFile ? readFileSync(opts.tokenFile, "utf8").trim() : process.env.LOOM_TOKEN;
      if (!token)
        throw new CliError(
          "the gateway needs an admin token for Loom's API: --token-file FILE or LOOM_TOKEN (loom token create gateway --role admin)",
        );
      const workers = opts.workers === "0" ? availableParallelism() : Number(opts.workers);
      if (!Number.isInteger(workers) || workers < 1)
        throw new CliError(
          `--workers must be a whole number of processes (0: one per CPU), not "${opts.workers}"`,
        );
      if (workers > 1 && opts.port === "0")
        throw new CliError("--workers needs a fixed --port: the workers share it");
      if (workers > 1 && cluster.isPrimary) return superviseWorkers(deps, opts, workers);
      const { startGatewayNode } = await import("../../main/gatewaynode.js");
      const node = await startGatewayNode({
        apiUrl: opts.api,
        token,
        host: opts.host,
        port: Number(opts.port),
        log: createLogger(),
      });
      if (cluster.isPrimary)
        deps.stdout.write(`Loom gateway serving at ${node.url}, following ${opts.api}\n`);
      await new Promise<void>((done) => {
        const stop = () => {
          setTimeout(done, 10_000).unref(); // in-flight requests get 10 s, then the process ends
          node.close().then(done, done);
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      // Pooled sockets (and a worker's channel to its primary) would keep the process alive.
      process.exit(0);
    });
}

/** The primary of `--workers N`: forks the replicas, stops them on a signal, returns when all exited. */
async function superviseWorkers(deps: CliDeps, opts: GatewayOpts, workers: number): Promise<void> {
  // The primary only hands connections out; each worker follows the API and reports its
  // own load, so the API's autoscaler sees all of them.
  for (let i = 0; i < workers; i++) cluster.fork();
  deps.stdout.write(
    `Loom gateway serving at http://${opts.host}:${opts.port}, following ${opts.api} with ${workers} workers\n`,
  );
  await new Promise<void>((done) => {
    let left = workers;
    cluster.on("exit", (w, code) => {
      if (code !== 0) deps.stderr.write(`gateway worker ${w.process.pid} exited with ${code}\n`);
      if (--left === 0) done();
    });
    const stop = () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.kill("SIGTERM");
      setTimeout(() => {
        for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGKILL");
      }, 15_000).unref();
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}

import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { type Command, Option } from "commander";
import { createLogger } from "../../lib/log.js";
import { VERSION } from "../../lib/version.js";
import { configPath, saveContext } from "../config.js";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { auditRetentionMs, retentionMs } from "./audit.js";

interface UpOpts {
  dataDir: string;
  port: string;
  workspacePort?: string;
  host: string;
  gpus?: string;
  gpuSharing?: string;
  trackingDb?: string;
  auditRetention?: string;
  traceRetention?: string;
  insecureSharedUser?: boolean;
  sandbox: boolean;
}

/** `loom up`: the embedded platform in the foreground; writes the "embedded" CLI context. */
export function registerUp(program: Command, deps: CliDeps): void {
  program
    .command("up")
    .description("run the embedded platform in the foreground (API, controllers, local runtime)")
    .option(
      "--data-dir <dir>",
      "where state, logs and the database live",
      process.env.LOOM_DATA_DIR ?? join(homedir(), ".loom", "data"),
    )
    .option("--port <port>", "port to listen on (0 picks a free one)", "7470")
    .option("--workspace-port <port>", "port of the workspaces' own origin (default: --port + 1)")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .addOption(new Option("--gpus <n>", "declare N virtual GPUs instead of detecting them with nvidia-smi"))
    .addOption(
      new Option(
        "--gpu-sharing <mode>",
        "where CUDA MPS is unavailable, 'unenforced' lets fractional GPU requests share a device anyway (default: they get whole GPUs)",
      ).choices(["unenforced"]),
    )
    .option(
      "--tracking-db <url>",
      "keep MLflow tracking in PostgreSQL (postgres://user@host:5432/db) instead of the data dir's SQLite",
    )
    .option("--audit-retention <duration>", "keep audit log entries this long (e.g. 30d, 12h)", "30d")
    .option(
      "--trace-retention <duration>",
      "keep MLflow traces this long (e.g. 30d, 12h), then delete them",
      "30d",
    )
    .option(
      "--insecure-shared-user",
      "where workloads cannot be sandboxed, run several projects' workloads anyway, all as this server's user (no isolation between them)",
    )
    .addOption(
      new Option(
        "--no-sandbox",
        "run workloads unsandboxed (measurements only; implies one project at a time)",
      ).hideHelp(),
    )
    .action(async (opts: UpOpts) => {
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new CliError(`--port must be 0-65535, got "${opts.port}"`);
      const workspacePort = opts.workspacePort === undefined ? undefined : Number(opts.workspacePort);
      if (
        workspacePort !== undefined &&
        (!Number.isInteger(workspacePort) || workspacePort < 0 || workspacePort > 65535)
      )
        throw new CliError(`--workspace-port must be 0-65535, got "${opts.workspacePort}"`);
      const gpus = opts.gpus === undefined ? undefined : Number(opts.gpus);
      if (gpus !== undefined && (!Number.isInteger(gpus) || gpus < 0))
        throw new CliError(`--gpus must be a whole number, got "${opts.gpus}"`);
      if (opts.trackingDb !== undefined && !/^postgres(ql)?:\/\//i.test(opts.trackingDb))
        throw new CliError("--tracking-db must be a postgres:// or postgresql:// URL");
      const { startEmbedded } = await import("../../main/embedded.js");
      const log = createLogger();
      let server: Awaited<ReturnType<typeof startEmbedded>>;
      try {
        server = await startEmbedded({
          dataDir: resolve(opts.dataDir),
          port,
          ...(workspacePort !== undefined ? { workspacePort } : {}),
          host: opts.host,
          gpus,
          ...(opts.gpuSharing === "unenforced" ? { gpuSharing: "unenforced" as const } : {}),
          log,
          ...(opts.trackingDb ? { trackingDb: opts.trackingDb } : {}),
          auditRetentionMs: auditRetentionMs(opts.auditRetention ?? "30d"),
          traceRetentionMs: retentionMs("--trace-retention", opts.traceRetention ?? "30d"),
          insecureSharedUser: !!opts.insecureSharedUser,
          sandbox: opts.sandbox,
        });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === "EADDRINUSE")
          throw new CliError(
            `port ${(e as { port?: number }).port ?? port} is in use: stop what uses it or pass --port (and --workspace-port for the workspaces' origin)`,
          );
        if (e.message?.startsWith("data dir") || e.message?.startsWith("tracking database"))
          throw new CliError(e.message);
        throw err;
      }
      saveContext({ name: "embedded", url: server.url, token: server.adminToken });
      deps.stdout.write(
        `Loom ${VERSION} is up at ${server.url}\n` +
          `data dir:    ${resolve(opts.dataDir)}\n` +
          `admin token: ${server.adminToken}\n` +
          `workspaces:  ${server.workspaces.urlPattern} (loom open ws/NAME)\n` +
          `apps:        ${server.workspaces.urlPattern.replace(".ws.localhost", ".app.localhost")} (loom open app/NAME)\n` +
          `sandbox:     ${server.sandbox}\n` +
          `gpus:        ${server.gpus}\n` +
          `network:     ${server.network.isolated ? "one namespace per workload (reaches only Loom's API and gateway)" : `shared with this machine: ${server.network.reason}`}\n` +
          `CLI context "embedded" written to ${configPath()}; try: loom apply -f examples/hello/\n`,
      );
      await new Promise<void>((done) => {
        const stop = (signal: string) => {
          log.info(
            { signal },
            "stopping; running workloads keep running and are re-adopted by the next loom up",
          );
          server.close().then(done, (err) => {
            log.error({ err }, "error while stopping");
            done();
          });
        };
        process.once("SIGINT", () => stop("SIGINT"));
        process.once("SIGTERM", () => stop("SIGTERM"));
      });
      deps.stdout.write("Loom stopped\n");
    });
}

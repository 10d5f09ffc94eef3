import type { Command } from "commander";
import { createLogger } from "../../lib/log.js";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";

interface OperatorOpts {
  metricsPort: string;
  defaultImage: string;
  dataDir?: string;
  host: string;
  port: string;
  workspacePort?: string;
  trackingUrl?: string;
  trackingDb?: string;
  nodeAutoscaling?: boolean;
  leaderElect?: boolean;
  leaderElectionNamespace?: string;
  leaderElectionId: string;
  systemNamespace?: string;
}

/** `loom operator`: Loom's controllers against a cluster (--kubeconfig, or in-cluster). */
export function registerOperator(program: Command, deps: CliDeps): void {
  program
    .command("operator")
    .description("run Loom's controllers against a Kubernetes cluster (in or out of it)")
    .option("--metrics-port <port>", "serve /metrics and /healthz on 127.0.0.1:PORT", "9470")
    .option("--default-image <image>", "image for workloads that name none", "python:3.11-slim")
    .option(
      "--data-dir <dir>",
      "also serve Loom's API with MLflow tracking and the model registry, stored in this directory",
    )
    .option("--host <host>", "address the API listens on (with --data-dir)", "127.0.0.1")
    .option("--port <port>", "port of the API (with --data-dir; 0 picks one)", "7470")
    .option(
      "--workspace-port <port>",
      "with --data-dir: port of the user-content origin that serves workspaces and apps (default: the API's port + 1)",
    )
    .option(
      "--tracking-url <url>",
      "the MLFLOW_TRACKING_URI pods get (in a cluster: the Service in front of the operator); default: where the API listens",
    )
    .option(
      "--tracking-db <url>",
      "with --data-dir: keep MLflow tracking in PostgreSQL (postgres://user@host:5432/db) instead of the data dir's SQLite",
    )
    .option(
      "--node-autoscaling",
      "a node autoscaler (the cluster-autoscaler) runs: gangs that wait for room are shown to it as pending pods, so it adds nodes for them",
    )
    .option(
      "--leader-elect",
      "run only while holding a coordination.k8s.io Lease, so that several replicas are safe (one leads, the others wait)",
    )
    .option(
      "--leader-election-namespace <ns>",
      "namespace of the Lease (default: $POD_NAMESPACE, else loom-system)",
    )
    .option("--leader-election-id <name>", "name of the Lease", "loom-operator")
    .option(
      "--system-namespace <ns>",
      "Loom's own namespace, where fleet members' kubeconfig Secrets are kept (default: $POD_NAMESPACE, else loom-system)",
    )
    .action(async (opts: OperatorOpts) => {
      if (opts.trackingDb !== undefined) {
        if (!opts.dataDir)
          throw new CliError("--tracking-db needs --data-dir (the API that serves tracking)");
        if (!/^postgres(ql)?:\/\//i.test(opts.trackingDb))
          throw new CliError("--tracking-db must be a postgres:// or postgresql:// URL");
      }
      const g = deps.globals();
      const { startOperator } = await import("../../main/operator.js");
      const log = createLogger();
      const operator = await startOperator({
        kubeconfig: g.kubeconfig ?? process.env.LOOM_KUBECONFIG ?? process.env.KUBECONFIG,
        context: g.kubeContext,
        log,
        metricsPort: Number(opts.metricsPort),
        systemNamespace: opts.systemNamespace ?? process.env.POD_NAMESPACE ?? "loom-system",
        defaultImage: opts.defaultImage,
        ...(opts.nodeAutoscaling ? { nodeAutoscaling: true } : {}),
        ...(opts.leaderElect
          ? {
              leaderElection: {
                namespace: opts.leaderElectionNamespace ?? process.env.POD_NAMESPACE ?? "loom-system",
                name: opts.leaderElectionId,
              },
              // As controller-runtime's manager: a leader that lost its lease exits at once, and
              // Kubernetes restarts it as a standby; it must not act beside the new leader.
              onLostLeadership: () => {
                deps.stderr.write("loom operator: lost the leader lease; exiting\n");
                process.exit(1);
              },
            }
          : {}),
        ...(opts.dataDir
          ? {
              dataDir: opts.dataDir,
              host: opts.host,
              port: Number(opts.port),
              ...(opts.workspacePort !== undefined ? { workspacePort: Number(opts.workspacePort) } : {}),
              trackingUrl: opts.trackingUrl,
              ...(opts.trackingDb ? { trackingDb: opts.trackingDb } : {}),
            }
          : {}),
      });
      const api = operator.url
        ? `; API and MLflow tracking at ${operator.url} (admin token in ${operator.adminTokenFile}); workspaces and apps at http://NAME--PROJECT.ws.localhost:${operator.workspacePort}/ and http://NAME--PROJECT.app.localhost:${operator.workspacePort}/`
        : "";
      deps.stdout.write(
        `Loom operator running${operator.metricsUrl ? `; metrics at ${operator.metricsUrl}/metrics` : ""}${api}\n`,
      );
      await new Promise<void>((done) => {
        const stop = () => operator.close().then(done, done);
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      deps.stdout.write("Loom operator stopped\n");
    });
}

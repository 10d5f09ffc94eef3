import { mkdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import { NotFoundError } from "../api/errors.js";
import { CLUSTER } from "../api/kinds.js";
import { passThroughModels } from "../controllers/inferenceservice/revisions.js";
import { withKeepAlive } from "../lib/httpserver.js";
import { VERSION } from "../lib/version.js";
import { SqliteAuditLog } from "../platforms/embedded/audit.js";
import { StagedCheckpointVault } from "../platforms/embedded/checkpointvault.js";
import { openSqlite } from "../platforms/embedded/db.js";
import { SqliteTokenStore } from "../platforms/embedded/tokens.js";
import { KubeClient } from "../platforms/kubernetes/client.js";
import { kubeMemberConnector } from "../platforms/kubernetes/cluster.js";
import { KubeEventRecorder } from "../platforms/kubernetes/events.js";
import { KubeFleetLeases } from "../platforms/kubernetes/fleetleases.js";
import { KubeHomeClones } from "../platforms/kubernetes/homeclone.js";
import { LeaseElector } from "../platforms/kubernetes/lease.js";
import { KubernetesRuntime } from "../platforms/kubernetes/runtime.js";
import { DEFAULT_SYSTEM_NAMESPACE, KubeSecretStore } from "../platforms/kubernetes/secrets.js";
import { KubeResourceStore } from "../platforms/kubernetes/store.js";
import { ServiceWorkspaceDirectory } from "../platforms/kubernetes/workspaces.js";
import { lastEventGauge } from "../reconcile/metrics.js";
import { ensureDefaultProject } from "../server/resources.js";
import { ideActivity } from "../server/workspaces/activity.js";
import { InMemoryWorkspaceDirectory } from "../server/workspaces/directory.js";
import { WS_DOMAIN } from "../server/workspaces/host.js";
import { workspaceOriginServer } from "../server/workspaces/origin.js";
import { type ApiOptions, assembleControlPlane, openTracking } from "./assembly.js";
import { processMetricsRegistry } from "./processmetrics.js";

export interface OperatorOptions {
  kubeconfig?: string;
  context?: string;
  log: Logger;
  /** Prometheus metrics and /healthz on 127.0.0.1:port (0 picks one, undefined serves none). */
  metricsPort?: number;
  resyncMs?: number;
  defaultImage?: string;
  /**
   * Serve Loom's API with MLflow tracking and the model registry, on a SQLite file and artifact
   * store in this directory (in a cluster: a PersistentVolume). Unset: controllers only.
   */
  dataDir?: string;
  host?: string;
  /** The API's port (0 picks one). */
  port?: number;
  /**
   * With dataDir: the user-content origin's port (workspaces at NAME--PROJECT.ws.localhost:PORT,
   * apps at NAME--PROJECT.app.localhost:PORT); default the API's port + 1 (a free one when port is 0).
   */
  workspacePort?: number;
  /** The tracking URL pods are given (in a cluster: the Service in front of the operator). Default: where it listens. */
  trackingUrl?: string;
  /**
   * With dataDir: keep MLflow tracking in this PostgreSQL database (postgres://…) instead of the
   * data dir's SQLite file; tokens stay there.
   */
  trackingDb?: string;
  /** A node autoscaler runs: waiting gangs are shown to it as pending pods (demand.ts). */
  nodeAutoscaling?: boolean;
  /**
   * Run only while holding this Lease (two replicas: one leads, the other waits). Everything —
   * controllers and the API — starts after the lease is won, so the standby neither reconciles
   * nor opens the data dir's SQLite files, and a Service sees only the leader ready.
   */
  leaderElection?: { namespace: string; name: string };
  /** Called once if leadership is lost while running; the process must exit (as controller-runtime's does). */
  onLostLeadership?: () => void;
  /** Loom's own namespace: fleet members' kubeconfig Secrets are kept there (default loom-system). */
  systemNamespace?: string;
}

export interface Operator {
  metricsUrl?: string;
  /** Where the API (and MLflow tracking) listens, when dataDir is set. */
  url?: string;
  adminTokenFile?: string;
  /** The user-content origin's port (workspaces and apps), when dataDir is set. */
  workspacePort?: number;
  close(): Promise<void>;
}

/**
 * The composition root of `loom operator`: the same controllers and scheduler as embedded, over
 * the Kubernetes store and runtime. Runs in or out of the cluster; state lives in the API server,
 * so stopping and starting it loses nothing.
 */
export async function startOperator(opts: OperatorOptions): Promise<Operator> {
  const log = opts.log;
  const client = KubeClient.fromKubeconfig(opts.kubeconfig, opts.context);
  const elector = opts.leaderElection
    ? new LeaseElector(client, { ...opts.leaderElection, log: log.child({ component: "leader-election" }) })
    : undefined;
  await elector?.acquire();
  // Renewing starts now, beside the start-up below (as client-go's does): a slow start must not
  // let the lease lapse while this process begins to act.
  elector?.keepLeading(() => opts.onLostLeadership?.());
  const store = new KubeResourceStore(client, log.child({ component: "store/kube" }));
  const metrics = processMetricsRegistry();
  const runtime = new KubernetesRuntime({
    client,
    log: log.child({ component: "runtime/kubernetes" }),
    defaultImage: opts.defaultImage,
    metrics: { lastEventTimestamp: lastEventGauge(metrics) },
    ...(opts.nodeAutoscaling ? { nodeAutoscaling: true } : {}),
  });
  const events = new KubeEventRecorder(client);
  // Fleet members (issue 23): Cluster objects here, their kubeconfigs Secrets in Loom's namespace.
  const secrets = new KubeSecretStore(client, opts.systemNamespace ?? DEFAULT_SYSTEM_NAMESPACE);
  const fleet = (await hasClusterKind(store, log))
    ? {
        connector: kubeMemberConnector(log),
        secrets,
        version: VERSION,
        ...(opts.dataDir ? { vault: fleetVault(opts.dataDir) } : {}),
      }
    : undefined;
  if (fleet && !opts.dataDir)
    log.info(
      "no --data-dir: the fleet's checkpoints are not synced to this control plane, so a job that fails over starts from its own checkpoint storage where it lands (give the operator --data-dir, a PersistentVolume, to keep them)",
    );
  await ensureDefaultProject(store);
  await runtime.watchPods();
  const tracking = opts.dataDir ? await openTrackingFiles(opts, opts.dataDir, log) : undefined;
  // With the API, the user-content origin too: workspaces reached at their Service, apps through
  // their gateway (scaled to zero when idle), both behind the same log-in as embedded.
  let workspacePort = 0;
  const directory = tracking
    ? new ServiceWorkspaceDirectory(new InMemoryWorkspaceDirectory(), (p, pod) => runtime.serviceOf(p, pod))
    : undefined;
  const plane = await assembleControlPlane({
    store,
    events,
    runtime,
    log,
    metrics,
    now: () => new Date(),
    resyncMs: opts.resyncMs,
    ...(fleet ? { fleet } : {}),
    // This cluster as another control plane's member: the copies it placed stop when its Lease lapses.
    fleetLeases: new KubeFleetLeases(client, opts.systemNamespace ?? DEFAULT_SYSTEM_NAMESPACE),
    ...(tracking
      ? {
          api: {
            ...tracking.api,
            secrets,
            workspaceOriginPort: () => workspacePort,
            // loom run --from ws/NAME: the job's code is a clone of the home's claim.
            workspaceSnapshots: new KubeHomeClones(client),
          },
        }
      : {}),
    workspaces: {
      // ide: vscode runs the image's own code-server (as Kubeflow's codeserver images have it).
      codeServer: ["code-server"],
      ...(directory
        ? {
            directory,
            workspaceOrigin: () => (workspacePort ? `http://${WS_DOMAIN}:${workspacePort}` : undefined),
            ideActivity,
          }
        : {}),
    },
  });
  let url: string | undefined;
  let origin: ReturnType<typeof workspaceOriginServer> | undefined;
  if (tracking && directory) {
    url = await plane.listen();
    log.info(
      { url, trackingUrl: opts.trackingUrl ?? url, adminTokenFile: plane.admin!.file },
      "serving the API and MLflow tracking",
    );
    origin = workspaceOriginServer({
      access: plane.workspaceAccess!,
      directory,
      // /proxy/P/: the workspace's other ports, through pods/portforward to its pod.
      connectPort: (ref, worker, port) => runtime.connectPort(ref, worker, port),
      log: log.child({ component: "workspace-origin" }),
      ...(plane.appOrigin ? { apps: plane.appOrigin } : {}),
    });
    const apiPort = Number(new URL(url).port);
    try {
      workspacePort = await listenOn(
        origin,
        opts.host ?? "127.0.0.1",
        opts.workspacePort ?? (opts.port === 0 ? 0 : apiPort + 1),
      );
    } catch (err) {
      await plane.close();
      await tracking.close();
      await runtime.close();
      throw err;
    }
    log.info({ port: workspacePort }, "serving workspaces and apps on the user-content origin");
  }
  await plane.start();
  let server: http.Server | undefined;
  let metricsUrl: string | undefined;
  if (opts.metricsPort !== undefined) {
    server = withKeepAlive(
      http.createServer(async (req, res) => {
        if (req.url === "/healthz") return res.end("ok");
        if (req.url === "/metrics") {
          res.setHeader("content-type", metrics.contentType);
          return res.end(await metrics.metrics());
        }
        res.statusCode = 404;
        res.end();
      }),
    );
    const s = server;
    await new Promise<void>((ok) => s.listen(opts.metricsPort, "127.0.0.1", ok));
    const addr = s.address();
    metricsUrl = typeof addr === "object" && addr ? `http://127.0.0.1:${addr.port}` : undefined;
  }
  log.info({ metricsUrl, leader: elector?.identity }, "operator started");
  return {
    metricsUrl,
    ...(tracking ? { url, adminTokenFile: plane.admin!.file, workspacePort } : {}),
    async close() {
      if (origin) {
        const o = origin;
        o.closeAllConnections();
        await new Promise((done) => o.close(done));
      }
      await plane.close();
      await tracking?.close();
      await runtime.close();
      await new Promise<void>((ok) => (server ? server.close(() => ok()) : ok()));
      // Released only once nothing of ours acts any more: the standby may start at once.
      await elector?.stop(true);
    },
  };
}

/**
 * The fleet's checkpoint vault (issue 23): the last checkpoint synced from each job's member, in
 * the data dir (`fleet-checkpoints/<uid>/`), which seeds the job where it goes next, this
 * cluster included.
 */
function fleetVault(dataDir: string): StagedCheckpointVault {
  const root = join(dataDir, "fleet-checkpoints");
  mkdirSync(root, { recursive: true, mode: 0o700 });
  return new StagedCheckpointVault(root);
}

/** Listens and returns the port (the one picked, for 0). */
function listenOn(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, host, () => {
      server.off("error", fail);
      ok((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Tracking on Kubernetes: the same API server as embedded (MLflow routes, registry, Model kind)
 * over the cluster's store, with tracking tables on a SQLite file in the operator's data dir (or
 * in PostgreSQL, with trackingDb; tokens stay in that file).
 * Pods are told the tracking URL, a project-scoped token and their run, as embedded workers are.
 */
async function openTrackingFiles(
  opts: OperatorOptions,
  dataDir: string,
  log: Logger,
): Promise<{ api: ApiOptions; close(): Promise<void> }> {
  mkdirSync(dataDir, { recursive: true });
  const database = await openSqlite(join(dataDir, "tracking.db"));
  const trackingDb = await openTracking(database, opts.trackingDb, log);
  return {
    api: {
      tokens: new SqliteTokenStore(database.db),
      audit: new SqliteAuditLog(database.db, {
        onError: (err) => log.warn({ err }, "audit log write failed"),
      }),
      trackingDb,
      dataDir,
      host: opts.host,
      port: opts.port,
      trackingUrl: opts.trackingUrl,
      // On a cluster the serving image fetches the model itself: the reference passes through.
      models: () => passThroughModels,
      // The built-in runtime's path inside Loom's Python image.
      builtinCommand: ["python3", "runtimes/loom-tinygpt/server.py"],
      // The operator made it before the pods were watched.
      ensureDefaultProject: false,
    },
    async close() {
      await trackingDb.close();
      await database.close();
    },
  };
}

/**
 * Whether the cluster serves the Cluster kind. An install upgraded without its CRDs (Helm never
 * upgrades a chart's crds/) has none: the operator then runs without a fleet rather than wait
 * forever for that informer to sync, and says how to turn it on.
 */
async function hasClusterKind(store: KubeResourceStore, log: Logger): Promise<boolean> {
  try {
    await store.list(CLUSTER);
    return true;
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
    log.warn(
      "the clusters.loom.dev CRD is not installed: no fleet members (issue 23) until it is (kubectl apply --server-side -f deploy/helm/loom/crds/loom.dev.yaml) and the operator restarts",
    );
    return false;
  }
}

import { mkdirSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import { NotFoundError } from "../api/errors.js";
import { validateManifest } from "../api/kinds.js";
import { DEFAULT_PROJECT } from "../api/project.js";
import { passThroughModels } from "../controllers/inferenceservice/revisions.js";
import { ControllerManager } from "../controllers/manager.js";
import { Gateway } from "../gateway/gateway.js";
import { VERSION } from "../lib/version.js";
import { openSqlite } from "../platforms/embedded/db.js";
import { SqliteTokenStore } from "../platforms/embedded/tokens.js";
import { KubeClient } from "../platforms/kubernetes/client.js";
import { KubeEventRecorder } from "../platforms/kubernetes/events.js";
import { KubernetesRuntime } from "../platforms/kubernetes/runtime.js";
import { KubeResourceStore } from "../platforms/kubernetes/store.js";
import { coreScheduler } from "../ports/scheduler.js";
import { lastEventGauge } from "../reconcile/metrics.js";
import { buildApp } from "../server/app.js";
import { registryRegistrar, trackingTrialMetrics } from "../server/models.js";
import { ServingDirectory } from "../server/serving.js";
import { adminToken, workloadTokens } from "../server/workloadtokens.js";
import { type TrackingDatabase, trackingDatabase, trackingOn } from "../tracking/db.js";
import { LocalWorkloadTracking } from "../tracking/workloads.js";
import { collectProcessMetrics } from "./processmetrics.js";

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
  /** The tracking URL pods are given (in a cluster: the Service in front of the operator). Default: where it listens. */
  trackingUrl?: string;
  /**
   * With dataDir: keep MLflow tracking in this PostgreSQL database (postgres://…) instead of the
   * data dir's SQLite file; tokens stay there.
   */
  trackingDb?: string;
}

export interface Operator {
  metricsUrl?: string;
  /** Where the API (and MLflow tracking) listens, when dataDir is set. */
  url?: string;
  adminTokenFile?: string;
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
  const store = new KubeResourceStore(client, log.child({ component: "store/kube" }));
  const metrics = new Registry();
  collectProcessMetrics(metrics);
  const runtime = new KubernetesRuntime({
    client,
    log: log.child({ component: "runtime/kubernetes" }),
    defaultImage: opts.defaultImage,
    metrics: { lastEventTimestamp: lastEventGauge(metrics) },
  });
  const events = new KubeEventRecorder(client);
  await ensureDefaultProject(store);
  await runtime.watchPods();
  const tracking = opts.dataDir
    ? await startTracking(opts, { store, runtime, events, metrics, log })
    : undefined;
  const manager = new ControllerManager({
    store,
    runtime,
    scheduler: coreScheduler,
    events,
    log,
    metrics,
    now: () => new Date(),
    resyncMs: opts.resyncMs,
    ...(tracking?.controllerDeps ?? {}),
  });
  if (tracking) tracking.directory.onScale = (key) => manager.enqueueInferenceService(key);
  await manager.start();
  tracking?.gateway.start();
  let server: http.Server | undefined;
  let metricsUrl: string | undefined;
  if (opts.metricsPort !== undefined) {
    server = http.createServer(async (req, res) => {
      if (req.url === "/healthz") return res.end("ok");
      if (req.url === "/metrics") {
        res.setHeader("content-type", metrics.contentType);
        return res.end(await metrics.metrics());
      }
      res.statusCode = 404;
      res.end();
    });
    const s = server;
    await new Promise<void>((ok) => s.listen(opts.metricsPort, "127.0.0.1", ok));
    const addr = s.address();
    metricsUrl = typeof addr === "object" && addr ? `http://127.0.0.1:${addr.port}` : undefined;
  }
  log.info({ metricsUrl }, "operator started");
  return {
    metricsUrl,
    ...(tracking ? { url: tracking.url, adminTokenFile: tracking.adminTokenFile } : {}),
    async close() {
      await manager.stop();
      await tracking?.close();
      await runtime.close();
      await new Promise<void>((ok) => (server ? server.close(() => ok()) : ok()));
    },
  };
}

/**
 * Tracking on Kubernetes: the same API server as embedded (MLflow routes, registry, Model kind)
 * over the cluster's store, with tracking tables on a SQLite file in the operator's data dir (or
 * in PostgreSQL, with trackingDb; tokens stay in that file).
 * Pods are told the tracking URL, a project-scoped token and their run, as embedded workers are.
 */
async function startTracking(
  opts: OperatorOptions,
  deps: {
    store: KubeResourceStore;
    runtime: KubernetesRuntime;
    events: KubeEventRecorder;
    metrics: Registry;
    log: Logger;
  },
) {
  const dataDir = opts.dataDir!;
  mkdirSync(dataDir, { recursive: true });
  const database = await openSqlite(join(dataDir, "tracking.db"));
  let trackingDb: TrackingDatabase;
  try {
    trackingDb = await trackingDatabase(database.db as unknown as Kysely<unknown>, opts.trackingDb, deps.log);
  } catch (err) {
    await database.close();
    throw err;
  }
  const tokens = new SqliteTokenStore(database.db);
  const admin = await adminToken(tokens, dataDir);
  const tracking = trackingOn(trackingDb);
  const trackingStore = tracking.store;
  const registry = tracking.registry;
  // The inference gateway on the same port: the OpenAI routes, fed by the serving loop.
  const directory = new ServingDirectory();
  const gateway = new Gateway({ directory, scaler: directory, registry: deps.metrics, log: deps.log });
  directory.attach(gateway);
  const app = await buildApp({
    serving: { gateway, directory },
    store: deps.store,
    tokens,
    events: deps.events,
    runtime: deps.runtime,
    metrics: deps.metrics,
    log: deps.log,
    version: VERSION,
    ensureDefaultProject: false,
    tracking: {
      store: trackingStore,
      registry,
      loggedModels: tracking.loggedModels,
      artifactsDir: join(dataDir, "artifacts"),
    },
  });
  const url = await app.listen({ host: opts.host ?? "127.0.0.1", port: opts.port ?? 7470 });
  const trackingUrl = opts.trackingUrl ?? url;
  deps.log.info({ url, trackingUrl, adminTokenFile: admin.file }, "serving the API and MLflow tracking");
  return {
    url,
    adminTokenFile: admin.file,
    controllerDeps: {
      tracking: new LocalWorkloadTracking(trackingStore, () => trackingUrl, workloadTokens(tokens, dataDir)),
      trialMetrics: trackingTrialMetrics(trackingStore),
      registrar: registryRegistrar(registry),
      serving: {
        models: passThroughModels,
        scale: directory,
        table: directory,
        // The built-in runtime's path inside Loom's Python image.
        builtinCommand: ["python3", "runtimes/loom-tinygpt/server.py"],
        baseUrl: () => url,
      },
    },
    directory,
    gateway,
    async close() {
      gateway.close();
      await app.close();
      await trackingDb.close();
      await database.close();
    },
  };
}

async function ensureDefaultProject(store: KubeResourceStore): Promise<void> {
  try {
    await store.get("Project", "", DEFAULT_PROJECT);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
    await store.create(
      validateManifest({
        apiVersion: "loom.dev/v1alpha1",
        kind: "Project",
        metadata: { name: DEFAULT_PROJECT },
        spec: {},
      }).object,
    );
  }
}

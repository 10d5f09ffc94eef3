import { availableParallelism, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import { ControllerManager } from "../controllers/manager.js";
import { RUNTIME_FINALIZER, TRAININGJOB } from "../controllers/trainingjob/reconciler.js";
import { Gateway } from "../gateway/gateway.js";
import { VERSION } from "../lib/version.js";
import { instanceId, lockDataDir } from "../platforms/embedded/datadir.js";
import { openSqlite } from "../platforms/embedded/db.js";
import { SqliteEventRecorder } from "../platforms/embedded/events.js";
import { detectGpus } from "../platforms/embedded/gpus.js";
import { EmbeddedRuntime } from "../platforms/embedded/platform.js";
import { LocalRevisions } from "../platforms/embedded/replicas.js";
import { LocalRuntime } from "../platforms/embedded/runtime.js";
import { SqliteResourceStore } from "../platforms/embedded/store.js";
import { SqliteTokenStore } from "../platforms/embedded/tokens.js";
import { coreScheduler } from "../ports/scheduler.js";
import { buildApp } from "../server/app.js";
import { localModelResolver, registryRegistrar, trackingTrialMetrics } from "../server/models.js";
import { ServingDirectory } from "../server/serving.js";
import { type TrackingDatabase, trackingDatabase, trackingOn } from "../tracking/db.js";
import { LocalWorkloadTracking } from "../tracking/workloads.js";
import { collectProcessMetrics } from "./processmetrics.js";

/** Loom's built-in serving runtime (runtimes/ in the package); it needs only PyTorch (Debian's python3-torch). */
const BUILTIN_RUNTIME = [
  process.env.LOOM_BUILTIN_PYTHON ?? "/usr/bin/python3",
  join(fileURLToPath(new URL("../../runtimes", import.meta.url)), "loom-tinygpt", "server.py"),
];

import { adminToken, workloadTokens } from "../server/workloadtokens.js";

export interface EmbeddedOptions {
  dataDir: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Declares N virtual GPUs instead of asking nvidia-smi. */
  gpus?: number;
  log: Logger;
  /** Periodic resync of every controller (and orphan collection). */
  resyncMs?: number;
  baseBackoffMs?: number;
  /** false serves the API and store without any controller (benchmarks of the API alone). */
  controllers?: boolean;
  /**
   * Keep MLflow tracking (experiments, runs, registry, logged models) in this PostgreSQL database
   * (postgres://…) instead of the data dir's SQLite file; tokens, objects and events stay there.
   */
  trackingDb?: string;
}

export interface EmbeddedServer {
  url: string;
  /** The admin token (created on the first start, then read from the data dir). */
  adminToken: string;
  adminTokenFile: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

/**
 * The composition root of `loom up`: one process with the API, the controllers, the scheduler
 * and the local runtime, all on one SQLite file in the data dir.
 */
export async function startEmbedded(opts: EmbeddedOptions): Promise<EmbeddedServer> {
  const log = opts.log;
  const unlock = lockDataDir(opts.dataDir);
  const now = () => new Date();
  const database = await openSqlite(join(opts.dataDir, "loom.db"));
  let trackingDb: TrackingDatabase;
  try {
    trackingDb = await trackingDatabase(database.db as unknown as Kysely<unknown>, opts.trackingDb, log);
  } catch (err) {
    await database.close();
    unlock();
    throw err;
  }
  const store = await SqliteResourceStore.open(database.db, { now });
  const events = new SqliteEventRecorder(database.db, now);
  const tokens = new SqliteTokenStore(database.db);
  const metrics = new Registry();
  collectProcessMetrics(metrics);

  const admin = await adminToken(tokens, opts.dataDir);
  if (admin.created) log.info({ file: admin.file }, "created the admin token");
  const workloadTokenFor = workloadTokens(tokens, opts.dataDir);
  const tracking = trackingOn(trackingDb);
  const trackingStore = tracking.store;
  let url = "";
  const workloadTracking = new LocalWorkloadTracking(trackingStore, () => url, workloadTokenFor);

  const processes = new LocalRuntime({
    dataDir: opts.dataDir,
    instanceId: instanceId(opts.dataDir),
    cpuMillis: availableParallelism() * 1000,
    memoryBytes: totalmem(),
    gpus: detectGpus(opts.gpus),
    log: log.child({ component: "runtime/local" }),
  });
  // Model replicas: supervised processes that wait for the scheduler like any pod.
  const replicas = new LocalRevisions({
    runtime: processes,
    events,
    log: log.child({ component: "runtime/replicas" }),
    stateDir: join(opts.dataDir, "revisions"),
    node: (await processes.nodes())[0]!.name,
  });
  const runtime = new EmbeddedRuntime(processes, replicas);
  const registry = tracking.registry;
  const artifactsDir = join(opts.dataDir, "artifacts");
  // The inference gateway: OpenAI routes on this port, fed by the InferenceService controller.
  const directory = new ServingDirectory();
  const gateway = new Gateway({ directory, scaler: directory, registry: metrics, log });
  directory.attach(gateway);
  const app = await buildApp({
    store,
    tokens,
    events,
    runtime,
    metrics,
    log,
    version: VERSION,
    tracking: {
      store: trackingStore,
      registry,
      loggedModels: tracking.loggedModels,
      artifactsDir,
    },
    serving: { gateway, directory },
    // The views read what the admission loop schedules on (the manager is made just below).
    ...(opts.controllers !== false ? { schedulingSnapshot: () => manager.schedulingSnapshot() } : {}),
    // The trainingjob loop would add it on first sight; giving it at create saves that write.
    ...(opts.controllers !== false ? { createFinalizers: { [TRAININGJOB]: [RUNTIME_FINALIZER] } } : {}),
  });
  const manager = new ControllerManager({
    store,
    runtime,
    scheduler: coreScheduler,
    events,
    log,
    metrics,
    now,
    resyncMs: opts.resyncMs,
    baseBackoffMs: opts.baseBackoffMs,
    tracking: workloadTracking,
    trialMetrics: trackingTrialMetrics(trackingStore),
    registrar: registryRegistrar(registry),
    serving: {
      models: localModelResolver(registry, trackingStore, artifactsDir),
      scale: directory,
      table: directory,
      builtinCommand: BUILTIN_RUNTIME,
      baseUrl: () => url,
    },
  });
  directory.onScale = (key) => manager.enqueueInferenceService(key);
  // Listening first: workers started by the controllers are told this URL (MLFLOW_TRACKING_URI).
  const address = await app.listen({ host: opts.host ?? "127.0.0.1", port: opts.port ?? 7470 });
  url = address;
  if (opts.controllers !== false) await manager.start();
  gateway.start();
  let closed = false;
  return {
    url: address,
    adminToken: admin.token,
    adminTokenFile: admin.file,
    app,
    async close() {
      if (closed) return;
      closed = true;
      gateway.close();
      if (opts.controllers !== false) await manager.stop();
      await app.close();
      await runtime.close();
      await store.close();
      await trackingDb.close();
      await database.close();
      unlock();
    },
  };
}

import type { FastifyInstance } from "fastify";
import type { LoggedModels } from "../../tracking/logged.js";
import type { ModelRegistry } from "../../tracking/registry.js";
import { trackingRoutes } from "../../tracking/routes.js";
import type { TrackingStore } from "../../tracking/store.js";
import { startTraceRetention } from "../../tracking/trace-retention.js";
import type { TraceStore } from "../../tracking/traces.js";
import type { ResourceService } from "../resources.js";

/** MLflow-compatible experiment tracking (embedded: on the same database). */
export interface TrackingMount {
  store: TrackingStore;
  registry: ModelRegistry;
  loggedModels: LoggedModels;
  artifactsDir: string;
  traces: TraceStore;
  /** Traces older than this are deleted by a periodic sweep; absent: kept. */
  traceRetentionMs?: number;
}

export interface TrackingRoutesMountDeps {
  tracking: TrackingMount;
  resources: ResourceService;
}

/** Mounts the MLflow routes, whose experiments belong to Loom's projects. */
export async function mountTracking(app: FastifyInstance, deps: TrackingRoutesMountDeps): Promise<void> {
  const { resources } = deps;
  const projectDef = resources.kind("projects");
  await trackingRoutes(app, {
    store: deps.tracking.store,
    registry: deps.tracking.registry,
    loggedModels: deps.tracking.loggedModels,
    artifactsDir: deps.tracking.artifactsDir,
    traces: deps.tracking.traces,
    projectExists: async (name) => {
      try {
        await resources.get(projectDef, undefined, name);
        return true;
      } catch {
        return false;
      }
    },
  });
  const { traceRetentionMs } = deps.tracking;
  if (traceRetentionMs !== undefined) {
    const stop = startTraceRetention({
      traces: deps.tracking.traces,
      artifactsDir: deps.tracking.artifactsDir,
      maxAgeMs: traceRetentionMs,
      log: app.log,
    });
    app.addHook("onClose", async () => stop());
  }
}

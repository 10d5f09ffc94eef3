import type { FastifyInstance } from "fastify";
import { type Rule, rule, type WorkloadAccess, route as withRule } from "../server/routetable.js";
import { artifactRoutes } from "./artifacts.js";
import type { LoggedModels } from "./logged.js";
import type { ModelRegistry } from "./registry.js";
import { experimentRoutes } from "./routes/experiments.js";
import { type AddRoute, handle, mlflowErrors } from "./routes/http.js";
import { loggedModelRoutes } from "./routes/logged-models.js";
import { registryRoutes } from "./routes/registry.js";
import { runRoutes } from "./routes/runs.js";
import { traceRoutesV2, traceRoutesV3 } from "./routes/traces.js";
import type { TrackingStore } from "./store.js";
import type { TraceStore } from "./traces.js";

export interface TrackingRoutesDeps {
  store: TrackingStore;
  registry: ModelRegistry;
  loggedModels: LoggedModels;
  /** The local artifact store (under the data dir). */
  artifactsDir: string;
  /** Whether the project exists (experiments belong to one). */
  projectExists(project: string): Promise<boolean>;
  /** MLflow 3's traces (their spans are artifacts under artifactsDir). */
  traces: TraceStore;
}

/**
 * The MLflow tracking REST API (the subset the official client calls; see docs/tracking.md),
 * served for one project at /mlflow/projects/PROJECT, and for the default project at the root,
 * so MLFLOW_TRACKING_URI is either http://HOST:PORT or http://HOST:PORT/mlflow/projects/PROJECT.
 * Errors are MLflow's JSON ({"error_code", "message"}); unknown endpoints say so at once.
 */
export async function trackingRoutes(app: FastifyInstance, deps: TrackingRoutesDeps): Promise<void> {
  await serverInfo(app);
  await artifactRoutes(app, {
    store: deps.store,
    dir: deps.artifactsDir,
    projectExists: deps.projectExists,
    traceSpans: (project, traceId) => deps.traces.spans(project, traceId),
    errorHandler: mlflowErrors,
  });

  const v2 = ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow", "/mlflow/projects/:project/api/2.0/mlflow"];
  await mlflowScopes(app, v2, deps, (route) => {
    registryRoutes(route, deps);
    loggedModelRoutes(route, deps);
    experimentRoutes(route, deps);
    runRoutes(route, deps);
    traceRoutesV2(route, deps);
  });
  // MLflow 3's own endpoints (traces) live under /api/3.0.
  const v3 = ["/api/3.0/mlflow", "/ajax-api/3.0/mlflow", "/mlflow/projects/:project/api/3.0/mlflow"];
  await mlflowScopes(app, v3, deps, (route) => traceRoutesV3(route, deps));
}

/** Registers endpoints under each prefix, with MLflow's error format and an honest 404. */
async function mlflowScopes(
  app: FastifyInstance,
  prefixes: string[],
  deps: TrackingRoutesDeps,
  register: (route: AddRoute) => void,
): Promise<void> {
  for (const prefix of prefixes) {
    await app.register(
      async (scope) => {
        // MLflow's error format for everything under the prefix, the client's parse errors included.
        scope.setErrorHandler(mlflowErrors);
        scope.setNotFoundHandler((req, reply) =>
          reply.code(404).send({
            error_code: "ENDPOINT_NOT_FOUND",
            message: `Loom's MLflow API does not serve ${req.method} ${req.url.split("?")[0]}`,
          }),
        );
        const route: AddRoute = (method, path, handler) =>
          scope.route({
            method,
            url: `/${path}`,
            config: { authz: mlflowRule(method, path) },
            handler: handle(handler, method, path, deps.projectExists),
          });
        register(route);
      },
      { prefix },
    );
  }
}

async function serverInfo(app: FastifyInstance): Promise<void> {
  const info = { store_type: "SqlStore", workspaces_enabled: false, multipart_uploads_enabled: false };
  for (const url of ["/api/3.0/mlflow/server-info", "/mlflow/projects/:project/api/3.0/mlflow/server-info"])
    withRule(app, {
      method: "GET",
      url,
      rule: rule.project("mlflow:server-info", "read", { workload: "read" }),
      handler: async () => info,
    });
}

/** Writes a workload's credential may make, beyond reading its project: those on a run it owns (and the models it logs). */
const RUN_WRITES = new Set([
  "runs/update",
  "runs/delete",
  "runs/restore",
  "runs/log-parameter",
  "runs/log-metric",
  "runs/set-tag",
  "runs/delete-tag",
  "runs/log-batch",
  "runs/log-inputs",
  "runs/outputs",
]);

/**
 * An MLflow endpoint's authorization rule: it reads (GETs, searches) or writes the project of
 * the URL (the default one at the root). A workload's credential reads its project, creates
 * experiments, runs and traces, and writes only to its own runs and traces (an App's chat records
 * its traces with the credential Loom gives it).
 */
export function mlflowRule(method: string, path: string): Rule {
  const read = method === "GET" || /(^|\/)search$|get-latest-versions$/.test(path);
  const workload: WorkloadAccess | undefined = read
    ? "read"
    : path === "runs/create"
      ? "create-run"
      : path === "experiments/create"
        ? "create"
        : RUN_WRITES.has(path) || (method === "POST" && path === "logged-models")
          ? "own-run"
          : path.startsWith("logged-models/:model_id")
            ? "own-model"
            : method === "POST" && path === "traces"
              ? "create-trace"
              : path === "traces/:trace_id/tags"
                ? "own-trace"
                : undefined;
  return rule.project(`mlflow:${path}`, read ? "read" : "write", workload ? { workload } : {});
}

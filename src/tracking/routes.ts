import type { FastifyInstance } from "fastify";
import { artifactRoutes } from "./artifacts.js";
import type { LoggedModels } from "./logged.js";
import type { ModelRegistry } from "./registry.js";
import { experimentRoutes } from "./routes/experiments.js";
import { type AddRoute, handle, mlflowErrors } from "./routes/http.js";
import { loggedModelRoutes } from "./routes/logged-models.js";
import { registryRoutes } from "./routes/registry.js";
import { runRoutes } from "./routes/runs.js";
import type { TrackingStore } from "./store.js";

export interface TrackingRoutesDeps {
  store: TrackingStore;
  registry: ModelRegistry;
  loggedModels: LoggedModels;
  /** The local artifact store (under the data dir). */
  artifactsDir: string;
  /** Whether the project exists (experiments belong to one). */
  projectExists(project: string): Promise<boolean>;
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
    errorHandler: mlflowErrors,
  });

  for (const prefix of [
    "/api/2.0/mlflow",
    "/ajax-api/2.0/mlflow",
    "/mlflow/projects/:project/api/2.0/mlflow",
  ]) {
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
            handler: handle(handler, method, path, deps.projectExists),
          });
        registryRoutes(route, deps);
        loggedModelRoutes(route, deps);
        experimentRoutes(route, deps);
        runRoutes(route, deps);
      },
      { prefix },
    );
  }
}

async function serverInfo(app: FastifyInstance): Promise<void> {
  const info = { store_type: "SqlStore", workspaces_enabled: false, multipart_uploads_enabled: false };
  app.get("/api/3.0/mlflow/server-info", async () => info);
  app.get("/mlflow/projects/:project/api/3.0/mlflow/server-info", async () => info);
}

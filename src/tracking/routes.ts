import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { LoomError } from "../api/errors.js";
import { artifactRoutes } from "./artifacts.js";
import { invalidParameter, MlflowError } from "./errors.js";
import type { LoggedModels } from "./logged.js";
import type { ModelRegistry } from "./registry.js";
import type { DatasetInput, KeyValue, RawMetric, TrackingStore, ViewType } from "./store.js";
import { authorize } from "./tenancy.js";

export interface TrackingRoutesDeps {
  store: TrackingStore;
  registry: ModelRegistry;
  loggedModels: LoggedModels;
  /** The local artifact store (under the data dir). */
  artifactsDir: string;
  /** Whether the project exists (experiments belong to one). */
  projectExists(project: string): Promise<boolean>;
}

type Fields = Record<string, unknown>;
type Handler = (project: string, f: Fields) => Promise<unknown>;

/**
 * The MLflow tracking REST API (the subset the official client calls; see docs/tracking.md),
 * served for one project at /mlflow/projects/PROJECT, and for the default project at the root,
 * so MLFLOW_TRACKING_URI is either http://HOST:PORT or http://HOST:PORT/mlflow/projects/PROJECT.
 * Errors are MLflow's JSON ({"error_code", "message"}); unknown endpoints say so at once.
 */
export async function trackingRoutes(app: FastifyInstance, deps: TrackingRoutesDeps): Promise<void> {
  const s = deps.store;
  const r = deps.registry;
  const lm = deps.loggedModels;
  /** Where a version's files are: a logged model's own artifact root, or its source as given. */
  const downloadUri = async (project: string, source: string) => {
    const m = /^models:\/(m-[0-9a-f]+)$/.exec(source);
    return m ? (await lm.get(project, m[1]!)).info.artifact_uri : source;
  };
  /** Runs as MLflow 3 shows them: with the models they logged (outputs). */
  const withOutputs = async <T extends { info: { run_id: string } }>(runs: T[]) => {
    const outputs = await lm.outputsOf(runs.map((x) => x.info.run_id));
    return runs.map((x) => {
      const models = outputs.get(x.info.run_id);
      return { ...x, outputs: models ? { model_outputs: models } : {} };
    });
  };
  const str = (f: Fields, k: string) => (f[k] === undefined || f[k] === null ? undefined : String(f[k]));
  const num = (f: Fields, k: string) => {
    const v = f[k];
    if (v === undefined || v === null || v === "") return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw invalidParameter(`'${k}' must be a number, got ${JSON.stringify(v)}`);
    return n;
  };
  const need = (f: Fields, k: string) => {
    const v = str(f, k);
    if (v === undefined || v === "") throw invalidParameter(`Missing value for required parameter '${k}'.`);
    return v;
  };
  const runIdOf = (f: Fields) => str(f, "run_id") ?? str(f, "run_uuid");
  const list = <T>(f: Fields, k: string) =>
    Array.isArray(f[k]) ? (f[k] as T[]) : f[k] === undefined ? [] : [f[k] as T];
  const view = (f: Fields, k: string) => (str(f, k) ?? "ACTIVE_ONLY") as ViewType;

  // MLflow takes the experiment search as a POST (the client) or a GET with the same fields.
  const searchExperiments: Handler = (p, f) =>
    s.searchExperiments(p, {
      viewType: view(f, "view_type"),
      maxResults: num(f, "max_results"),
      pageToken: str(f, "page_token"),
      filter: str(f, "filter"),
    });

  const routes: [method: "GET" | "POST" | "PATCH" | "DELETE", path: string, handler: Handler][] = [
    [
      "POST",
      "registered-models/create",
      async (p, f) => ({
        registered_model: await r.createModel(
          p,
          need(f, "name"),
          str(f, "description"),
          list<KeyValue>(f, "tags"),
        ),
      }),
    ],
    [
      "GET",
      "registered-models/get",
      async (p, f) => ({ registered_model: await r.getModel(p, need(f, "name")) }),
    ],
    [
      "GET",
      "registered-models/search",
      (p, f) =>
        r.searchModels(p, {
          filter: str(f, "filter"),
          maxResults: num(f, "max_results"),
          pageToken: str(f, "page_token"),
        }),
    ],
    [
      "PATCH",
      "registered-models/update",
      async (p, f) => ({
        registered_model: await r.updateModel(p, need(f, "name"), str(f, "description")),
      }),
    ],
    [
      "POST",
      "registered-models/rename",
      async (p, f) => ({
        registered_model: await r.renameModel(p, need(f, "name"), need(f, "new_name")),
      }),
    ],
    [
      "DELETE",
      "registered-models/delete",
      async (p, f) => {
        await r.deleteModel(p, need(f, "name"));
        return {};
      },
    ],
    [
      "POST",
      "registered-models/set-tag",
      async (p, f) => {
        await r.setModelTag(p, need(f, "name"), need(f, "key"), str(f, "value") ?? "");
        return {};
      },
    ],
    [
      "DELETE",
      "registered-models/delete-tag",
      async (p, f) => {
        await r.deleteTag(p, need(f, "name"), undefined, need(f, "key"));
        return {};
      },
    ],
    [
      "POST",
      "registered-models/alias",
      async (p, f) => {
        await r.setAlias(p, need(f, "name"), need(f, "alias"), need(f, "version"));
        return {};
      },
    ],
    [
      "GET",
      "registered-models/alias",
      async (p, f) => ({
        model_version: await r.versionByAlias(p, need(f, "name"), need(f, "alias")),
      }),
    ],
    [
      "DELETE",
      "registered-models/alias",
      async (p, f) => {
        await r.deleteAlias(p, need(f, "name"), need(f, "alias"));
        return {};
      },
    ],
    [
      "POST",
      "registered-models/get-latest-versions",
      async (p, f) => ({
        model_versions: await r.latestVersions(p, need(f, "name"), list<string>(f, "stages")),
      }),
    ],
    [
      "POST",
      "model-versions/create",
      async (p, f) => ({
        model_version: await r.createVersion(p, {
          name: need(f, "name"),
          source: need(f, "source"),
          // A version of a logged model (models:/m-…) comes from the run that logged it.
          runId:
            str(f, "run_id") ??
            (str(f, "model_id")
              ? (await lm.get(p, need(f, "model_id"))).info.source_run_id || undefined
              : undefined),
          runLink: str(f, "run_link"),
          description: str(f, "description"),
          tags: list<KeyValue>(f, "tags"),
        }),
      }),
    ],
    [
      "GET",
      "model-versions/get",
      async (p, f) => ({
        model_version: await r.getVersion(p, need(f, "name"), need(f, "version")),
      }),
    ],
    [
      "GET",
      "model-versions/search",
      (p, f) =>
        r.searchVersions(p, {
          filter: str(f, "filter"),
          maxResults: num(f, "max_results"),
          pageToken: str(f, "page_token"),
        }),
    ],
    [
      "PATCH",
      "model-versions/update",
      async (p, f) => ({
        model_version: await r.updateVersion(p, need(f, "name"), need(f, "version"), str(f, "description")),
      }),
    ],
    [
      "POST",
      "model-versions/transition-stage",
      async (p, f) => ({
        model_version: await r.transitionStage(
          p,
          need(f, "name"),
          need(f, "version"),
          need(f, "stage"),
          f.archive_existing_versions === true || f.archive_existing_versions === "true",
        ),
      }),
    ],
    [
      "POST",
      "model-versions/set-tag",
      async (p, f) => {
        await r.setVersionTag(p, need(f, "name"), need(f, "version"), need(f, "key"), str(f, "value") ?? "");
        return {};
      },
    ],
    [
      "DELETE",
      "model-versions/delete-tag",
      async (p, f) => {
        await r.deleteTag(p, need(f, "name"), need(f, "version"), need(f, "key"));
        return {};
      },
    ],
    [
      "DELETE",
      "model-versions/delete",
      async (p, f) => {
        await r.deleteVersion(p, need(f, "name"), need(f, "version"));
        return {};
      },
    ],
    [
      "GET",
      "model-versions/get-download-uri",
      async (p, f) => ({
        artifact_uri: await downloadUri(
          p,
          (await r.getVersion(p, need(f, "name"), need(f, "version"))).source,
        ),
      }),
    ],
    [
      "POST",
      "logged-models",
      async (p, f) => ({
        model: await lm.create(p, {
          experimentId: need(f, "experiment_id"),
          name: str(f, "name"),
          sourceRunId: str(f, "source_run_id"),
          params: list<KeyValue>(f, "params"),
          tags: list<KeyValue>(f, "tags"),
        }),
      }),
    ],
    ["GET", "logged-models/:model_id", async (p, f) => ({ model: await lm.get(p, need(f, "model_id")) })],
    [
      "PATCH",
      "logged-models/:model_id",
      async (p, f) => ({
        model: await lm.finalize(p, need(f, "model_id"), need(f, "status")),
      }),
    ],
    [
      "DELETE",
      "logged-models/:model_id",
      async (p, f) => {
        await lm.delete(p, need(f, "model_id"));
        return {};
      },
    ],
    [
      "PATCH",
      "logged-models/:model_id/tags",
      async (p, f) => {
        await lm.setTags(p, need(f, "model_id"), list<KeyValue>(f, "tags"));
        return {};
      },
    ],
    [
      "DELETE",
      "logged-models/:model_id/tags/:key",
      async (p, f) => {
        await lm.deleteTag(p, need(f, "model_id"), need(f, "key"));
        return {};
      },
    ],
    // The client also searches them on every artifact download, to see whether a path names one.
    [
      "POST",
      "logged-models/search",
      (p, f) =>
        lm.search(p, {
          experimentIds: list<string>(f, "experiment_ids").map(String),
          filter: str(f, "filter"),
          maxResults: num(f, "max_results"),
        }),
    ],
    [
      "POST",
      "runs/outputs",
      async (p, f) => {
        await lm.recordOutputs(p, need(f, "run_id"), list<{ model_id?: string; step?: number }>(f, "models"));
        return {};
      },
    ],
    [
      "POST",
      "experiments/create",
      async (p, f) => ({
        experiment_id: await s.createExperiment(
          p,
          need(f, "name"),
          str(f, "artifact_location"),
          list<KeyValue>(f, "tags"),
        ),
      }),
    ],
    [
      "GET",
      "experiments/get",
      async (p, f) => ({ experiment: await s.getExperiment(p, need(f, "experiment_id")) }),
    ],
    [
      "GET",
      "experiments/get-by-name",
      async (p, f) => ({
        experiment: await s.getExperimentByName(p, need(f, "experiment_name")),
      }),
    ],
    ["POST", "experiments/search", searchExperiments],
    ["GET", "experiments/search", searchExperiments],
    [
      "POST",
      "experiments/update",
      async (p, f) => {
        await s.renameExperiment(p, need(f, "experiment_id"), need(f, "new_name"));
        return {};
      },
    ],
    [
      "POST",
      "experiments/delete",
      async (p, f) => {
        await s.setExperimentLifecycle(p, need(f, "experiment_id"), "deleted");
        return {};
      },
    ],
    [
      "POST",
      "experiments/restore",
      async (p, f) => {
        await s.setExperimentLifecycle(p, need(f, "experiment_id"), "active");
        return {};
      },
    ],
    [
      "POST",
      "experiments/set-experiment-tag",
      async (p, f) => {
        await s.setExperimentTag(p, need(f, "experiment_id"), need(f, "key"), str(f, "value") ?? "");
        return {};
      },
    ],
    [
      "POST",
      "experiments/delete-experiment-tag",
      async (p, f) => {
        await s.deleteExperimentTag(p, need(f, "experiment_id"), need(f, "key"));
        return {};
      },
    ],
    [
      "POST",
      "runs/create",
      async (p, f) => ({
        run: await s.createRun(p, {
          experimentId: str(f, "experiment_id"),
          userId: str(f, "user_id"),
          runName: str(f, "run_name"),
          startTime: num(f, "start_time"),
          tags: list<KeyValue>(f, "tags"),
        }),
      }),
    ],
    ["GET", "runs/get", async (p, f) => ({ run: (await withOutputs([await s.getRun(p, runIdOf(f))]))[0] })],
    [
      "POST",
      "runs/update",
      async (p, f) => ({
        run_info: await s.updateRun(p, runIdOf(f), {
          status: str(f, "status"),
          endTime: num(f, "end_time"),
          runName: str(f, "run_name"),
        }),
      }),
    ],
    [
      "POST",
      "runs/delete",
      async (p, f) => {
        await s.setRunLifecycle(p, runIdOf(f), "deleted");
        return {};
      },
    ],
    [
      "POST",
      "runs/restore",
      async (p, f) => {
        await s.setRunLifecycle(p, runIdOf(f), "active");
        return {};
      },
    ],
    [
      "POST",
      "runs/log-parameter",
      async (p, f) => {
        await s.logBatch(p, runIdOf(f), { params: [{ key: need(f, "key"), value: str(f, "value") ?? "" }] });
        return {};
      },
    ],
    [
      "POST",
      "runs/log-metric",
      async (p, f) => {
        await s.logBatch(p, runIdOf(f), { metrics: [f as RawMetric] });
        return {};
      },
    ],
    [
      "POST",
      "runs/set-tag",
      async (p, f) => {
        await s.logBatch(p, runIdOf(f), { tags: [{ key: need(f, "key"), value: str(f, "value") ?? "" }] });
        return {};
      },
    ],
    [
      "POST",
      "runs/delete-tag",
      async (p, f) => {
        await s.deleteTag(p, runIdOf(f), need(f, "key"));
        return {};
      },
    ],
    [
      "POST",
      "runs/log-batch",
      async (p, f) => {
        await s.logBatch(p, runIdOf(f), {
          metrics: list<RawMetric>(f, "metrics"),
          params: list<KeyValue>(f, "params"),
          tags: list<KeyValue>(f, "tags"),
        });
        return {};
      },
    ],
    [
      "POST",
      "runs/log-inputs",
      async (p, f) => {
        await s.logInputs(p, runIdOf(f), list<DatasetInput>(f, "datasets"));
        return {};
      },
    ],
    [
      "POST",
      "runs/search",
      async (p, f) => {
        const found = await s.searchRuns(p, {
          experimentIds: list<string>(f, "experiment_ids").map(String),
          filter: str(f, "filter"),
          viewType: view(f, "run_view_type"),
          maxResults: num(f, "max_results"),
          orderBy: list<string>(f, "order_by"),
          pageToken: str(f, "page_token"),
        });
        return { ...found, runs: await withOutputs(found.runs) };
      },
    ],
    [
      "GET",
      "metrics/get-history",
      (p, f) =>
        s.metricHistory(p, runIdOf(f), need(f, "metric_key"), {
          maxResults: num(f, "max_results"),
          pageToken: str(f, "page_token"),
        }),
    ],
    // The UI's charts: one metric for many runs (run_ids repeated in the query), sampled.
    [
      "GET",
      "metrics/get-history-bulk-interval",
      (p, f) =>
        s.metricHistoryBulkInterval(p, {
          runIds: list<unknown>(f, "run_ids")
            .map(String)
            .filter((id) => id !== ""),
          metricKey: need(f, "metric_key"),
          maxResults: num(f, "max_results"),
          startStep: num(f, "start_step"),
          endStep: num(f, "end_step"),
        }),
    ],
  ];

  const handle =
    (handler: Handler, fromQuery: boolean, write: boolean) =>
    async (req: FastifyRequest<{ Params: { project?: string } }>, reply: FastifyReply) => {
      const project = req.params.project ?? "default";
      authorize(req.principal, project, write);
      if (!(await deps.projectExists(project)))
        throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `project ${project} does not exist`);
      const { project: _, ...inPath } = req.params as Record<string, string>;
      const fields = { ...((fromQuery ? req.query : (req.body ?? {})) as Fields), ...inPath };
      return reply.send(compact(await handler(project, fields)));
    };

  const mlflowErrors: Parameters<FastifyInstance["setErrorHandler"]>[0] = (err, req, reply) => {
    if (err instanceof MlflowError) return reply.code(err.httpStatus).send(err.toJSON());
    // Loom's own errors (a missing or wrong token) in MLflow's words.
    if (err instanceof LoomError) {
      const code =
        err.httpStatus === 401
          ? "UNAUTHENTICATED"
          : err.httpStatus === 403
            ? "PERMISSION_DENIED"
            : err.httpStatus === 404
              ? "RESOURCE_DOES_NOT_EXIST"
              : "INVALID_PARAMETER_VALUE";
      return reply.code(err.httpStatus).send({ error_code: code, message: err.message });
    }
    const status = (err as { statusCode?: number }).statusCode;
    if (typeof status === "number" && status >= 400 && status < 500)
      return reply.code(400).send({ error_code: "INVALID_PARAMETER_VALUE", message: (err as Error).message });
    req.log.error({ err }, "tracking request failed");
    return reply.code(500).send({
      error_code: "INTERNAL_ERROR",
      message: "internal server error; the server log has the details",
    });
  };

  await serverInfo(app);
  await artifactRoutes(app, {
    store: s,
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
        for (const [method, path, handler] of routes)
          scope.route({
            method,
            url: `/${path}`,
            handler: handle(handler, method === "GET", !isRead(method, path)),
          });
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

/** Searches are POSTs that only read. */
function isRead(method: string, path: string): boolean {
  return method === "GET" || /(^|\/)search$|get-latest-versions$/.test(path);
}

/** Unset and empty list fields are left out, as MLflow's proto3 JSON does. */
function compact(value: unknown): unknown {
  if (!value || typeof value !== "object" || Array.isArray(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined || (Array.isArray(v) && v.length === 0)) continue;
    out[k] = v;
  }
  return out;
}

/**
 * The MLflow REST endpoints Loom serves, with the fields each takes: what /openapi.json says of
 * them (src/server/openapi.ts), checked against what the routes register (catalog.test.ts), so a
 * route cannot be served without being described.
 */

/** A field's type as the MLflow client sends it (proto3 JSON). */
export type FieldType =
  | "string"
  | "integer"
  | "number"
  | "boolean"
  /** [{key, value}] */
  | "tags"
  /** [string] */
  | "strings"
  /** [{key, value, timestamp, step}] */
  | "metrics"
  /** [{dataset: {name, digest, …}, tags}] */
  | "datasets"
  /** [{model_id, step}] */
  | "outputs"
  | { enum: readonly string[] };

export interface Endpoint {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  /** Under the API prefix, without its leading slash; `:x` is a path parameter. */
  path: string;
  summary: string;
  fields: Record<string, FieldType>;
  required?: readonly string[];
}

const VIEW = { enum: ["ACTIVE_ONLY", "DELETED_ONLY", "ALL"] } as const;
const RUN_STATUS = { enum: ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"] } as const;
const run = { run_id: "string", run_uuid: "string" } as const;
const page = { max_results: "integer", page_token: "string" } as const;
const version = { name: "string", version: "string" } as const;
const e = (
  method: Endpoint["method"],
  path: string,
  summary: string,
  fields: Record<string, FieldType>,
  required: readonly string[] = [],
): Endpoint => ({ method, path, summary, fields, required });

/** Under /api/2.0/mlflow (the default project) and /mlflow/projects/{project}/api/2.0/mlflow. */
export const MLFLOW_ENDPOINTS: readonly Endpoint[] = [
  // experiments
  e(
    "POST",
    "experiments/create",
    "Create an experiment",
    { name: "string", artifact_location: "string", tags: "tags" },
    ["name"],
  ),
  e("GET", "experiments/get", "Get an experiment", { experiment_id: "string" }, ["experiment_id"]),
  e("GET", "experiments/get-by-name", "Get an experiment by name", { experiment_name: "string" }, [
    "experiment_name",
  ]),
  e("POST", "experiments/search", "Search experiments", { view_type: VIEW, filter: "string", ...page }),
  e("GET", "experiments/search", "Search experiments", { view_type: VIEW, filter: "string", ...page }),
  e("POST", "experiments/update", "Rename an experiment", { experiment_id: "string", new_name: "string" }, [
    "experiment_id",
    "new_name",
  ]),
  e("POST", "experiments/delete", "Delete an experiment", { experiment_id: "string" }, ["experiment_id"]),
  e("POST", "experiments/restore", "Restore an experiment", { experiment_id: "string" }, ["experiment_id"]),
  e(
    "POST",
    "experiments/set-experiment-tag",
    "Set an experiment tag",
    { experiment_id: "string", key: "string", value: "string" },
    ["experiment_id", "key"],
  ),
  e(
    "POST",
    "experiments/delete-experiment-tag",
    "Delete an experiment tag",
    { experiment_id: "string", key: "string" },
    ["experiment_id", "key"],
  ),
  // runs
  e("POST", "runs/create", "Create a run", {
    experiment_id: "string",
    user_id: "string",
    run_name: "string",
    start_time: "integer",
    tags: "tags",
  }),
  e("GET", "runs/get", "Get a run", run),
  e("POST", "runs/update", "Update a run", {
    ...run,
    status: RUN_STATUS,
    end_time: "integer",
    run_name: "string",
  }),
  e("POST", "runs/delete", "Delete a run", run),
  e("POST", "runs/restore", "Restore a run", run),
  e("POST", "runs/log-parameter", "Log a param", { ...run, key: "string", value: "string" }, ["key"]),
  e(
    "POST",
    "runs/log-metric",
    "Log a metric",
    { ...run, key: "string", value: "number", timestamp: "integer", step: "integer" },
    ["key", "value", "timestamp"],
  ),
  e("POST", "runs/set-tag", "Set a run tag", { ...run, key: "string", value: "string" }, ["key"]),
  e("POST", "runs/delete-tag", "Delete a run tag", { ...run, key: "string" }, ["key"]),
  e("POST", "runs/log-batch", "Log metrics, params and tags (at most 1000 metrics, 100 params, 100 tags)", {
    ...run,
    metrics: "metrics",
    params: "tags",
    tags: "tags",
  }),
  e("POST", "runs/log-inputs", "Log dataset inputs", { ...run, datasets: "datasets" }),
  e("POST", "runs/search", "Search runs", {
    experiment_ids: "strings",
    filter: "string",
    run_view_type: VIEW,
    order_by: "strings",
    ...page,
  }),
  e("GET", "metrics/get-history", "A metric's history", { ...run, metric_key: "string", ...page }, [
    "metric_key",
  ]),
  e(
    "GET",
    "metrics/get-history-bulk-interval",
    "One metric of many runs, sampled",
    {
      run_ids: "strings",
      metric_key: "string",
      max_results: "integer",
      start_step: "integer",
      end_step: "integer",
    },
    ["run_ids", "metric_key"],
  ),
  // logged models (MLflow 3)
  e(
    "POST",
    "logged-models",
    "Create a logged model",
    { experiment_id: "string", name: "string", source_run_id: "string", params: "tags", tags: "tags" },
    ["experiment_id"],
  ),
  e("GET", "logged-models/:model_id", "Get a logged model", { model_id: "string" }, ["model_id"]),
  e(
    "PATCH",
    "logged-models/:model_id",
    "Finalize a logged model",
    {
      model_id: "string",
      status: { enum: ["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"] },
    },
    ["model_id", "status"],
  ),
  e("DELETE", "logged-models/:model_id", "Delete a logged model", { model_id: "string" }, ["model_id"]),
  e("PATCH", "logged-models/:model_id/tags", "Set logged model tags", { model_id: "string", tags: "tags" }, [
    "model_id",
  ]),
  e(
    "DELETE",
    "logged-models/:model_id/tags/:key",
    "Delete a logged model tag",
    { model_id: "string", key: "string" },
    ["model_id", "key"],
  ),
  e("POST", "logged-models/search", "Search logged models", {
    experiment_ids: "strings",
    filter: "string",
    max_results: "integer",
  }),
  e("POST", "runs/outputs", "Record the models a run output", { run_id: "string", models: "outputs" }, [
    "run_id",
  ]),
  // model registry
  e(
    "POST",
    "registered-models/create",
    "Create a registered model",
    { name: "string", description: "string", tags: "tags" },
    ["name"],
  ),
  e("GET", "registered-models/get", "Get a registered model", { name: "string" }, ["name"]),
  e("GET", "registered-models/search", "Search registered models", { filter: "string", ...page }),
  e(
    "PATCH",
    "registered-models/update",
    "Update a registered model",
    { name: "string", description: "string" },
    ["name"],
  ),
  e("POST", "registered-models/rename", "Rename a registered model", { name: "string", new_name: "string" }, [
    "name",
    "new_name",
  ]),
  e("DELETE", "registered-models/delete", "Delete a registered model", { name: "string" }, ["name"]),
  e(
    "POST",
    "registered-models/set-tag",
    "Set a registered model tag",
    { name: "string", key: "string", value: "string" },
    ["name", "key"],
  ),
  e(
    "DELETE",
    "registered-models/delete-tag",
    "Delete a registered model tag",
    { name: "string", key: "string" },
    ["name", "key"],
  ),
  e(
    "POST",
    "registered-models/alias",
    "Set an alias",
    { name: "string", alias: "string", version: "string" },
    ["name", "alias", "version"],
  ),
  e("GET", "registered-models/alias", "A version by alias", { name: "string", alias: "string" }, [
    "name",
    "alias",
  ]),
  e("DELETE", "registered-models/alias", "Delete an alias", { name: "string", alias: "string" }, [
    "name",
    "alias",
  ]),
  e(
    "POST",
    "registered-models/get-latest-versions",
    "Latest versions per stage",
    { name: "string", stages: "strings" },
    ["name"],
  ),
  e(
    "POST",
    "model-versions/create",
    "Create a model version (source and run_id of this project)",
    {
      name: "string",
      source: "string",
      run_id: "string",
      model_id: "string",
      run_link: "string",
      description: "string",
      tags: "tags",
    },
    ["name", "source"],
  ),
  e("GET", "model-versions/get", "Get a model version", version, ["name", "version"]),
  e("GET", "model-versions/search", "Search model versions", { filter: "string", ...page }),
  e("PATCH", "model-versions/update", "Update a model version", { ...version, description: "string" }, [
    "name",
    "version",
  ]),
  e(
    "POST",
    "model-versions/transition-stage",
    "Transition a version's stage",
    {
      ...version,
      stage: { enum: ["None", "Staging", "Production", "Archived"] },
      archive_existing_versions: "boolean",
    },
    ["name", "version", "stage"],
  ),
  e("POST", "model-versions/set-tag", "Set a version tag", { ...version, key: "string", value: "string" }, [
    "name",
    "version",
    "key",
  ]),
  e("DELETE", "model-versions/delete-tag", "Delete a version tag", { ...version, key: "string" }, [
    "name",
    "version",
    "key",
  ]),
  e("DELETE", "model-versions/delete", "Delete a model version", version, ["name", "version"]),
  e("GET", "model-versions/get-download-uri", "Where a version's files are", version, ["name", "version"]),
];

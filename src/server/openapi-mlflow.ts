import { type FieldType, MLFLOW_ENDPOINTS } from "../tracking/catalog.js";
import { LIMITS } from "../tracking/validate.js";

/**
 * The MLflow routes Loom serves, as OpenAPI 3.1 paths and schemas (tracking/catalog.ts lists
 * them): under /api/2.0/mlflow for the default project and /mlflow/projects/{project}/api/2.0/mlflow
 * for any; GETs take their fields in the query, the rest as a JSON body. Errors are MLflow's
 * {"error_code", "message"}.
 */
export function mlflowOpenApi(): { paths: Record<string, unknown>; schemas: Record<string, unknown> } {
  const schemas: Record<string, unknown> = {
    MlflowError: {
      type: "object",
      required: ["error_code", "message"],
      properties: { error_code: { type: "string" }, message: { type: "string" } },
    },
    MlflowKeyValue: {
      type: "object",
      required: ["key"],
      properties: {
        key: { type: "string", minLength: 1, maxLength: LIMITS.keyLength },
        value: { type: "string" },
      },
    },
    MlflowMetric: {
      type: "object",
      required: ["key", "value", "timestamp"],
      properties: {
        key: { type: "string", minLength: 1, maxLength: LIMITS.keyLength },
        value: { type: "number" },
        timestamp: { type: "integer" },
        step: { type: "integer" },
      },
    },
    MlflowDatasetInput: {
      type: "object",
      required: ["dataset"],
      properties: {
        dataset: {
          type: "object",
          required: ["name", "digest"],
          properties: {
            name: { type: "string", minLength: 1 },
            digest: { type: "string" },
            source_type: { type: "string" },
            source: { type: "string" },
            schema: { type: "string" },
            profile: { type: "string" },
          },
        },
        tags: { type: "array", items: { $ref: "#/components/schemas/MlflowKeyValue" } },
      },
    },
    MlflowModelOutput: {
      type: "object",
      required: ["model_id"],
      properties: { model_id: { type: "string" }, step: { type: "integer" } },
    },
  };
  const errors = {
    "400": mlflowError(
      "invalid parameter (INVALID_PARAMETER_VALUE) or already exists (RESOURCE_ALREADY_EXISTS)",
    ),
    "401": mlflowError("missing or invalid token (UNAUTHENTICATED)"),
    "403": mlflowError("not this token's project, or a viewer writing (PERMISSION_DENIED)"),
    "404": mlflowError("no such project, experiment, run or model (RESOURCE_DOES_NOT_EXIST)"),
  };
  const paths: Record<string, Record<string, unknown>> = {};
  const project = { name: "project", in: "path", required: true, schema: { type: "string" } };
  for (const prefix of ["/api/2.0/mlflow", "/mlflow/projects/{project}/api/2.0/mlflow"]) {
    const projectParams = prefix.includes("{project}") ? [project] : [];
    for (const ep of MLFLOW_ENDPOINTS) {
      const path = `${prefix}/${ep.path.replace(/:([a-z_]+)/g, "{$1}")}`;
      const inPath = new Set([...ep.path.matchAll(/:([a-z_]+)/g)].map((m) => m[1]!));
      const required = new Set(ep.required ?? []);
      const fields = Object.entries(ep.fields).filter(([k]) => !inPath.has(k));
      const parameters = [
        ...projectParams,
        ...[...inPath].map((name) => ({ name, in: "path", required: true, schema: { type: "string" } })),
        ...(ep.method === "GET"
          ? fields.map(([name, t]) => ({
              name,
              in: "query",
              required: required.has(name),
              schema: fieldSchema(t),
              ...(t === "strings" ? { style: "form", explode: true } : {}),
            }))
          : []),
      ];
      const body =
        ep.method === "GET"
          ? {}
          : {
              requestBody: {
                required: true,
                content: {
                  "application/json": {
                    schema: {
                      type: "object",
                      properties: Object.fromEntries(fields.map(([k, t]) => [k, fieldSchema(t)])),
                      required: fields.map(([k]) => k).filter((k) => required.has(k)),
                    },
                  },
                },
              },
            };
      paths[path] ??= {};
      paths[path]![ep.method.toLowerCase()] = {
        summary: `MLflow: ${ep.summary}`,
        tags: ["MLflow"],
        parameters,
        ...body,
        responses: {
          "200": { description: "done", content: { "application/json": { schema: { type: "object" } } } },
          ...errors,
        },
      };
    }
  }
  artifactPaths(paths, project, errors);
  paths["/api/3.0/mlflow/server-info"] = {
    get: { summary: "MLflow: server info", tags: ["MLflow"], responses: { "200": { description: "info" } } },
  };
  return { paths, schemas };
}

/** The artifact proxy: PUT streams a file, GET reads one, GET ?path= lists a directory. */
function artifactPaths(
  paths: Record<string, Record<string, unknown>>,
  project: Record<string, unknown>,
  errors: Record<string, unknown>,
): void {
  const file = { name: "path", in: "path", required: true, schema: { type: "string" } };
  for (const prefix of ["/api/2.0/mlflow-artifacts", "/mlflow/projects/{project}/api/2.0/mlflow-artifacts"]) {
    const projectParams = prefix.includes("{project}") ? [project] : [];
    paths[`${prefix}/artifacts`] = {
      get: {
        summary: "MLflow artifacts: list a directory (EXPERIMENT_ID/…)",
        tags: ["MLflow"],
        parameters: [...projectParams, { name: "path", in: "query", schema: { type: "string" } }],
        responses: { "200": { description: "files" }, ...errors },
      },
    };
    paths[`${prefix}/artifacts/{path}`] = {
      parameters: [...projectParams, file],
      get: {
        summary: "MLflow artifacts: download a file (EXPERIMENT_ID/…)",
        tags: ["MLflow"],
        responses: { "200": { description: "the file" }, ...errors },
      },
      put: {
        summary: "MLflow artifacts: upload a file (EXPERIMENT_ID/…)",
        tags: ["MLflow"],
        requestBody: {
          required: true,
          content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } },
        },
        responses: { "200": { description: "stored" }, ...errors },
      },
    };
  }
}

function mlflowError(description: string) {
  return {
    description,
    content: { "application/json": { schema: { $ref: "#/components/schemas/MlflowError" } } },
  };
}

function fieldSchema(t: FieldType): Record<string, unknown> {
  const list = (ref: string, max?: number) => ({
    type: "array",
    items: { $ref: `#/components/schemas/${ref}` },
    ...(max ? { maxItems: max } : {}),
  });
  if (typeof t === "object") return { type: "string", enum: [...t.enum] };
  switch (t) {
    case "tags":
      return list("MlflowKeyValue", LIMITS.paramsTagsPerBatch);
    case "metrics":
      return list("MlflowMetric", LIMITS.metricsPerBatch);
    case "datasets":
      return list("MlflowDatasetInput", LIMITS.datasetsPerBatch);
    case "outputs":
      return list("MlflowModelOutput");
    case "strings":
      return { type: "array", items: { type: "string" } };
    default:
      return { type: t };
  }
}

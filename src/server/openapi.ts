import { z } from "zod";
import { KINDS, specJsonSchema, TRAININGJOB } from "../api/kinds.js";
import { API_VERSION } from "../api/meta.js";
import { mlflowOpenApi } from "./openapi-mlflow.js";

/**
 * OpenAPI 3.1 description of the REST API, generated from the same zod schemas that validate, and
 * of the MLflow routes (openapi-mlflow.ts).
 */
export function buildOpenApi(version: string): Record<string, unknown> {
  const schemas: Record<string, unknown> = {};
  const paths: Record<string, unknown> = {};
  const base = `/apis/${API_VERSION}`;
  const ref = (kind: string) => ({ $ref: `#/components/schemas/${kind}` });
  const json = (schema: unknown) => ({ content: { "application/json": { schema } } });
  const errors = {
    "401": { description: "missing or invalid token" },
    "404": { description: "not found" },
    "422": { description: "invalid manifest" },
  };
  for (const def of KINDS) {
    schemas[def.kind] = {
      type: "object",
      required: ["apiVersion", "kind", "metadata", "spec"],
      properties: {
        apiVersion: { const: API_VERSION },
        kind: { const: def.kind },
        metadata: { $ref: "#/components/schemas/ObjectMeta" },
        spec: specJsonSchema(def),
        status: z.toJSONSchema(def.status, { io: "output", unrepresentable: "any" }),
      },
    };
    const collection = def.namespaced ? `${base}/projects/{project}/${def.plural}` : `${base}/${def.plural}`;
    const item = `${collection}/{name}`;
    const params = [
      ...(def.namespaced
        ? [{ name: "project", in: "path", required: true, schema: { type: "string" } }]
        : []),
    ];
    const nameParam = { name: "name", in: "path", required: true, schema: { type: "string" } };
    paths[collection] = {
      parameters: params,
      get: {
        summary: `List (or ?watch=1) ${def.plural}`,
        parameters: [
          { name: "labelSelector", in: "query", schema: { type: "string" } },
          { name: "watch", in: "query", schema: { type: "string" } },
          { name: "resourceVersion", in: "query", schema: { type: "string" } },
        ],
        responses: {
          "200": { description: "list, or a stream of watch events (one JSON per line)" },
          ...errors,
        },
      },
      post: {
        summary: `Create a ${def.kind}`,
        requestBody: json(ref(def.kind)),
        responses: { "201": json(ref(def.kind)), ...errors },
      },
    };
    paths[item] = {
      parameters: [...params, nameParam],
      get: { summary: `Read a ${def.kind}`, responses: { "200": json(ref(def.kind)), ...errors } },
      put: {
        summary: `Replace a ${def.kind} (metadata.resourceVersion makes it conditional)`,
        requestBody: json(ref(def.kind)),
        responses: { "200": json(ref(def.kind)), "409": { description: "stale resourceVersion" }, ...errors },
      },
      patch: {
        summary: `Merge-patch a ${def.kind}`,
        requestBody: { content: { "application/merge-patch+json": { schema: { type: "object" } } } },
        responses: { "200": json(ref(def.kind)), ...errors },
      },
      delete: { summary: `Delete a ${def.kind}`, responses: { "200": json(ref(def.kind)), ...errors } },
    };
    if (def.kind === TRAININGJOB) {
      paths[`${item}/log`] = {
        parameters: [...params, nameParam],
        get: {
          summary: "A worker's output",
          parameters: [
            { name: "worker", in: "query", schema: { type: "integer" } },
            { name: "attempt", in: "query", schema: { type: "integer" } },
            { name: "follow", in: "query", schema: { type: "string" } },
          ],
          responses: { "200": { description: "text/plain" }, ...errors },
        },
      };
    }
  }
  schemas.ObjectMeta = {
    type: "object",
    required: ["name"],
    properties: {
      name: { type: "string" },
      project: { type: "string" },
      uid: { type: "string", readOnly: true },
      resourceVersion: { type: "string" },
      generation: { type: "integer", readOnly: true },
      creationTimestamp: { type: "string", readOnly: true },
      deletionTimestamp: { type: "string", readOnly: true },
      labels: { type: "object", additionalProperties: { type: "string" } },
      annotations: { type: "object", additionalProperties: { type: "string" } },
    },
  };
  // The MLflow-compatible tracking API served beside Loom's own.
  const mlflow = mlflowOpenApi();
  Object.assign(schemas, mlflow.schemas);
  Object.assign(paths, mlflow.paths);
  return {
    openapi: "3.1.0",
    info: { title: "Loom API", version },
    components: { schemas, securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    security: [{ bearer: [] }],
    paths: { "/healthz": { get: { security: [], responses: { "200": { description: "ok" } } } }, ...paths },
  };
}

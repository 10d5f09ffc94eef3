import type { FastifyInstance } from "fastify";
import { BadRequestError, NotFoundError } from "../../api/errors.js";
import { API_VERSION } from "../../api/meta.js";
import type { ModelView } from "../models.js";
import { BASE, dryRun, type Params, type Query } from "./params.js";

export interface ModelRoutesDeps {
  /** Absent where this server has no model registry (kubeapi): every model route answers 404 saying so. */
  models?: ModelView;
}

/**
 * Models: a view of the model registry, not stored objects (registered before the generic
 * routes; a static path segment wins over :plural).
 */
export function modelRoutes(app: FastifyInstance, deps: ModelRoutesDeps): void {
  const modelView = () => {
    if (!deps.models)
      throw new NotFoundError(
        "this server has no model registry: models are served by the server that serves tracking (loom up)",
      );
    return deps.models;
  };
  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/models`, async (req) => {
    if (req.query.watch === "1" || req.query.watch === "true")
      throw new BadRequestError("models cannot be watched; list them again instead");
    const items = await modelView().list(req.params.project!);
    return { apiVersion: API_VERSION, kind: "ModelList", metadata: { resourceVersion: "0" }, items };
  });
  app.get<{ Params: Params }>(`${BASE}/projects/:project/models/:name`, async (req) =>
    modelView().get(req.params.project!, req.params.name!),
  );
  app.post<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/models`, async (req, reply) => {
    const { model, created } = await modelView().apply(req.params.project!, req.body, dryRun(req.query));
    return reply.code(created ? 201 : 200).send(model);
  });
  app.put<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/models/:name`, async (req) => {
    const name = (req.body as { metadata?: { name?: unknown } })?.metadata?.name;
    if (name !== req.params.name)
      throw new BadRequestError(
        `metadata.name (${String(name)}) must match the name in the path (${req.params.name})`,
      );
    return (await modelView().apply(req.params.project!, req.body, dryRun(req.query))).model;
  });
  app.delete<{ Params: Params }>(`${BASE}/projects/:project/models/:name`, async (req) =>
    modelView().delete(req.params.project!, req.params.name!),
  );
}

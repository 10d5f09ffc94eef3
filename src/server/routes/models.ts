import type { FastifyInstance } from "fastify";
import { BadRequestError, NotFoundError } from "../../api/errors.js";
import { API_VERSION } from "../../api/meta.js";
import type { ModelView } from "../models.js";
import type { PromptView } from "../prompts.js";
import { route, rule } from "../routetable.js";
import { BASE, dryRun, type Params, type Query } from "./params.js";

export interface ModelRoutesDeps {
  /** Absent where this server has no model registry (kubeapi): every model route answers 404 saying so. */
  models?: ModelView;
  /** The registry's prompts (read-only here: MLflow's client writes them). */
  prompts?: PromptView;
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
  type G = { Params: Params; Querystring: Query };
  const list = `${BASE}/projects/:project/models`;
  const one = `${list}/:name`;
  route<G>(app, {
    method: "GET",
    url: list,
    rule: rule.project("models", "read"),
    handler: async (req) => {
      if (req.query.watch === "1" || req.query.watch === "true")
        throw new BadRequestError("models cannot be watched; list them again instead");
      const items = await modelView().list(req.params.project!);
      return { apiVersion: API_VERSION, kind: "ModelList", metadata: { resourceVersion: "0" }, items };
    },
  });
  route<G>(app, {
    method: "GET",
    url: one,
    rule: rule.project("models", "read"),
    handler: async (req) => modelView().get(req.params.project!, req.params.name!),
  });
  route<G>(app, {
    method: "POST",
    url: list,
    rule: rule.project("models", "write"),
    handler: async (req, reply) => {
      const { model, created } = await modelView().apply(req.params.project!, req.body, dryRun(req.query));
      return reply.code(created ? 201 : 200).send(model);
    },
  });
  route<G>(app, {
    method: "PUT",
    url: one,
    rule: rule.project("models", "write"),
    handler: async (req) => {
      const name = (req.body as { metadata?: { name?: unknown } })?.metadata?.name;
      if (name !== req.params.name)
        throw new BadRequestError(
          `metadata.name (${String(name)}) must match the name in the path (${req.params.name})`,
        );
      return (await modelView().apply(req.params.project!, req.body, dryRun(req.query))).model;
    },
  });
  route<G>(app, {
    method: "DELETE",
    url: one,
    rule: rule.project("models", "write"),
    handler: async (req) => modelView().delete(req.params.project!, req.params.name!),
  });
  promptRoutes(app, deps.prompts);
}

/** Prompts: `loom get prompts` and `loom describe prompt NAME`, a read-only view of the registry. */
function promptRoutes(app: FastifyInstance, prompts: PromptView | undefined): void {
  const view = () => {
    if (!prompts)
      throw new NotFoundError(
        "this server has no prompt registry: prompts are served by the server that serves tracking (loom up)",
      );
    return prompts;
  };
  type G = { Params: Params; Querystring: Query };
  const list = `${BASE}/projects/:project/prompts`;
  route<G>(app, {
    method: "GET",
    url: list,
    rule: rule.project("prompts", "read"),
    handler: async (req) => {
      if (req.query.watch === "1" || req.query.watch === "true")
        throw new BadRequestError("prompts cannot be watched; list them again instead");
      const items = await view().list(req.params.project!);
      return { apiVersion: API_VERSION, kind: "PromptList", metadata: { resourceVersion: "0" }, items };
    },
  });
  route<G>(app, {
    method: "GET",
    url: `${list}/:name`,
    rule: rule.project("prompts", "read"),
    handler: async (req) => view().get(req.params.project!, req.params.name!),
  });
  route<G>(app, {
    method: "DELETE",
    url: `${list}/:name`,
    rule: rule.project("prompts", "write"),
    handler: async (req) => view().delete(req.params.project!, req.params.name!),
  });
  // Written by the mlflow client only: a manifest would be a prompt without a template.
  for (const [method, url] of [
    ["POST", list],
    ["PUT", `${list}/:name`],
  ] as const)
    route<G>(app, {
      method,
      url,
      rule: rule.project("prompts", "write"),
      handler: async () => {
        throw new BadRequestError(
          "prompts are written with the mlflow client (mlflow.genai.register_prompt), not applied: Loom's API reads and deletes them",
        );
      },
    });
}

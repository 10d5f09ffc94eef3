import type { FastifyInstance } from "fastify";
import type { ResourceService } from "../resources.js";
import { BASE, dryRun, type Params, type Query } from "./params.js";
import type { ListOrWatch } from "./watch.js";

export interface ProjectRoutesDeps {
  resources: ResourceService;
  listOrWatch: ListOrWatch;
}

/**
 * Projects (cluster-scoped) and resources inside a project share the /projects prefix, as
 * namespaces and namespaced resources do in Kubernetes. Who may change a project: authz.ts.
 */
export function projectRoutes(app: FastifyInstance, deps: ProjectRoutesDeps): void {
  const { resources, listOrWatch } = deps;
  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/projects`, (req, reply) =>
    listOrWatch(req, reply, "projects", undefined),
  );
  app.post<{ Params: Params; Querystring: Query }>(`${BASE}/projects`, async (req, reply) => {
    const created = await resources.create(
      resources.kind("projects"),
      undefined,
      req.body,
      dryRun(req.query),
    );
    return reply.code(201).send(created);
  });
  app.get<{ Params: Params }>(`${BASE}/projects/:name`, async (req) =>
    resources.get(resources.kind("projects"), undefined, req.params.name!),
  );
  app.put<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:name`, async (req) =>
    resources.update(resources.kind("projects"), undefined, req.params.name!, req.body, dryRun(req.query)),
  );
  app.patch<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:name`, async (req) =>
    resources.patch(resources.kind("projects"), undefined, req.params.name!, req.body, dryRun(req.query)),
  );
  app.delete<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:name`, async (req) =>
    resources.delete(resources.kind("projects"), undefined, req.params.name!, req.query.resourceVersion),
  );
}

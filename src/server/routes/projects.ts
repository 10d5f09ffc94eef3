import type { FastifyInstance } from "fastify";
import type { ResourceService } from "../resources.js";
import { route, rule } from "../routetable.js";
import { BASE, dryRun, type Params, type Query } from "./params.js";
import type { ListOrWatch } from "./watch.js";

export interface ProjectRoutesDeps {
  resources: ResourceService;
  listOrWatch: ListOrWatch;
}

type G = { Params: Params; Querystring: Query };

/**
 * Projects (cluster-scoped) and resources inside a project share the /projects prefix, as
 * namespaces and namespaced resources do in Kubernetes. A member reads its project; creating,
 * changing (quota, members) or deleting one takes an unscoped admin; listing them all, a token
 * that reaches every project.
 */
export function projectRoutes(app: FastifyInstance, deps: ProjectRoutesDeps): void {
  const { resources, listOrWatch } = deps;
  const projects = () => resources.kind("projects");
  const itself = { projectParam: "name" };
  route<G>(app, {
    method: "GET",
    url: `${BASE}/projects`,
    rule: rule.global("projects"),
    handler: (req, reply) => listOrWatch(req, reply, "projects", undefined),
  });
  route<G>(app, {
    method: "POST",
    url: `${BASE}/projects`,
    rule: rule.admin("projects"),
    handler: async (req, reply) =>
      reply.code(201).send(await resources.create(projects(), undefined, req.body, dryRun(req.query))),
  });
  route<G>(app, {
    method: "GET",
    url: `${BASE}/projects/:name`,
    rule: rule.project("projects", "read", itself),
    handler: async (req) => resources.get(projects(), undefined, req.params.name!),
  });
  route<G>(app, {
    method: "PUT",
    url: `${BASE}/projects/:name`,
    rule: rule.admin("projects"),
    handler: async (req) =>
      resources.update(projects(), undefined, req.params.name!, req.body, dryRun(req.query)),
  });
  route<G>(app, {
    method: "PATCH",
    url: `${BASE}/projects/:name`,
    rule: rule.admin("projects"),
    handler: async (req) =>
      resources.patch(projects(), undefined, req.params.name!, req.body, dryRun(req.query)),
  });
  route<G>(app, {
    method: "DELETE",
    url: `${BASE}/projects/:name`,
    rule: rule.admin("projects"),
    handler: async (req) =>
      resources.delete(projects(), undefined, req.params.name!, req.query.resourceVersion),
  });
}

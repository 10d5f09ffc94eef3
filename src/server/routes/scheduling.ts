import type { FastifyInstance } from "fastify";
import { route, rule } from "../routetable.js";
import type { SchedulingView } from "../scheduling.js";
import { BASE } from "./params.js";

export interface SchedulingRoutesDeps {
  scheduling: SchedulingView;
}

/** Scheduling views: capacity and use per node and per project (loom get nodes, loom top). */
export function schedulingRoutes(app: FastifyInstance, deps: SchedulingRoutesDeps): void {
  const { scheduling } = deps;
  route(app, {
    method: "GET",
    url: `${BASE}/nodes`,
    rule: rule.cluster("nodes"),
    handler: async () => ({ kind: "NodeList", items: await scheduling.nodes() }),
  });
  // Every project's use: for tokens that reach every project.
  route(app, {
    method: "GET",
    url: `${BASE}/usage/projects`,
    rule: rule.global("project usage"),
    handler: async () => ({ kind: "ProjectUsageList", items: await scheduling.projects() }),
  });
}

import type { FastifyInstance } from "fastify";
import type { SchedulingView } from "../scheduling.js";
import { BASE } from "./params.js";

export interface SchedulingRoutesDeps {
  scheduling: SchedulingView;
}

/** Scheduling views: capacity and use per node and per project (loom get nodes, loom top). */
export function schedulingRoutes(app: FastifyInstance, deps: SchedulingRoutesDeps): void {
  const { scheduling } = deps;
  app.get(`${BASE}/nodes`, async () => ({ kind: "NodeList", items: await scheduling.nodes() }));
  app.get(`${BASE}/usage/projects`, async () => ({
    kind: "ProjectUsageList",
    items: await scheduling.projects(),
  }));
}

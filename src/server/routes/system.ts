import type { FastifyInstance } from "fastify";
import { Counter, Histogram, type Registry } from "prom-client";
import { API_VERSION } from "../../api/meta.js";
import { buildOpenApi } from "../openapi.js";
import { route, rule } from "../routetable.js";

export interface SystemRoutesDeps {
  metrics: Registry;
  version: string;
}

/** Counts every request and its latency, by method and route, into the metrics registry. */
export function countRequests(app: FastifyInstance, metrics: Registry): void {
  const requests = new Counter({
    name: "loom_http_requests_total",
    help: "HTTP requests by method, route and status code.",
    labelNames: ["method", "route", "code"],
    registers: [metrics],
  });
  const latency = new Histogram({
    name: "loom_http_request_duration_seconds",
    help: "HTTP request latency by method and route.",
    labelNames: ["method", "route"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
    registers: [metrics],
  });
  app.addHook("onResponse", async (req, reply) => {
    const route = req.routeOptions.url ?? "unmatched";
    requests.inc({ method: req.method, route, code: reply.statusCode });
    latency.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });
}

/**
 * Health (no token), Prometheus metrics (an unscoped admin's: they name every project's objects
 * and services), the OpenAPI document and the version.
 */
export function systemRoutes(app: FastifyInstance, deps: SystemRoutesDeps): void {
  route(app, {
    method: "GET",
    url: "/healthz",
    rule: rule.public("health"),
    handler: async () => ({ status: "ok" }),
  });
  route(app, {
    method: "GET",
    url: "/metrics",
    rule: rule.admin("metrics", "read"),
    handler: async (_req, reply) => reply.type(deps.metrics.contentType).send(await deps.metrics.metrics()),
  });
  route(app, {
    method: "GET",
    url: "/openapi.json",
    rule: rule.cluster("openapi"),
    handler: async () => buildOpenApi(deps.version),
  });
  route(app, {
    method: "GET",
    url: "/version",
    rule: rule.cluster("version"),
    handler: async () => ({ version: deps.version, apiVersion: API_VERSION }),
  });
}

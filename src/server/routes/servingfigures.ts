import type { FastifyInstance } from "fastify";
import type { MetricValue, Registry } from "prom-client";
import { route, rule } from "../routetable.js";
import { BASE, type Params } from "./params.js";

/** One service's gateway figures, cumulative since the gateway started (a reader takes rates). */
export interface ServingFigures {
  /** When they were read (ms since the epoch): two readings give a rate. */
  time: number;
  /** Requests answered, in all and by HTTP status. */
  requests: number;
  byCode: Record<string, number>;
  /** Request duration (arrival to end of response), seconds: sum and count. */
  durationSum: number;
  durationCount: number;
  /** Upstream time to first byte (≈ time to first token when streaming), seconds. */
  ttfbSum: number;
  ttfbCount: number;
  /** Tokens reported in usage blocks. */
  promptTokens: number;
  completionTokens: number;
  /** Requests being proxied right now. */
  inFlight: number;
}

async function values(registry: Registry, name: string): Promise<MetricValue<string>[]> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return [];
  return (await metric.get()).values as MetricValue<string>[];
}

/**
 * A service's figures from the gateway's own metrics (the series /metrics exposes as Prometheus
 * text, which only an admin may read): the same numbers, one project's one service, as JSON.
 */
export async function servingFigures(
  registry: Registry,
  project: string,
  service: string,
): Promise<ServingFigures> {
  const mine = (v: MetricValue<string>) => v.labels.project === project && v.labels.service === service;
  const f: ServingFigures = {
    time: Date.now(),
    requests: 0,
    byCode: {},
    durationSum: 0,
    durationCount: 0,
    ttfbSum: 0,
    ttfbCount: 0,
    promptTokens: 0,
    completionTokens: 0,
    inFlight: 0,
  };
  for (const v of await values(registry, "loom_gateway_requests_total")) {
    if (!mine(v)) continue;
    f.requests += v.value;
    const code = String(v.labels.code ?? "");
    f.byCode[code] = (f.byCode[code] ?? 0) + v.value;
  }
  for (const [name, sum, count] of [
    ["loom_gateway_request_duration_seconds", "durationSum", "durationCount"],
    ["loom_gateway_upstream_first_byte_seconds", "ttfbSum", "ttfbCount"],
  ] as const) {
    for (const v of await values(registry, name)) {
      if (!mine(v)) continue;
      const kind = (v as { metricName?: string }).metricName ?? "";
      if (kind.endsWith("_sum")) f[sum] += v.value;
      else if (kind.endsWith("_count")) f[count] += v.value;
    }
  }
  for (const v of await values(registry, "loom_gateway_tokens_total")) {
    if (!mine(v)) continue;
    if (v.labels.kind === "prompt") f.promptTokens += v.value;
    else if (v.labels.kind === "completion") f.completionTokens += v.value;
  }
  for (const v of await values(registry, "loom_gateway_in_flight_requests"))
    if (mine(v)) f.inFlight += v.value;
  return f;
}

/**
 * GET …/projects/P/inferenceservices/S/figures: what the console's serving charts read. A reader
 * of the project's services may read their figures; /metrics (every project's) stays admin-only.
 */
export function servingFiguresRoutes(app: FastifyInstance, deps: { metrics: Registry }): void {
  route<{ Params: Params }>(app, {
    method: "GET",
    url: `${BASE}/projects/:project/inferenceservices/:name/figures`,
    rule: rule.project("inferenceservices", "read"),
    handler: async (req) => servingFigures(deps.metrics, req.params.project!, req.params.name!),
  });
}

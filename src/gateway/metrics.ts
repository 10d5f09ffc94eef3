import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { SeriesCounter, SeriesGauge, SeriesHistogram } from "./series.js";

/**
 * Prometheus metrics of the inference gateway. Those recorded on every request are series
 * metrics (series.ts: no label hashing per call); the rest are prom-client's own.
 */
export interface GatewayMetrics {
  requests: SeriesCounter;
  duration: SeriesHistogram;
  /** Time to the upstream's first response byte: for streaming, close to time-to-first-token. */
  ttfb: SeriesHistogram;
  inFlight: SeriesGauge;
  retries: Counter<"project" | "service" | "reason">;
  ejections: Counter<"project" | "service" | "revision">;
  activatorWait: Histogram<"project" | "service" | "result">;
  activatorDepth: Gauge<"project" | "service" | "revision">;
  replicas: Gauge<"project" | "service" | "revision" | "state">;
  panic: Gauge<"project" | "service" | "revision">;
  tokens: SeriesCounter;
}

/**
 * From 0.5 ms (the gateway's own overhead on a refused request) to 10 min (a long non-streamed
 * generation), roughly ×2.5 apart.
 */
export const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
];

export function createGatewayMetrics(registry: Registry): GatewayMetrics {
  const rev = ["project", "service", "revision"] as const;
  return {
    requests: new SeriesCounter(registry, {
      name: "loom_gateway_requests_total",
      help: "Requests the gateway answered, by service, revision and HTTP status (499: the client left).",
      labelNames: [...rev, "code"],
    }),
    duration: new SeriesHistogram(registry, {
      name: "loom_gateway_request_duration_seconds",
      help: "Time from a request's arrival to the end of its response, including time held for a cold start.",
      labelNames: rev,
      buckets: LATENCY_BUCKETS,
    }),
    ttfb: new SeriesHistogram(registry, {
      name: "loom_gateway_upstream_first_byte_seconds",
      help: "Time from sending a request upstream to its first response byte (≈ time to first token when streaming).",
      labelNames: rev,
      buckets: LATENCY_BUCKETS,
    }),
    inFlight: new SeriesGauge(registry, {
      name: "loom_gateway_in_flight_requests",
      help: "Requests being proxied right now (not counting those held by the activator).",
      labelNames: rev,
    }),
    retries: new Counter({
      name: "loom_gateway_retries_total",
      help: "Requests sent again to another replica after a connection failure.",
      labelNames: ["project", "service", "reason"],
      registers: [registry],
    }),
    ejections: new Counter({
      name: "loom_gateway_replica_ejections_total",
      help: "Replicas taken out of rotation after consecutive failures.",
      labelNames: rev,
      registers: [registry],
    }),
    activatorWait: new Histogram({
      name: "loom_gateway_activator_wait_seconds",
      help: "Time a request was held waiting for a ready replica, by result (released, full, timeout, gone).",
      labelNames: ["project", "service", "result"],
      buckets: [0.01, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600],
      registers: [registry],
    }),
    activatorDepth: new Gauge({
      name: "loom_gateway_activator_queue_depth",
      help: "Requests held waiting for a revision's first ready replica.",
      labelNames: rev,
      registers: [registry],
    }),
    replicas: new Gauge({
      name: "loom_gateway_replicas",
      help: "Replicas of a revision: desired (the autoscaler's last decision) and ready (seen by the gateway).",
      labelNames: [...rev, "state"],
      registers: [registry],
    }),
    panic: new Gauge({
      name: "loom_gateway_autoscaler_panic",
      help: "1 while a revision's autoscaler is in panic mode (a burst; it will not scale down).",
      labelNames: rev,
      registers: [registry],
    }),
    tokens: new SeriesCounter(registry, {
      name: "loom_gateway_tokens_total",
      help: "Tokens reported in OpenAI usage blocks, by kind (prompt, completion).",
      labelNames: ["project", "service", "kind"],
    }),
  };
}

/**
 * Prometheus text with only `project`'s series: a sample with a `project` label of another
 * project goes (its services' names and traffic are that project's business); samples without a
 * project label (the process's own) and the HELP/TYPE lines stay.
 */
export function onlyProject(text: string, project: string): string {
  const own = `project="${project.replace(/["\\\n]/g, "")}"`;
  return text
    .split("\n")
    .filter((line) => line.startsWith("#") || !/[{,]project="/.test(line) || line.includes(own))
    .join("\n");
}

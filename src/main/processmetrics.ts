import { collectDefaultMetrics, Registry } from "prom-client";

/**
 * How often the event-loop delay monitor samples (ms). prom-client's default, 10 ms, is a
 * timer that wakes the event loop 100 times a second while Loom is otherwise idle; each wake
 * costs the gateway's thread CPU and cache between requests. 100 ms still catches every lag a
 * scrape interval would show (the monitor records the lag of each sample).
 */
export const EVENT_LOOP_MONITORING_PRECISION_MS = 100;

/** Node's process metrics (CPU, memory, GC, event-loop lag) under the `loom_process_` prefix. */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({
    register: registry,
    prefix: "loom_process_",
    eventLoopMonitoringPrecision: EVENT_LOOP_MONITORING_PRECISION_MS,
  });
}

/** A metrics registry with the process's own metrics in it: where every root's metrics start. */
export function processMetricsRegistry(): Registry {
  const metrics = new Registry();
  collectProcessMetrics(metrics);
  return metrics;
}

import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** Prometheus metrics every control loop exports. */
export interface ControllerMetrics {
  reconcileSeconds: Histogram<"controller" | "result">;
  reconcileErrors: Counter<"controller">;
  /** Reconciles of keys the periodic resync queued (part of reconcileSeconds' count). */
  resyncs: Counter<"controller">;
  queueDepth: Gauge<"controller">;
  lastEventTimestamp: Gauge<"kind">;
}

export function createControllerMetrics(registry: Registry): ControllerMetrics {
  return {
    reconcileSeconds: new Histogram({
      name: "loom_reconcile_duration_seconds",
      help: "Time spent in one reconcile, by controller and result.",
      labelNames: ["controller", "result"],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [registry],
    }),
    reconcileErrors: new Counter({
      name: "loom_reconcile_errors_total",
      help: "Reconciles that failed and were retried with backoff.",
      labelNames: ["controller"],
      registers: [registry],
    }),
    resyncs: new Counter({
      name: "loom_reconcile_resyncs_total",
      help: "Reconciles of keys the periodic resync queued, not a change (counted in loom_reconcile_duration_seconds too).",
      labelNames: ["controller"],
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: "loom_workqueue_depth",
      help: "Keys waiting in a controller's work queue.",
      labelNames: ["controller"],
      registers: [registry],
    }),
    lastEventTimestamp: lastEventGauge(registry),
  };
}

const LAST_EVENT = "loom_informer_last_event_timestamp_seconds";

/** One gauge per registry, shared by the controllers' informers and the runtime's pod and node caches. */
export function lastEventGauge(registry: Registry): Gauge<"kind"> {
  return (
    (registry.getSingleMetric(LAST_EVENT) as Gauge<"kind"> | undefined) ??
    new Gauge({
      name: LAST_EVENT,
      help: "Unix time of the last list or watch event an informer saw; now minus this is the last-event age.",
      labelNames: ["kind"],
      registers: [registry],
    })
  );
}

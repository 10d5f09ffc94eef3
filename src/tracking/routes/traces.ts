import type { TrackingStore } from "../store.js";
import { removeTraceSpans } from "../trace-retention.js";
import type { TraceStore } from "../traces.js";
import { type AddRoute, list, need, num, str } from "./http.js";

export interface TraceRoutesDeps {
  store: TrackingStore;
  traces: TraceStore;
  artifactsDir: string;
}

/**
 * MLflow 3's trace endpoints the official client calls: under /api/3.0 (start, get, search), and
 * under /api/2.0 (tags, delete), which the client still uses for those.
 */
export function traceRoutesV3(route: AddRoute, deps: TraceRoutesDeps): void {
  const { traces } = deps;
  route("POST", "traces", async (p, f) => {
    const info = (
      (f.trace ?? {}) as {
        trace_info?: { trace_location?: { mlflow_experiment?: { experiment_id?: unknown } } };
      }
    ).trace_info;
    // The experiment must be this project's (404 otherwise, as for any other project's object).
    await deps.store.getExperiment(p, String(info?.trace_location?.mlflow_experiment?.experiment_id ?? ""));
    return { trace: { trace_info: await traces.start(p, info) } };
  });
  route("POST", "traces/search", async (p, f) => {
    const locations = list<{ mlflow_experiment?: { experiment_id?: unknown } }>(f, "locations");
    return traces.search(p, {
      experimentIds: locations.map((l) => String(l?.mlflow_experiment?.experiment_id ?? "")),
      filter: str(f, "filter"),
      maxResults: num(f, "max_results"),
      orderBy: list<string>(f, "order_by").map(String),
      pageToken: str(f, "page_token"),
    });
  });
  route("GET", "traces/:trace_id", async (p, f) => ({
    trace: { trace_info: await traces.get(p, need(f, "trace_id")) },
  }));
  tagRoutes(route, deps);
}

/** The /api/2.0 trace endpoints: tags, and deleting traces with their spans. */
export function traceRoutesV2(route: AddRoute, deps: TraceRoutesDeps): void {
  tagRoutes(route, deps);
  route("POST", "traces/delete-traces", async (p, f) => {
    const experimentId = need(f, "experiment_id");
    await deps.store.getExperiment(p, experimentId);
    const ids = list<string>(f, "request_ids").map(String);
    const gone = await deps.traces.delete(p, {
      experimentId,
      ...(ids.length ? { traceIds: ids } : {}),
      ...(num(f, "max_timestamp_millis") !== undefined
        ? { maxTimestampMs: num(f, "max_timestamp_millis") }
        : {}),
      ...(num(f, "max_traces") !== undefined ? { maxTraces: num(f, "max_traces") } : {}),
    });
    await removeTraceSpans(
      deps.artifactsDir,
      gone.map((g) => ({ ...g, project: p })),
    );
    return { traces_deleted: gone.length };
  });
}

function tagRoutes(route: AddRoute, deps: TraceRoutesDeps): void {
  route("PATCH", "traces/:trace_id/tags", async (p, f) => {
    await deps.traces.setTag(p, need(f, "trace_id"), need(f, "key"), str(f, "value") ?? "");
    return {};
  });
  route("DELETE", "traces/:trace_id/tags", async (p, f) => {
    await deps.traces.deleteTag(p, need(f, "trace_id"), need(f, "key"));
    return {};
  });
}

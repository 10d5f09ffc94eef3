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
  assessmentRoutes(route, traces);
}

/** Feedback and expectations on traces (mlflow.log_feedback, genai.evaluate's scorers). */
function assessmentRoutes(route: AddRoute, traces: TraceStore): void {
  route("POST", "traces/:trace_id/assessments", async (p, f) => ({
    assessment: await traces.createAssessment(p, need(f, "trace_id"), f.assessment),
  }));
  route("GET", "traces/:trace_id/assessments/:assessment_id", async (p, f) => ({
    assessment: await traces.getAssessment(p, need(f, "trace_id"), need(f, "assessment_id")),
  }));
  route("PATCH", "traces/:trace_id/assessments/:assessment_id", async (p, f) => {
    // A FieldMask in JSON is "a,b"; some clients send {paths: [...]}.
    const m = f.update_mask as string | { paths?: string[] } | undefined;
    const mask = typeof m === "string" ? m.split(",").filter(Boolean) : m?.paths;
    return {
      assessment: await traces.updateAssessment(
        p,
        need(f, "trace_id"),
        need(f, "assessment_id"),
        f.assessment,
        mask,
      ),
    };
  });
  route("DELETE", "traces/:trace_id/assessments/:assessment_id", async (p, f) => {
    await traces.deleteAssessment(p, need(f, "trace_id"), need(f, "assessment_id"));
    return {};
  });
}

/** The /api/2.0 trace endpoints: tags, and deleting traces with their spans. */
export function traceRoutesV2(route: AddRoute, deps: TraceRoutesDeps): void {
  tagRoutes(route, deps);
  route("POST", "traces/link-to-run", async (p, f) => {
    const runId = need(f, "run_id");
    // The run must be this project's, as any object named in a request.
    await deps.store.getRun(p, runId);
    await deps.traces.linkToRun(p, list<string>(f, "trace_ids").map(String), runId);
    return {};
  });
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

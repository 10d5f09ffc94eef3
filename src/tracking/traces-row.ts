import { invalidParameter } from "./errors.js";
import type { TracesSchema } from "./schema.js";

/**
 * A trace's record as stored (tr_traces), and the TraceInfo it is read back as: shared by the
 * store (traces.ts) and the gateway's traces (traces-gateway.ts), which builds such records from
 * raw exchanges when they are first read.
 */

/** TraceInfo as MLflow's proto3 JSON writes it (TraceInfoV3). */
export interface TraceInfo {
  trace_id: string;
  client_request_id?: string;
  trace_location: { type: "MLFLOW_EXPERIMENT"; mlflow_experiment: { experiment_id: string } };
  request_preview?: string;
  response_preview?: string;
  /** RFC 3339, as protobuf's Timestamp in JSON. */
  request_time: string;
  /** "1.5s", as protobuf's Duration in JSON. */
  execution_duration?: string;
  state: string;
  trace_metadata: Record<string, string>;
  tags: Record<string, string>;
  /** Feedback and expectations on the trace (mlflow.log_feedback, genai.evaluate's scorers). */
  assessments?: Assessment[];
}

/** An Assessment as MLflow's proto3 JSON writes it; kept as sent, with its id and times. */
export type Assessment = Record<string, unknown> & { assessment_id: string };

/** Where the client uploads a trace's spans, and says it put them there. */
export const ARTIFACT_LOCATION_TAG = "mlflow.artifactLocation";
const SPANS_LOCATION_TAG = "mlflow.trace.spansLocation";
const STATES = new Set(["STATE_UNSPECIFIED", "OK", "ERROR", "IN_PROGRESS"]);

/** A trace's record without its spans (read only by `spans`). */
export type Row = Omit<TracesSchema["tr_traces"], "spans">;

/** A trace's spans under the artifact store: DIR/PROJECT/EXP/traces/ID (the sweep removes it). */
export function traceArtifactPath(experimentId: string | number, traceId: string): string {
  return `${experimentId}/traces/${traceId}`;
}

/** The columns of a trace's record besides its spans (what a search reads). */
export const ROW_COLUMNS = [
  "project",
  "trace_id",
  "experiment_id",
  "client_request_id",
  "request_time",
  "execution_ms",
  "state",
  "request_preview",
  "response_preview",
  "body",
] as const satisfies readonly (keyof Row)[];

/** What a record's `body` column holds, as JSON. */
export interface Body {
  metadata: Record<string, string>;
  tags: Record<string, string>;
  assessments?: Assessment[];
  /** Runs linked to the trace besides its source run (LinkTracesToRun). */
  runs?: string[];
}

/**
 * A trace's record as stored, from its TraceInfo: checked (experiment, state, maps) and with the
 * artifact location its spans are read from. Also run when the gateway's raw batches are settled.
 */
export function traceRow(project: string, raw: unknown, now: () => number = Date.now): Row {
  const info = (raw ?? {}) as Partial<TraceInfo> & {
    trace_location?: { mlflow_experiment?: { experiment_id?: unknown } };
  };
  const traceId = traceIdOf(info.trace_id);
  const experimentId = String(info.trace_location?.mlflow_experiment?.experiment_id ?? "");
  if (!/^\d+$/.test(experimentId))
    throw invalidParameter(
      "'trace.trace_info.trace_location.mlflow_experiment.experiment_id' must name an experiment",
    );
  const state = info.state ?? "STATE_UNSPECIFIED";
  if (!STATES.has(state)) throw invalidParameter(`Invalid trace state '${state}'`);
  const tags = {
    ...stringMap(info.tags, "tags"),
    [ARTIFACT_LOCATION_TAG]: `mlflow-artifacts:/${traceArtifactPath(experimentId, traceId)}/artifacts`,
    [SPANS_LOCATION_TAG]: "ARTIFACT_REPO",
  };
  return {
    project,
    trace_id: traceId,
    experiment_id: Number(experimentId),
    client_request_id: info.client_request_id ?? null,
    request_time: info.request_time ? timestampMs(info.request_time) : now(),
    execution_ms: info.execution_duration ? durationMs(info.execution_duration) : null,
    state,
    request_preview: info.request_preview ?? null,
    response_preview: info.response_preview ?? null,
    body: JSON.stringify({ metadata: stringMap(info.trace_metadata, "trace_metadata"), tags }),
  };
}

function traceIdOf(v: unknown): string {
  if (typeof v !== "string" || !/^[A-Za-z0-9._:-]{1,128}$/.test(v))
    throw invalidParameter(
      `'trace.trace_info.trace_id' must be 1-128 letters, digits, '.', '_', ':' or '-', got ${JSON.stringify(v)}`,
    );
  return v;
}

function stringMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v))
    throw invalidParameter(`'${field}' must be a map of strings`);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) out[k] = typeof x === "string" ? x : JSON.stringify(x);
  return out;
}

/** A protobuf Timestamp in JSON ("2026-01-02T03:04:05.123456Z") to ms. */
export function timestampMs(v: unknown): number {
  // Date.parse takes at most ms: the finer digits are cut.
  const text = typeof v === "string" ? v.replace(/(\.\d{3})\d+/, "$1") : "";
  const ms = Date.parse(text);
  if (!Number.isFinite(ms)) throw invalidParameter(`Invalid timestamp ${JSON.stringify(v)}`);
  return ms;
}

/** A protobuf Duration in JSON ("1.5s") to ms. */
export function durationMs(v: unknown): number {
  const m = typeof v === "string" ? /^(-?\d+(?:\.\d+)?)s$/.exec(v) : null;
  if (!m) throw invalidParameter(`Invalid duration ${JSON.stringify(v)}`);
  return Math.round(Number(m[1]) * 1000);
}

export function toInfo(r: Row): TraceInfo {
  const body = JSON.parse(r.body) as Body;
  return {
    trace_id: r.trace_id,
    ...(r.client_request_id ? { client_request_id: r.client_request_id } : {}),
    trace_location: {
      type: "MLFLOW_EXPERIMENT",
      mlflow_experiment: { experiment_id: String(r.experiment_id) },
    },
    ...(r.request_preview !== null ? { request_preview: r.request_preview } : {}),
    ...(r.response_preview !== null ? { response_preview: r.response_preview } : {}),
    request_time: new Date(r.request_time).toISOString(),
    ...(r.execution_ms !== null ? { execution_duration: `${r.execution_ms / 1000}s` } : {}),
    state: r.state,
    trace_metadata: body.metadata,
    tags: body.tags,
    ...(body.assessments?.length ? { assessments: body.assessments } : {}),
  };
}

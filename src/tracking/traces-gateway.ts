import { randomBytes } from "node:crypto";
import type { TracesSchema } from "./schema.js";
import { type TraceInfo, traceRow } from "./traces-row.js";

/**
 * Gateway-recorded traces (spec.tracing on an InferenceService), from the raw bytes the gateway
 * kept to MLflow 3 trace records. This runs off the request path: a batch is stored packed (the
 * bodies in one buffer, the rest in small objects: one row, TraceStore.writeBatch) and becomes
 * records when traces are next read (TraceStore.settle), never on a request's way. Batches from a
 * `loom gateway` node cross the network packed the same way.
 */

/** A traced request as the gateway saw it (gateway/contract.ts TraceCapture, by shape). */
export interface ExchangeCapture {
  request: Buffer;
  /** The response body (SSE for a stream), cut at the capture limit. */
  response: Buffer;
  startedMs: number;
  endedMs: number;
  /** Whether the answer ended cleanly. */
  complete: boolean;
}

/** What the integrator adds to the gateway's capture: who asked and what served it. */
export interface TracedRequest {
  project: string;
  service: string;
  revision: string;
  /** The revision's model reference (models:/NAME@alias or /N): the model version it runs. */
  model?: string;
  /** The API key's (or token's) name. */
  caller: string;
  status: number;
  usage?: { promptTokens: number; completionTokens: number };
  capture: ExchangeCapture;
}

/** One request of a packed batch: its bodies are [offset, length] in the batch's data. */
export interface PackedItem extends Omit<TracedRequest, "capture"> {
  startedMs: number;
  endedMs: number;
  complete: boolean;
  request: [number, number];
  response: [number, number];
  /** The experiment it goes to (set by the API before the writer gets it). */
  experimentId?: string;
}

export interface PackedBatch {
  items: PackedItem[];
  data: Uint8Array;
}

const PREVIEW = 1000;

/** Requests as one batch: their bodies copied into one buffer of its own (transferable). */
export function packTraces(batch: TracedRequest[]): PackedBatch {
  let size = 0;
  for (const r of batch) size += r.capture.request.length + r.capture.response.length;
  const data = new Uint8Array(size);
  let at = 0;
  const put = (b: Uint8Array): [number, number] => {
    data.set(b, at);
    at += b.length;
    return [at - b.length, b.length];
  };
  // Plain literals, no spreads: this runs on the gateway's thread, once per traced request.
  const items = batch.map((r): PackedItem => {
    const c = r.capture;
    const item: PackedItem = {
      project: r.project,
      service: r.service,
      revision: r.revision,
      caller: r.caller,
      status: r.status,
      startedMs: c.startedMs,
      endedMs: c.endedMs,
      complete: c.complete,
      request: put(c.request),
      response: put(c.response),
    };
    if (r.model !== undefined) item.model = r.model;
    if (r.usage !== undefined) item.usage = r.usage;
    return item;
  });
  return { items, data };
}

/** The batch's requests again, their bodies views of its data; an item out of its bounds throws. */
export function unpackTraces(b: PackedBatch): TracedRequest[] {
  const buf = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  const view = ([off, len]: [number, number]) => {
    if (!(Number.isInteger(off) && Number.isInteger(len) && off >= 0 && len >= 0 && off + len <= buf.length))
      throw new Error(`a body [${off}, ${len}] outside the batch's ${buf.length} bytes`);
    return buf.subarray(off, off + len);
  };
  return b.items.map(({ request, response, startedMs, endedMs, complete, experimentId: _, ...r }) => ({
    ...r,
    capture: { request: view(request), response: view(response), startedMs, endedMs, complete },
  }));
}

/** The batch's trace records (with their spans), by project; an item that fails is skipped and counted. */
export function gatewayRows(b: PackedBatch): {
  rows: Map<string, TracesSchema["tr_traces"][]>;
  failed: number;
} {
  const rows = new Map<string, TracesSchema["tr_traces"][]>();
  let failed = 0;
  let requests: TracedRequest[];
  try {
    requests = unpackTraces(b);
  } catch {
    return { rows, failed: Array.isArray(b.items) ? b.items.length : 1 };
  }
  for (let i = 0; i < requests.length; i++) {
    const r = requests[i]!;
    try {
      const { info, spans } = buildTrace(r, b.items[i]!.experimentId ?? "");
      const list = rows.get(r.project) ?? [];
      list.push({ ...traceRow(r.project, info), spans });
      rows.set(r.project, list);
    } catch {
      failed++;
    }
  }
  return { rows, failed };
}

/** Random bytes as hex, drawn from a pool refilled 4 KiB at a time (one system call per ~170 traces). */
let pool = Buffer.alloc(0);
let poolAt = 0;
function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  poolAt += bytes;
  return pool.toString("hex", poolAt - bytes, poolAt);
}

/** The request's JSON (or undefined: not JSON), and what the answer said, streamed or not. */
export function readExchange(c: ExchangeCapture): {
  request: Record<string, unknown> | undefined;
  text: string;
  response: unknown;
  usage?: { promptTokens: number; completionTokens: number };
  streamed: boolean;
} {
  let request: Record<string, unknown> | undefined;
  try {
    const v: unknown = JSON.parse(c.request.toString("utf8"));
    if (v && typeof v === "object" && !Array.isArray(v)) request = v as Record<string, unknown>;
  } catch {}
  const raw = c.response.toString("utf8");
  if (/^\s*(data:|event:|:)/.test(raw)) return { request, ...assembleStream(raw), streamed: true };
  let response: unknown = raw;
  try {
    response = JSON.parse(raw);
  } catch {}
  return { request, text: completionText(response), response, usage: usageOf(response), streamed: false };
}

/** An SSE stream of chat (or completion) chunks as one answer: its text, its usage, or chunks counted. */
function assembleStream(raw: string): {
  text: string;
  response: unknown;
  usage?: { promptTokens: number; completionTokens: number };
} {
  let text = "";
  let chunks = 0;
  let usage: { promptTokens: number; completionTokens: number } | undefined;
  let model: unknown;
  let finish: unknown;
  for (const line of raw.split("\n")) {
    if (!line.startsWith("data:")) continue;
    const data = line.slice(5).trim();
    if (!data || data === "[DONE]") continue;
    try {
      const chunk = JSON.parse(data) as Record<string, unknown>;
      model ??= chunk.model;
      usage = usageOf(chunk) ?? usage;
      const choice = (chunk.choices as Record<string, unknown>[] | undefined)?.[0];
      if (!choice) continue;
      const delta = choice.delta as Record<string, unknown> | undefined;
      const piece = typeof delta?.content === "string" ? delta.content : choice.text;
      if (typeof piece === "string" && piece) {
        text += piece;
        chunks++;
      }
      finish = choice.finish_reason ?? finish;
    } catch {}
  }
  const response = {
    ...(model !== undefined ? { model } : {}),
    choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: finish ?? null }],
  };
  // Without stream_options.include_usage the stream says nothing of tokens: each content chunk is a token.
  return { text, response, usage: usage ?? { promptTokens: 0, completionTokens: chunks } };
}

function usageOf(v: unknown): { promptTokens: number; completionTokens: number } | undefined {
  const u = (v as { usage?: Record<string, unknown> } | undefined)?.usage;
  if (!u || typeof u !== "object") return undefined;
  return { promptTokens: Number(u.prompt_tokens ?? 0), completionTokens: Number(u.completion_tokens ?? 0) };
}

function completionText(v: unknown): string {
  const choice = (v as { choices?: Record<string, unknown>[] } | undefined)?.choices?.[0];
  const message = choice?.message as { content?: unknown } | undefined;
  if (typeof message?.content === "string") return message.content;
  if (typeof choice?.text === "string") return choice.text;
  return typeof v === "string" ? v : "";
}

/** One request as an MLflow 3 trace: its TraceInfo and its one span as traces.json. */
export function buildTrace(r: TracedRequest, experimentId: string): { info: TraceInfo; spans: string } {
  const c = r.capture;
  const x = readExchange(c);
  const usage = r.usage ?? x.usage;
  const tokens = usage && {
    input_tokens: usage.promptTokens,
    output_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
  };
  const hex = randomHex(16);
  const traceId = `tr-${hex}`;
  const ok = c.complete && r.status < 400;
  const name = x.request && "messages" in x.request ? "chat.completions" : "completions";
  const inputs = x.request ?? { body: c.request.toString("utf8").slice(0, 4096) };
  const inputsJson = JSON.stringify(inputs);
  const attributes: Record<string, string> = {
    "mlflow.traceRequestId": JSON.stringify(traceId),
    "mlflow.spanType": JSON.stringify(name === "chat.completions" ? "CHAT_MODEL" : "LLM"),
    "mlflow.spanInputs": inputsJson,
    "mlflow.spanOutputs": JSON.stringify(x.response),
    "mlflow.llm.model": JSON.stringify(r.model ?? r.service),
    "loom.revision": JSON.stringify(r.revision),
    "loom.status": JSON.stringify(r.status),
    ...(tokens ? { "mlflow.chat.tokenUsage": JSON.stringify(tokens) } : {}),
  };
  const span = {
    trace_id: Buffer.from(hex, "hex").toString("base64"),
    span_id: Buffer.from(randomHex(8), "hex").toString("base64"),
    parent_span_id: null,
    name,
    start_time_unix_nano: c.startedMs * 1_000_000,
    end_time_unix_nano: c.endedMs * 1_000_000,
    events: [],
    status: { code: ok ? "STATUS_CODE_OK" : "STATUS_CODE_ERROR", message: ok ? "" : `HTTP ${r.status}` },
    attributes,
    links: [],
  };
  const info: TraceInfo = {
    trace_id: traceId,
    trace_location: { type: "MLFLOW_EXPERIMENT", mlflow_experiment: { experiment_id: experimentId } },
    request_preview: inputsJson.slice(0, PREVIEW),
    response_preview: x.text.slice(0, PREVIEW),
    request_time: new Date(c.startedMs).toISOString(),
    execution_duration: `${(c.endedMs - c.startedMs) / 1000}s`,
    state: ok ? "OK" : "ERROR",
    trace_metadata: {
      "mlflow.trace_schema.version": "3",
      "mlflow.traceInputs": inputsJson.slice(0, PREVIEW),
      "mlflow.traceOutputs": JSON.stringify(x.text).slice(0, PREVIEW),
      ...(tokens ? { "mlflow.trace.tokenUsage": JSON.stringify(tokens) } : {}),
    },
    tags: {
      "mlflow.traceName": name,
      "loom.source": "gateway",
      "loom.service": r.service,
      "loom.revision": r.revision,
      ...(r.model ? { "loom.model": r.model } : {}),
      "loom.caller": r.caller,
      "loom.status": String(r.status),
      "loom.streamed": String(x.streamed),
      ...(tokens
        ? {
            "loom.tokens.prompt": String(tokens.input_tokens),
            "loom.tokens.completion": String(tokens.output_tokens),
            "loom.tokens.total": String(tokens.total_tokens),
          }
        : {}),
    },
  };
  return { info, spans: JSON.stringify({ spans: [span] }) };
}

import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { TraceCapture } from "../gateway/gateway.js";
import type { TraceInfo, TraceStore } from "../tracking/traces.js";

/**
 * Traces the gateway records for services with `spec.tracing: true`: one MLflow 3 trace per
 * request, in the experiment `isvc/SERVICE` of the service's project (made on first use). The
 * request path only queues what the gateway captured (the raw bodies); parsing, the database and
 * the spans' files happen in a batch after the answers ended, every FLUSH_MS or BATCH requests,
 * so that tracing costs the request a closure and an array push.
 */

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
  capture: TraceCapture;
}

export interface GatewayTraceDeps {
  traces: TraceStore;
  /** The experiment named so in the project: its id, made when missing. */
  experiment: (project: string, name: string) => Promise<string>;
  log?: Logger;
}

const FLUSH_MS = 100;
const BATCH = 256;
/** A backlog past this is dropped (and logged): the gateway never waits on tracing. */
const MAX_QUEUED = 50_000;
const PREVIEW = 1000;

/** The experiment a service's traces go to. */
export const serviceExperiment = (service: string) => `isvc/${service}`;

export class GatewayTraceRecorder {
  private queue: TracedRequest[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly experiments = new Map<string, string>();
  private dropped = 0;

  constructor(private readonly deps: GatewayTraceDeps) {}

  /** Queues one finished request; never throws, never waits. */
  record(r: TracedRequest): void {
    if (this.queue.length >= MAX_QUEUED) {
      this.dropped++;
      return;
    }
    this.queue.push(r);
    if (this.queue.length >= BATCH) this.schedule(0);
    else this.schedule(FLUSH_MS);
  }

  private schedule(ms: number): void {
    if (this.timer && ms > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
    this.timer.unref();
  }

  /** Writes everything queued (resolves when written; the server's close awaits it). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    this.flushing = this.write(batch).finally(() => {
      this.flushing = undefined;
    });
    await this.flushing;
    if (this.queue.length > 0) this.schedule(0);
  }

  private async write(batch: TracedRequest[]): Promise<void> {
    if (this.dropped > 0) {
      this.deps.log?.warn({ dropped: this.dropped }, "gateway traces dropped: the trace writer fell behind");
      this.dropped = 0;
    }
    const byProject = new Map<string, { info: TraceInfo; spans: string }[]>();
    for (const r of batch) {
      try {
        const exp = await this.experimentOf(r.project, r.service);
        const t = buildTrace(r, exp);
        const list = byProject.get(r.project) ?? [];
        list.push(t);
        byProject.set(r.project, list);
      } catch (err) {
        this.deps.log?.warn({ err, project: r.project, service: r.service }, "gateway trace not recorded");
      }
    }
    for (const [project, list] of byProject) {
      try {
        // The spans go in the records, not a file each (that cost more than the request traced):
        // the artifact route serves them where the client reads traces.json.
        await this.deps.traces.startMany(
          project,
          list.map((l) => l.info),
          list.map((l) => l.spans),
        );
      } catch (err) {
        this.deps.log?.warn({ err, project, traces: list.length }, "gateway traces not recorded");
      }
    }
  }

  private async experimentOf(project: string, service: string): Promise<string> {
    const key = `${project}/${service}`;
    let id = this.experiments.get(key);
    if (!id) {
      id = await this.deps.experiment(project, serviceExperiment(service));
      this.experiments.set(key, id);
    }
    return id;
  }

  /** Forgets cached experiment ids (one was deleted, say). */
  forget(project: string, service: string): void {
    this.experiments.delete(`${project}/${service}`);
  }
}

/** The request's JSON (or undefined: not JSON), and what the answer said, streamed or not. */
export function readExchange(c: TraceCapture): {
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
  const hex = randomBytes(16).toString("hex");
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
    span_id: randomBytes(8).toString("base64"),
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

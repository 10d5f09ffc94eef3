import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";
import type { TraceStore } from "../tracking/traces.js";
import {
  type PackedBatch,
  packTraces,
  type TracedRequest,
  unpackTraces,
} from "../tracking/traces-gateway.js";

export { buildTrace, readExchange, type TracedRequest } from "../tracking/traces-gateway.js";

/**
 * Traces the gateway records for services with `spec.tracing: true`: one MLflow 3 trace per
 * request, in the experiment `isvc/SERVICE` of the service's project (made on first use).
 *
 * The request path only queues what the gateway captured (the raw bodies, no parsing): an array
 * push. Every FLUSH_MS or BATCH requests the queue is packed (the bodies copied into one buffer)
 * and handed on: on the API, written as ONE row (TraceStore.writeBatch), which the first read of
 * traces turns into MLflow trace records (parsing, spans: TraceStore.settle), so the cost of a
 * trace on the gateway's event loop is a copy and a share of one INSERT; on a `loom gateway`
 * node, to Loom's API (POST /gateway/v1/traces), which queues them the same way.
 * A backlog past MAX_QUEUED is dropped and counted (loom_gateway_traces_dropped_total): requests
 * never wait on tracing.
 */

const FLUSH_MS = 100;
const BATCH = 256;
const MAX_QUEUED = 50_000;

/** The experiment a service's traces go to. */
export const serviceExperiment = (service: string) => `isvc/${service}`;

/** loom_gateway_traces_dropped_total on this registry (one counter per registry). */
const droppedCounters = new WeakMap<Registry, Counter>();
function droppedCounter(registry: Registry | undefined): Counter | undefined {
  if (!registry) return undefined;
  let c = droppedCounters.get(registry);
  if (!c) {
    c =
      (registry.getSingleMetric("loom_gateway_traces_dropped_total") as Counter | undefined) ??
      new Counter({
        name: "loom_gateway_traces_dropped_total",
        help: "Gateway-recorded traces dropped because the trace writer fell behind (the requests were served)",
        registers: [registry],
      });
    droppedCounters.set(registry, c);
  }
  return c;
}

export interface TraceQueueOptions {
  /** Delivers one batch (resolves when it is written or sent; a rejection is logged). */
  deliver: (batch: TracedRequest[]) => Promise<void>;
  registry?: Registry;
  log?: Logger;
}

/** The bounded queue between the request path and wherever traces are written. */
export class TraceQueue {
  private queue: TracedRequest[] = [];
  private timer: NodeJS.Timeout | undefined;
  private delivering: Promise<void> | undefined;
  private inFlight = 0;
  private droppedSinceLog = 0;
  private readonly dropped: Counter | undefined;

  constructor(private readonly o: TraceQueueOptions) {
    this.dropped = droppedCounter(o.registry);
  }

  /** Queues one finished request; never throws, never waits. */
  record(r: TracedRequest): void {
    if (this.queue.length + this.inFlight >= MAX_QUEUED) {
      this.droppedSinceLog++;
      this.dropped?.inc();
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

  /** Delivers everything queued, one batch at a time (resolves when delivered; a close awaits it). */
  async flush(): Promise<void> {
    while (this.delivering) await this.delivering;
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    this.inFlight = batch.length;
    if (this.droppedSinceLog > 0) {
      this.o.log?.warn(
        { dropped: this.droppedSinceLog },
        "gateway traces dropped: the trace writer fell behind",
      );
      this.droppedSinceLog = 0;
    }
    this.delivering = this.o
      .deliver(batch)
      .catch((err: unknown) => {
        this.o.log?.warn({ err, traces: batch.length }, "gateway traces not recorded");
      })
      .finally(() => {
        this.delivering = undefined;
        this.inFlight = 0;
      });
    await this.delivering;
    if (this.queue.length > 0) this.schedule(0);
  }
}

export interface GatewayTraceDeps {
  traces: TraceStore;
  /** The experiment named so in the project: its id, made when missing. */
  experiment: (project: string, name: string) => Promise<string>;
  registry?: Registry;
  log?: Logger;
}

/** The API's recorder: its own gateway's traced requests and those `loom gateway` nodes send. */
export class GatewayTraceRecorder {
  private readonly queue: TraceQueue;
  private readonly experiments = new Map<string, string>();

  constructor(private readonly deps: GatewayTraceDeps) {
    this.queue = new TraceQueue({
      deliver: (batch) => this.write(batch),
      ...(deps.registry ? { registry: deps.registry } : {}),
      ...(deps.log ? { log: deps.log } : {}),
    });
  }

  /** Queues one finished request; never throws, never waits. */
  record(r: TracedRequest): void {
    this.queue.record(r);
  }

  /** Writes everything queued (resolves when written). */
  flush(): Promise<void> {
    return this.queue.flush();
  }

  /** Writes what is queued. */
  async close(): Promise<void> {
    await this.flush();
  }

  private async write(batch: TracedRequest[]): Promise<void> {
    const packed = packTraces(batch);
    for (const item of packed.items)
      item.experimentId =
        this.experiments.get(`${item.project}/${item.service}`) ??
        (await this.experimentOf(item.project, item.service));
    await this.deps.traces.writeBatch(JSON.stringify(packed.items), packed.data);
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

/** Where the request path hands traced requests: the API's recorder, or a node's uploader. */
export interface TraceSink {
  record(r: TracedRequest): void;
}

/** A report of traced requests as it crosses the network: the packed batch, its bytes in base64. */
export interface TraceReport {
  gateway: string;
  items: PackedBatch["items"];
  data: string;
}

/** At most this many body bytes in one report (a backlog goes in several). */
const REPORT_BYTES = 8 * 1024 * 1024;

/**
 * A `loom gateway` node's traces: queued like the API's, and each batch sent to Loom's API
 * (`send`: POST /gateway/v1/traces with the node's credentials), which records them.
 */
export function traceUploader(o: {
  gateway: string;
  send: (report: TraceReport) => Promise<void>;
  registry?: Registry;
  log?: Logger;
}): TraceQueue {
  return new TraceQueue({
    ...(o.registry ? { registry: o.registry } : {}),
    ...(o.log ? { log: o.log } : {}),
    deliver: async (batch) => {
      for (let i = 0; i < batch.length; ) {
        let bytes = 0;
        let j = i;
        do {
          bytes += batch[j]!.capture.request.length + batch[j]!.capture.response.length;
          j++;
        } while (j < batch.length && bytes < REPORT_BYTES);
        const packed = packTraces(batch.slice(i, j));
        const data = Buffer.from(packed.data.buffer, packed.data.byteOffset, packed.data.byteLength);
        await o.send({ gateway: o.gateway, items: packed.items, data: data.toString("base64") });
        i = j;
      }
    },
  });
}

/** A node's report checked (shape, and each body within its bytes) and unpacked; throws saying what is wrong. */
export function readTraceReport(body: unknown): TracedRequest[] {
  const b = body as Partial<TraceReport> | undefined;
  const str = (v: unknown) => typeof v === "string";
  const num = (v: unknown) => typeof v === "number" && Number.isFinite(v);
  const span = (v: unknown) => Array.isArray(v) && v.length === 2 && v.every(num);
  const ok =
    b &&
    str(b.gateway) &&
    str(b.data) &&
    Array.isArray(b.items) &&
    b.items.every(
      (i) =>
        i &&
        str(i.project) &&
        str(i.service) &&
        str(i.revision) &&
        str(i.caller) &&
        num(i.status) &&
        num(i.startedMs) &&
        num(i.endedMs) &&
        typeof i.complete === "boolean" &&
        span(i.request) &&
        span(i.response) &&
        (i.model === undefined || str(i.model)) &&
        (i.usage === undefined || (num(i.usage?.promptTokens) && num(i.usage?.completionTokens))),
    );
  if (!ok)
    throw new Error(
      "send {gateway, items: [{project, service, revision, caller, status, startedMs, endedMs, complete, request: [offset, length], response: [offset, length], model?, usage?}], data: BASE64}",
    );
  const data = Buffer.from(b.data!, "base64");
  return unpackTraces({ items: b.items!, data });
}

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Kysely, sql } from "kysely";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { openSqlite } from "../platforms/embedded/db.js";
import { TraceStore } from "../tracking/traces.js";
import { type PackedItem, packTraces, unpackTraces } from "../tracking/traces-gateway.js";
import {
  buildTrace,
  GatewayTraceRecorder,
  readExchange,
  type TracedRequest,
  TraceQueue,
} from "./gatewaytraces.js";

const chat = (content: string) =>
  Buffer.from(JSON.stringify({ model: "m", messages: [{ role: "user", content }] }));

function request(response: string, over: Partial<TracedRequest> = {}): TracedRequest {
  return {
    project: "p",
    service: "s",
    revision: "s-1",
    model: "models:/tiny/3",
    caller: "key-a",
    status: 200,
    capture: {
      request: chat("hi"),
      response: Buffer.from(response),
      startedMs: 1000,
      endedMs: 1250,
      complete: true,
    },
    ...over,
  };
}

describe("gateway traces", () => {
  it("a streamed answer is assembled from its chunks, with the stream's usage", () => {
    const sse = [
      'data: {"model":"m","choices":[{"index":0,"delta":{"role":"assistant"}}]}',
      'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}',
      'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"length"}]}',
      'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
      "data: [DONE]",
      "",
    ].join("\n\n");
    const x = readExchange(request(sse).capture);
    expect(x.streamed).toBe(true);
    expect(x.text).toBe("Hello");
    expect(x.usage).toEqual({ promptTokens: 3, completionTokens: 2 });
  });

  it("a stream without usage counts its content chunks as completion tokens", () => {
    const sse =
      'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\ndata: [DONE]\n\n';
    expect(readExchange(request(sse).capture).usage).toEqual({ promptTokens: 0, completionTokens: 2 });
  });

  it("a plain answer becomes one CHAT_MODEL span the MLflow client reads, with tags for search", () => {
    const body = JSON.stringify({
      choices: [{ message: { role: "assistant", content: "yo" } }],
      usage: { prompt_tokens: 4, completion_tokens: 1 },
    });
    const { info, spans } = buildTrace(request(body), "7");
    expect(info.trace_id).toMatch(/^tr-[0-9a-f]{32}$/);
    expect(info.state).toBe("OK");
    expect(info.execution_duration).toBe("0.25s");
    expect(info.response_preview).toBe("yo");
    expect(info.tags).toMatchObject({
      "loom.service": "s",
      "loom.revision": "s-1",
      "loom.model": "models:/tiny/3",
      "loom.caller": "key-a",
      "loom.tokens.total": "5",
    });
    expect(JSON.parse(info.trace_metadata["mlflow.trace.tokenUsage"]!)).toEqual({
      input_tokens: 4,
      output_tokens: 1,
      total_tokens: 5,
    });
    const span = (JSON.parse(spans) as { spans: Record<string, unknown>[] }).spans[0]!;
    const attrs = span.attributes as Record<string, string>;
    expect(JSON.parse(attrs["mlflow.traceRequestId"]!)).toBe(info.trace_id);
    expect(JSON.parse(attrs["mlflow.spanInputs"]!).messages[0].content).toBe("hi");
    // The span's trace id is the trace's, as the client checks (base64 of its 16 bytes).
    expect(Buffer.from(span.trace_id as string, "base64").toString("hex")).toBe(info.trace_id.slice(3));
  });

  it("an upstream error or a cut-off answer is an ERROR trace", () => {
    expect(buildTrace(request("{}", { status: 503 }), "1").info.state).toBe("ERROR");
    const cut = request("{}");
    cut.capture.complete = false;
    expect(buildTrace(cut, "1").info.state).toBe("ERROR");
  });

  it("a batch is stored as one raw row (nothing parsed); the first read makes its records, by tag, each project's own; the experiment is made once per service", async () => {
    const dir = mkdtempSync(join(tmpdir(), "loom-gwtraces-"));
    const database = await openSqlite(join(dir, "loom.db"));
    const store = new TraceStore(database.db as unknown as Kysely<unknown>);
    const made: string[] = [];
    const recorder = new GatewayTraceRecorder({
      traces: store,
      experiment: async (project, name) => {
        made.push(`${project}:${name}`);
        return project === "p" ? "3" : "4";
      },
    });
    const count = async (table: string) =>
      Number(
        (await sql<{ n: number }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(database.db))
          .rows[0]!.n,
      );
    try {
      const body = JSON.stringify({
        choices: [{ message: { content: "yo" } }],
        usage: { prompt_tokens: 2, completion_tokens: 1 },
      });
      for (let i = 0; i < 5; i++) recorder.record(request(body, { caller: `key-${i}` }));
      recorder.record(request(body, { project: "q" }));
      await recorder.flush();
      expect([await count("tr_trace_batches"), await count("tr_traces")]).toEqual([1, 0]);
      const found = await store.search("p", { experimentIds: ["3"], filter: "tag.`loom.caller` = 'key-3'" });
      expect([await count("tr_trace_batches"), await count("tr_traces")]).toEqual([0, 6]);
      expect(found.traces).toHaveLength(1);
      expect(found.traces[0]!.response_preview).toBe("yo");
      expect(found.traces[0]!.tags["loom.tokens.total"]).toBe("3");
      const all = await store.search("p", { experimentIds: ["3"] });
      expect(all.traces).toHaveLength(5);
      expect(await store.spans("p", found.traces[0]!.trace_id)).toContain("CHAT_MODEL");
      // Project q's trace is q's: p cannot read it by id, even naming q's experiment.
      const theirs = (await store.search("q", { experimentIds: ["4"] })).traces;
      expect(theirs).toHaveLength(1);
      expect((await store.search("p", { experimentIds: ["4"] })).traces).toHaveLength(0);
      await expect(store.get("p", theirs[0]!.trace_id)).rejects.toThrow(/not found/);
      expect(made).toEqual(["p:isvc/s", "q:isvc/s"]);
    } finally {
      await recorder.close();
      await database.close();
    }
  });

  it("settling: a damaged batch is skipped and counted, the next still read; readers at once write each trace once", async () => {
    const dir = mkdtempSync(join(tmpdir(), "loom-gwtraces-"));
    const database = await openSqlite(join(dir, "loom.db"));
    const store = new TraceStore(database.db as unknown as Kysely<unknown>);
    try {
      const good = packTraces([request("{}"), request("{}")]);
      for (const i of good.items) i.experimentId = "3";
      const bad = packTraces([request("{}")]);
      bad.items[0]!.response = [0, 1 << 20]; // outside its bytes
      await store.writeBatch("not json", new Uint8Array(0));
      await store.writeBatch(JSON.stringify(bad.items), bad.data);
      await store.writeBatch(JSON.stringify(good.items), good.data);
      const [a, b] = await Promise.all([store.settle(), store.settle()]);
      expect(a + b).toBe(2);
      const all = await store.search("p", { experimentIds: ["3"] });
      expect(all.traces).toHaveLength(2);
      expect(await store.settle()).toBe(0);
    } finally {
      await database.close();
    }
  });

  it("the recorder hands the store one packed batch per flush, nothing parsed or built on the way", async () => {
    const written: { items: PackedItem[]; data: Uint8Array }[] = [];
    const recorder = new GatewayTraceRecorder({
      experiment: async () => "3",
      traces: {
        writeBatch: async (items: string, data: Uint8Array) => {
          written.push({ items: JSON.parse(items) as PackedItem[], data });
        },
      } as unknown as TraceStore,
    });
    for (let i = 0; i < 3; i++) recorder.record(request(`{"n":${i}}`));
    expect(written).toHaveLength(0); // nothing on the request path
    await recorder.close();
    expect(written).toHaveLength(1);
    expect(written[0]!.items.map((i) => [i.project, i.experimentId])).toEqual([
      ["p", "3"],
      ["p", "3"],
      ["p", "3"],
    ]);
    const [off, len] = written[0]!.items[2]!.response;
    expect(Buffer.from(written[0]!.data.subarray(off, off + len)).toString()).toBe('{"n":2}');
  });

  it("a backlog past the bound is dropped and counted, never waited on", async () => {
    const registry = new Registry();
    let release: () => void = () => {};
    const delivered: number[] = [];
    const queue = new TraceQueue({
      registry,
      deliver: (batch) => {
        delivered.push(batch.length);
        return new Promise((resolve) => {
          release = resolve;
        });
      },
    });
    for (let i = 0; i < 10; i++) queue.record(request("{}"));
    const first = queue.flush(); // 10 in flight, held by the writer
    for (let i = 0; i < 50_000; i++) queue.record(request("{}"));
    const text = await registry.metrics();
    expect(text).toContain("loom_gateway_traces_dropped_total 10");
    release();
    await first;
    const rest = queue.flush();
    release();
    await rest;
    expect(delivered).toEqual([10, 49_990]);
  });

  it("a packed batch round-trips, and one whose item points outside its bytes is refused (a forged report)", () => {
    const packed = packTraces([request("abc"), request("defg", { model: undefined })]);
    const back = unpackTraces(packed);
    expect(back.map((r) => r.capture.response.toString())).toEqual(["abc", "defg"]);
    expect(back[1]!.model).toBeUndefined();
    packed.items[1]!.response = [packed.data.length - 1, 10];
    expect(() => unpackTraces(packed)).toThrow(/outside/);
    packed.items[1]!.response = [-1, 1];
    expect(() => unpackTraces(packed)).toThrow(/outside/);
  });
});

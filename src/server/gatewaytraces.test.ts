import { describe, expect, it } from "vitest";
import type { TraceInfo, TraceStore } from "../tracking/traces.js";
import { buildTrace, GatewayTraceRecorder, readExchange, type TracedRequest } from "./gatewaytraces.js";

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

  it("the recorder writes a batch in one call per project, spans in the records, and makes the experiment once", async () => {
    const written: { project: string; infos: TraceInfo[]; spans: string[] }[] = [];
    const made: string[] = [];
    const recorder = new GatewayTraceRecorder({
      experiment: async (project, name) => {
        made.push(`${project}:${name}`);
        return "3";
      },
      traces: {
        startMany: async (project: string, infos: TraceInfo[], spans: string[]) => {
          written.push({ project, infos, spans });
          return infos;
        },
      } as unknown as TraceStore,
    });
    for (let i = 0; i < 5; i++) recorder.record(request("{}"));
    recorder.record(request("{}", { project: "q" }));
    expect(written).toHaveLength(0); // nothing on the request path
    await recorder.flush();
    expect(written.map((w) => [w.project, w.infos.length, w.spans.length])).toEqual([
      ["p", 5, 5],
      ["q", 1, 1],
    ]);
    const first = written[0]!;
    const span = JSON.parse(first.spans[0]!).spans[0];
    expect(JSON.parse(span.attributes["mlflow.traceRequestId"])).toBe(first.infos[0]!.trace_id);
    expect(made).toEqual(["p:isvc/s", "q:isvc/s"]);
  });
});

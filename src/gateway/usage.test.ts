import { describe, expect, it } from "vitest";
import { findUsage, TailBuffer } from "./usage.js";

describe("usage", () => {
  it("finds usage at the end of a non-streamed completion", () => {
    const body = JSON.stringify({
      id: "x",
      choices: [{ message: { content: 'he said "usage": {nope' } }],
      usage: {
        prompt_tokens: 12,
        completion_tokens: 34,
        total_tokens: 46,
        prompt_tokens_details: { cached: 1 },
      },
    });
    expect(findUsage(body)).toEqual({ promptTokens: 12, completionTokens: 34 });
  });

  it("finds the final usage chunk of a stream and ignores usage: null chunks", () => {
    const sse = [
      'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}',
      'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}',
      "data: [DONE]",
      "",
    ].join("\n\n");
    expect(findUsage(sse)).toEqual({ promptTokens: 5, completionTokens: 7 });
    expect(findUsage('data: {"usage":null}\n\ndata: [DONE]')).toBeUndefined();
    expect(findUsage('{"usage": {"prompt_tokens": 3')).toBeUndefined();
  });

  it('finds usage in the tail\'s bytes, skipping a quoted "usage" after the real one', () => {
    const t = new TailBuffer(8192);
    t.push(Buffer.from('data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n\n'));
    t.push(Buffer.from('data: {"note":"the \\"usage\\": {field"}\n\ndata: [DONE]\n\n'));
    expect(t.usage()).toEqual({ promptTokens: 5, completionTokens: 7 });
    const none = new TailBuffer(8192);
    none.push(Buffer.from('{"usage":null}'));
    expect(none.usage()).toBeUndefined();
  });

  it("keeps only the tail", () => {
    const t = new TailBuffer(10);
    for (let i = 0; i < 100; i++) t.push(Buffer.from(`chunk${i};`));
    expect(t.toString()).toBe("8;chunk99;");
  });
});

import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createGatewayMetrics } from "../../gateway/metrics.js";
import { servingFigures } from "./servingfigures.js";

describe("servingFigures", () => {
  it("sums one project's one service and nothing of another project's service of the same name", async () => {
    const registry = new Registry();
    const m = createGatewayMetrics(registry);
    const mine = { project: "a", service: "chat", revision: "chat-1" };
    m.requests.labels({ ...mine, code: "200" }).inc(3);
    m.requests.labels({ ...mine, revision: "chat-2", code: "500" }).inc(1);
    m.duration.labels(mine).observe(0.5);
    m.duration.labels(mine).observe(1.5);
    m.ttfb.labels(mine).observe(0.25);
    m.tokens.labels({ project: "a", service: "chat", kind: "completion" }).inc(40);
    m.tokens.labels({ project: "a", service: "chat", kind: "prompt" }).inc(7);
    // The attack: another project's service named alike must not leak into a's figures.
    m.requests.labels({ project: "b", service: "chat", revision: "chat-1", code: "200" }).inc(100);
    m.tokens.labels({ project: "b", service: "chat", kind: "completion" }).inc(999);
    const f = await servingFigures(registry, "a", "chat");
    expect(f).toMatchObject({
      requests: 4,
      byCode: { "200": 3, "500": 1 },
      durationSum: 2,
      durationCount: 2,
      ttfbSum: 0.25,
      ttfbCount: 1,
      promptTokens: 7,
      completionTokens: 40,
    });
  });

  it("answers zeros for a service the gateway has not served yet", async () => {
    const f = await servingFigures(new Registry(), "a", "none");
    expect(f.requests).toBe(0);
    expect(f.completionTokens).toBe(0);
  });
});

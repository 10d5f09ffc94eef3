import { setTimeout as sleep } from "node:timers/promises";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { collectProcessMetrics } from "./processmetrics.js";

describe("collectProcessMetrics", () => {
  it("exports Node's process metrics under loom_process_, event-loop lag included", async () => {
    const registry = new Registry();
    collectProcessMetrics(registry);
    // Block the loop for longer than the monitor's period, so the lag it records is not zero.
    await sleep(150);
    const until = Date.now() + 120;
    while (Date.now() < until) {
      // busy: the event loop cannot run the monitor's timer
    }
    await sleep(150);
    const text = await registry.metrics();
    expect(text).toMatch(/^loom_process_process_cpu_seconds_total \d/m);
    expect(text).toMatch(/^loom_process_nodejs_heap_size_used_bytes \d/m);
    const max = /^loom_process_nodejs_eventloop_lag_max_seconds ([\d.e-]+)/m.exec(text);
    expect(Number(max?.[1])).toBeGreaterThan(0.05);
  });
});

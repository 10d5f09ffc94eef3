import { describe, expect, it } from "vitest";
import { TrafficSplitter } from "./traffic.js";

function count(s: TrafficSplitter, n: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const name = s.pick()!;
    out[name] = (out[name] ?? 0) + 1;
  }
  return out;
}

describe("TrafficSplitter", () => {
  it("splits 90/10 exactly over 1,000 requests", () => {
    const s = new TrafficSplitter([
      { name: "stable", weight: 90 },
      { name: "canary", weight: 10 },
    ]);
    expect(count(s, 1000)).toEqual({ stable: 900, canary: 100 });
  });

  it("spreads the minority evenly instead of in a burst", () => {
    const s = new TrafficSplitter([
      { name: "a", weight: 3 },
      { name: "b", weight: 1 },
    ]);
    const seq = Array.from({ length: 8 }, () => s.pick());
    // Never two b's in a row, one b in every four.
    expect(seq.filter((x) => x === "b")).toHaveLength(2);
    for (let i = 1; i < seq.length; i++) expect(seq[i] === "b" && seq[i - 1] === "b").toBe(false);
  });

  it("handles uneven weights and three revisions", () => {
    const s = new TrafficSplitter([
      { name: "a", weight: 5 },
      { name: "b", weight: 3 },
      { name: "c", weight: 2 },
    ]);
    expect(count(s, 1000)).toEqual({ a: 500, b: 300, c: 200 });
  });

  it("never picks a zero-weight revision, and splits evenly when all weights are zero", () => {
    const s = new TrafficSplitter([
      { name: "a", weight: 100 },
      { name: "b", weight: 0 },
    ]);
    expect(count(s, 10)).toEqual({ a: 10 });
    s.update([
      { name: "a", weight: 0 },
      { name: "b", weight: 0 },
    ]);
    expect(count(s, 10)).toEqual({ a: 5, b: 5 });
  });

  it("returns undefined without targets", () => {
    expect(new TrafficSplitter().pick()).toBeUndefined();
  });

  it("keeps exact proportions across a weight change", () => {
    const s = new TrafficSplitter([
      { name: "stable", weight: 90 },
      { name: "canary", weight: 10 },
    ]);
    count(s, 37);
    s.update([
      { name: "stable", weight: 50 },
      { name: "canary", weight: 50 },
    ]);
    const after = count(s, 1000);
    expect(Math.abs(after.stable! - 500)).toBeLessThanOrEqual(50);
    expect(TrafficSplitter.signature([{ name: "a", weight: 1 }])).toBe("a=1");
  });
});

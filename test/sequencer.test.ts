import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { committedDurations, longestFirst } from "./sequencer.js";

describe("the test sequencer", () => {
  it("starts the longest estimated files first, then the unestimated ones by size", () => {
    const est: Record<string, number> = { a: 10, b: 400, c: 60 };
    const size: Record<string, number> = { a: 1, b: 1, c: 1, d: 50, e: 900 };
    const order = longestFirst(
      ["d", "a", "e", "b", "c"],
      (f) => est[f],
      (f) => size[f]!,
    );
    expect(order).toEqual(["b", "c", "a", "e", "d"]);
  });

  it("has estimates only for test files that exist (a renamed slow file would start last)", () => {
    const root = join(import.meta.dirname, "..");
    const durations = committedDurations();
    expect(durations.size).toBeGreaterThanOrEqual(5);
    expect([...durations.keys()].filter((f) => !existsSync(join(root, f)))).toEqual([]);
    expect(durations.get("test/realnode.e2e.test.ts")).toBeGreaterThan(60);
  });
});

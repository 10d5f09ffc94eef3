import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { forEachConcurrently } from "./concurrency.js";

describe("forEachConcurrently", () => {
  it("never has more than the limit in flight and visits every item", async () => {
    let inFlight = 0;
    let peak = 0;
    const seen: number[] = [];
    await forEachConcurrently([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await sleep(5);
      seen.push(n);
      inFlight--;
    });
    expect(peak).toBe(3);
    expect(seen.sort()).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it("attempts every item after a failure, then throws the first error", async () => {
    const seen: number[] = [];
    const run = forEachConcurrently([1, 2, 3, 4], 2, async (n) => {
      seen.push(n);
      if (n === 2) throw new Error("two failed");
    });
    await expect(run).rejects.toThrow("two failed");
    expect(seen.sort()).toEqual([1, 2, 3, 4]);
  });
});

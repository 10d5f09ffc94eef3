import { afterEach, describe, expect, it, vi } from "vitest";
import { WorkQueue } from "./workqueue.js";

/** Resolves with the promise's value, or "pending" if it has not settled after the microtasks run. */
async function peek<T>(p: Promise<T>): Promise<T | "pending"> {
  return Promise.race([p, new Promise<"pending">((r) => setImmediate(() => r("pending")))]);
}

describe("WorkQueue", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("hands out keys in order and queues a key at most once", async () => {
    const q = new WorkQueue();
    q.add("a");
    q.add("b");
    q.add("a");
    expect(q.length).toBe(2);
    expect(await q.get()).toBe("a");
    expect(await q.get()).toBe("b");
    expect(q.length).toBe(0);
    expect(await peek(q.get())).toBe("pending");
  });

  it("serves background (resync) keys only after every main-lane key, and promotes a re-added one", async () => {
    const q = new WorkQueue();
    for (const k of ["r1", "r2", "r3"]) q.addBackground(k);
    q.add("changed");
    q.add("r3"); // a real change to a key waiting for its resync: served with the real changes
    q.addBackground("changed"); // already queued for real: not queued twice
    expect(q.length).toBe(2);
    expect(q.backgroundLength).toBe(2);
    const order: string[] = [];
    const resyncs: string[] = [];
    for (let i = 0; i < 4; i++) {
      const k = (await q.get())!;
      order.push(k);
      if (q.isResync(k)) resyncs.push(k);
      q.done(k);
      expect(q.isResync(k)).toBe(false);
    }
    expect(order).toEqual(["changed", "r3", "r1", "r2"]);
    // What the controller counts as resyncs: only keys served from the background lane.
    expect(resyncs).toEqual(["r1", "r2"]);
    expect(await peek(q.get())).toBe("pending");
  });

  it("wakes a waiting get() when a key is added", async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    expect(await peek(waiting)).toBe("pending");
    q.add("a");
    expect(await waiting).toBe("a");
    expect(q.length).toBe(0);
  });

  it("re-delivers a key added while it is processed, only after done(), never to two getters at once", async () => {
    const q = new WorkQueue();
    q.add("a");
    expect(await q.get()).toBe("a");
    const second = q.get();
    q.add("a");
    q.add("a");
    // "a" is being processed: the second getter must not receive it yet.
    expect(q.length).toBe(0);
    expect(await peek(second)).toBe("pending");
    q.add("b");
    expect(await second).toBe("b");
    const third = q.get();
    expect(await peek(third)).toBe("pending");
    q.done("a");
    expect(await third).toBe("a");
    // Processed once more; nothing left over after this done().
    q.done("a");
    q.done("b");
    expect(q.length).toBe(0);
    expect(await peek(q.get())).toBe("pending");
  });

  it("does not re-deliver a key that was not re-added while processed", async () => {
    const q = new WorkQueue();
    q.add("a");
    await q.get();
    q.done("a");
    expect(q.length).toBe(0);
    q.add("a");
    expect(q.length).toBe(1);
  });

  it("addAfter delays the key, and an earlier pending delay wins", async () => {
    vi.useFakeTimers();
    const q = new WorkQueue();
    q.addAfter("a", 1000);
    q.addAfter("a", 5000);
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(999);
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(1);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe("a");
    q.done("a");
    vi.advanceTimersByTime(10_000);
    expect(q.length).toBe(0);
  });

  it("addAfter with a shorter delay replaces a longer pending one", async () => {
    vi.useFakeTimers();
    const q = new WorkQueue();
    q.addAfter("a", 5000);
    q.addAfter("a", 100);
    vi.advanceTimersByTime(100);
    expect(q.length).toBe(1);
    await q.get();
    q.done("a");
    vi.advanceTimersByTime(5000);
    expect(q.length).toBe(0);
  });

  it("addAfter with no delay adds at once", () => {
    const q = new WorkQueue();
    q.addAfter("a", 0);
    expect(q.length).toBe(1);
  });

  it("addRateLimited backs off exponentially up to the maximum, and forget() resets", async () => {
    vi.useFakeTimers();
    const q = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 100 });
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      const d = q.addRateLimited("a");
      delays.push(d);
      vi.advanceTimersByTime(d - 1);
      expect(q.length).toBe(0);
      vi.advanceTimersByTime(1);
      expect(q.length).toBe(1);
      expect(await q.get()).toBe("a");
      q.done("a");
    }
    expect(delays).toEqual([10, 20, 40, 80, 100, 100]);
    // Failures are counted per key.
    expect(q.addRateLimited("b")).toBe(10);
    q.forget("a");
    expect(q.addRateLimited("a")).toBe(10);
    expect(q.addRateLimited("a")).toBe(20);
  });

  it("shutdown resolves waiting getters with undefined and ignores later adds", async () => {
    vi.useFakeTimers();
    const q = new WorkQueue();
    const w1 = q.get();
    const w2 = q.get();
    q.addAfter("late", 100);
    q.shutdown();
    expect(await w1).toBeUndefined();
    expect(await w2).toBeUndefined();
    q.add("a");
    q.addAfter("b", 10);
    vi.advanceTimersByTime(1000);
    expect(q.length).toBe(0);
    expect(await q.get()).toBeUndefined();
  });
});

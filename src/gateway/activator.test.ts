import { afterEach, describe, expect, it, vi } from "vitest";
import { Activator } from "./activator.js";
import { ClientGoneError, GatewayError } from "./errors.js";

afterEach(() => {
  vi.useRealTimers();
});

describe("Activator", () => {
  it("holds requests until ready() and asks for a scale-up on the first one only", async () => {
    const holds: string[] = [];
    const depths: number[] = [];
    const a = new Activator({ onHold: (k) => holds.push(k), onDepth: (_k, d) => depths.push(d) });
    let released = 0;
    const p1 = a.wait("p/s/r").then(() => released++);
    const p2 = a.wait("p/s/r").then(() => released++);
    expect(a.depth("p/s/r")).toBe(2);
    expect(holds).toEqual(["p/s/r"]);
    await Promise.resolve();
    expect(released).toBe(0);
    expect(a.ready("p/s/r")).toBe(2);
    await Promise.all([p1, p2]);
    expect(released).toBe(2);
    expect(a.depth("p/s/r")).toBe(0);
    expect(a.keys()).toEqual([]);
    expect(depths).toEqual([1, 2, 1, 0]);
    // The next cold start asks again.
    void a.wait("p/s/r");
    expect(holds).toEqual(["p/s/r", "p/s/r"]);
    a.ready("p/s/r");
    expect(a.ready("nothing")).toBe(0);
  });

  it("refuses with a 503 and Retry-After when the queue is full", async () => {
    const a = new Activator({ capacity: 2 });
    void a.wait("k");
    void a.wait("k");
    const err = await a.wait("k", { label: "model 'llama'" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    const g = err as GatewayError;
    expect(g.httpStatus).toBe(503);
    expect(g.options.retryAfterSeconds).toBeGreaterThan(0);
    expect(g.body().error.message).toMatch(/model 'llama' is starting and already has 2 requests waiting/);
    // Other keys are not affected.
    const other = a.wait("k2");
    a.ready("k2");
    await other;
    a.ready("k");
  });

  it("times out with a 503 that says how long it waited", async () => {
    vi.useFakeTimers();
    const a = new Activator({ timeoutMs: 30_000 });
    const p = a.wait("k", { label: "model 'm'" }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(29_999);
    expect(a.depth("k")).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    const err = (await p) as GatewayError;
    expect(err.httpStatus).toBe(503);
    expect(err.code).toBe("model_not_ready");
    expect(err.message).toMatch(/no ready replica after 30 s/);
    expect(a.depth("k")).toBe(0);
  });

  it("removes a waiter whose client disconnected", async () => {
    const a = new Activator();
    const ac = new AbortController();
    const p = a.wait("k", { signal: ac.signal }).catch((e: unknown) => e);
    const stays = a.wait("k");
    expect(a.depth("k")).toBe(2);
    ac.abort();
    expect(await p).toBeInstanceOf(ClientGoneError);
    expect(a.depth("k")).toBe(1);
    a.ready("k");
    await stays;
    const pre = new AbortController();
    pre.abort();
    await expect(a.wait("k", { signal: pre.signal })).rejects.toBeInstanceOf(ClientGoneError);
    expect(a.depth("k")).toBe(0);
  });

  it("fail() and close() reject the held requests", async () => {
    const a = new Activator();
    const p1 = a.wait("a").catch((e: unknown) => e);
    const p2 = a.wait("b").catch((e: unknown) => e);
    expect(a.fail("a", new Error("deleted"))).toBe(1);
    expect(((await p1) as Error).message).toBe("deleted");
    a.close();
    expect(((await p2) as GatewayError).httpStatus).toBe(503);
  });
});

import { describe, expect, it } from "vitest";
import { RateLimiter } from "./ratelimit.js";

const T0 = 1_000 * 60_000; // the start of a window

function clock(t = T0) {
  const c = { t, now: () => c.t };
  return c;
}

describe("RateLimiter", () => {
  it("admits requestsPerMinute requests, then answers 429 with a Retry-After", () => {
    const c = clock();
    const l = new RateLimiter(c.now);
    for (let i = 0; i < 3; i++) expect(l.admit("k", { requestsPerMinute: 3 })).toBeUndefined();
    const err = l.admit("k", { requestsPerMinute: 3 });
    expect(err?.httpStatus).toBe(429);
    expect(err?.body().error).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
    expect(err?.message).toMatch(/3 requests per minute/);
    // A full window: the three stay in the last minute until the next window is most of the way through.
    expect(err?.options.retryAfterSeconds).toBeGreaterThan(60);
    expect(err?.options.retryAfterSeconds).toBeLessThanOrEqual(120);
    // Another key has its own budget.
    expect(l.admit("other", { requestsPerMinute: 3 })).toBeUndefined();
  });

  it("slides: the previous window counts for the part of it still inside the last minute", () => {
    const c = clock();
    const l = new RateLimiter(c.now);
    for (let i = 0; i < 10; i++) expect(l.admit("k", { requestsPerMinute: 10 })).toBeUndefined();
    c.t = T0 + 60_000 + 30_000; // half-way through the next window: 5 of the 10 still count
    for (let i = 0; i < 5; i++) expect(l.admit("k", { requestsPerMinute: 10 })).toBeUndefined();
    expect(l.admit("k", { requestsPerMinute: 10 })?.httpStatus).toBe(429);
    c.t = T0 + 3 * 60_000; // two windows on: nothing counts
    expect(l.admit("k", { requestsPerMinute: 10 })).toBeUndefined();
  });

  it("refuses once the tokens used reach tokensPerMinute", () => {
    const c = clock();
    const l = new RateLimiter(c.now);
    expect(l.admit("k", { tokensPerMinute: 100 })).toBeUndefined();
    l.addTokens("k", 60);
    expect(l.admit("k", { tokensPerMinute: 100 })).toBeUndefined();
    l.addTokens("k", 60);
    const err = l.admit("k", { tokensPerMinute: 100 });
    expect(err?.httpStatus).toBe(429);
    expect(err?.message).toMatch(/100 tokens per minute/);
  });

  it("shares one budget across gateways through the deciding one's merge", () => {
    const c = clock(T0 + 1000);
    const hub = new RateLimiter(c.now);
    const f1 = new RateLimiter(c.now);
    const f2 = new RateLimiter(c.now);
    const limit = { requestsPerMinute: 10 };
    for (let i = 0; i < 4; i++) expect(f1.admit("k", limit)).toBeUndefined();
    for (let i = 0; i < 3; i++) expect(hub.admit("k", limit)).toBeUndefined();
    f1.setRemote(hub.merge("f1", f1.takeUsage()));
    f2.setRemote(hub.merge("f2", f2.takeUsage()));
    // f2 has used nothing itself, but 7 of the 10 are gone: 3 more, then 429.
    for (let i = 0; i < 3; i++) expect(f2.admit("k", limit)).toBeUndefined();
    expect(f2.admit("k", limit)?.httpStatus).toBe(429);
    f2.setRemote(hub.merge("f2", f2.takeUsage()));
    // The hub and f1 learn of f2's three: spent everywhere.
    expect(hub.admit("k", limit)?.httpStatus).toBe(429);
    f1.setRemote(hub.merge("f1", f1.takeUsage()));
    expect(f1.admit("k", limit)?.httpStatus).toBe(429);
    // A follower's own counts are not sent back to it (they would count twice).
    expect(hub.merge("f1", f1.takeUsage()).find((u) => u.key === "k")?.requests).toBe(6);
  });

  it("counts what a report holds as numbers only", () => {
    const hub = new RateLimiter(clock().now);
    const bad = [
      { key: "k", window: T0 / 60_000, requests: "1e9", tokens: -5, prevRequests: null, prevTokens: {} },
    ];
    hub.merge("evil", bad as never);
    hub.merge("evil2", [null, 7, { window: 1 }] as never);
    expect(hub.admit("k", { requestsPerMinute: 1 })).toBeUndefined();
  });
});

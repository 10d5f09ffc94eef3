import { type GatewayError, rateLimited } from "./errors.js";

/**
 * Per-key rate limits (requests and tokens per minute), shared by every gateway replica.
 *
 * Each replica counts its own use per key in one-minute windows and estimates the last minute as
 * the current window plus the part of the previous one still inside it (a sliding window, no
 * per-request timestamps: one map lookup and a few additions on the hot path). Replicas send
 * their counts to the deciding gateway (Loom's API) with their load reports, every second, and get
 * back the sum of everyone else's; a key's budget therefore holds across replicas, give or take
 * what the others admitted since their last report (see the gateway replicas' e2e test).
 * Tokens are known only when a response ends (its `usage`): a request is refused once the tokens
 * already used reach the limit, so the last admitted request may overshoot by its own size.
 */
export interface RateLimit {
  requestsPerMinute?: number;
  tokensPerMinute?: number;
}

/** One key's use in a window and the one before, as replicas exchange it. */
export interface KeyUsage {
  key: string;
  /** The window's number: ms since the epoch / 60 000, floored. */
  window: number;
  requests: number;
  tokens: number;
  prevRequests: number;
  prevTokens: number;
}

const WINDOW_MS = 60_000;
/** A replica silent this long is dropped (its counts would be from a window gone by anyway). */
const SOURCE_STALE_MS = 2 * WINDOW_MS;

interface Counts {
  window: number;
  requests: number;
  tokens: number;
  prevRequests: number;
  prevTokens: number;
}

/** Moves `c` on to `window`: the current counts become the previous ones, or both go. */
function roll(c: Counts, window: number): void {
  if (c.window === window) return;
  if (c.window === window - 1) {
    c.prevRequests = c.requests;
    c.prevTokens = c.tokens;
  } else {
    c.prevRequests = 0;
    c.prevTokens = 0;
  }
  c.requests = 0;
  c.tokens = 0;
  c.window = window;
}

/** Counts from a report (another process's JSON: anything not a number counts as 0). */
function fromUsage(u: KeyUsage): Counts {
  const n = (x: unknown) => (typeof x === "number" && Number.isFinite(x) && x > 0 ? x : 0);
  return {
    window: n(u.window),
    requests: n(u.requests),
    tokens: n(u.tokens),
    prevRequests: n(u.prevRequests),
    prevTokens: n(u.prevTokens),
  };
}

function add(into: Counts, c: Counts): void {
  into.requests += c.requests;
  into.tokens += c.tokens;
  into.prevRequests += c.prevRequests;
  into.prevTokens += c.prevTokens;
}

/**
 * Milliseconds until `cur + weight·prev + 1 <= limit` holds, `inWindow` ms into the current
 * window (weight falls from 1 to 0 over a window). Used only on the refusal path.
 */
function waitMs(cur: number, prev: number, limit: number, inWindow: number): number {
  const room = limit - 1;
  if (cur <= room) {
    if (prev <= 0) return 0;
    const weight = (room - cur) / prev;
    return Math.max(0, (1 - weight) * WINDOW_MS - inWindow);
  }
  // Not before the next window, where today's count becomes the previous one.
  const weight = cur > 0 ? Math.max(0, room) / cur : 1;
  return WINDOW_MS - inWindow + (1 - weight) * WINDOW_MS;
}

export class RateLimiter {
  /** This gateway's own use per key id. */
  private readonly local = new Map<string, Counts>();
  /** Everyone else's: the deciding gateway's reply (a follower), or the sum of the reports (it). */
  private remote = new Map<string, Counts>();
  /** The deciding gateway only: each follower's last report. */
  private readonly sources = new Map<string, { at: number; usage: KeyUsage[] }>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Counts one request of key `id` against `limit`, or returns the 429 to answer (not counted).
   */
  admit(id: string, limit: RateLimit): GatewayError | undefined {
    const now = this.now();
    const window = Math.floor(now / WINDOW_MS);
    const inWindow = now - window * WINDOW_MS;
    const weight = 1 - inWindow / WINDOW_MS;
    let c = this.local.get(id);
    if (!c) {
      c = { window, requests: 0, tokens: 0, prevRequests: 0, prevTokens: 0 };
      this.local.set(id, c);
    } else roll(c, window);
    const r = this.remote.get(id);
    if (r) roll(r, window);
    const rpm = limit.requestsPerMinute;
    if (rpm !== undefined) {
      const cur = c.requests + (r?.requests ?? 0);
      const prev = c.prevRequests + (r?.prevRequests ?? 0);
      if (cur + weight * prev + 1 > rpm)
        return this.refuse(`${rpm} requests per minute`, waitMs(cur, prev, rpm, inWindow));
    }
    const tpm = limit.tokensPerMinute;
    if (tpm !== undefined) {
      const cur = c.tokens + (r?.tokens ?? 0);
      const prev = c.prevTokens + (r?.prevTokens ?? 0);
      if (cur + weight * prev + 1 > tpm)
        return this.refuse(`${tpm} tokens per minute`, waitMs(cur, prev, tpm, inWindow));
    }
    c.requests++;
    return undefined;
  }

  /** Adds the tokens a response of key `id` used (prompt and completion). */
  addTokens(id: string, tokens: number): void {
    const c = this.local.get(id);
    if (!c || !(tokens > 0)) return;
    roll(c, Math.floor(this.now() / WINDOW_MS));
    c.tokens += tokens;
  }

  private refuse(what: string, ms: number): GatewayError {
    const seconds = Math.max(1, Math.ceil(ms / 1000));
    return rateLimited(
      `this API key is limited to ${what} and has used them: retry in ${seconds} s, or ask a project admin for a key with a higher limit`,
      seconds,
    );
  }

  /** This gateway's counts for the keys used in the last two windows (what a follower reports). */
  takeUsage(): KeyUsage[] {
    const window = Math.floor(this.now() / WINDOW_MS);
    const out: KeyUsage[] = [];
    for (const [key, c] of this.local) {
      roll(c, window);
      if (c.requests + c.tokens + c.prevRequests + c.prevTokens === 0) this.local.delete(key);
      else out.push({ key, ...c });
    }
    return out;
  }

  /** A follower: the deciding gateway's sum of everyone else's counts, in place of the last. */
  setRemote(usage: KeyUsage[]): void {
    this.remote = new Map(usage.map((u) => [u.key, fromUsage(u)]));
  }

  /**
   * The deciding gateway: a follower's counts (replacing its last report); returns the sum of
   * everyone else's, this gateway's own included, for that follower to hold against its keys.
   */
  merge(source: string, usage: KeyUsage[]): KeyUsage[] {
    const now = this.now();
    const window = Math.floor(now / WINDOW_MS);
    this.sources.set(source, { at: now, usage });
    const all = new Map<string, Counts>();
    const others = new Map<string, Counts>();
    const sum = (into: Map<string, Counts>, key: string, c: Counts) => {
      let t = into.get(key);
      if (!t) {
        t = { window, requests: 0, tokens: 0, prevRequests: 0, prevTokens: 0 };
        into.set(key, t);
      }
      add(t, c);
    };
    for (const [id, s] of this.sources) {
      if (now - s.at > SOURCE_STALE_MS) {
        this.sources.delete(id);
        continue;
      }
      for (const u of s.usage) {
        if (typeof u?.key !== "string") continue;
        const c = fromUsage(u);
        roll(c, window);
        sum(all, u.key, c);
        if (id !== source) sum(others, u.key, c);
      }
    }
    // This gateway's own view of the others: every follower.
    this.remote = all;
    for (const [key, c] of this.local) {
      roll(c, window);
      sum(others, key, c);
    }
    return [...others].map(([key, c]) => ({ key, ...c }));
  }
}

/**
 * Replica selection for one revision: least outstanding requests, passive health (ejection after
 * consecutive failures, half-open re-admission after a backoff) and optional prefix affinity.
 *
 * Least-outstanding rather than round robin because LLM requests differ in cost by orders of
 * magnitude: a replica busy with three long generations should not get the fourth while a
 * neighbour idles. In memory and synchronous; the clock, randomness and the probe are injected.
 */

export interface Replica {
  id: string;
  host: string;
  port: number;
  /** Set on every request to this replica (a fleet member's gateway: its project key). */
  headers?: Record<string, string>;
}

/** How a request to a replica went, as far as health is concerned. */
export type Outcome = "success" | "failure" | "neutral";

export interface EjectionOptions {
  /** Consecutive failures (connection errors, 5xx) that eject a replica. Default 5. */
  consecutiveFailures?: number;
  /** First ejection time; doubled on each failed re-admission. Default 10 s. */
  baseEjectionMs?: number;
  /** Cap on the doubled ejection time. Default 5 min. */
  maxEjectionMs?: number;
}

export interface AffinityOptions {
  /** Characters of the prompt that form the affinity key (a shared system prompt lives here). */
  prefixChars: number;
  /** Bounded load: a replica above (1+ε)·average in-flight is skipped for the next choice. Default 0.25. */
  epsilon?: number;
}

export interface BalancerOptions {
  tieBreak?: "random" | "round-robin";
  ejection?: EjectionOptions;
  affinity?: AffinityOptions;
  /**
   * Checks an ejected replica once its backoff has passed. Without one, the first request after
   * the backoff is the probe (half-open: one request through, its outcome decides).
   */
  probe?: (replica: Replica) => Promise<boolean>;
  /**
   * When every candidate is ejected, pick among them anyway (default true): a single replica that
   * returned a burst of 5xx stays reachable instead of turning the whole service into 503s.
   */
  failOpen?: boolean;
  now?: () => number;
  random?: () => number;
  /** Told when a replica is ejected or re-admitted (metrics, logs). */
  onHealthChange?: (replica: Replica, healthy: boolean) => void;
}

export interface PickRequest {
  /** Affinity key (the prompt); used only when affinity is configured. */
  key?: string;
  /** Replicas already tried for this request. */
  exclude?: ReadonlySet<string>;
}

/** A picked replica; `release` must be called exactly once, when the exchange has ended. */
export interface Lease {
  replica: Replica;
  release(outcome: Outcome): void;
}

type Health =
  | { state: "healthy" }
  | { state: "ejected"; until: number; backoffMs: number }
  | { state: "trial"; backoffMs: number };

interface Entry {
  replica: Replica;
  inFlight: number;
  failures: number;
  health: Health;
}

export class Balancer {
  private entries = new Map<string, Entry>();
  private rr = 0;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly threshold: number;
  private readonly baseMs: number;
  private readonly maxMs: number;

  constructor(private readonly opts: BalancerOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.threshold = Math.max(1, opts.ejection?.consecutiveFailures ?? 5);
    this.baseMs = opts.ejection?.baseEjectionMs ?? 10_000;
    this.maxMs = opts.ejection?.maxEjectionMs ?? 300_000;
  }

  /** Sets the ready replicas; those that stay keep their counters and health. */
  update(replicas: Replica[]): void {
    const next = new Map<string, Entry>();
    for (const r of replicas) {
      const e = this.entries.get(r.id);
      if (e) {
        e.replica = r;
        next.set(r.id, e);
      } else next.set(r.id, { replica: r, inFlight: 0, failures: 0, health: { state: "healthy" } });
    }
    this.entries = next;
  }

  get size(): number {
    return this.entries.size;
  }

  inFlight(id: string): number {
    return this.entries.get(id)?.inFlight ?? 0;
  }

  totalInFlight(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.inFlight;
    return n;
  }

  isEjected(id: string): boolean {
    const h = this.entries.get(id)?.health;
    return h !== undefined && h.state !== "healthy";
  }

  /** A replica for the next request, or undefined when none is eligible. */
  pick(req: PickRequest = {}): Lease | undefined {
    const now = this.now();
    const candidates: Entry[] = [];
    const ejected: Entry[] = [];
    for (const e of this.entries.values()) {
      if (req.exclude?.has(e.replica.id)) continue;
      const h = e.health;
      if (h.state === "healthy") candidates.push(e);
      else if (h.state === "ejected" && now >= h.until) {
        if (this.opts.probe) this.runProbe(e, h.backoffMs);
        else {
          // Half-open: this request is the trial; nobody else gets the replica until it ends.
          e.health = { state: "trial", backoffMs: h.backoffMs };
          return this.lease(e, true);
        }
      } else ejected.push(e);
    }
    if (!candidates.length) {
      if (!ejected.length || this.opts.failOpen === false) return undefined;
      return this.lease(this.leastLoaded(ejected), false);
    }
    const aff = this.opts.affinity;
    if (aff && req.key !== undefined && candidates.length > 1) {
      const chosen = this.affine(candidates, req.key.slice(0, aff.prefixChars), aff.epsilon ?? 0.25);
      if (chosen) return this.lease(chosen, false);
    }
    return this.lease(this.leastLoaded(candidates), false);
  }

  private leastLoaded(list: Entry[]): Entry {
    let min = Number.POSITIVE_INFINITY;
    for (const e of list) min = Math.min(min, e.inFlight);
    const least = list.filter((e) => e.inFlight === min);
    if (least.length === 1) return least[0]!;
    const i =
      this.opts.tieBreak === "round-robin"
        ? this.rr++ % least.length
        : Math.floor(this.random() * least.length);
    return least[Math.min(i, least.length - 1)]!;
  }

  /**
   * Rendezvous hashing with bounded load (Mirrokni et al.): replicas are ranked by hash(key,
   * replica), which moves only 1/n of keys when a replica comes or goes; the first one whose load
   * after this request stays within ceil((1+ε)·average) wins, so a hot prefix spills over
   * instead of melting one replica.
   */
  private affine(list: Entry[], key: string, epsilon: number): Entry | undefined {
    let total = 1;
    for (const e of list) total += e.inFlight;
    const cap = Math.ceil(((1 + epsilon) * total) / list.length);
    const k = hash32(key, 0x9747b28c);
    const ranked = list
      .map((e) => ({ e, score: mix32(k ^ hash32(e.replica.id, 0x85ebca6b)) }))
      .sort((a, b) => b.score - a.score || (a.e.replica.id < b.e.replica.id ? -1 : 1));
    return ranked.find((r) => r.e.inFlight + 1 <= cap)?.e;
  }

  private lease(e: Entry, trial: boolean): Lease {
    e.inFlight++;
    let done = false;
    return {
      replica: e.replica,
      release: (outcome) => {
        if (done) return;
        done = true;
        e.inFlight = Math.max(0, e.inFlight - 1);
        // An entry dropped by update() still gets its counter back but no longer matters.
        this.record(e, outcome, trial);
      },
    };
  }

  private record(e: Entry, outcome: Outcome, trial: boolean): void {
    const h = e.health;
    if (outcome === "neutral") {
      // A trial that ended without telling us anything (client left): try again soon.
      if (trial && h.state === "trial")
        e.health = { state: "ejected", until: this.now(), backoffMs: h.backoffMs };
      return;
    }
    if (outcome === "success") {
      e.failures = 0;
      if (h.state !== "healthy") this.readmit(e);
      return;
    }
    e.failures++;
    if (h.state === "trial") this.eject(e, Math.min(h.backoffMs * 2, this.maxMs));
    else if (h.state === "healthy" && e.failures >= this.threshold) this.eject(e, this.baseMs);
  }

  private eject(e: Entry, backoffMs: number): void {
    const wasHealthy = e.health.state === "healthy";
    e.health = { state: "ejected", until: this.now() + backoffMs, backoffMs };
    if (wasHealthy) this.opts.onHealthChange?.(e.replica, false);
  }

  private readmit(e: Entry): void {
    e.health = { state: "healthy" };
    e.failures = 0;
    this.opts.onHealthChange?.(e.replica, true);
  }

  private runProbe(e: Entry, backoffMs: number): void {
    e.health = { state: "trial", backoffMs };
    const settle = (ok: boolean) => {
      if (this.entries.get(e.replica.id) !== e || e.health.state !== "trial") return;
      if (ok) this.readmit(e);
      else this.eject(e, Math.min(backoffMs * 2, this.maxMs));
    };
    this.opts.probe!(e.replica).then(settle, () => settle(false));
  }
}

/** FNV-1a, then a murmur3 finaliser: cheap, and well spread even for ids that differ in one character. */
export function hash32(s: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return mix32(h);
}

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

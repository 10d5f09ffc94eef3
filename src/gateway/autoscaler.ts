/**
 * Concurrency autoscaling in the manner of Knative's KPA, for one revision. The gateway reports
 * the revision's concurrency (requests in flight plus requests held by the activator) whenever it
 * changes; `decide` turns the averages over a stable and a panic window into a replica count.
 *
 * No timers and no clock of its own: every call carries `now`, so tests drive minutes of
 * simulated traffic in microseconds and the gateway decides on whatever tick it likes.
 */

export interface AutoscalerParams {
  minReplicas: number;
  maxReplicas: number;
  /** Concurrent requests one replica should carry (vLLM: roughly its comfortable batch size). */
  targetConcurrency: number;
  /** Averaging window for normal decisions. Default 60 s. */
  stableWindowMs?: number;
  /** Short window that detects bursts. Default 10% of the stable window. */
  panicWindowMs?: number;
  /** Panic when the panic window wants this many times the ready replicas. Default 2. */
  panicThreshold?: number;
  /** A scale-down applies only once the lower count has been wanted for this long. Default 0. */
  scaleDownDelayMs?: number;
  /** With minReplicas 0: go to zero after this long without any request. Default 60 s. */
  scaleToZeroAfterMs?: number;
  /** One decision grows at most to ceil(rate·ready). Default 1000 (Knative's). */
  maxScaleUpRate?: number;
  /** One decision shrinks at most to ceil(ready/rate). Default 2 (Knative's). */
  maxScaleDownRate?: number;
  /** Averaging granularity. Default 1 s. */
  bucketMs?: number;
}

export interface Decision {
  desired: number;
  panic: boolean;
  /** Average concurrency over the stable and panic windows. */
  stableConcurrency: number;
  panicConcurrency: number;
  /** A short phrase for logs and events. */
  reason: string;
}

/** Time-weighted concurrency in fixed buckets: exact enough, and memory bounded by window/bucket. */
class ConcurrencyWindow {
  private buckets = new Map<number, number>();
  private lastT: number;
  private lastC = 0;

  constructor(
    private readonly bucketMs: number,
    private readonly keepMs: number,
    private readonly startT: number,
  ) {
    this.lastT = startT;
  }

  get current(): number {
    return this.lastC;
  }

  /** From `now` on, concurrency is `c`. */
  set(now: number, c: number): void {
    this.advance(now);
    this.lastC = Math.max(0, c);
  }

  /** Average over [now-windowMs, now], over the part of it since the window began. */
  average(now: number, windowMs: number): number {
    this.advance(now);
    const from = Math.max(now - windowMs, this.startT);
    const startIdx = Math.floor(from / this.bucketMs);
    const covered = now - Math.max(this.startT, startIdx * this.bucketMs);
    if (covered <= 0) return this.lastC;
    let sum = 0;
    for (const [idx, v] of this.buckets) if (idx >= startIdx) sum += v;
    return sum / covered;
  }

  private advance(now: number): void {
    if (now <= this.lastT) return;
    let t = this.lastT;
    while (t < now) {
      const idx = Math.floor(t / this.bucketMs);
      const end = Math.min(now, (idx + 1) * this.bucketMs);
      if (this.lastC > 0) this.buckets.set(idx, (this.buckets.get(idx) ?? 0) + this.lastC * (end - t));
      t = end;
      // Idle stretches cost nothing: jump straight to `now`.
      if (this.lastC === 0 && t < now) t = Math.max(t, Math.floor(now / this.bucketMs) * this.bucketMs);
    }
    this.lastT = now;
    const oldest = Math.floor((now - this.keepMs) / this.bucketMs) - 1;
    for (const idx of this.buckets.keys()) if (idx < oldest) this.buckets.delete(idx);
  }
}

export class Autoscaler {
  private readonly p: Required<AutoscalerParams>;
  private readonly window: ConcurrencyWindow;
  /** When concurrency last dropped to zero; undefined while something is in flight. */
  private idleSince: number | undefined;
  /** When panic was last (re)triggered; undefined when not panicking. */
  private panicSince: number | undefined;
  private maxPanicPods = 0;
  private readonly startT: number;
  /** Whether any request arrived since this autoscaler began (a cold revision stays at zero). */
  private sawTraffic = false;
  /** Whether a replica has been ready since this autoscaler began (a new revision proves itself). */
  private sawReady = false;
  /** Recent recommendations, for the scale-down delay's max-over-window. */
  private recent: { t: number; n: number }[] = [];

  constructor(params: AutoscalerParams, now: number) {
    const stable = params.stableWindowMs ?? 60_000;
    this.p = {
      minReplicas: Math.max(0, Math.floor(params.minReplicas)),
      maxReplicas: Math.max(1, Math.floor(params.maxReplicas), Math.floor(params.minReplicas)),
      targetConcurrency: params.targetConcurrency > 0 ? params.targetConcurrency : 1,
      stableWindowMs: stable,
      panicWindowMs: params.panicWindowMs ?? Math.max(1000, stable / 10),
      panicThreshold: params.panicThreshold ?? 2,
      scaleDownDelayMs: params.scaleDownDelayMs ?? 0,
      scaleToZeroAfterMs: params.scaleToZeroAfterMs ?? 60_000,
      maxScaleUpRate: params.maxScaleUpRate ?? 1000,
      maxScaleDownRate: params.maxScaleDownRate ?? 2,
      bucketMs: params.bucketMs ?? 1000,
    };
    this.window = new ConcurrencyWindow(this.p.bucketMs, stable, now);
    this.startT = now;
    this.idleSince = now;
  }

  get params(): Readonly<Required<AutoscalerParams>> {
    return this.p;
  }

  /** Reports the revision's concurrency (in flight + held) as of `now`; call on every change. */
  record(now: number, concurrency: number): void {
    this.window.set(now, concurrency);
    if (concurrency > 0) {
      this.idleSince = undefined;
      this.sawTraffic = true;
    } else this.idleSince ??= now;
  }

  /**
   * The replica count the revision should have, given `ready` replicas now and `starting` ones
   * (started, not ready yet: a new revision proving itself, a replacement).
   */
  decide(now: number, ready: number, starting = 0): Decision {
    const p = this.p;
    if (ready > 0 && !this.sawReady) {
      this.sawReady = true;
      // A new revision's idle time counts from when it could first have served, not from when
      // it was created: on a loaded machine its first replica can take longer than
      // scaleToZeroAfter to load its model.
      if (!this.sawTraffic && this.idleSince !== undefined) this.idleSince = now;
    }
    const stableC = this.window.average(now, p.stableWindowMs);
    // From zero, the held requests are all the signal there is; averaging them away would start
    // one replica for a queue that needs several.
    const panicAvg = this.window.average(now, p.panicWindowMs);
    const panicC = ready === 0 ? Math.max(panicAvg, this.window.current) : panicAvg;
    const base = Math.max(1, ready);
    const lower = ready > 0 ? Math.ceil(ready / p.maxScaleDownRate) : 0;
    const clampRate = (n: number) => Math.min(Math.max(n, lower), Math.ceil(base * p.maxScaleUpRate));
    // Something in flight always wants at least one replica, whatever the averages say.
    const floorActive = this.window.current > 0 ? 1 : 0;
    const stableWant = Math.max(clampRate(Math.ceil(stableC / p.targetConcurrency)), floorActive);
    const panicWant = Math.max(clampRate(Math.ceil(panicC / p.targetConcurrency)), floorActive);
    const over = panicWant > 0 && panicWant >= p.panicThreshold * base;

    if (over) this.panicSince = now;
    else if (this.panicSince !== undefined && now - this.panicSince >= p.stableWindowMs) {
      // The burst has had a full stable window to show up in the stable average.
      this.panicSince = undefined;
      this.maxPanicPods = 0;
    }

    let want = stableWant;
    let reason = `stable average ${round(stableC)} over target ${p.targetConcurrency}`;
    const panic = this.panicSince !== undefined;
    if (panic) {
      // Never scale down while panicking: hold the highest count the burst asked for.
      this.maxPanicPods = Math.max(this.maxPanicPods, stableWant, panicWant, ready);
      want = this.maxPanicPods;
      reason = `panic: ${round(panicC)} concurrent in the last ${p.panicWindowMs / 1000} s`;
    }

    // A first replica still starting, before any replica was ready or any request came, is the
    // revision proving itself: stopping it would leave the revision never shown ready.
    const proving = !this.sawReady && !this.sawTraffic && starting > 0;
    if (
      p.minReplicas === 0 &&
      !proving &&
      this.idleSince !== undefined &&
      now - this.idleSince >= p.scaleToZeroAfterMs
    ) {
      // Idle long enough: zero, regardless of the scale-down delay (the grace period is this).
      this.recent = [];
      this.panicSince = undefined;
      this.maxPanicPods = 0;
      return {
        desired: 0,
        panic: false,
        stableConcurrency: stableC,
        panicConcurrency: panicC,
        reason: `no requests for ${Math.round((now - this.idleSince) / 1000)} s`,
      };
    }
    // Not yet idle long enough for zero: keep one replica for the traffic that just ended.
    if (want === 0 && (this.sawTraffic || ready > 0)) want = 1;

    if (p.scaleDownDelayMs > 0) {
      this.recent.push({ t: now, n: want });
      this.recent = this.recent.filter((r) => now - r.t < p.scaleDownDelayMs);
      const held = Math.max(...this.recent.map((r) => r.n));
      if (held > want) reason = `holding ${held} for the scale-down delay (${reason})`;
      want = held;
    }

    // Until a full stable window has been seen (a restarted gateway, a revision just created),
    // the averages undercount: never scale below what is running or starting on so little
    // evidence (a new revision's first replica proves it ready; only idleness takes it to zero).
    const running = ready + starting;
    if (now - this.startT < p.stableWindowMs && want < running) {
      want = running;
      reason = `collecting a full stable window before scaling down (${reason})`;
    }

    const desired = Math.min(Math.max(want, p.minReplicas), p.maxReplicas);
    return { desired, panic, stableConcurrency: stableC, panicConcurrency: panicC, reason };
  }
}

const round = (x: number) => Math.round(x * 100) / 100;

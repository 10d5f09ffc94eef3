import { Activator } from "./activator.js";
import { type GatewayContext, labels, type Route, type RouteContext } from "./context.js";
import type {
  ConcurrencyReport,
  GatewayDeps,
  GatewayOptions,
  HandleOptions,
  HandleResult,
  ScaleTarget,
  ServiceEndpoint,
} from "./contract.js";
import { ClientGoneError, GatewayError, sendGatewayError, unknownModel } from "./errors.js";
import { forward } from "./forward.js";
import type { GatewayRequest, GatewayResponse } from "./h1.js";
import { type LeaseOptions, lease, type ReplicaLease } from "./lease.js";
import { createGatewayMetrics, type GatewayMetrics } from "./metrics.js";
import { HttpForwarder } from "./proxy.js";
import { RateLimiter } from "./ratelimit.js";
import { recordRequest } from "./recording.js";
import { updateService } from "./revisions.js";
import { route } from "./route.js";
import { autoscaleOnce, recordRemote, scaleFromZero, takeReport, wake } from "./scaling.js";

export { promptPrefix } from "./affinity.js";
export type {
  ConcurrencyReport,
  EndpointDirectory,
  GatewayDeps,
  GatewayOptions,
  HandleOptions,
  HandleResult,
  ReplicaEndpoint,
  RevisionEndpoint,
  Scaler,
  ScaleTarget,
  ServiceEndpoint,
  TraceCapture,
} from "./contract.js";
export type { LeaseOptions, ReplicaLease } from "./lease.js";
export type { KeyUsage, RateLimit } from "./ratelimit.js";

/**
 * The inference gateway's core: one request goes
 *   1. body read (capped) → model name → EndpointDirectory → access check (caller's callback)
 *   2. traffic split → revision
 *   3. no ready replica → activator hold (first hold asks the Scaler for a scale from zero)
 *   4. balancer pick → proxy (retries on another replica, ejection of failing ones)
 *   5. metrics; the revision's concurrency goes to its autoscaler on every change
 * and a ticker turns each revision's autoscaler decision into `Scaler.setDesired`.
 *
 * It knows nothing of API keys, InferenceService objects or Kubernetes: the integrator resolves
 * the principal, implements the two ports of contract.ts and calls `update` when endpoints change.
 *
 * The steps live beside it: route.ts (1–2), revisions.ts (the split, revision state, fallback),
 * activation.ts (3), forward.ts (4), recording.ts (5's request metrics), scaling.ts (the ticker,
 * scale from zero, reports between gateway replicas), affinity.ts (the affinity key).
 */
export class Gateway {
  readonly activator: Activator;
  readonly metrics: GatewayMetrics;
  /** Per-key request and token budgets; the integrator admits each keyed request here. */
  readonly limits: RateLimiter;
  private readonly g: GatewayContext;
  private timer?: NodeJS.Timeout;
  private ticking = false;

  constructor(deps: GatewayDeps, opts: GatewayOptions = {}) {
    const now = deps.now ?? Date.now;
    const metrics = deps.metrics ?? createGatewayMetrics(deps.registry ?? missingRegistry());
    const states: GatewayContext["states"] = new Map();
    this.metrics = metrics;
    this.limits = new RateLimiter(now);
    this.activator = new Activator({
      capacity: opts.activator?.capacity,
      timeoutMs: opts.activator?.timeoutMs,
      now,
      onHold: (key) => scaleFromZero(this.g, key),
      onDepth: (key, depth) => {
        const st = states.get(key);
        if (st) metrics.activatorDepth.set(labels(st.target), depth);
      },
    });
    this.g = {
      deps,
      opts,
      now,
      log: deps.log?.child({ component: "gateway" }),
      metrics,
      activator: this.activator,
      proxy: new HttpForwarder({ connectTimeoutMs: opts.connectTimeoutMs, now }),
      states,
      splitters: new Map(),
    };
  }

  /** Starts the autoscaling ticker. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.g.opts.tickMs ?? 2000);
    this.timer.unref();
  }

  /** Stops the ticker, refuses held requests, closes pooled connections. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.activator.close();
    this.g.proxy.close();
  }

  /**
   * Tells the gateway a service's endpoints changed (replicas became ready or went away, weights
   * changed). Call it from the InferenceService informer: it releases requests held for a
   * revision that now has a ready replica, and lets a never-used revision be scaled to zero.
   */
  update(endpoint: ServiceEndpoint): void {
    updateService(this.g, endpoint);
  }

  /**
   * Forgets a deleted service: its held requests get a 404 and its autoscaling state goes. Call
   * it when the InferenceService is deleted.
   */
  remove(project: string, service: string): void {
    this.g.splitters.delete(`${project}/${service}`);
    for (const [key, st] of this.g.states) {
      if (st.target.project !== project || st.target.service !== service) continue;
      this.g.states.delete(key);
      this.activator.fail(key, unknownModel(st.model ?? service));
    }
  }

  /** Forwards one OpenAI-style request; always answers (an OpenAI-format error on failure). */
  handle(req: GatewayRequest, res: GatewayResponse, opts: HandleOptions = {}): Promise<HandleResult> {
    return new Promise((resolve) => this.serve(req, res, opts, resolve));
  }

  /**
   * `handle` with an optional callback: the per-request path of the front, which makes no promise
   * unless a step is truly asynchronous (a body still to read, a cold start, a remote directory).
   * A promise and its microtask per layer cost several µs a request (bench:gateway). Never throws.
   */
  serve(
    req: GatewayRequest,
    res: GatewayResponse,
    opts: HandleOptions = {},
    done?: (result: HandleResult) => void,
  ): void {
    const g = this.g;
    const started = g.now();
    const ctx: RouteContext = { st: undefined };
    const fail = (err: unknown) => {
      let result: HandleResult;
      if (err instanceof ClientGoneError) result = { status: 499 };
      else if (err instanceof GatewayError) {
        sendGatewayError(res, err);
        result = { status: err.httpStatus };
      } else {
        g.log?.error({ err }, "gateway request failed");
        const e = new GatewayError(500, "server_error", "internal_error", "the gateway failed; retry");
        sendGatewayError(res, e);
        result = { status: 500 };
      }
      if (ctx.st) Object.assign(result, ctx.st.target);
      recordRequest(g, ctx.st, started, result);
      done?.(result);
    };
    const go = (r: Route) => {
      try {
        forward(g, req, res, opts, r, started, done);
      } catch (err) {
        fail(err);
      }
    };
    try {
      const r = route(g, req, res, opts, started, ctx);
      if (r instanceof Promise) r.then(go, fail);
      else go(r);
    } catch (err) {
      fail(err);
    }
  }

  /**
   * A replica of project/service for traffic that is not an OpenAI request (an App's pages and
   * WebSockets): held like a request while none is ready (scale from zero), picked by
   * `affinityKey`, and counted in flight until the lease is released (lease.ts).
   */
  lease(project: string, service: string, opts: LeaseOptions = {}): Promise<ReplicaLease> {
    return lease(this.g, project, service, opts);
  }

  /** One autoscaling pass over every known revision (the ticker calls this; tests may too). */
  async tick(): Promise<void> {
    // A slow directory must not stack ticks up.
    if (this.ticking) return;
    this.ticking = true;
    try {
      await autoscaleOnce(this.g);
    } finally {
      this.ticking = false;
    }
  }

  /**
   * This gateway's load per revision since the last call (a follower sends it to the gateway
   * that decides, every second or so). Revisions idle over the whole window are left out,
   * after one report of zero.
   */
  takeReport(): ConcurrencyReport[] {
    return takeReport(this.g);
  }

  /**
   * Another gateway's load on a revision: added to this one's until that gateway reports again
   * (or stops reporting for `staleMs`). A held request there wakes a revision at zero here.
   */
  recordRemote(source: string, report: ConcurrencyReport, staleMs = 5000): void {
    recordRemote(this.g, source, report, staleMs);
  }

  /** Another gateway holds a request for this revision: start a replica now. */
  wake(target: ScaleTarget): void {
    wake(this.g, target);
  }
}

function missingRegistry(): never {
  throw new Error("Gateway needs deps.registry or deps.metrics");
}

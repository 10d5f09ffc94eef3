import type { IncomingMessage } from "node:http";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { Activator } from "./activator.js";
import { Autoscaler, type AutoscalerParams } from "./autoscaler.js";
import { type AffinityOptions, Balancer, type EjectionOptions, type Lease } from "./balancer.js";
import {
  badRequest,
  bodyTooLarge,
  ClientGoneError,
  GatewayError,
  keyNotAllowed,
  sendGatewayError,
  unavailable,
  unknownModel,
} from "./errors.js";
import type { GatewayRequest, GatewayResponse } from "./h1.js";
import { createGatewayMetrics, type GatewayMetrics } from "./metrics.js";
import { HttpForwarder, readBody } from "./proxy.js";
import { TrafficSplitter } from "./traffic.js";
import type { Usage } from "./usage.js";

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
 * the principal, implements the two ports below and calls `update` when endpoints change.
 */

export interface ReplicaEndpoint {
  /** Stable across updates (pod name, process id): health and counters are kept by it. */
  id: string;
  host: string;
  port: number;
  ready: boolean;
}

export interface RevisionEndpoint {
  name: string;
  /** Share of traffic relative to the other revisions (e.g. 90 and 10). */
  weight: number;
  replicas: ReplicaEndpoint[];
}

export interface ServiceEndpoint {
  project: string;
  service: string;
  revisions: RevisionEndpoint[];
  /** Applies to each revision on its own (a canary scales apart from stable). */
  autoscaling: AutoscalerParams;
  /** Prefix affinity (shared system prompts hit a replica's KV cache); off when absent. */
  affinity?: AffinityOptions;
  /** Headers set on every upstream request (an API key the model server expects, say). */
  upstreamHeaders?: Record<string, string>;
}

/** Port: where a model name leads. Read from an in-memory cache; called on every request. */
export interface EndpointDirectory {
  /**
   * The service serving `model`, or undefined for an unknown model. `project` is the caller's
   * hint (a path segment or the principal's project) where model names are not globally unique.
   */
  resolve(
    model: string,
    project?: string,
  ): ServiceEndpoint | undefined | Promise<ServiceEndpoint | undefined>;
}

export interface ScaleTarget {
  project: string;
  service: string;
  revision: string;
}

/** Port: makes a revision's replica count what the gateway asks. Called only on change. */
export interface Scaler {
  setDesired(target: ScaleTarget, replicas: number, reason: string): void | Promise<void>;
}

export interface HandleOptions {
  /** The model, when the route already knows it; otherwise read from the JSON body's `model`. */
  model?: string;
  /** Project hint passed to the directory. */
  project?: string;
  /**
   * The body, when the framework read it already (Fastify: a `parseAs: "buffer"` content-type
   * parser); otherwise the gateway reads `req`.
   */
  body?: Buffer;
  /** Path and query sent upstream; default `req.url`. */
  path?: string;
  /** May the caller use this service? false → 403. Auth itself stays with the integrator. */
  authorize?: (endpoint: ServiceEndpoint) => boolean | Promise<boolean>;
}

export interface HandleResult {
  status: number;
  project?: string;
  service?: string;
  revision?: string;
  replica?: string;
  usage?: Usage;
}

export interface GatewayOptions {
  /** Largest request body (buffered so that it can be retried). Default 8 MB. */
  maxBodyBytes?: number;
  /** Further replicas tried after a connection failure. Default 2. */
  maxRetries?: number;
  connectTimeoutMs?: number;
  /** Time to response headers before a 504. Default 5 min. */
  responseTimeoutMs?: number;
  /** Held requests per revision, and how long each may wait. Defaults 1000 and 5 min. */
  activator?: { capacity?: number; timeoutMs?: number };
  ejection?: EjectionOptions;
  tieBreak?: "random" | "round-robin";
  /** Whether an upstream 5xx counts towards ejection. Default true. */
  failOn5xx?: boolean;
  /** Request headers never forwarded upstream. Default ["authorization"]. */
  dropRequestHeaders?: string[];
  /** How often autoscaling decisions are made. Default 2 s. */
  tickMs?: number;
  /** Response header naming the replica that answered (debugging); false for none. Default "x-loom-replica". */
  replicaHeader?: string | false;
  /**
   * Whether this gateway decides replica counts (default true). One of several gateway replicas
   * sets false: it reports its concurrency (`takeReport`) to the one that decides, which adds it
   * to its own (`recordRemote`); its Scaler is then called only to wake a revision at zero.
   */
  autoscale?: boolean;
}

/** A revision's load as one gateway saw it over a report window. */
export interface ConcurrencyReport {
  project: string;
  service: string;
  revision: string;
  /** Time-weighted average of requests in flight and held over the window. */
  concurrency: number;
  /** Requests held right now for want of a ready replica. */
  held: number;
}

export interface GatewayDeps {
  directory: EndpointDirectory;
  scaler: Scaler;
  /** Metrics go here (or pass `metrics` made once per registry). */
  registry?: Registry;
  metrics?: GatewayMetrics;
  log?: Logger;
  now?: () => number;
  random?: () => number;
}

interface RevState {
  key: string;
  target: ScaleTarget;
  /** The last model name (and project hint) that reached this revision, so the ticker can re-resolve it. */
  model?: string;
  projectHint?: string;
  balancer: Balancer;
  balancerSig: string;
  autoscaler: Autoscaler;
  autoscalerSig: string;
  ready: number;
  /** Replicas started and not ready yet. */
  starting: number;
  inFlight: number;
  held: number;
  lastDesired?: number;
  /** Concurrency other gateways report for this revision, by gateway, with when it came. */
  remote?: Map<string, { concurrency: number; at: number }>;
  remoteSum: number;
  /** This gateway's own concurrency as last recorded. */
  prevLocal: number;
  /** Time-weighted concurrency since the last report: area (request·ms) and where it began. */
  reportArea: number;
  reportSince: number;
  /** Whether the last report said this revision had load (an idle one is reported once, as 0). */
  reportedBusy?: boolean;
  lastChange: number;
  upstreamHeaders?: Record<string, string>;
  affinityChars?: number;
  /**
   * The directory's objects this state was last synced from: the directory hands out the same
   * objects until an endpoint changes, so a request that finds them again skips the sync (it
   * cost a few µs a request in signatures and label hashing: bench:gateway).
   */
  syncedEp?: ServiceEndpoint;
  syncedRev?: RevisionEndpoint;
  /** Metric children bound to this revision's labels (prom-client hashes label sets otherwise). */
  bound?: {
    inFlight: { inc(): void; dec(): void };
    duration: { observe(v: number): void };
    ttfb: { observe(v: number): void };
    promptTokens: { inc(n: number): void };
    completionTokens: { inc(n: number): void };
    requests: Map<string, { inc(): void }>;
  };
}

const revKey = (t: ScaleTarget) => `${t.project}/${t.service}/${t.revision}`;

export class Gateway {
  readonly activator: Activator;
  readonly metrics: GatewayMetrics;
  private readonly proxy: HttpForwarder;
  private readonly states = new Map<string, RevState>();
  private readonly splitters = new Map<
    string,
    { sig: string; splitter: TrafficSplitter; ep?: ServiceEndpoint }
  >();
  private readonly now: () => number;
  private readonly log?: Logger;
  private timer?: NodeJS.Timeout;
  private ticking = false;

  constructor(
    private readonly deps: GatewayDeps,
    private readonly opts: GatewayOptions = {},
  ) {
    this.now = deps.now ?? Date.now;
    this.log = deps.log?.child({ component: "gateway" });
    this.metrics = deps.metrics ?? createGatewayMetrics(deps.registry ?? missingRegistry());
    this.proxy = new HttpForwarder({ connectTimeoutMs: opts.connectTimeoutMs, now: this.now });
    this.activator = new Activator({
      capacity: opts.activator?.capacity,
      timeoutMs: opts.activator?.timeoutMs,
      now: this.now,
      onHold: (key) => this.scaleFromZero(key),
      onDepth: (key, depth) => {
        const st = this.states.get(key);
        if (st) this.metrics.activatorDepth.set(labels(st.target), depth);
      },
    });
  }

  /** Starts the autoscaling ticker. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.opts.tickMs ?? 2000);
    this.timer.unref();
  }

  /** Stops the ticker, refuses held requests, closes pooled connections. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.activator.close();
    this.proxy.close();
  }

  /**
   * Tells the gateway a service's endpoints changed (replicas became ready or went away, weights
   * changed). Call it from the InferenceService informer: it releases requests held for a
   * revision that now has a ready replica, and lets a never-used revision be scaled to zero.
   */
  update(endpoint: ServiceEndpoint): void {
    for (const rev of endpoint.revisions) this.sync(endpoint, rev);
    this.splitterFor(endpoint);
  }

  /**
   * Forgets a deleted service: its held requests get a 404 and its autoscaling state goes. Call
   * it when the InferenceService is deleted.
   */
  remove(project: string, service: string): void {
    this.splitters.delete(`${project}/${service}`);
    for (const [key, st] of this.states) {
      if (st.target.project !== project || st.target.service !== service) continue;
      this.states.delete(key);
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
    const started = this.now();
    const ctx: RouteContext = { st: undefined };
    const fail = (err: unknown) => {
      let result: HandleResult;
      if (err instanceof ClientGoneError) result = { status: 499 };
      else if (err instanceof GatewayError) {
        sendGatewayError(res, err);
        result = { status: err.httpStatus };
      } else {
        this.log?.error({ err }, "gateway request failed");
        const e = new GatewayError(500, "server_error", "internal_error", "the gateway failed; retry");
        sendGatewayError(res, e);
        result = { status: 500 };
      }
      if (ctx.st) Object.assign(result, ctx.st.target);
      this.record(ctx.st, started, result);
      done?.(result);
    };
    const go = (route: Route) => {
      try {
        this.forward(req, res, opts, route, started, done);
      } catch (err) {
        fail(err);
      }
    };
    try {
      const route = this.route(req, res, opts, started, ctx);
      if (route instanceof Promise) route.then(go, fail);
      else go(route);
    } catch (err) {
      fail(err);
    }
  }

  /** Request metrics, once the request is over (however it ended). */
  private record(st: RevState | undefined, started: number, result: HandleResult): void {
    if (st) {
      const b = this.bound(st);
      const code = String(result.status);
      let counter = b.requests.get(code);
      if (!counter) {
        counter = this.metrics.requests.labels({ ...labels(st.target), code });
        b.requests.set(code, counter);
      }
      counter.inc();
      b.duration.observe((this.now() - started) / 1000);
      if (result.usage) {
        b.promptTokens.inc(result.usage.promptTokens);
        b.completionTokens.inc(result.usage.completionTokens);
      }
    } else {
      const l = { project: "", service: "", revision: "" };
      this.metrics.requests.inc({ ...l, code: String(result.status) });
      this.metrics.duration.observe(l, (this.now() - started) / 1000);
    }
  }

  /** One autoscaling pass over every known revision (the ticker calls this; tests may too). */
  async tick(): Promise<void> {
    // A slow directory must not stack ticks up.
    if (this.ticking) return;
    this.ticking = true;
    try {
      await this.tickOnce();
    } finally {
      this.ticking = false;
    }
  }

  private async tickOnce(): Promise<void> {
    // Belt and braces for a missed `update`: re-resolve revisions that hold requests.
    for (const key of this.activator.keys()) {
      const st = this.states.get(key);
      if (!st?.model) continue;
      try {
        const ep = await this.deps.directory.resolve(st.model, st.projectHint);
        if (ep) this.update(ep);
      } catch (err) {
        this.log?.warn({ err, key }, "re-resolving a held revision failed");
      }
    }
    const now = this.now();
    const live = new Set<string>();
    const decides = this.opts.autoscale !== false;
    for (const st of this.states.values()) {
      for (const r of st.syncedRev?.replicas ?? []) live.add(`${r.host}:${r.port}`);
      if (!decides) continue;
      if (st.remote?.size) this.sumRemote(st);
      const d = st.autoscaler.decide(now, st.ready, st.starting);
      this.metrics.panic.set(labels(st.target), d.panic ? 1 : 0);
      this.setDesired(st, d.desired, d.reason);
    }
    // Replicas come and go on new ports: their connection pools go with them.
    this.proxy.retain(live);
  }

  /**
   * Steps 1–3: the revision that serves the request, with the body and model name. Synchronous
   * in the usual case (the front buffered the body, the directory and the access check answer
   * at once, a replica is ready); a promise only when some step has to wait.
   */
  private route(
    req: GatewayRequest,
    res: GatewayResponse,
    opts: HandleOptions,
    started: number,
    ctx: RouteContext,
  ): Route | Promise<Route> {
    const max = this.opts.maxBodyBytes ?? 8 * 1024 * 1024;
    // Only Node's own requests come without a buffered body (the front always buffers).
    return then(opts.body ?? readBody(req as IncomingMessage, max), (body) => {
      if (!body) throw bodyTooLarge(max);
      const json = lazyJson(body);
      const model = opts.model ?? json().model;
      if (typeof model !== "string" || !model) {
        throw badRequest(
          "you must provide a model parameter: the name of an InferenceService's model",
          "model",
        );
      }
      return then(this.deps.directory.resolve(model, opts.project), (ep) => {
        if (!ep) throw unknownModel(model);
        return then(opts.authorize ? opts.authorize(ep) : true, (allowed) => {
          if (!allowed) throw keyNotAllowed(model, ep.project);
          const st = this.pickRevision(ep, model, opts.project);
          ctx.st = st;
          const route: Route = { st, body, json, model, label: `model '${model}'` };
          return st.balancer.size === 0 ? this.hold(res, opts, started, ctx, route) : route;
        });
      });
    });
  }

  /** Cold: holds the request until a replica is ready; the first hold starts a scale from zero. */
  private async hold(
    res: GatewayResponse,
    opts: HandleOptions,
    started: number,
    ctx: RouteContext,
    route: Route,
  ): Promise<Route> {
    const { model, label } = route;
    let st = route.st;
    const ac = new AbortController();
    const onClose = () => {
      if (!res.writableEnded) ac.abort();
    };
    res.on("close", onClose);
    const deadline = started + (this.opts.activator?.timeoutMs ?? 300_000);
    const heldAt = this.now();
    const waitLabels = { project: st.target.project, service: st.target.service };
    try {
      while (st.balancer.size === 0) {
        st.held++;
        this.recordConcurrency(st);
        try {
          await this.activator.wait(st.key, {
            signal: ac.signal,
            timeoutMs: Math.max(0, deadline - this.now()),
            label,
          });
        } finally {
          st.held--;
          this.recordConcurrency(st);
        }
        // Woken: the directory has the truth (a revision may have gone, weights changed).
        const ep = await this.deps.directory.resolve(model, opts.project);
        if (!ep) throw unknownModel(model);
        this.update(ep);
        const revision = st.target.revision;
        if (!ep.revisions.some((r) => r.name === revision)) st = this.pickRevision(ep, model, opts.project);
        ctx.st = st;
      }
      this.metrics.activatorWait.observe({ ...waitLabels, result: "released" }, (this.now() - heldAt) / 1000);
    } catch (err) {
      const result =
        err instanceof ClientGoneError
          ? "gone"
          : err instanceof GatewayError && err.code === "model_overloaded"
            ? "full"
            : "timeout";
      this.metrics.activatorWait.observe({ ...waitLabels, result }, (this.now() - heldAt) / 1000);
      throw err;
    } finally {
      res.off("close", onClose);
    }
    return { ...route, st };
  }

  /** Steps 4–5: to a replica of the revision, with retries; metrics when the exchange is over. */
  private forward(
    req: GatewayRequest,
    res: GatewayResponse,
    opts: HandleOptions,
    route: Route,
    started: number,
    done: ((result: HandleResult) => void) | undefined,
  ): void {
    const rev = route.st;
    const key = rev.affinityChars ? affinityKey(route.json, rev.affinityChars) : undefined;
    rev.inFlight++;
    const bound = this.bound(rev);
    bound.inFlight.inc();
    this.recordConcurrency(rev);
    this.proxy.send(
      req,
      res,
      {
        pick: (tried) => rev.balancer.pick({ key, exclude: tried }) ?? this.fallback(rev, tried),
        body: route.body,
        path: opts.path,
        label: route.label,
        maxRetries: this.opts.maxRetries,
        connectTimeoutMs: this.opts.connectTimeoutMs,
        responseTimeoutMs: this.opts.responseTimeoutMs,
        failOn5xx: this.opts.failOn5xx,
        dropRequestHeaders: this.opts.dropRequestHeaders,
        replicaHeader: this.opts.replicaHeader,
        setRequestHeaders: rev.upstreamHeaders,
        onRetry: (reason, replica) => {
          const l = labels(rev.target);
          this.metrics.retries.inc({ project: l.project, service: l.service, reason });
          this.log?.warn(
            { ...l, replica, reason },
            "upstream connection failed; retrying on another replica",
          );
        },
        onFirstByte: (ms) => bound.ttfb.observe(ms / 1000),
      },
      (r) => {
        rev.inFlight--;
        bound.inFlight.dec();
        this.recordConcurrency(rev);
        const result: HandleResult = {
          status: r.status,
          ...rev.target,
          replica: r.replica,
          usage: r.usage,
        };
        this.record(rev, started, result);
        done?.(result);
      },
    );
  }

  /**
   * A replica of another revision in traffic, once every replica of `rev` has failed before
   * answering. A rollout stops the old revision's replicas as the new one takes its traffic; a
   * request bound to the old one just before would otherwise fail, though it never reached a
   * working server and the service can still answer it.
   */
  private fallback(rev: RevState, tried: ReadonlySet<string>): Lease | undefined {
    if (tried.size === 0) return undefined;
    const { project, service, revision } = rev.target;
    const latest = this.splitters.get(`${project}/${service}`)?.ep;
    if (!latest) return undefined;
    for (const r of latest.revisions) {
      if (r.name === revision || r.weight <= 0) continue;
      const st = this.states.get(revKey({ project, service, revision: r.name })) ?? this.sync(latest, r);
      const lease = st.balancer.pick({ exclude: tried });
      if (lease) return lease;
    }
    return undefined;
  }

  private pickRevision(ep: ServiceEndpoint, model: string, projectHint: string | undefined): RevState {
    const name = this.splitterFor(ep).pick();
    const rev = ep.revisions.find((r) => r.name === name);
    if (!rev) throw unavailable(`model '${model}' has no revision to serve it; check the InferenceService`);
    const known = this.states.get(revKey({ project: ep.project, service: ep.service, revision: rev.name }));
    const st = known && known.syncedEp === ep && known.syncedRev === rev ? known : this.sync(ep, rev);
    st.model = model;
    st.projectHint = projectHint;
    return st;
  }

  private splitterFor(ep: ServiceEndpoint): TrafficSplitter {
    const key = `${ep.project}/${ep.service}`;
    let s = this.splitters.get(key);
    if (s?.ep === ep) return s.splitter; // the usual case: nothing changed since the last request
    const sig = TrafficSplitter.signature(ep.revisions);
    if (!s) {
      s = { sig, splitter: new TrafficSplitter(ep.revisions) };
      this.splitters.set(key, s);
    } else if (s.sig !== sig) {
      s.splitter.update(ep.revisions);
      s.sig = sig;
    }
    s.ep = ep;
    return s.splitter;
  }

  /** Brings a revision's state in line with the directory; releases held requests once it has a ready replica. */
  private sync(ep: ServiceEndpoint, rev: RevisionEndpoint): RevState {
    const target = { project: ep.project, service: ep.service, revision: rev.name };
    const key = revKey(target);
    const now = this.now();
    const aSig = JSON.stringify(ep.autoscaling);
    const bSig = JSON.stringify(ep.affinity ?? null);
    let st = this.states.get(key);
    if (!st) {
      st = {
        key,
        target,
        balancer: this.newBalancer(ep, target),
        balancerSig: bSig,
        autoscaler: new Autoscaler(ep.autoscaling, now),
        autoscalerSig: aSig,
        ready: 0,
        starting: 0,
        inFlight: 0,
        held: 0,
        remoteSum: 0,
        prevLocal: 0,
        reportArea: 0,
        reportSince: now,
        lastChange: now,
      };
      this.states.set(key, st);
    }
    if (st.autoscalerSig !== aSig) {
      // New parameters: start a fresh history rather than judge old samples by new targets.
      st.autoscaler = new Autoscaler(ep.autoscaling, now);
      st.autoscalerSig = aSig;
      this.recordConcurrency(st);
    }
    if (st.balancerSig !== bSig) {
      st.balancer = this.newBalancer(ep, target);
      st.balancerSig = bSig;
    }
    st.upstreamHeaders = ep.upstreamHeaders;
    st.affinityChars = ep.affinity?.prefixChars;
    const ready = rev.replicas.filter((r) => r.ready);
    st.balancer.update(ready.map(({ id, host, port }) => ({ id, host, port })));
    st.ready = ready.length;
    st.starting = rev.replicas.length - ready.length;
    this.metrics.replicas.set({ ...labels(target), state: "ready" }, ready.length);
    if (ready.length > 0 && this.activator.depth(key) > 0) this.activator.ready(key);
    st.syncedEp = ep;
    st.syncedRev = rev;
    return st;
  }

  private newBalancer(ep: ServiceEndpoint, target: ScaleTarget): Balancer {
    return new Balancer({
      tieBreak: this.opts.tieBreak,
      ejection: this.opts.ejection,
      affinity: ep.affinity,
      now: this.now,
      random: this.deps.random,
      onHealthChange: (replica, healthy) => {
        if (!healthy) this.metrics.ejections.inc(labels(target));
        this.log?.[healthy ? "info" : "warn"](
          { ...labels(target), replica: replica.id },
          healthy ? "replica back in rotation" : "replica ejected after consecutive failures",
        );
      },
    });
  }

  private bound(st: RevState): NonNullable<RevState["bound"]> {
    if (!st.bound) {
      const l = labels(st.target);
      st.bound = {
        inFlight: this.metrics.inFlight.labels(l),
        duration: this.metrics.duration.labels(l),
        ttfb: this.metrics.ttfb.labels(l),
        promptTokens: this.metrics.tokens.labels({ project: l.project, service: l.service, kind: "prompt" }),
        completionTokens: this.metrics.tokens.labels({
          project: l.project,
          service: l.service,
          kind: "completion",
        }),
        requests: new Map(),
      };
    }
    return st.bound;
  }

  private recordConcurrency(st: RevState): void {
    const now = this.now();
    const local = st.inFlight + st.held;
    // The area under this gateway's own concurrency, for its reports; `local` changed just now,
    // so the previous value held since the last change.
    st.reportArea += st.prevLocal * (now - st.lastChange);
    st.prevLocal = local;
    st.lastChange = now;
    st.autoscaler.record(now, local + st.remoteSum);
  }

  /**
   * This gateway's load per revision since the last call (a follower sends it to the gateway
   * that decides, every second or so). Revisions idle over the whole window are left out,
   * after one report of zero.
   */
  takeReport(): ConcurrencyReport[] {
    const now = this.now();
    const out: ConcurrencyReport[] = [];
    for (const st of this.states.values()) {
      const area = st.reportArea + st.prevLocal * (now - st.lastChange);
      const window = now - st.reportSince;
      st.reportArea = 0;
      st.reportSince = now;
      st.lastChange = now;
      const busy = area > 0 || st.held > 0;
      // An idle revision is reported once more, as zero, so that the deciding gateway stops
      // counting it at once rather than when the last report goes stale.
      if (!busy && !st.reportedBusy) continue;
      st.reportedBusy = busy;
      out.push({ ...st.target, concurrency: window > 0 ? area / window : st.prevLocal, held: st.held });
    }
    return out;
  }

  /**
   * Another gateway's load on a revision: added to this one's until that gateway reports again
   * (or stops reporting for `staleMs`). A held request there wakes a revision at zero here.
   */
  recordRemote(source: string, report: ConcurrencyReport, staleMs = 5000): void {
    const ep = { project: report.project, service: report.service, revision: report.revision };
    const st = this.states.get(revKey(ep));
    if (!st) return; // not published here (yet): the directory is the truth
    st.remote ??= new Map();
    st.remote.set(source, { concurrency: report.concurrency, at: this.now() });
    this.sumRemote(st, staleMs);
    if (report.held > 0 && st.ready === 0) this.scaleFromZero(st.key);
  }

  /** Another gateway holds a request for this revision: start a replica now. */
  wake(target: ScaleTarget): void {
    const st = this.states.get(revKey(target));
    if (st && st.ready === 0) this.scaleFromZero(st.key);
  }

  private sumRemote(st: RevState, staleMs = 5000): void {
    const now = this.now();
    let sum = 0;
    for (const [source, r] of st.remote ?? []) {
      if (now - r.at > staleMs) st.remote!.delete(source);
      else sum += r.concurrency;
    }
    if (sum === st.remoteSum) return;
    st.remoteSum = sum;
    st.autoscaler.record(now, st.inFlight + st.held + sum);
  }

  private scaleFromZero(key: string): void {
    const st = this.states.get(key);
    if (!st) return;
    if (this.opts.autoscale === false) {
      // A follower only wakes the revision; the deciding gateway counts from there. Asked again
      // on every first hold: the deciding one may have scaled back to zero since.
      st.lastDesired = undefined;
      this.setDesired(st, 1, "scale from zero: a request is waiting at another gateway");
      return;
    }
    const d = st.autoscaler.decide(this.now(), st.ready, st.starting);
    this.setDesired(st, Math.max(1, d.desired), "scale from zero: a request is waiting");
  }

  private setDesired(st: RevState, n: number, reason: string): void {
    if (st.lastDesired === n) return;
    st.lastDesired = n;
    this.metrics.replicas.set({ ...labels(st.target), state: "desired" }, n);
    this.log?.info({ ...labels(st.target), replicas: n, reason }, "scaling");
    try {
      const p = this.deps.scaler.setDesired(st.target, n, reason);
      if (p) {
        p.catch((err: unknown) => {
          // Forget it so that the next tick asks again.
          if (st.lastDesired === n) st.lastDesired = undefined;
          this.log?.warn({ err, ...labels(st.target) }, "scaler failed");
        });
      }
    } catch (err) {
      st.lastDesired = undefined;
      this.log?.warn({ err, ...labels(st.target) }, "scaler failed");
    }
  }
}

const labels = (t: ScaleTarget) => ({ project: t.project, service: t.service, revision: t.revision });

/** Where a request goes, once its revision is known (and ready). */
interface Route {
  st: RevState;
  body: Buffer;
  /** The body as JSON, parsed on first use (the model name, an affinity key). */
  json: () => Record<string, unknown>;
  model: string;
  /** How the target is named in error messages. */
  label: string;
}

/** The revision a request was routed to so far, for its metrics however it ends. */
interface RouteContext {
  st: RevState | undefined;
}

/** `f(v)`, at once when `v` is a value, after it when it is a promise. */
function then<T, U>(v: T | Promise<T>, f: (v: T) => U | Promise<U>): U | Promise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

/** The body parsed as a JSON object on first call; a 400 if it is not JSON. */
function lazyJson(body: Buffer): () => Record<string, unknown> {
  let parsed: Record<string, unknown> | undefined;
  return () => {
    if (parsed) return parsed;
    try {
      const v: unknown = JSON.parse(body.toString("utf8"));
      parsed = v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
    } catch {
      throw badRequest("the request body is not valid JSON: send an OpenAI-style JSON request");
    }
    return parsed;
  };
}

function missingRegistry(): never {
  throw new Error("Gateway needs deps.registry or deps.metrics");
}

/** A body that is not JSON just goes without affinity: the upstream will say what is wrong with it. */
function affinityKey(json: () => Record<string, unknown>, n: number): string | undefined {
  try {
    return promptPrefix(json(), n);
  } catch {
    return undefined;
  }
}

/** The first `n` characters of a completion's prompt or a chat's messages: the affinity key. */
export function promptPrefix(body: Record<string, unknown>, n: number): string | undefined {
  const p = body.prompt;
  if (typeof p === "string") return p.slice(0, n);
  if (Array.isArray(p) && typeof p[0] === "string") return p[0].slice(0, n);
  const messages = body.messages;
  if (!Array.isArray(messages)) return undefined;
  let out = "";
  for (const m of messages) {
    if (out.length >= n) break;
    const c = (m as { content?: unknown } | null)?.content;
    out += `${typeof c === "string" ? c : JSON.stringify(c ?? "")}\n`;
  }
  return out.slice(0, n);
}

import type { Logger } from "pino";
import type { Activator } from "./activator.js";
import type { Autoscaler } from "./autoscaler.js";
import type { Balancer } from "./balancer.js";
import type {
  GatewayDeps,
  GatewayOptions,
  RevisionEndpoint,
  ScaleTarget,
  ServiceEndpoint,
} from "./contract.js";
import type { GatewayMetrics } from "./metrics.js";
import type { HttpForwarder } from "./proxy.js";
import type { TrafficSplitter } from "./traffic.js";

/**
 * What a Gateway holds, shared by the modules that make up its data path (route, activation,
 * forward), its revision table (revisions) and its autoscaling (scaling). One object per
 * Gateway, passed to plain functions: no layer of its own on the per-request path.
 */
export interface GatewayContext {
  readonly deps: GatewayDeps;
  readonly opts: GatewayOptions;
  readonly now: () => number;
  readonly log?: Logger;
  readonly metrics: GatewayMetrics;
  readonly activator: Activator;
  readonly proxy: HttpForwarder;
  /** Each known revision's state, by revKey. */
  readonly states: Map<string, RevState>;
  /** Each service's traffic split, by "project/service", with the endpoint it was last set from. */
  readonly splitters: Map<string, { sig: string; splitter: TrafficSplitter; ep?: ServiceEndpoint }>;
}

/** What the gateway keeps per revision: balancer, autoscaler, load and report window, metric children. */
export interface RevState {
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
  /** The service records traces (ServiceEndpoint.tracing). */
  tracing?: boolean;
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

/** A revision's key in GatewayContext.states. */
export const revKey = (t: ScaleTarget) => `${t.project}/${t.service}/${t.revision}`;

/** A revision's metric labels. */
export const labels = (t: ScaleTarget) => ({ project: t.project, service: t.service, revision: t.revision });

/** A revision's concurrency changed: fold it into its report window and tell its autoscaler. */
export function recordConcurrency(st: RevState, now: number): void {
  const local = st.inFlight + st.held;
  // The area under this gateway's own concurrency, for its reports; `local` changed just now,
  // so the previous value held since the last change.
  st.reportArea += st.prevLocal * (now - st.lastChange);
  st.prevLocal = local;
  st.lastChange = now;
  st.autoscaler.record(now, local + st.remoteSum);
}

/** Where a request goes, once its revision is known (and ready). */
export interface Route {
  st: RevState;
  body: Buffer;
  /** The body as JSON, parsed on first use (the model name, an affinity key). */
  json: () => Record<string, unknown>;
  model: string;
  /** How the target is named in error messages. */
  label: string;
}

/** The revision a request was routed to so far, for its metrics however it ends. */
export interface RouteContext {
  st: RevState | undefined;
}

import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { AutoscalerParams } from "./autoscaler.js";
import type { AffinityOptions, EjectionOptions } from "./balancer.js";
import type { GatewayMetrics } from "./metrics.js";
import type { Usage } from "./usage.js";

/**
 * What an integrator hands the gateway and gets back: endpoints and the two ports it
 * implements (EndpointDirectory, Scaler), options, and what a request's handling reports.
 * Re-exported by gateway.ts, where callers import them from.
 */

export interface ReplicaEndpoint {
  /** Stable across updates (pod name, process id): health and counters are kept by it. */
  id: string;
  host: string;
  port: number;
  ready: boolean;
  /**
   * Headers set on every request to this replica, over the service's upstreamHeaders: a replica
   * behind another gateway (a fleet member's) with the credential that gateway wants.
   */
  headers?: Record<string, string>;
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
  /** Hand each request's prompt and answer back in HandleResult.trace (a recorded trace). */
  tracing?: boolean;
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
  /** For a service with `tracing`: what a trace records, for the integrator to store off the request path. */
  trace?: TraceCapture;
}

/** A traced request as the gateway saw it: the raw bodies, kept as they were (parsed later, elsewhere). */
export interface TraceCapture {
  request: Buffer;
  /** The response body (SSE for a stream), cut at the capture limit. */
  response: Buffer;
  /** When the request came, and when its answer ended (ms since the epoch). */
  startedMs: number;
  endedMs: number;
  /** Whether the answer ended cleanly. */
  complete: boolean;
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

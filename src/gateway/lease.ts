import type { Outcome } from "./balancer.js";
import { type GatewayContext, type RevState, recordConcurrency } from "./context.js";
import { ClientGoneError, GatewayError, unavailable } from "./errors.js";
import { bound } from "./recording.js";
import { pickRevision, updateService } from "./revisions.js";

/**
 * Leases: the gateway's data path for traffic that is not an OpenAI request (an App's pages,
 * its WebSockets and event streams, proxied by the user-content origin). The same steps as a
 * request, less the forwarding: the traffic split, the activator hold (the first hold scales
 * from zero; held until a replica is ready, with the same timeout and capacity), the balancer's
 * pick (by affinity key: a browser session stays on its replica), and in-flight concurrency
 * counted until `release`, so the autoscaler sees open sessions.
 */

export interface LeaseOptions {
  /** The session's key: the same key picks the same replica while it is there. */
  affinityKey?: string;
  /** The client went away: the hold ends at once (ClientGoneError). */
  signal?: AbortSignal;
}

/** A replica to send one exchange to; `release` exactly once when it is over (more calls are ignored). */
export interface ReplicaLease {
  host: string;
  port: number;
  /** The replica's id (stable for its lifetime). */
  replica: string;
  revision: string;
  /** `success` (default), `failure` (could not connect: counts towards ejection) or `neutral`. */
  release(outcome?: Outcome): void;
}

/** The 404 for a service the directory does not know. */
export function unknownService(project: string, service: string): GatewayError {
  return new GatewayError(
    404,
    "invalid_request_error",
    "not_found",
    `${project}/${service} is not served: it does not exist, or is not ready to route to yet`,
  );
}

/** Leases a replica of project/service (see the module comment); throws a GatewayError when none comes. */
export async function lease(
  g: GatewayContext,
  project: string,
  service: string,
  opts: LeaseOptions = {},
): Promise<ReplicaLease> {
  const started = g.now();
  const label = `${project}/${service}`;
  const resolve = async () => {
    const ep = await g.deps.directory.resolve(service, project);
    if (!ep || ep.project !== project) throw unknownService(project, service);
    return ep;
  };
  let st = pickRevision(g, await resolve(), service, project);
  const deadline = started + (g.opts.activator?.timeoutMs ?? 300_000);
  while (st.balancer.size === 0) {
    if (opts.signal?.aborted) throw new ClientGoneError();
    st.held++;
    recordConcurrency(st, g.now());
    try {
      await g.activator.wait(st.key, {
        signal: opts.signal,
        timeoutMs: Math.max(0, deadline - g.now()),
        label,
      });
    } finally {
      st.held--;
      recordConcurrency(st, g.now());
    }
    // Woken: the directory has the truth (a revision may have gone, weights changed).
    const ep = await resolve();
    updateService(g, ep);
    if (!ep.revisions.some((r) => r.name === st.target.revision)) st = pickRevision(g, ep, service, project);
  }
  const picked = st.balancer.pick(opts.affinityKey !== undefined ? { key: opts.affinityKey } : {});
  if (!picked) throw unavailable(`${label} has no replica to take this request; retry`);
  return held(g, st, picked);
}

function held(
  g: GatewayContext,
  st: RevState,
  picked: { replica: { id: string; host: string; port: number }; release(o: Outcome): void },
): ReplicaLease {
  st.inFlight++;
  const metrics = bound(g, st);
  metrics.inFlight.inc();
  recordConcurrency(st, g.now());
  let done = false;
  return {
    host: picked.replica.host,
    port: picked.replica.port,
    replica: picked.replica.id,
    revision: st.target.revision,
    release(outcome = "success") {
      if (done) return;
      done = true;
      picked.release(outcome);
      st.inFlight--;
      metrics.inFlight.dec();
      recordConcurrency(st, g.now());
    },
  };
}

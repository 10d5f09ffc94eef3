import { Autoscaler } from "./autoscaler.js";
import { Balancer, type Lease } from "./balancer.js";
import { type GatewayContext, labels, type RevState, recordConcurrency, revKey } from "./context.js";
import type { RevisionEndpoint, ScaleTarget, ServiceEndpoint } from "./contract.js";
import { unavailable } from "./errors.js";
import { TrafficSplitter } from "./traffic.js";

/**
 * The revision table: which revision a request goes to (the traffic split), each revision's
 * state kept in line with the directory, and the fallback to another revision in a rollout.
 */

/** A service's endpoints changed: sync each revision and the split between them. */
export function updateService(g: GatewayContext, endpoint: ServiceEndpoint): void {
  for (const rev of endpoint.revisions) sync(g, endpoint, rev);
  splitterFor(g, endpoint);
}

/** Step 2: the revision the traffic split sends this request to, its state synced if the directory changed. */
export function pickRevision(
  g: GatewayContext,
  ep: ServiceEndpoint,
  model: string,
  projectHint: string | undefined,
): RevState {
  const name = splitterFor(g, ep).pick();
  const rev = ep.revisions.find((r) => r.name === name);
  if (!rev) throw unavailable(`model '${model}' has no revision to serve it; check the InferenceService`);
  const known = g.states.get(revKey({ project: ep.project, service: ep.service, revision: rev.name }));
  const st = known && known.syncedEp === ep && known.syncedRev === rev ? known : sync(g, ep, rev);
  st.model = model;
  st.projectHint = projectHint;
  return st;
}

function splitterFor(g: GatewayContext, ep: ServiceEndpoint): TrafficSplitter {
  const key = `${ep.project}/${ep.service}`;
  let s = g.splitters.get(key);
  if (s?.ep === ep) return s.splitter; // the usual case: nothing changed since the last request
  const sig = TrafficSplitter.signature(ep.revisions);
  if (!s) {
    s = { sig, splitter: new TrafficSplitter(ep.revisions) };
    g.splitters.set(key, s);
  } else if (s.sig !== sig) {
    s.splitter.update(ep.revisions);
    s.sig = sig;
  }
  s.ep = ep;
  return s.splitter;
}

/** Brings a revision's state in line with the directory; releases held requests once it has a ready replica. */
export function sync(g: GatewayContext, ep: ServiceEndpoint, rev: RevisionEndpoint): RevState {
  const target = { project: ep.project, service: ep.service, revision: rev.name };
  const key = revKey(target);
  const now = g.now();
  const aSig = JSON.stringify(ep.autoscaling);
  const bSig = JSON.stringify(ep.affinity ?? null);
  let st = g.states.get(key);
  if (!st) {
    st = {
      key,
      target,
      balancer: newBalancer(g, ep, target),
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
    g.states.set(key, st);
  }
  if (st.autoscalerSig !== aSig) {
    // New parameters: start a fresh history rather than judge old samples by new targets.
    st.autoscaler = new Autoscaler(ep.autoscaling, now);
    st.autoscalerSig = aSig;
    recordConcurrency(st, g.now());
  }
  if (st.balancerSig !== bSig) {
    st.balancer = newBalancer(g, ep, target);
    st.balancerSig = bSig;
  }
  st.upstreamHeaders = ep.upstreamHeaders;
  st.affinityChars = ep.affinity?.prefixChars;
  st.tracing = ep.tracing === true;
  const ready = rev.replicas.filter((r) => r.ready);
  st.balancer.update(
    ready.map(({ id, host, port, headers }) => (headers ? { id, host, port, headers } : { id, host, port })),
  );
  st.ready = ready.length;
  st.starting = rev.replicas.length - ready.length;
  g.metrics.replicas.set({ ...labels(target), state: "ready" }, ready.length);
  if (ready.length > 0 && g.activator.depth(key) > 0) g.activator.ready(key);
  st.syncedEp = ep;
  st.syncedRev = rev;
  return st;
}

function newBalancer(g: GatewayContext, ep: ServiceEndpoint, target: ScaleTarget): Balancer {
  return new Balancer({
    tieBreak: g.opts.tieBreak,
    ejection: g.opts.ejection,
    affinity: ep.affinity,
    now: g.now,
    random: g.deps.random,
    onHealthChange: (replica, healthy) => {
      if (!healthy) g.metrics.ejections.inc(labels(target));
      g.log?.[healthy ? "info" : "warn"](
        { ...labels(target), replica: replica.id },
        healthy ? "replica back in rotation" : "replica ejected after consecutive failures",
      );
    },
  });
}

/**
 * A replica of another revision in traffic, once every replica of `rev` has failed before
 * answering. A rollout stops the old revision's replicas as the new one takes its traffic; a
 * request bound to the old one just before would otherwise fail, though it never reached a
 * working server and the service can still answer it.
 */
export function fallback(g: GatewayContext, rev: RevState, tried: ReadonlySet<string>): Lease | undefined {
  if (tried.size === 0) return undefined;
  const { project, service, revision } = rev.target;
  const latest = g.splitters.get(`${project}/${service}`)?.ep;
  if (!latest) return undefined;
  for (const r of latest.revisions) {
    if (r.name === revision || r.weight <= 0) continue;
    const st = g.states.get(revKey({ project, service, revision: r.name })) ?? sync(g, latest, r);
    const lease = st.balancer.pick({ exclude: tried });
    if (lease) return lease;
  }
  return undefined;
}

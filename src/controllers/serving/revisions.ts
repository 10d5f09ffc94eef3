import type { InferenceServiceStatus, RevisionStatus } from "../../api/inferenceservice.js";
import { setCondition } from "../../api/meta.js";
import type { RevisionRuntime, RevisionSpec, WorkloadRef } from "../../ports/runtime.js";
import type { ScaleTargets } from "../../ports/serving.js";
import { routeTraffic, type TrafficEntry } from "./traffic.js";

/**
 * The revision machinery that InferenceService and App share: one revision per change of what
 * the replicas run, traffic to the latest ready one (the old one serves until then), each
 * revision's replica count the gateway autoscaler's target within {min, max}, applied through
 * the platform's serving capability (Kubernetes: a Deployment; embedded: supervised processes).
 */

const HISTORY = 20;

/** What a served object (InferenceService, App) tells the shared machinery. */
export interface ServedView {
  /** "project/name", the key of the gateway's scale targets. */
  key: string;
  name: string;
  generation: number | undefined;
  /** Hash of what the replicas run: a new one makes a new revision. */
  hash: string;
  /** The revision's name for number n (InferenceService: NAME-n; App: NAME-appn). */
  revisionName(n: number): string;
  spec: { replicas: { min: number; max: number }; autoscaling: unknown; traffic?: TrafficEntry[] };
  /** The readiness path, for the condition's message. */
  readinessPath: string;
}

/** The revision the spec asks for: the one with its hash, or a new one (and whether it is new). */
export function latestRevision(
  view: ServedView,
  revisions: RevisionStatus[],
  spec: unknown,
  now: Date,
): { latest: RevisionStatus; created: boolean } {
  let latest = revisions.find((r) => r.spec?.hash === view.hash);
  let created = false;
  if (!latest) {
    const n = Math.max(0, ...revisions.map((r) => Number(/(\d+)$/.exec(r.name)?.[1] ?? 0))) + 1;
    latest = {
      name: view.revisionName(n),
      generation: view.generation ?? 0,
      desired: Math.max(view.spec.replicas.min, 1), // a new revision proves itself ready once
      ready: 0,
      replicas: [],
      createdAt: now.toISOString(),
      spec: { ...(spec as object), hash: view.hash },
    };
    revisions.push(latest);
    created = true;
  }
  // The newest revision is what the spec wants; its replicas and scaling follow the spec.
  latest.spec = { ...latest.spec, replicas: view.spec.replicas, autoscaling: view.spec.autoscaling };
  return { latest, created };
}

/**
 * Steps 2 and 3 of a serving reconcile: traffic, then each revision's replicas (the autoscaler's
 * target within {min, max} for revisions that take traffic, or the latest until it is ready;
 * none for the rest), converged through `converge`. Fills status; returns whether some wanted
 * replica is not ready yet.
 */
export async function scaleRevisions(
  view: ServedView,
  status: InferenceServiceStatus,
  revisions: RevisionStatus[],
  latest: RevisionStatus,
  deps: { scale?: ScaleTargets; now: Date; converge(rev: RevisionStatus): Promise<boolean> },
): Promise<{ waiting: boolean; keep: RevisionStatus[] }> {
  const { now } = deps;
  const { traffic, condition } = routeTraffic(view.spec.traffic, revisions, latest);
  status.conditions = setCondition(status.conditions, condition, now);
  status.traffic = traffic;
  let waiting = false;
  const keep: RevisionStatus[] = [];
  for (const rev of revisions) {
    const routed = traffic.some((t) => t.revision === rev.name && t.percent > 0);
    const isLatest = rev === latest;
    const { min, max } = view.spec.replicas;
    let desired = 0;
    let why = "no traffic";
    if (routed || (isLatest && rev.ready === 0)) {
      const wanted = deps.scale?.desired(`${view.key}/${rev.name}`);
      desired = Math.min(max, Math.max(routed ? min : Math.max(min, 1), wanted ?? rev.desired));
      if (isLatest && !routed && rev.ready === 0) desired = Math.max(desired, 1);
      why =
        wanted === undefined
          ? "spec"
          : `autoscaler: ${deps.scale?.reason?.(`${view.key}/${rev.name}`) ?? `wants ${wanted}`}`;
    }
    if (desired !== rev.desired) {
      status.scaleEvents = [
        ...(status.scaleEvents ?? []),
        { time: now.toISOString(), revision: rev.name, from: rev.desired, to: desired, reason: why },
      ].slice(-HISTORY);
      rev.desired = desired;
    }
    waiting = (await deps.converge(rev)) || waiting;
    // Revisions that serve nothing and run nothing are history; keep the latest few.
    if (rev.desired > 0 || (rev.replicas?.length ?? 0) > 0 || isLatest || routed) keep.push(rev);
  }
  // Traffic again, from what the revisions have now: a revision that became ready in this pass
  // takes its share in the same status that says it is ready (CI read latestReadyRevision
  // canary-2, 2 ready, and traffic still all on canary-1, the split computed before it was ready).
  const settled = routeTraffic(view.spec.traffic, revisions, latest);
  status.conditions = setCondition(status.conditions, settled.condition, now);
  status.traffic = settled.traffic;
  status.revisions = keep;
  status.latestReadyRevision =
    [...keep].reverse().find((r) => r.ready > 0)?.name ?? status.latestReadyRevision;
  status.desired = keep.reduce((a, r) => a + r.desired, 0);
  status.ready = keep.reduce((a, r) => a + r.ready, 0);
  status.phase = status.ready > 0 ? "Ready" : status.desired === 0 ? "ScaledToZero" : "Pending";
  status.conditions = setCondition(
    status.conditions,
    status.ready > 0 || status.desired === 0
      ? {
          type: "Ready",
          status: "True",
          reason: status.ready > 0 ? "ReplicasReady" : "ScaledToZero",
          message: `${status.ready} ready replica(s); a request starts one when there are none`,
        }
      : {
          type: "Ready",
          status: "False",
          reason: "ReplicasStarting",
          message: `waiting for ${status.desired} replica(s) to pass readiness (${view.readinessPath})${latest.lastExit ? `; the last ${latest.lastExit}` : ""}`,
        },
    now,
  );
  return { waiting, keep };
}

/**
 * A revision through the platform's serving capability: apply the desired count (when it
 * changed), read the running replicas back as the ones the gateway routes to. Returns true while
 * some wanted replica is not ready.
 */
export async function convergeRevision(
  serving: RevisionRuntime,
  service: WorkloadRef,
  rev: RevisionStatus & { applied?: number },
  spec: () => Promise<Omit<RevisionSpec, "service" | "revision" | "replicas">>,
): Promise<boolean> {
  if (rev.applied !== rev.desired) {
    await serving.applyRevision({ ...(await spec()), service, revision: rev.name, replicas: rev.desired });
    rev.applied = rev.desired;
  }
  const observed = await serving.observeRevision(service, rev.name);
  rev.replicas = observed.replicas.map(({ uid, node, gpus, ...r }) => ({
    ...r,
    uid: uid ?? r.id,
    ...(node ? { node } : {}),
    ...(gpus ? { gpus } : {}),
  }));
  rev.ready = observed.replicas.filter((r) => r.ready).length;
  rev.lastExit = observed.lastExit;
  return rev.ready < rev.desired;
}

/**
 * When to look again: often while a fresh replica starts (a probe is one loopback GET, so a cold
 * start costs the replica's own start-up and little more), every 250 ms for an old one still
 * loading, every 2 s otherwise.
 */
export function requeueAfter(keep: RevisionStatus[], waiting: boolean, now: Date): number {
  if (!waiting) return 2000;
  const youngest = Math.max(
    0,
    ...keep.flatMap((r) => (r.replicas ?? []).filter((x) => !x.ready).map((x) => Date.parse(x.startedAt))),
  );
  return now.getTime() - youngest < 5000 ? 10 : 250;
}

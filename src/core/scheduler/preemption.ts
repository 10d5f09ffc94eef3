import type { PreemptionReason, RunningWorkload, Vec, Workload } from "./model.js";
import { RESOURCES } from "./model.js";
import { compareText, type NodeState } from "./nodes.js";
import { contested, deservedOf, EPS, fill, sub } from "./resources.js";
import type { CycleState, ProjectState } from "./state.js";

/** Victim candidates examined per preemption search: bounds a cycle with thousands running. */
const MAX_VICTIM_CANDIDATES = 512;

/**
 * Step 6, victims for a gang that does not fit: lower priority in its own project first, then
 * other projects' work — reclaim down to their deserved quota when the gang is within its own,
 * else fair-share reclaim down to their fair share. The fewest that suffice, or undefined.
 */
export function findVictims(
  s: CycleState,
  w: Workload,
  req: Vec,
  eligible: NodeState[],
  withinDeserved: boolean,
): { reason: PreemptionReason; victims: RunningWorkload[] } | undefined {
  const requested = RESOURCES.filter((r) => contested(req)[r] > EPS);
  const eligibleNames = new Set(eligible.map((n) => n.node.name));
  const candidates = s.running.filter(
    (r) => r.preemptible && !s.victims.has(r.id) && r.placements.some((p) => eligibleNames.has(p.node)),
  );
  const tries: {
    reason: PreemptionReason;
    pick: (r: RunningWorkload) => boolean;
    floor?: (p: ProjectState) => Vec;
  }[] = [{ reason: "Priority", pick: (r) => r.project === w.project && r.priority < w.priority }];
  if (withinDeserved)
    tries.push({
      reason: "Reclaim",
      pick: (r) => r.project !== w.project,
      floor: (q) => fill(deservedOf(q.policy)),
    });
  else tries.push({ reason: "FairShare", pick: (r) => r.project !== w.project, floor: (q) => q.fair });
  for (const t of tries) {
    const pool = candidates
      .filter(t.pick)
      .sort(
        (a, b) => a.priority - b.priority || compareText(b.createdAt, a.createdAt) || compareText(a.id, b.id),
      )
      .slice(0, MAX_VICTIM_CANDIDATES);
    const victims = chooseVictims(s, w, pool, requested, eligible, t.floor);
    if (victims) return { reason: t.reason, victims };
  }
  return undefined;
}

/**
 * Greedy in victim order until the gang fits with their capacity freed, never taking a
 * project below its floor (deserved quota or fair share), then drops every victim the gang
 * does not need: the fewest that suffice, whole gangs only.
 */
export function chooseVictims(
  s: CycleState,
  w: Workload,
  pool: RunningWorkload[],
  requested: readonly (keyof Vec)[],
  eligible: NodeState[],
  floor?: (p: ProjectState) => Vec,
): RunningWorkload[] | undefined {
  const left = new Map<string, Vec>();
  const chosen: RunningWorkload[] = [];
  let fits = false;
  for (const v of pool) {
    const vreq = s.requestOf(v);
    if (!requested.some((r) => vreq[r] > EPS)) continue;
    if (floor) {
      const q = s.project(v.project);
      const current = left.get(v.project) ?? sub(q.usage, q.releasing);
      const remaining = sub(current, vreq);
      const min = floor(q);
      if (requested.some((r) => vreq[r] > EPS && remaining[r] < min[r] - EPS)) continue;
      left.set(v.project, remaining);
    }
    chosen.push(v);
    if (fitsWithout(s, w, eligible, chosen)) {
      fits = true;
      break;
    }
  }
  if (!fits) return undefined;
  for (let i = 0; i < chosen.length - 1; ) {
    const fewer = chosen.filter((_, j) => j !== i);
    if (fitsWithout(s, w, eligible, fewer)) chosen.splice(i, 1);
    else i++;
  }
  return chosen;
}

/** Whether the gang would fit with the victims' capacity freed; a trial that leaves the cluster as it was. */
function fitsWithout(s: CycleState, w: Workload, eligible: NodeState[], victims: RunningWorkload[]): boolean {
  for (const v of victims) s.cluster.release(v, v.placements);
  const placements = s.cluster.place(w, eligible);
  if (placements) s.cluster.release(w, placements); // a trial: nothing is bound yet
  for (const v of victims) s.cluster.hold(v, v.placements);
  return placements !== undefined;
}

/** What a victim's status says about why it was stopped. */
export function preemptionMessage(reason: PreemptionReason, v: RunningWorkload, w: Workload): string {
  switch (reason) {
    case "Priority":
      return `preempted for ${w.name} (priority ${w.priority} > ${v.priority}) in project ${v.project}`;
    case "Reclaim":
      return `preempted: project ${w.project} reclaims its deserved quota for ${w.name}; project ${v.project} runs over its own`;
    case "FairShare":
      return `preempted: project ${v.project} is over its fair share of idle capacity; ${w.name} of project ${w.project} is below its own`;
  }
}

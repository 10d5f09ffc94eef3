import { describe, describeFree, describeGang, exceeded, holdersOf } from "./explain.js";
import { within } from "./fairshare.js";
import { type PendingReasonCode, RESOURCES, type RunningWorkload, type Vec, type Workload } from "./model.js";
import { byCluster, type NodeState } from "./nodes.js";
import { add, contested, deservedOf, EPS, fill, gangTotals, sub } from "./resources.js";
import type { CycleState, Pending, ProjectState } from "./state.js";
import { describeTaint, hardTaints, toleratesNode } from "./taints.js";

/** A workload the rules let through: where it may go, what it asks, and whether within quota. */
export interface Admitted {
  pending?: undefined;
  eligible: NodeState[];
  req: Vec;
  /** Within the project's deserved quota (reclaim may preempt for it; else only fair share). */
  withinDeserved: boolean;
}

/**
 * Step 4, the rules that need no search, in order: the project's node pools, a pool that
 * exists, a gang that can ever fit, the project's limit, non-preemptible work within deserved
 * quota, and the project's fair share while others wait below theirs.
 */
export function admit(
  s: CycleState,
  w: Workload,
  ps: ProjectState,
  waitingFor: RunningWorkload[],
): Admitted | { pending: Pending } {
  const pending = (reason: PendingReasonCode, message: string, holders: string[] = []) => ({
    pending: { id: w.id, reason, message, holders },
  });
  const pools = ps.policy.nodePools;
  if (w.nodePool && pools && !pools.includes(w.nodePool))
    return pending(
      "NodePoolNotAllowed",
      `node pool "${w.nodePool}" is not one of project ${w.project}'s pools (${pools.join(", ")})`,
    );
  const eligible = s.cluster.eligible(w, pools);
  if (w.nodePool && !s.cluster.nodes.some((n) => n.pool === w.nodePool))
    return pending(
      "NodePoolNotAllowed",
      `node pool "${w.nodePool}" does not exist: no node carries it (pools: ${[...new Set(s.cluster.nodes.map((n) => n.pool))].join(", ")})`,
    );
  const never = neverFits(s, w, eligible);
  if (never) return pending("ExceedsNodeCapacity", never);
  const req = s.requestOf(w);
  // Its own claim (victims stopping for it) is already in `claimed`: do not count it twice.
  const claimedByOthers = waitingFor.length > 0 ? sub(ps.claimed, req) : ps.claimed;
  const after = add(add(ps.usage, claimedByOthers), req);
  const limit = ps.policy.limit;
  if (limit && !within(after, limit, req)) {
    return pending(
      "OverLimit",
      `project ${w.project} would use ${describe(after, req)}, over its limit of ${describe(fill(limit), req)}`,
    );
  }
  // Quota rules look at the contested resource: GPUs for GPU work, else CPU and memory.
  const key = contested(req);
  const deserved = deservedOf(ps.policy);
  if (!w.preemptible && !within(add(ps.nonPreemptible, req), deserved, key)) {
    return pending(
      "NonPreemptibleOverQuota",
      `non-preemptible work must fit within project ${w.project}'s deserved quota (${describe(fill(deserved), key)}); ` +
        `non-preemptible work already uses ${describe(ps.nonPreemptible, key)}: make it preemptible or raise the quota`,
    );
  }
  const withinDeserved = within(after, deserved, key);
  if (!withinDeserved && !within(after, ps.fair, key) && othersWaitBelowFairShare(s, ps, key)) {
    return pending(
      "OverFairShare",
      `project ${w.project} is over its deserved quota (${describe(fill(deserved), key)}) and would use ${describe(after, key)}, ` +
        `past its fair share of idle capacity (${describe(ps.fair, key)}) while other projects wait`,
      holdersOf(s, w, eligible, (r) => r.project !== w.project),
    );
  }
  return { eligible, req, withinDeserved };
}

/**
 * Fair share holds a project back only while another project that wants more is below its
 * own share: idle capacity nobody else asks for is never left idle (work-conserving).
 */
export function othersWaitBelowFairShare(s: CycleState, ps: ProjectState, key: Vec): boolean {
  for (const q of s.projects.values()) {
    if (q === ps) continue;
    for (const r of RESOURCES) {
      if (key[r] <= EPS) continue;
      if (q.wants[r] > EPS && q.usage[r] < q.fair[r] - EPS) return true;
    }
  }
  return false;
}

/**
 * Why the gang can never start on its eligible nodes, even on an empty cluster (no node, a pod
 * no node can hold, or more than all of them together); undefined when it could.
 */
export function neverFits(s: CycleState, w: Workload, eligible: NodeState[]): string | undefined {
  const where = [w.nodePool ? `pool "${w.nodePool}"` : "", w.gpuModel ? `GPU model "${w.gpuModel}"` : ""]
    .filter(Boolean)
    .join(" and ");
  if (eligible.length === 0) {
    const tainted = s.cluster.eligible(w, undefined, true).filter((n) => !toleratesNode(w, n.node));
    if (tainted.length > 0) {
      const taints = [...new Set(tainted.flatMap((n) => hardTaints(n.node).map(describeTaint)))];
      return `every node ${where ? `with ${where} ` : ""}is tainted (${taints.join(", ")}) and the workload tolerates none of them: add spec.tolerations, or name the node's pool in spec.nodePool for Loom's own loom.dev/ taints`;
    }
    return `no node ${where ? `with ${where}` : "is schedulable"}${w.clusters ? ` in cluster(s) ${w.clusters.join(", ")}` : ""}: check spec.nodePool, spec.gpuModel${w.clusters ? " and spec.clusters" : ""}`;
  }
  const members = byCluster(eligible);
  if (members.size > 1) {
    // A fleet: the gang must fit whole in one member; say what each lacks.
    const why: string[] = [];
    for (const [name, nodes] of members) {
      const one = neverFits(s, w, nodes);
      if (!one) return undefined;
      why.push(`${name}: ${one}`);
    }
    return `fits in no member cluster (a gang runs whole in one) — ${why.join("; ")}`;
  }
  for (const pod of w.pods) {
    if (!eligible.some((n) => s.cluster.fitsEmpty(n, pod))) {
      return `requests more than any${where ? ` ${where}` : ""} node can ever offer: ${exceeded(pod, eligible)}; lower spec.resources`;
    }
  }
  const total = s.cluster.totalOf(eligible);
  const gang = gangTotals(w.pods, s.deviceMemory);
  if (gang.gpu > total.gpu + EPS || gang.cpu > total.cpu || gang.memory > total.memory)
    return `the gang needs ${describeGang(gang, w.pods.length)}, more than all eligible nodes${where ? ` (${where})` : ""} have together (${describeFree(total)})`;
  return undefined;
}

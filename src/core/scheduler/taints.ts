import type { SchedNode, Taint, Toleration, Workload } from "./model.js";

/**
 * Loom's own taints: a key under this prefix (e.g. `loom.dev/real-node`, `loom.dev/node-pool`)
 * reserves a node for the work that names its pool, so `nodePool: gpu-a100` is all a user writes
 * to go there; other taints need a toleration, as on Kubernetes.
 */
export const LOOM_TAINT_PREFIX = "loom.dev/";

/** Whether one toleration matches one taint, by Kubernetes' rules. */
export function toleratesTaint(t: Toleration, taint: Taint): boolean {
  if (t.effect && t.effect !== taint.effect) return false;
  if (t.operator === "Exists") return !t.key || t.key === taint.key;
  return t.key === taint.key && (t.value ?? "") === (taint.value ?? "");
}

/** The taints of a node that keep work off it: NoSchedule and NoExecute (PreferNoSchedule is a hint). */
export function hardTaints(node: SchedNode): Taint[] {
  return (node.taints ?? []).filter((t) => t.effect === "NoSchedule" || t.effect === "NoExecute");
}

/** Whether a workload tolerates this taint: a matching toleration, or it named the node's Loom-tainted pool. */
export function workloadTolerates(w: Workload, node: SchedNode, taint: Taint): boolean {
  if (taint.key.startsWith(LOOM_TAINT_PREFIX) && w.nodePool !== undefined && w.nodePool === node.pool)
    return true;
  return (w.tolerations ?? []).some((t) => toleratesTaint(t, taint));
}

/** Whether the workload may run on the node: it tolerates every NoSchedule/NoExecute taint. */
export function toleratesNode(w: Workload, node: SchedNode): boolean {
  return hardTaints(node).every((taint) => workloadTolerates(w, node, taint));
}

/** "key=value:Effect", as kubectl shows a taint. */
export function describeTaint(t: Taint): string {
  return `${t.key}${t.value ? `=${t.value}` : ""}:${t.effect}`;
}

import { within } from "./fairshare.js";
import type { Workload } from "./model.js";
import { add } from "./resources.js";
import type { CycleState } from "./state.js";

/**
 * Step 8, offers running elastic workloads the largest gang that now fits (their current pods
 * plus more on free capacity, within the project's limit). They restart from a checkpoint with it.
 */
export function grow(s: CycleState): void {
  for (const r of s.running) {
    if (!r.elastic || r.stopping || s.victims.has(r.id) || r.pods.length >= r.elastic.max) continue;
    const ps = s.project(r.project);
    const eligible = s.cluster.eligible(r, ps.policy.nodePools);
    for (let k = r.elastic.max; k > r.pods.length; k--) {
      const extra: Workload = {
        ...r,
        id: `${r.id}/grow`,
        pods: Array.from({ length: k - r.pods.length }, () => r.pods[0]!),
      };
      const req = s.requestOf(extra);
      const limit = ps.policy.limit;
      if (limit && !within(add(ps.usage, req), limit, req)) continue;
      if (!s.cluster.place(extra, eligible)) continue;
      ps.usage = add(ps.usage, req);
      s.decisions.resize.push({
        id: r.id,
        pods: k,
        message: `capacity for ${k} workers is free (running with ${r.pods.length}, elastic up to ${r.elastic.max})`,
      });
      break;
    }
  }
}

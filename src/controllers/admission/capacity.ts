import type { Project } from "../../api/project.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import { type TrainingJob, workerRange } from "../../api/trainingjob.js";
import type { CapacityAnswer, CapacityRequest } from "../../ports/runtime.js";
import type { PendingDecision, RunningWorkload } from "../../ports/scheduler.js";

/** What a project's running work holds (the limit counts it). */
export interface Usage {
  cpuMillis: number;
  memoryBytes: number;
  gpu: number;
}

/** What each project's running work holds, from the cycle's snapshot. */
export function usageByProject(running: RunningWorkload[]): Map<string, Usage> {
  const out = new Map<string, Usage>();
  for (const r of running) {
    const u = out.get(r.project) ?? { cpuMillis: 0, memoryBytes: 0, gpu: 0 };
    for (const pod of r.pods) {
      u.cpuMillis += pod.cpuMillis;
      u.memoryBytes += pod.memoryBytes;
      u.gpu += pod.gpu;
    }
    out.set(r.project, u);
  }
  return out;
}

/**
 * Whether the gang would be within its project's limit once it runs. The scheduler checks room
 * (an empty pool, a gang bigger than the pool) before the limit, so a job that waits "for room"
 * may be over its limit too: nodes added for it would sit idle, be removed, and be asked for
 * again, round after round.
 */
export function withinLimit(
  req: CapacityRequest,
  project: Project | undefined,
  used: Usage | undefined,
): boolean {
  const limit = project?.spec.limit;
  if (!limit) return true;
  const u = used ?? { cpuMillis: 0, memoryBytes: 0, gpu: 0 };
  const n = req.workers;
  const over = (cap: number | undefined, total: number) => cap !== undefined && total > cap;
  return !(
    over(limit.cpu === undefined ? undefined : parseCpuMillis(limit.cpu), u.cpuMillis + n * req.cpuMillis) ||
    over(
      limit.memory === undefined ? undefined : parseMemoryBytes(limit.memory),
      u.memoryBytes + n * req.memoryBytes,
    ) ||
    over(limit.gpu, u.gpu + n * req.gpu)
  );
}

export type CapacityStatus = NonNullable<NonNullable<TrainingJob["status"]>["capacityRequest"]>;

/** How often a cycle runs while a capacity request is out: the autoscaler's answer is read then. */
export const CAPACITY_REQUEUE_MS = 5_000;

/**
 * Whether more nodes would let the job run: the cluster lacks room (or the shape of room) for
 * the gang, or the pool it names has no node yet (an empty node group). Not when the project's
 * own rules hold it back (limit, quota, fair share, a pool it may not use): new nodes would not
 * change those, and asking for them would buy capacity nobody may use.
 */
export function wantsCapacity(job: TrainingJob, p: PendingDecision, project: Project | undefined): boolean {
  switch (p.reason) {
    case "InsufficientCapacity":
    case "Fragmentation":
    case "ExceedsNodeCapacity":
      return true;
    case "NodePoolNotAllowed": {
      const pool = job.spec.nodePool;
      const allowed = project?.spec.nodePools;
      return !!pool && (!allowed || allowed.includes(pool));
    }
    default:
      return false;
  }
}

/** The gang's shape as a node autoscaler needs it: every worker it must start with, at once. */
export function capacityRequestOf(job: TrainingJob, p: PendingDecision): CapacityRequest {
  const r = job.spec.resources;
  return {
    workers: workerRange(job.spec).min,
    cpuMillis: r.cpu === undefined ? 0 : (parseCpuMillis(r.cpu) ?? 0),
    memoryBytes: r.memory === undefined ? 0 : (parseMemoryBytes(r.memory) ?? 0),
    gpu: Number(r.gpu ?? 0),
    ...(job.spec.nodePool ? { nodePool: job.spec.nodePool } : {}),
    ...(job.spec.gpuModel ? { gpuModel: job.spec.gpuModel } : {}),
    ...(job.spec.tolerations?.length ? { tolerations: job.spec.tolerations } : {}),
    reason: p.reason,
    message: p.message,
  };
}

/** The status a capacity answer becomes (undefined fields dropped, so equal answers compare equal). */
export function capacityStatus(a: CapacityAnswer): CapacityStatus {
  return {
    requestedAt: a.requestedAt,
    ...(a.nodes !== undefined ? { nodes: a.nodes } : {}),
    ...(a.pool !== undefined ? { pool: a.pool } : {}),
    ...(a.refused !== undefined ? { refused: a.refused } : {}),
  };
}

export function sameCapacity(a: CapacityStatus | undefined, b: CapacityStatus | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** "waiting for 2 nodes of pool gpu (requested 40 s ago)", as `loom describe` says it. */
export function describeCapacity(c: CapacityStatus, now: Date): string {
  const ago = Math.max(0, Math.round((now.getTime() - Date.parse(c.requestedAt)) / 1000));
  const when = `requested ${ago} s ago`;
  if (c.refused) return `the node autoscaler adds no node for it (${when}): ${c.refused}`;
  if (c.nodes === undefined) return `asked the node autoscaler for capacity (${when}); no answer yet`;
  return `waiting for ${c.nodes} node${c.nodes === 1 ? "" : "s"} of pool ${c.pool ?? "<unknown>"} (${when})`;
}

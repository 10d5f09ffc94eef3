import { formatBytes, formatCpu } from "../../api/quantity.js";
import type { PodRequest, RunningWorkload, SchedNode, Vec, Workload } from "./model.js";
import type { NodeState } from "./nodes.js";
import { EPS, gangTotals } from "./resources.js";
import type { CycleState, Pending } from "./state.js";

/** Holders named in a pending reason, at most. */
const MAX_HOLDERS = 5;

/**
 * Step 7, why a gang that fits no arrangement of free capacity and may preempt nothing waits:
 * fragmentation when the eligible nodes have enough free in total, else what it is short of.
 */
export function whyItWaits(s: CycleState, w: Workload, eligible: NodeState[]): Pending {
  const free = s.cluster.freeOn(eligible);
  const gang = gangTotals(w.pods, s.deviceMemory);
  const enoughInTotal =
    free.cpu >= gang.cpu &&
    free.memory >= gang.memory &&
    free.gpu + EPS >= gang.gpu &&
    free.pods >= w.pods.length;
  const holders = holdersOf(s, w, eligible, () => true);
  if (enoughInTotal) {
    return {
      id: w.id,
      reason: "Fragmentation",
      message: `fragmentation: the eligible nodes have ${describeFree(free)} free in total, enough for the gang, but no arrangement of nodes fits its ${w.pods.length} pod(s) (${describePods(w.pods)})`,
      holders,
    };
  }
  const short: string[] = [];
  if (gang.gpu > free.gpu + EPS) short.push(`gpu: requested ${fmtGpu(gang.gpu)}, free ${fmtGpu(free.gpu)}`);
  if (gang.cpu > free.cpu) short.push(`cpu: requested ${formatCpu(gang.cpu)}, free ${formatCpu(free.cpu)}`);
  if (gang.memory > free.memory)
    short.push(`memory: requested ${formatBytes(gang.memory)}, free ${formatBytes(free.memory)}`);
  if (w.pods.length > free.pods) short.push(`pods: ${w.pods.length} requested, nodes take ${free.pods} more`);
  return {
    id: w.id,
    reason: "InsufficientCapacity",
    message: `waiting for capacity: ${short.join("; ")}${w.pods.length > 1 ? ` (gang of ${w.pods.length})` : ""}; nothing may be preempted for it`,
    holders,
  };
}

/** Running workloads holding what w needs on its eligible nodes, other projects' and biggest first. */
export function holdersOf(
  s: CycleState,
  w: Workload,
  eligible: NodeState[],
  pick: (r: RunningWorkload) => boolean,
): string[] {
  const names = new Set(eligible.map((n) => n.node.name));
  const wantsGpu = w.pods.some((p) => p.gpu > 0 || (p.gpuMemoryBytes ?? 0) > 0);
  const weight = (r: RunningWorkload) => {
    const q = s.requestOf(r);
    return wantsGpu ? q.gpu : q.cpu / 1000 + q.memory / 2 ** 30;
  };
  return s.running
    .filter((r) => pick(r) && r.placements.some((p) => names.has(p.node)) && weight(r) > 0)
    .sort(
      (a, b) => Number(b.project !== w.project) - Number(a.project !== w.project) || weight(b) - weight(a),
    )
    .slice(0, MAX_HOLDERS)
    .map((r) => r.name);
}

/** The names ("project/name") of workloads, for messages and holders. */
export function names(ws: { name: string }[]): string[] {
  return ws.map((w) => w.name);
}

/** GPUs as "2" or "0.5", without trailing zeros. */
export function fmtGpu(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/0+$/, "");
}

/** The resources a request touches, as "gpu 4, cpu 2" — the ones that matter for the message. */
export function describe(v: Vec, req: Vec): string {
  const parts: string[] = [];
  if (req.gpu > EPS) parts.push(`gpu ${fmtGpu(v.gpu)}`);
  if (req.cpu > 0) parts.push(`cpu ${formatCpu(v.cpu)}`);
  if (req.memory > 0) parts.push(`memory ${formatBytes(v.memory)}`);
  return parts.join(", ") || "nothing";
}

/** Free (or total) capacity as "gpu 1, cpu 2, memory 4Gi". */
export function describeFree(f: { gpu: number; cpu: number; memory: number; pods?: number }): string {
  return `gpu ${fmtGpu(f.gpu)}, cpu ${formatCpu(f.cpu)}, memory ${formatBytes(f.memory)}`;
}

/** A gang's totals with its size. */
export function describeGang(g: { gpu: number; cpu: number; memory: number }, pods: number): string {
  return `${pods} pod(s) with gpu ${fmtGpu(g.gpu)}, cpu ${formatCpu(g.cpu)}, memory ${formatBytes(g.memory)} in all`;
}

/** What each pod of a gang asks for (the gang's pods are alike). */
export function describePods(pods: PodRequest[]): string {
  const p = pods[0]!;
  const gpu =
    p.gpu > 0 ? `gpu ${fmtGpu(p.gpu)}` : p.gpuMemoryBytes ? `gpuMemory ${formatBytes(p.gpuMemoryBytes)}` : "";
  const each = [gpu, `cpu ${formatCpu(p.cpuMillis)}`, `memory ${formatBytes(p.memoryBytes)}`]
    .filter(Boolean)
    .join(", ");
  return pods.length === 1 ? each : `${each} each`;
}

/** Which of a pod's requests no eligible node can meet, each with the largest node's figure. */
export function exceeded(pod: PodRequest, nodes: NodeState[]): string {
  const max = (f: (n: SchedNode) => number) => Math.max(0, ...nodes.map((n) => f(n.node)));
  const parts: string[] = [];
  if (pod.cpuMillis > max((n) => n.cpuMillis))
    parts.push(`cpu ${formatCpu(pod.cpuMillis)} (largest node has ${formatCpu(max((n) => n.cpuMillis))})`);
  if (pod.memoryBytes > max((n) => n.memoryBytes))
    parts.push(
      `memory ${formatBytes(pod.memoryBytes)} (largest node has ${formatBytes(max((n) => n.memoryBytes))})`,
    );
  if (pod.gpu >= 1 && pod.gpu > max((n) => n.gpus.length))
    parts.push(`gpu ${fmtGpu(pod.gpu)} (largest node has ${max((n) => n.gpus.length)})`);
  if (pod.gpu > 0 && pod.gpu < 1 && max((n) => n.gpus.length) === 0)
    parts.push(`gpu ${fmtGpu(pod.gpu)} (no node has a GPU)`);
  if (
    pod.gpuMemoryBytes &&
    pod.gpuMemoryBytes > max((n) => Math.max(0, ...n.gpus.map((g) => g.memoryBytes ?? 0)))
  )
    parts.push(
      `gpuMemory ${formatBytes(pod.gpuMemoryBytes)} (largest device has ${formatBytes(max((n) => Math.max(0, ...n.gpus.map((g) => g.memoryBytes ?? 0))))}; devices of unknown memory cannot take memory-sized shares)`,
    );
  if (max((n) => n.maxPods ?? 1) < 1) parts.push("every node takes 0 pods");
  return parts.join(", ") || "no single node has all of the cpu, memory and gpu requested";
}

import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import {
  LOOM_TAINT_PREFIX,
  type NodeCapacity,
  type RunningWorkload,
  type Taint,
  type Toleration,
} from "../../ports/scheduler.js";
import { projectOf } from "./naming.js";
import { GPU_RESOURCE, type Pod } from "./pods.js";

/** Node labels the scheduler reads: pools are Loom's; GPU model and memory are GPU Feature Discovery's. */
export const NODE_LABELS = {
  pool: "loom.dev/node-pool",
  gpuModel: "nvidia.com/gpu.product",
  gpuMemoryMiB: "nvidia.com/gpu.memory",
} as const;

/** The fields of a Node that the runtime reads. */
export interface KubeNode {
  metadata: { name: string; resourceVersion?: string; labels?: Record<string, string> };
  spec?: { unschedulable?: boolean; taints?: { key?: string; value?: string; effect: string }[] };
  status?: { allocatable?: Record<string, string>; conditions?: { type: string; status: string }[] };
}

/**
 * Taints a node autoscaler puts on a node it is about to remove, may remove, or has not finished
 * bringing up. Loom binds pods itself, past kube-scheduler's taint checks, so it must honour them
 * here: work bound to such a node would be killed with it, keep an idle node alive that the
 * autoscaler meant to give back, or be evicted at once.
 * - cluster-autoscaler: ToBeDeletedByClusterAutoscaler (NoSchedule, removing it now) and
 *   DeletionCandidateOfClusterAutoscaler (PreferNoSchedule, considering it).
 * - Karpenter: karpenter.sh/disrupted (NoSchedule: consolidating, expiring or draining it) and
 *   karpenter.sh/unregistered (NoExecute: its NodeClaim is not registered yet; a kwok node can be
 *   Ready before Karpenter takes this off, and the taint manager evicts whatever is bound there).
 */
export const AUTOSCALER_TAINTS = [
  "ToBeDeletedByClusterAutoscaler",
  "DeletionCandidateOfClusterAutoscaler",
  "karpenter.sh/disrupted",
  "karpenter.sh/unregistered",
];

/** Whether a node autoscaler has marked this node for removal (now or soon), or not yet handed it over. */
export function markedForRemoval(n: KubeNode): boolean {
  return !!n.spec?.taints?.some((t) => t.key !== undefined && AUTOSCALER_TAINTS.includes(t.key));
}

/**
 * The taints Loom's scheduler must honour (it binds past kube-scheduler): NoSchedule and
 * NoExecute ones; the autoscaler's are handled by leaving the node out altogether.
 */
export function hardTaintsOf(n: KubeNode): Taint[] {
  return (n.spec?.taints ?? []).flatMap((t) =>
    t.key && !AUTOSCALER_TAINTS.includes(t.key) && (t.effect === "NoSchedule" || t.effect === "NoExecute")
      ? [{ key: t.key, ...(t.value ? { value: t.value } : {}), effect: t.effect }]
      : [],
  );
}

/**
 * Tolerations of a node's Loom taints (loom.dev/…), for a pod Loom's scheduler placed there:
 * only work that named the node's pool (or tolerates them itself) is placed on such a node, and
 * its pod says so, so a NoExecute one does not evict it.
 */
export function loomTaintTolerations(n: KubeNode | undefined): Toleration[] {
  if (!n) return [];
  return hardTaintsOf(n)
    .filter((t) => t.key.startsWith(LOOM_TAINT_PREFIX))
    .map((t) => ({ key: t.key, operator: "Equal", value: t.value ?? "", effect: t.effect }));
}

/**
 * What the scheduler may place on: Ready, schedulable nodes by name, from their allocatable,
 * with their taints; never a node a node autoscaler marked for removal.
 */
export function nodeCapacities(items: KubeNode[]): NodeCapacity[] {
  return items
    .filter(
      (n) =>
        !n.spec?.unschedulable &&
        !markedForRemoval(n) &&
        n.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
    )
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
    .map((n) => {
      const a = n.status?.allocatable ?? {};
      const gpus = Number(a[GPU_RESOURCE] ?? 0);
      const labels = n.metadata.labels ?? {};
      const gpuMemMiB = Number(labels[NODE_LABELS.gpuMemoryMiB] ?? 0);
      const taints = hardTaintsOf(n);
      return {
        name: n.metadata.name,
        cpuMillis: parseCpuMillis(a.cpu ?? "0") ?? 0,
        memoryBytes: parseMemoryBytes(a.memory ?? "0") ?? 0,
        gpus: Array.from({ length: gpus }, (_, i) => `${n.metadata.name}/gpu-${i}`),
        ...(a.pods ? { maxWorkers: Number(a.pods) } : {}),
        ...(labels[NODE_LABELS.pool] ? { pool: labels[NODE_LABELS.pool] } : {}),
        ...(labels[NODE_LABELS.gpuModel] ? { gpuModel: labels[NODE_LABELS.gpuModel] } : {}),
        ...(gpuMemMiB > 0 ? { gpuMemoryBytes: gpuMemMiB * 2 ** 20 } : {}),
        ...(taints.length ? { taints } : {}),
      };
    });
}

/** How many GPUs a node offers (none for a node not known). */
export function gpuCount(node: KubeNode | undefined): number {
  return Number(node?.status?.allocatable?.[GPU_RESOURCE] ?? 0);
}

/** A pod's requests as the scheduler counts them. */
export interface PodRequest {
  cpuMillis: number;
  memoryBytes: number;
  gpu: number;
}

/**
 * What others hold on the nodes: pods bound by someone else (or by Loom, for work it does not
 * own), as running workloads the scheduler counts but never preempts.
 */
export class HeldByOthers {
  readonly running: RunningWorkload[] = [];
  private readonly devicesTaken = new Map<string, number>();

  constructor(private readonly gpusOf: (node: string) => number) {}

  add(pod: Pod, key: string, node: string, request: PodRequest): void {
    // Device ids are the device plugin's choice, unknown here: count them from the top of the
    // node's devices (Loom's own placements fill from the bottom).
    const taken = this.devicesTaken.get(node) ?? 0;
    const gpus = Array.from({ length: Math.ceil(request.gpu) }, (_, i) => ({
      device: `${node}/gpu-${this.gpusOf(node) - 1 - taken - i}`,
      share: 1,
    }));
    this.devicesTaken.set(node, taken + gpus.length);
    this.running.push({
      id: `pod:${key}`,
      name: key,
      project: projectOf(pod.metadata.namespace) ?? `namespace ${pod.metadata.namespace}`,
      priority: pod.spec?.priority ?? 0,
      preemptible: false,
      createdAt: pod.metadata.creationTimestamp ?? "",
      pods: [request],
      placements: [{ pod: 0, node, gpus }],
    });
  }
}

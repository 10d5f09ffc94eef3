/**
 * The scheduler core's model: a snapshot of the cluster in, decisions out. Pure data, no I/O,
 * the same on a laptop (local devices) and on Kubernetes (nodes from the API server).
 *
 * Units: cpu in millicores, memory in bytes, gpu in devices (fractions below 1 share a device).
 */

export const RESOURCES = ["gpu", "cpu", "memory"] as const;
export type ResourceName = (typeof RESOURCES)[number];
export type Vec = Record<ResourceName, number>;

export interface GpuDevice {
  id: string;
  /** Device memory, needed for memory-sized fractional requests (gpuMemoryBytes). */
  memoryBytes?: number;
}

export interface SchedNode {
  name: string;
  /** Node pool (Kubernetes label loom.dev/node-pool); unset is the "default" pool. */
  pool?: string;
  /** GPU model, e.g. "H100" (nvidia.com/gpu.product). */
  gpuModel?: string;
  cpuMillis: number;
  memoryBytes: number;
  gpus: GpuDevice[];
  /** Pods (or processes) the node takes at most; unset means no limit. */
  maxPods?: number;
  /** Fractional requests take a whole device here (sharing could not be enforced). */
  wholeGpusOnly?: boolean;
  /** The node's taints; NoSchedule and NoExecute ones keep off work that does not tolerate them. */
  taints?: Taint[];
  /**
   * The fleet member the node belongs to (issue 23); unset outside a fleet. A gang is placed
   * whole in one member: its pods never span clusters.
   */
  cluster?: string;
}

/** A node taint, in Kubernetes' shape. */
export interface Taint {
  key: string;
  value?: string;
  effect: "NoSchedule" | "PreferNoSchedule" | "NoExecute";
}

/** A workload's toleration of taints, in Kubernetes' shape (an empty key with Exists: every taint). */
export interface Toleration {
  key?: string;
  operator?: "Exists" | "Equal";
  value?: string;
  /** Unset: every effect. */
  effect?: "NoSchedule" | "PreferNoSchedule" | "NoExecute";
}

/** One pod (worker) of a gang. */
export interface PodRequest {
  cpuMillis: number;
  memoryBytes: number;
  /** Whole devices (1, 2, …) or a share of one device (0 < gpu < 1). */
  gpu: number;
  /** A share of one device sized by memory; the share is this ÷ the device's memory. */
  gpuMemoryBytes?: number;
}

export type PlacementPolicy = "binpack" | "spread";

export interface Workload {
  /** Stable id (uid). */
  id: string;
  /** For messages: "project/name". */
  name: string;
  project: string;
  /** Higher runs first within a project and may preempt lower preemptible work of its project. */
  priority: number;
  /** May be stopped to give capacity back (reclaim, fair share, priority). */
  preemptible: boolean;
  /** Submission time (ISO 8601); earlier is served first among equals. */
  createdAt: string;
  /** The gang: every pod is placed, or none is. */
  pods: PodRequest[];
  /**
   * Elastic: pending, the gang may start with as few as `min` of its pods when all of them do
   * not fit; running (with fewer than `max`), it is offered a resize when capacity frees and
   * nothing waits.
   */
  elastic?: { min: number; max: number };
  nodePool?: string;
  gpuModel?: string;
  placement?: PlacementPolicy;
  /** Taints it tolerates; naming a node pool also tolerates that pool's Loom taints (taints.ts). */
  tolerations?: Toleration[];
  /** Fleet members it may run in (spec.clusters, a cluster selector); unset means any. */
  clusters?: string[];
}

/** A device or a share of one given to a pod. */
export interface DeviceShare {
  device: string;
  /** 1 for a whole device, less for a fraction. */
  share: number;
}

export interface PodPlacement {
  pod: number;
  node: string;
  gpus: DeviceShare[];
}

export interface RunningWorkload extends Workload {
  placements: PodPlacement[];
  /** A stop was requested (preemption); it still holds its capacity until its workers exit. */
  stopping?: boolean;
  /** The pending workload a stopping victim makes room for. */
  preemptedFor?: string;
}

export interface ProjectPolicy {
  name: string;
  /** Guaranteed capacity: work within it always gets in when the cluster physically has room. */
  deserved: Partial<Vec>;
  /** Hard cap, borrowed capacity included; unset means none. */
  limit?: Partial<Vec>;
  /** Share of idle capacity beyond deserved quotas, relative to other projects' weights. */
  overQuotaWeight: number;
  /** Node pools the project's workloads may use; unset means all. */
  nodePools?: string[];
}

export interface Snapshot {
  nodes: SchedNode[];
  projects: ProjectPolicy[];
  running: RunningWorkload[];
  pending: Workload[];
  /**
   * Derived values per workload object that a caller keeps across calls (an admission loop
   * hands the same Workload objects to every cycle). Optional: a cache, never an input to a
   * decision. Workloads are immutable by the snapshot's contract.
   */
  memo?: SchedulerMemo;
}

/**
 * What schedule() may remember about a workload object between calls, owned by the caller so the
 * core keeps no state of its own: with a thousand workloads waiting, recomputing each one's
 * request totals and "shape" on every cycle was most of a cycle that decides nothing.
 */
export class SchedulerMemo {
  /** Gang totals, by workload object (with the device memory they were sized by). */
  readonly requests = new WeakMap<Workload, { deviceMemory: number; pods: PodRequest[]; vec: Vec }>();
  /** The shape key of a workload object (see schedule.ts), with the pods it was made from. */
  readonly shapes = new WeakMap<Workload, { pods: PodRequest[]; key: string }>();
}

export type PendingReasonCode =
  /** No node (of the requested pool/model) could ever hold a pod, or the gang exceeds the pool. */
  | "ExceedsNodeCapacity"
  /** The project's limit would be exceeded. */
  | "OverLimit"
  /** Non-preemptible work must fit within the project's deserved quota. */
  | "NonPreemptibleOverQuota"
  /** Borrowing more would take the project past its fair share of idle capacity. */
  | "OverFairShare"
  /** Total free capacity is enough but no arrangement of nodes fits the gang. */
  | "Fragmentation"
  /** Not enough free capacity, and nothing may be preempted for it. */
  | "InsufficientCapacity"
  /** Victims were asked to stop for it; it starts once they have. */
  | "WaitingForPreemption"
  /** The project names a pool the workload is not allowed in, or the pool does not exist. */
  | "NodePoolNotAllowed";

export interface PendingDecision {
  id: string;
  reason: PendingReasonCode;
  message: string;
  /** 1-based position among this cycle's pending workloads, in the order they were considered. */
  queuePosition: number;
  /** Workloads ("project/name") holding the capacity it needs, most relevant first. */
  holders: string[];
}

export type PreemptionReason = "Reclaim" | "FairShare" | "Priority";

export interface PreemptDecision {
  /** The victim. */
  id: string;
  /** The pending workload it makes room for. */
  for: string;
  reason: PreemptionReason;
  message: string;
}

export interface ResizeDecision {
  id: string;
  /** The gang size it may grow to now. */
  pods: number;
  message: string;
}

export interface Decisions {
  bind: { id: string; placements: PodPlacement[] }[];
  /** Elastic workloads that may grow: they restart (from a checkpoint) with more pods. */
  resize: ResizeDecision[];
  preempt: PreemptDecision[];
  pending: PendingDecision[];
}

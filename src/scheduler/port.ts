/**
 * The Scheduler port: a pure function from a snapshot of capacity and demand to decisions. The
 * admission controller builds the snapshot from the store and the runtime's nodes, so the same
 * core decides on a laptop and on a cluster.
 */

export interface NodeCapacity {
  name: string;
  cpuMillis: number;
  memoryBytes: number;
  /** Device ids, e.g. ["0", "1"] or GPU UUIDs. */
  gpus: string[];
  /** How many workers the node takes at most (a kubelet's pod capacity); unset means no limit. */
  maxWorkers?: number;
}

export interface Allocation {
  node: string;
  cpuMillis: number;
  memoryBytes: number;
  gpus: string[];
  /** Workers placed on the node (default 1). */
  workers?: number;
}

export interface WorkloadDemand {
  /** Stable id (uid) of the workload. */
  id: string;
  /** For messages: "project/name". */
  displayName: string;
  /** Submission time; earlier is served first. */
  createdAt: string;
  cpuMillis: number;
  memoryBytes: number;
  gpus: number;
  /** Processes or pods the workload places on its node. */
  workers?: number;
}

export interface SchedulingSnapshot {
  nodes: NodeCapacity[];
  /** What admitted, unfinished workloads hold. */
  allocations: Allocation[];
  pending: WorkloadDemand[];
}

export interface PendingReason {
  /** Machine-readable: "InsufficientCapacity" (wait) or "ExceedsNodeCapacity" (will never fit). */
  reason: "InsufficientCapacity" | "ExceedsNodeCapacity";
  message: string;
}

export interface SchedulingDecisions {
  admit: { id: string; allocation: Allocation }[];
  pending: ({ id: string } & PendingReason)[];
}

export interface Scheduler {
  schedule(snapshot: SchedulingSnapshot): SchedulingDecisions;
}

import { type Decisions, SchedulerMemo, type Snapshot, type Taint } from "../core/scheduler/model.js";
import { DEFAULT_POOL } from "../core/scheduler/nodes.js";
import { gangTotals, schedule } from "../core/scheduler/schedule.js";
import { LOOM_TAINT_PREFIX } from "../core/scheduler/taints.js";

// The scheduler's vocabulary (snapshot, workloads, placements, decisions) and the two helpers the
// views need: everything outside core/ reaches the scheduler through this port.
export type * from "../core/scheduler/model.js";
export { DEFAULT_POOL, gangTotals, LOOM_TAINT_PREFIX, SchedulerMemo };

/**
 * The Scheduler port: a pure function from a snapshot of capacity, projects and workloads to
 * decisions (bind, preempt, and why the rest wait). The admission controller builds the snapshot
 * from its caches and the runtime's nodes, so the same core decides on a laptop and on a cluster.
 */
export interface Scheduler {
  schedule(snapshot: Snapshot): Decisions;
}

/** Loom's scheduler core (src/core/scheduler): quotas, fair share, reclaim, gangs, fractions. */
export const coreScheduler: Scheduler = { schedule };

/** What a node offers, as a runtime reports it. */
export interface NodeCapacity {
  name: string;
  cpuMillis: number;
  memoryBytes: number;
  /** Device ids, e.g. ["0", "1"] or GPU UUIDs. */
  gpus: string[];
  /** How many workers the node takes at most (a kubelet's pod capacity); unset means no limit. */
  maxWorkers?: number;
  /** Node pool (Kubernetes: label loom.dev/node-pool). */
  pool?: string;
  /** GPU model (Kubernetes: label nvidia.com/gpu.product). */
  gpuModel?: string;
  /** The node's taints (Kubernetes); work must tolerate NoSchedule/NoExecute ones to go there. */
  taints?: Taint[];
  /** Memory of each GPU (Kubernetes: label nvidia.com/gpu.memory, in MiB). */
  gpuMemoryBytes?: number;
  /** How fractional GPU requests share a device here (unset: "unenforced", as Kubernetes packs them). */
  gpuSharing?: GpuSharing;
  /** Why fractions are not enforced here, for the node's status. */
  gpuSharingReason?: string;
  /** Each real device's health and last sample (embedded, with nvidia-smi), for status and `loom top`. */
  gpuDevices?: GpuDeviceStatus[];
  /** The fleet member the node is in (issue 23); unset outside a fleet. */
  cluster?: string;
  /**
   * What work this control plane did not place holds on a fleet member's node (its own users'
   * jobs, plain pods): the one queue counts it as held there. Unset: none, or not a member's node.
   */
  usedByOthers?: NodeUse;
}

/** Requests held on a node: GPUs are whole devices (a fraction of one counts as one). */
export interface NodeUse {
  cpuMillis: number;
  memoryBytes: number;
  gpu: number;
  pods: number;
}

/** A figure a member sent, as a count: anything but a finite positive number is none. */
export function countOf(n: unknown): number {
  return typeof n === "number" && Number.isFinite(n) && n > 0 ? n : 0;
}

/**
 * How fractional GPU requests share a device: "mps" enforced by CUDA MPS (a memory limit and a
 * share of the SMs per workload), "unenforced" packed by accounting alone, "whole" a fractional
 * request takes a whole device (no MPS, and the admin did not allow unenforced sharing).
 */
export type GpuSharing = "mps" | "unenforced" | "whole";

/** One device's health and use, as the runtime last read it. */
export interface GpuDeviceStatus {
  id: string;
  uuid?: string;
  model?: string;
  healthy: boolean;
  reason?: string;
  utilization?: number;
  memoryBytes?: number;
  memoryUsedBytes?: number;
  /** Device memory each worker's processes use, by "project/name/worker". */
  workloads?: { project: string; name: string; worker: number; memoryUsedBytes: number }[];
}

/** What one worker was given: its node, its requests, and its devices. */
export interface Allocation {
  node: string;
  cpuMillis: number;
  memoryBytes: number;
  gpus: string[];
  /** Below 1 when the worker shares its one device (fractional GPU). */
  gpuShare?: number;
  /** Workers placed on the node (default 1). */
  workers?: number;
}

import type { Project } from "../../api/project.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import { isFinished, type TrainingJob, workerRange } from "../../api/trainingjob.js";
import type { ExternalWork, Runtime } from "../../ports/runtime.js";
import {
  type NodeCapacity,
  type PodPlacement,
  type ProjectPolicy,
  type RunningWorkload,
  type SchedNode,
  SchedulerMemo,
  type Snapshot,
  type Workload,
} from "../../ports/scheduler.js";
import { invalidSpec } from "../validate.js";
import { heldByOthers } from "./others.js";

/** Where a snapshot's inputs come from: informer caches (admission) or the store (a server without controllers). */
export interface SnapshotSources {
  /** Every TrainingJob that may hold or want capacity (finished ones are skipped). */
  jobs(): TrainingJob[] | Promise<TrainingJob[]>;
  projects(): Project[] | Promise<Project[]>;
  runtime: Pick<Runtime, "nodes" | "external">;
  /** The fleet's members (issue 23): their nodes join the runtime's, and cluster selectors resolve here. */
  fleet?: FleetCapacity;
}

/** What a snapshot needs of the fleet: every member's nodes, and members by label. */
export interface FleetCapacity {
  /** The nodes to schedule on: the local ones and every reachable member's, each with its member. */
  nodes(local: NodeCapacity[]): NodeCapacity[];
  /** Members whose labels match the selector. */
  matching(selector: Record<string, string>): string[];
}

/** The scheduler's snapshot, with the TrainingJobs behind its workloads by uid. */
export type BuiltSnapshot = Snapshot & { byId: Map<string, TrainingJob> };

/**
 * The one snapshot builder: what the admission loop schedules on, and what `loom get nodes`,
 * `loom top` and `--dry-run` read. Nodes and others' work (external pods, embedded model
 * replicas) come from the runtime; Loom's jobs and projects from the sources.
 */
export class SnapshotBuilder {
  private readonly workloads = new WorkloadCache();
  /** What the scheduler derives per workload, kept as long as the cache keeps the workload. */
  private readonly memo = new SchedulerMemo();

  constructor(private readonly sources: SnapshotSources) {}

  /**
   * Whether a cycle would have nothing to decide: no job and no external work waits, and no
   * elastic job could grow. Every change of a worker calls for a cycle, and with a thousand jobs
   * running, building the whole snapshot only to find that was most of the operator's CPU after
   * admission (bench:k8s). Says the same as build() followed by the reconciler's own test.
   */
  async idle(): Promise<boolean> {
    for (const job of await this.sources.jobs()) {
      if (isFinished(job) || invalidSpec(job)) continue;
      const admission = job.status?.admission;
      if (!admission) {
        if (!job.metadata.deletionTimestamp) return false;
        continue;
      }
      const range = workerRange(job.spec);
      const stopping = !!job.status?.preemption || !!job.status?.resize;
      if (range.min < range.max && !stopping && placementsOf(job).length < range.max) return false;
    }
    return (this.sources.runtime.external?.().pending.length ?? 0) === 0;
  }

  async build(): Promise<BuiltSnapshot> {
    const [jobs, projects, nodes] = await Promise.all([
      this.sources.jobs(),
      this.sources.projects(),
      this.sources.runtime.nodes(),
    ]);
    const fleet = this.sources.fleet;
    const built = buildSnapshot(
      jobs,
      fleet ? fleet.nodes(nodes) : nodes,
      this.sources.runtime.external?.(),
      this.workloads,
    );
    // A cluster selector names members by their labels, which change apart from the job.
    if (fleet)
      built.pending = built.pending.map((w) => {
        const selector = built.byId.get(w.id)?.spec.clusterSelector;
        if (!selector) return w;
        const named = fleet.matching(selector);
        return { ...w, clusters: w.clusters ? w.clusters.filter((c) => named.includes(c)) : named };
      });
    return { ...built, projects: projects.map(policyOf), memo: this.memo };
  }
}

/**
 * The scheduler's inputs from what the platform holds: admitted, unfinished jobs are running
 * (a job asked to make room is stopping), the rest wait; others' work comes from the runtime.
 */
export function buildSnapshot(
  jobs: TrainingJob[],
  nodeCapacity: NodeCapacity[],
  external?: ExternalWork,
  workloads: WorkloadCache = new WorkloadCache(),
) {
  const nodes = nodeCapacity.map(toSchedNode);
  const running: RunningWorkload[] = [];
  const pending: Workload[] = [];
  const byId = new Map<string, TrainingJob>();
  for (const job of jobs) {
    if (isFinished(job)) continue;
    if (job.status?.admission) {
      // Admitted before its spec was found bad (its loop marks it Failed and stops it): it holds
      // what its admission says while it stops, but a spec that cannot be read must not cost
      // every other job its cycle.
      try {
        running.push(workloads.running(job));
        byId.set(job.metadata.uid, job);
      } catch {}
      continue;
    }
    // A spec that does not validate never waits for capacity: its loop marks it Failed/Invalid.
    if (job.metadata.deletionTimestamp || invalidSpec(job)) continue;
    byId.set(job.metadata.uid, job);
    pending.push(workloads.of(job));
  }
  workloads.sweep();
  running.push(...(external?.running ?? []));
  pending.push(...(external?.pending ?? []));
  // Fleet members' own work (issue 23): held on their nodes, around what Loom placed there.
  running.push(...heldByOthers(nodeCapacity, running));
  return { nodes, running, pending, byId };
}

/**
 * Workloads by job uid and generation, kept across cycles: parsing every job's quantities on
 * every cycle was a large part of a cycle with a thousand jobs waiting. Entries of jobs not seen
 * in a cycle are dropped. An admitted job's running workload is kept by the job's object: the
 * informer hands a new object for every change, so an object stands for one version, and
 * building a thousand running workloads afresh was most of a cycle's build (bench:k8s).
 */
export class WorkloadCache {
  private entries = new Map<string, { generation: number; workload: Workload }>();
  private seen = new Map<string, { generation: number; workload: Workload }>();
  private readonly runningByObject = new WeakMap<TrainingJob, RunningWorkload>();

  /** An admitted job as the scheduler counts it: what it holds, and whether it is stopping. */
  running(job: TrainingJob): RunningWorkload {
    const workload = this.of(job);
    let r = this.runningByObject.get(job);
    if (!r) {
      const placements = placementsOf(job);
      r = {
        ...workload,
        // An elastic job holds what it was admitted with, which may be fewer than its most.
        pods: workload.pods.slice(0, placements.length),
        placements,
        stopping: !!job.status?.preemption || !!job.status?.resize,
        ...(job.status?.preemption?.forUid ? { preemptedFor: job.status.preemption.forUid } : {}),
      };
      this.runningByObject.set(job, r);
    }
    return r;
  }

  of(job: TrainingJob): Workload {
    const uid = job.metadata.uid;
    let e = this.entries.get(uid);
    if (!e || e.generation !== job.metadata.generation)
      e = { generation: job.metadata.generation, workload: workloadOf(job) };
    this.seen.set(uid, e);
    return e.workload;
  }

  sweep(): void {
    this.entries = this.seen;
    this.seen = new Map();
  }
}

/** The scheduler's view of a TrainingJob: a gang of identical workers. */
export function workloadOf(job: TrainingJob): Workload {
  const r = job.spec.resources;
  const range = workerRange(job.spec);
  const pod = {
    cpuMillis: r.cpu === undefined ? 0 : (parseCpuMillis(r.cpu) ?? 0),
    memoryBytes: r.memory === undefined ? 0 : (parseMemoryBytes(r.memory) ?? 0),
    gpu: r.gpu ?? 0,
    ...(r.gpuMemory !== undefined ? { gpuMemoryBytes: parseMemoryBytes(r.gpuMemory) ?? 0 } : {}),
  };
  return {
    id: job.metadata.uid,
    name: `${job.metadata.project}/${job.metadata.name}`,
    project: job.metadata.project ?? "",
    priority: job.spec.priority ?? 0,
    preemptible: job.spec.preemptible ?? true,
    createdAt: job.metadata.creationTimestamp,
    pods: Array.from({ length: range.max }, () => ({ ...pod })),
    ...(range.min < range.max ? { elastic: range } : {}),
    ...(job.spec.nodePool ? { nodePool: job.spec.nodePool } : {}),
    ...(job.spec.gpuModel ? { gpuModel: job.spec.gpuModel } : {}),
    ...(job.spec.clusters ? { clusters: job.spec.clusters } : {}),
    placement: job.spec.placement ?? "binpack",
    ...(job.spec.tolerations?.length ? { tolerations: job.spec.tolerations } : {}),
  };
}

/** Where an admitted job's workers are; admissions written before placements existed had one node. */
function placementsOf(job: TrainingJob): PodPlacement[] {
  const a = job.status!.admission!;
  if (a.placements) return a.placements;
  return Array.from({ length: a.workers ?? workerRange(job.spec).max }, (_, pod) => ({
    pod,
    node: a.node,
    gpus: pod === 0 ? a.gpus.map((device) => ({ device, share: a.gpuShare ?? 1 })) : [],
  }));
}

export function policyOf(p: Project): ProjectPolicy {
  // An invalid project (marked Failed/Invalid by its loop) guarantees nothing and lends nothing.
  if (invalidSpec(p)) return { name: p.metadata.name, deserved: {}, overQuotaWeight: 0 };
  const vec = (q: { cpu?: string | number; memory?: string | number; gpu?: number } | undefined) => {
    const out: ProjectPolicy["deserved"] = {};
    if (q?.gpu !== undefined) out.gpu = q.gpu;
    if (q?.cpu !== undefined) out.cpu = parseCpuMillis(q.cpu) ?? 0;
    if (q?.memory !== undefined) out.memory = parseMemoryBytes(q.memory) ?? 0;
    return out;
  };
  return {
    name: p.metadata.name,
    deserved: vec(p.spec.quota),
    ...(p.spec.limit ? { limit: vec(p.spec.limit) } : {}),
    overQuotaWeight: p.spec.overQuotaWeight ?? 1,
    ...(p.spec.nodePools ? { nodePools: p.spec.nodePools } : {}),
  };
}

export function toSchedNode(n: NodeCapacity): SchedNode {
  return {
    name: n.name,
    cpuMillis: n.cpuMillis,
    memoryBytes: n.memoryBytes,
    gpus: n.gpus.map((id) => ({ id, ...(n.gpuMemoryBytes ? { memoryBytes: n.gpuMemoryBytes } : {}) })),
    ...(n.maxWorkers !== undefined ? { maxPods: n.maxWorkers } : {}),
    ...(n.pool ? { pool: n.pool } : {}),
    ...(n.gpuModel ? { gpuModel: n.gpuModel } : {}),
    ...(n.gpuSharing === "whole" ? { wholeGpusOnly: true } : {}),
    ...(n.taints ? { taints: n.taints } : {}),
    ...(n.cluster ? { cluster: n.cluster } : {}),
  };
}

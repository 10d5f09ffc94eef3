import type { Logger } from "pino";
import { getCondition, setCondition } from "../../api/meta.js";
import type { Project } from "../../api/project.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import { isFinished, type TrainingJob, workerRange } from "../../api/trainingjob.js";
import type {
  PendingDecision,
  PodPlacement,
  PreemptDecision,
  ProjectPolicy,
  RunningWorkload,
  SchedNode,
  Workload,
} from "../../core/scheduler/model.js";
import { forEachConcurrently } from "../../lib/concurrency.js";
import type { ExternalWork, Runtime } from "../../ports/runtime.js";
import type { NodeCapacity, Scheduler } from "../../ports/scheduler.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { WriteOverlay } from "../../reconcile/overlay.js";
import { refOf } from "../trainingjob/reconciler.js";

/** Status writes one admission cycle keeps in flight at once. */
const WRITE_CONCURRENCY = 16;
/**
 * Binds in flight at once. A bind is one small POST; with 16 in flight Loom bound 193 pods/s on
 * the 2-core bench cluster while the API server still had room (bench:scheduler (b)).
 */
const BIND_CONCURRENCY = 128;

/** The admission loop has one key: every change to any workload triggers one scheduling cycle. */
export const ADMISSION_KEY = "cycle";

export interface AdmissionDeps {
  store: ResourceStore;
  /** Every TrainingJob as the informer sees it (no store round trip per cycle). */
  listJobs: () => TrainingJob[];
  /** Every Project as the informer sees it: quotas, limits, weights, pools. */
  listProjects: () => Project[];
  runtime: Runtime;
  scheduler: Scheduler;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
}

/**
 * One scheduling cycle: (1) take every workload from the informer's cache, overlaid with this
 * loop's own writes the cache may not show yet, (2) take nodes from the runtime and projects from
 * their cache, (3) ask the scheduler core, (4) write its decisions: admissions, preemption
 * requests to victims (the trainingjob loop stops them gracefully), and for every waiting
 * workload a condition that says exactly why.
 */
export class AdmissionReconciler implements Reconciler {
  readonly name = "admission";

  /**
   * Objects this loop wrote, until the informer's cache catches up. Without this a cycle that
   * runs before its own writes come back through the watch would hand the same capacity out twice.
   */
  private readonly written = new WriteOverlay<TrainingJob>((job) => job.metadata.uid);
  private readonly workloads = new WorkloadCache();

  constructor(private readonly deps: AdmissionDeps) {}

  private snapshot(): TrainingJob[] {
    return this.written.list(this.deps.listJobs());
  }

  private async writeStatus(job: TrainingJob): Promise<void> {
    this.written.remember((await this.deps.store.updateStatus(job)) as TrainingJob);
  }

  async reconcile(_key: string): Promise<ReconcileResult> {
    const { running, pending, byId, nodes } = buildSnapshot(
      this.snapshot(),
      await this.deps.runtime.nodes(),
      // Work placed on the platform by others, and pods submitted straight to Loom's scheduler.
      this.deps.runtime.external?.(),
      this.workloads,
    );
    // Nothing waits and no elastic job could grow: nothing to decide.
    const mayGrow = running.some((r) => r.elastic && !r.stopping && r.pods.length < r.elastic.max);
    if (pending.length === 0 && !mayGrow) return {};
    const projects = this.deps.listProjects().map(policyOf);
    const decisions = this.deps.scheduler.schedule({ nodes, projects, running, pending });
    const now = this.deps.now();
    const runtime = this.deps.runtime;
    // Names of preemptors only: building a map of every waiting workload each cycle cost more.
    const nameOf = (id: string) => pending.find((w) => w.id === id)?.name ?? id;
    // The writes of one cycle are independent (each job its own object): send them side by side.
    // One at a time, admitting 1,000 jobs on Kubernetes took 222 s of round trips in bench:k8s.
    await forEachConcurrently(decisions.preempt, WRITE_CONCURRENCY, async (p) => {
      const victim = byId.get(p.id);
      if (victim) await this.preempt(victim, { name: nameOf(p.for), uid: p.for }, p, now);
      // Platform work the runtime reported as preemptible (embedded model replicas): it stops
      // them gracefully and queues them again. Others' work is never reported so.
      else await runtime.preemptExternal?.(p.id, p.message);
    });
    await forEachConcurrently(decisions.resize, WRITE_CONCURRENCY, async (r) => {
      const job = byId.get(r.id);
      if (job && !job.status?.resize) await this.resize(job, r.pods, r.message, now);
    });
    await forEachConcurrently(decisions.bind, BIND_CONCURRENCY, async ({ id, placements }) => {
      const job = byId.get(id);
      if (job) await this.admit(job, placements, now);
      else await runtime.bindExternal?.(id, placements);
    });
    // Most waiting jobs wait for the same reason as last cycle: sort them out without a promise each.
    const changed = decisions.pending.filter((p) => {
      const job = byId.get(p.id);
      return !job || !this.sameBlocker(job, p);
    });
    await forEachConcurrently(changed, WRITE_CONCURRENCY, async (p) => {
      const job = byId.get(p.id);
      if (job) await this.wait(job, p, now);
      else await runtime.explainExternal?.(p.id, p.reason, withHolders(p));
    });
    return {};
  }

  private async admit(job: TrainingJob, placements: PodPlacement[], now: Date): Promise<void> {
    const first = placements[0]!;
    const r = job.spec.resources;
    const share = first.gpus.length === 1 && first.gpus[0]!.share < 1 ? first.gpus[0]!.share : undefined;
    const devices = first.gpus.map((g) => g.device);
    const range = workerRange(job.spec);
    const size =
      range.min < range.max
        ? ` with ${placements.length} of up to ${range.max} workers (elastic, at least ${range.min})`
        : "";
    const message = `admitted to ${first.node}${devices.length ? ` with GPU(s) ${devices.join(",")}${share !== undefined ? ` (share ${share})` : ""}` : ""}${size}`;
    await this.writeStatus({
      ...job,
      status: {
        ...job.status,
        phase: job.status?.phase ?? "Pending",
        queuePosition: undefined,
        admission: {
          node: first.node,
          cpuMillis: r.cpu === undefined ? 0 : (parseCpuMillis(r.cpu) ?? 0),
          memoryBytes: r.memory === undefined ? 0 : (parseMemoryBytes(r.memory) ?? 0),
          gpus: devices,
          ...(share !== undefined ? { gpuShare: share } : {}),
          workers: placements.length,
          placements,
          admittedAt: now.toISOString(),
        },
        conditions: setCondition(
          job.status?.conditions,
          { type: "Admitted", status: "True", reason: "Admitted", message },
          now,
        ),
      },
    });
    await this.deps.events.record(refOf(job), "Normal", "Admitted", message);
  }

  /** An elastic job may grow: its reconciler stops it (checkpointing) and it is admitted again. */
  private async resize(job: TrainingJob, workers: number, message: string, now: Date): Promise<void> {
    await this.writeStatus({
      ...job,
      status: { ...job.status, resize: { workers, reason: message, requestedAt: now.toISOString() } },
    });
    await this.deps.events.record(
      refOf(job),
      "Normal",
      "Resizing",
      `growing to ${workers} workers: ${message}`,
    );
  }

  private async preempt(
    victim: TrainingJob,
    preemptor: { name: string; uid: string },
    p: PreemptDecision,
    now: Date,
  ): Promise<void> {
    await this.writeStatus({
      ...victim,
      status: {
        ...victim.status,
        preemption: {
          requestedAt: now.toISOString(),
          for: preemptor.name,
          forUid: preemptor.uid,
          reason: p.reason,
          message: p.message,
        },
      },
    });
    await this.deps.events.record(refOf(victim), "Warning", "Preempting", p.message);
  }

  /**
   * Unchanged blocker: no write (queue positions shift with every admission; rewriting every
   * waiting job for that would cost a write per job per cycle). Who holds the capacity changes
   * with every admission too: it rides along, but alone does not cause a write (it did: 29
   * status writes per job instead of 7 in bench:scheduler).
   */
  private sameBlocker(job: TrainingJob, p: PendingDecision): boolean {
    const prev = getCondition(job.status?.conditions, "Admitted");
    if (job.status?.phase !== "Pending" || prev?.reason !== p.reason) return false;
    const m = prev.message;
    return m === p.message || (m.startsWith(p.message) && m.startsWith(HELD_BY, p.message.length));
  }

  private async wait(job: TrainingJob, p: PendingDecision, now: Date): Promise<void> {
    const message = withHolders(p);
    await this.writeStatus({
      ...job,
      status: {
        ...job.status,
        phase: "Pending",
        queuePosition: p.queuePosition,
        conditions: setCondition(
          job.status?.conditions,
          { type: "Admitted", status: "False", reason: p.reason, message },
          now,
        ),
      },
    });
    await this.deps.events.record(
      refOf(job),
      p.reason === "WaitingForPreemption" ? "Normal" : "Warning",
      p.reason,
      message,
    );
  }
}

const HELD_BY = "; held by ";

function withHolders(p: PendingDecision): string {
  return p.holders.length ? `${p.message}${HELD_BY}${p.holders.join(", ")}` : p.message;
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
    const admission = job.status?.admission;
    if (admission) {
      byId.set(job.metadata.uid, job);
      const placements = placementsOf(job);
      const workload = workloads.of(job);
      running.push({
        ...workload,
        // An elastic job holds what it was admitted with, which may be fewer than its most.
        pods: workload.pods.slice(0, placements.length),
        placements,
        stopping: !!job.status?.preemption || !!job.status?.resize,
        ...(job.status?.preemption?.forUid ? { preemptedFor: job.status.preemption.forUid } : {}),
      });
      continue;
    }
    if (job.metadata.deletionTimestamp) continue;
    byId.set(job.metadata.uid, job);
    pending.push(workloads.of(job));
  }
  workloads.sweep();
  running.push(...(external?.running ?? []));
  pending.push(...(external?.pending ?? []));
  return { nodes, running, pending, byId };
}

/**
 * Workloads by job uid and generation, kept across cycles: parsing every job's quantities on
 * every cycle was a large part of a cycle with a thousand jobs waiting. Entries of jobs not seen
 * in a cycle are dropped.
 */
export class WorkloadCache {
  private entries = new Map<string, { generation: number; workload: Workload }>();
  private seen = new Map<string, { generation: number; workload: Workload }>();

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
    placement: job.spec.placement ?? "binpack",
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
  };
}

import type { Logger } from "pino";
import { SELF_CLUSTER } from "../../api/cluster.js";
import { getCondition, setCondition } from "../../api/meta.js";
import type { Project } from "../../api/project.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import { isFinished, type TrainingJob, workerRange } from "../../api/trainingjob.js";
import { forEachConcurrently } from "../../lib/concurrency.js";
import type { Runtime } from "../../ports/runtime.js";
import type {
  PendingDecision,
  PodPlacement,
  PreemptDecision,
  RunningWorkload,
  Scheduler,
} from "../../ports/scheduler.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { WriteOverlay } from "../../reconcile/overlay.js";
import { refOf } from "../trainingjob/reconciler.js";
import {
  CAPACITY_REQUEUE_MS,
  type CapacityStatus,
  capacityRequestOf,
  capacityStatus,
  sameCapacity,
  usageByProject,
  wantsCapacity,
  withinLimit,
} from "./capacity.js";
import { type AdmissionOffer, admittedStatus } from "./offer.js";
import { type BuiltSnapshot, type FleetCapacity, SnapshotBuilder } from "./snapshot.js";

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
  /** The fleet's members (issue 23): one queue over their nodes and this platform's. */
  fleet?: FleetCapacity;
  /**
   * Hands an admission to the TrainingJob loop instead of writing it: that loop starts the job
   * and writes the admission in the same status write as the start (one write per job fewer).
   * Without it, the admission is written here.
   */
  offer?: (job: TrainingJob, offer: AdmissionOffer) => void;
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
  private readonly snapshots: SnapshotBuilder;

  /**
   * Admissions handed to the TrainingJob loop (deps.offer), by job uid, until the cache shows
   * them written: counted as if written, so the capacity is not handed out twice meanwhile.
   */
  private readonly offered = new Map<string, AdmissionOffer>();

  constructor(private readonly deps: AdmissionDeps) {
    this.snapshots = new SnapshotBuilder({
      jobs: () => this.withOffers(this.written.list(this.deps.listJobs())),
      projects: this.deps.listProjects,
      runtime: this.deps.runtime,
      ...(this.deps.fleet ? { fleet: this.deps.fleet } : {}),
    });
  }

  /**
   * Whether the informer's event for `job` only brings back this loop's own latest write: the
   * cycle that wrote it counted it already (through the overlay), so it calls for no new cycle.
   */
  isOwnWrite(job: TrainingJob): boolean {
    return this.written.isOwn(job.metadata.uid, job);
  }

  /** Holds an event for `job` while this loop writes it; `replay` runs once the write ended. */
  holdEcho(job: TrainingJob, replay: () => void): boolean {
    return this.written.holdEcho(job.metadata.uid, replay);
  }

  /** Jobs with the admissions offered and not yet written shown in them. */
  private withOffers(jobs: TrainingJob[]): TrainingJob[] {
    if (this.offered.size === 0) return jobs;
    const listed = new Set<string>();
    const out = jobs.map((job) => {
      const uid = job.metadata.uid;
      listed.add(uid);
      const offer = this.offered.get(uid);
      if (!offer) return job;
      // Written (with the start), or the job has gone another way: the offer has done its work.
      if (job.status?.admission || job.metadata.deletionTimestamp || isFinished(job)) {
        this.offered.delete(uid);
        return job;
      }
      return { ...job, status: admittedStatus(job, offer) };
    });
    for (const uid of this.offered.keys()) if (!listed.has(uid)) this.offered.delete(uid);
    return out;
  }

  /** The snapshot a cycle decides on (also what the scheduling views read). */
  snapshot(): Promise<BuiltSnapshot> {
    return this.snapshots.build();
  }

  private async writeStatus(job: TrainingJob): Promise<void> {
    await this.written.write(
      job.metadata.uid,
      async () => (await this.deps.store.updateStatus(job)) as TrainingJob,
    );
  }

  async reconcile(_key: string): Promise<ReconcileResult> {
    // Nothing waits and no elastic job could grow: nothing to decide, and no snapshot to build.
    if (await this.snapshots.idle()) return {};
    // Work placed on the platform by others, pods submitted straight to Loom's scheduler and
    // service replicas come from the runtime, Loom's jobs from the informer.
    const { running, pending, byId, nodes, projects, memo } = await this.snapshot();
    // Nothing waits and no elastic job could grow: nothing to decide.
    const mayGrow = running.some((r) => r.elastic && !r.stopping && r.pods.length < r.elastic.max);
    if (pending.length === 0 && !mayGrow) return {};
    const decisions = this.deps.scheduler.schedule({ nodes, projects, running, pending, memo });
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
    // In a fleet a gang's nodes are all in one member: the first says which (self: run here).
    const memberOf = new Map(
      nodes.flatMap((n) => (n.cluster && n.cluster !== SELF_CLUSTER ? [[n.name, n.cluster]] : [])),
    );
    await forEachConcurrently(decisions.bind, BIND_CONCURRENCY, async ({ id, placements }) => {
      const job = byId.get(id);
      if (job) await this.admit(job, placements, now, memberOf.get(placements[0]?.node ?? ""));
      else await runtime.bindExternal?.(id, placements);
    });
    // Gangs that wait for room ask a node autoscaler for it (where one runs); others withdraw.
    const capacity = await this.requestCapacity(decisions.pending, byId, running);
    // Most waiting jobs wait for the same reason as last cycle: sort them out without a promise each.
    const changed = decisions.pending.filter((p) => {
      const job = byId.get(p.id);
      if (!job) return true;
      // Waiting for the nodes it asked for, and still asking: nodes that join one by one are the
      // answer coming in (its capacityRequest says how many, of which pool), not a new reason.
      // Written each time, they were a status write and an event between a gang's nodes'
      // registrations, and the cycle that placed the gang on the last one waited for them
      // (bench:fleet (a)).
      const stillAsking =
        !!capacity.get(p.id) && !!job.status?.capacityRequest && job.status.phase === "Pending";
      if (!stillAsking && !this.sameBlocker(job, p)) return true;
      return capacity.has(p.id) && !sameCapacity(job.status?.capacityRequest, capacity.get(p.id));
    });
    await forEachConcurrently(changed, WRITE_CONCURRENCY, async (p) => {
      const job = byId.get(p.id);
      if (job)
        await this.wait(job, p, now, capacity.has(p.id) ? capacity.get(p.id) : job.status?.capacityRequest);
      else await runtime.explainExternal?.(p.id, p.reason, withHolders(p));
    });
    // The autoscaler answers in its own time (events on the request's pods): look again soon.
    return [...capacity.values()].some((c) => c) ? { requeueAfterMs: CAPACITY_REQUEUE_MS } : {};
  }

  /**
   * Asks the runtime's node autoscaler for room for each gang that waits for it, and withdraws
   * the request of each that no longer does; the answers by workload id (undefined: withdrawn).
   * Nothing at all where the runtime has no autoscaler.
   */
  private async requestCapacity(
    pending: PendingDecision[],
    byId: Map<string, TrainingJob>,
    running: RunningWorkload[],
  ): Promise<Map<string, CapacityStatus | undefined>> {
    const out = new Map<string, CapacityStatus | undefined>();
    const runtime = this.deps.runtime;
    if (!runtime.requestCapacity) return out;
    const projects = new Map(this.deps.listProjects().map((p) => [p.metadata.name, p]));
    const usage = usageByProject(running);
    await forEachConcurrently(pending, WRITE_CONCURRENCY, async (p) => {
      const job = byId.get(p.id);
      if (!job) return;
      const project = projects.get(job.metadata.project ?? "");
      const request = wantsCapacity(job, p, project) ? capacityRequestOf(job, p) : undefined;
      const want = request && withinLimit(request, project, usage.get(job.metadata.project ?? ""));
      if (!want && !job.status?.capacityRequest) return;
      const answer = await runtime.requestCapacity!(refOf(job), want ? request : undefined);
      out.set(p.id, answer ? capacityStatus(answer) : undefined);
    });
    return out;
  }

  private async admit(
    job: TrainingJob,
    placements: PodPlacement[],
    now: Date,
    cluster?: string,
  ): Promise<void> {
    const first = placements[0]!;
    // Its capacity request has done its work: withdrawn before the workers exist, so the
    // autoscaler never sees it unplaced beside them and adds nodes a second time. A gang started
    // here has the runtime's start withdraw it (Runtime.requestCapacity), beside its other
    // objects: waiting for the deletes here put them between a node's arrival and the binding.
    const startsHere = cluster ? undefined : this.deps.offer;
    if (job.status?.capacityRequest && !startsHere)
      await this.deps.runtime.requestCapacity?.(refOf(job), undefined);
    const r = job.spec.resources;
    const share = first.gpus.length === 1 && first.gpus[0]!.share < 1 ? first.gpus[0]!.share : undefined;
    const devices = first.gpus.map((g) => g.device);
    const range = workerRange(job.spec);
    const size =
      range.min < range.max
        ? ` with ${placements.length} of up to ${range.max} workers (elastic, at least ${range.min})`
        : "";
    const message = `admitted to ${cluster ? `cluster ${cluster}, node ${first.node.slice(cluster.length + 1)}` : first.node}${devices.length ? ` with GPU(s) ${devices.join(",")}${share !== undefined ? ` (share ${share})` : ""}` : ""}${size}`;
    const offer: AdmissionOffer = {
      admission: {
        node: first.node,
        ...(cluster ? { cluster } : {}),
        cpuMillis: r.cpu === undefined ? 0 : (parseCpuMillis(r.cpu) ?? 0),
        memoryBytes: r.memory === undefined ? 0 : (parseMemoryBytes(r.memory) ?? 0),
        gpus: devices,
        ...(share !== undefined ? { gpuShare: share } : {}),
        workers: placements.length,
        placements,
        admittedAt: now.toISOString(),
      },
      message,
      at: now,
    };
    // A job placed in another member of the fleet is started there (its loop hands it over on
    // seeing the written admission): only a local start writes the admission with itself.
    if (startsHere) {
      // The job's loop writes it, and says so in its Started event (an event is a write on
      // Kubernetes, where the Job controller records none for admission).
      this.offered.set(job.metadata.uid, offer);
      startsHere(job, offer);
      return;
    }
    await this.writeStatus({ ...job, status: admittedStatus(job, offer) });
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

  private async wait(
    job: TrainingJob,
    p: PendingDecision,
    now: Date,
    capacityRequest: CapacityStatus | undefined,
  ): Promise<void> {
    const message = withHolders(p);
    const prev = getCondition(job.status?.conditions, "Admitted");
    const sameWords =
      job.status?.phase === "Pending" && prev?.reason === p.reason && prev.message === message;
    await this.writeStatus({
      ...job,
      status: {
        ...job.status,
        phase: "Pending",
        queuePosition: p.queuePosition,
        capacityRequest,
        conditions: setCondition(
          job.status?.conditions,
          { type: "Admitted", status: "False", reason: p.reason, message },
          now,
        ),
      },
    });
    // A new answer from the autoscaler alone is no new event: the status says it.
    if (sameWords) return;
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

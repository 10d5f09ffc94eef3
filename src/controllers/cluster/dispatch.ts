import type { Logger } from "pino";
import {
  FENCED_CONDITION,
  FLEET_ATTEMPT_BASE_ANNOTATION,
  FLEET_HOLDER_ANNOTATION,
  FLEET_SEED_ANNOTATION,
  FLEET_UID_LABEL,
  fleetAttemptBase,
} from "../../api/cluster.js";
import { NotFoundError } from "../../api/errors.js";
import { PROJECT, TRAININGJOB } from "../../api/kinds.js";
import { type Condition, setCondition } from "../../api/meta.js";
import { isFinished, type TrainingJob, type TrainingJobStatus } from "../../api/trainingjob.js";
import type { CheckpointVault, MemberCluster } from "../../ports/fleet.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import { CopyWatches } from "./copywatch.js";

export { FLEET_UID_LABEL };

/** The control plane's finalizer on a job (the same one the local lifecycle uses). */
const RUNTIME_FINALIZER = "loom.dev/runtime";
/**
 * How often a job running in a member is looked at again while its member's copies are not
 * watched (yet): a watch that is opening, or a store that cannot watch.
 */
export const MIRROR_INTERVAL_MS = 2000;
/**
 * With the member's copies watched (copywatch.ts) a change wakes the job; this resync only
 * catches what no watch event carries (a member's event about an unchanged copy).
 */
export const MIRROR_RESYNC_MS = 30_000;
/** How often a copy's seeding is looked at while its workers start (they wait for it). */
const SEED_POLL_MS = 1000;

/** Status fields the member owns while the job runs there, copied back as they are. */
const MIRRORED = [
  "phase",
  "attempts",
  "startTime",
  "completionTime",
  "nextAttemptTime",
  "workers",
  "ready",
  "activeWorkers",
  "restarts",
  "checkpoint",
] as const;

export interface RemoteJobsDeps {
  store: ResourceStore;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
  /** A reachable member by name. */
  member(name: string): MemberCluster | undefined;
  /** Where the checkpoints of jobs running in members are copied to (none: not synced). */
  vault?: CheckpointVault;
  /** This control plane's lease name in members: its copies carry it (FLEET_HOLDER_ANNOTATION). */
  holder?: string;
}

/** A job's key in the trainingjob loop ("project/name"), woken when its copy changes. */
export type WakeJob = (key: string) => void;

/**
 * TrainingJobs the queue placed in another member (status.admission.cluster): created there
 * through the member's Loom store (whose own operator runs them), their status and events
 * mirrored back here, stopped there when they are preempted or deleted here. The trainingjob
 * loop hands such jobs to this; it never runs them itself.
 */
export class RemoteJobs {
  /** Member events already mirrored, per job uid ("reason|message|count"). */
  private readonly mirrored = new Map<string, Set<string>>();
  /** Per job uid: its copy (by uid) whose first attempt has the control plane's checkpoint. */
  private readonly seeded = new Map<string, string>();
  private watches: CopyWatches | undefined;

  constructor(private readonly deps: RemoteJobsDeps) {}

  /**
   * Mirrors by watch: one watch per member on its copies, a change waking the job (`wake`, the
   * trainingjob loop's enqueue). Without it every job in a member is read every 2 s.
   */
  watchCopies(wake: WakeJob): void {
    this.watches = new CopyWatches({ log: this.deps.log, wake });
  }

  /** Stops the members' watches. */
  close(): void {
    this.watches?.close();
  }

  /** Whether the job was placed in another member. */
  owns(job: TrainingJob): boolean {
    return !!job.status?.admission?.cluster;
  }

  async reconcile(seen: TrainingJob): Promise<ReconcileResult> {
    const cluster = seen.status!.admission!.cluster!;
    // The finalizer before any copy exists: without it a delete on the control plane removed the
    // job at once, and its copy in the member ran on with nothing left to delete it.
    const job =
      seen.metadata.deletionTimestamp || seen.metadata.finalizers?.includes(RUNTIME_FINALIZER)
        ? seen
        : await this.holdFinalizer(seen);
    const member = this.deps.member(cluster);
    if (!member) {
      // Unreachable: nothing to do until it answers (failover is the cluster loop's decision).
      if (job.metadata.deletionTimestamp) return this.dropFinalizer(job);
      return { requeueAfterMs: MIRROR_INTERVAL_MS };
    }
    if (job.metadata.deletionTimestamp) {
      if (!(await this.removeCopy(member, job))) return { requeueAfterMs: 500 };
      return this.dropFinalizer(job);
    }
    if (job.status?.preemption) {
      if (!(await this.removeCopy(member, job))) return { requeueAfterMs: 500 };
      const p = job.status.preemption;
      return this.requeue(job, "Preempted", `stopped in cluster ${cluster}: ${p.message}`);
    }
    const watched = this.watches?.ensure(cluster, member) ?? false;
    const copy = await this.ensureCopy(member, job, cluster);
    if (!copy) return { requeueAfterMs: MIRROR_INTERVAL_MS };
    const fenced = copy.status?.conditions?.find((c) => c.type === FENCED_CONDITION && c.status === "True");
    if (fenced) {
      await this.mirrorEvents(member, job, copy, cluster);
      // The member stopped it (this control plane's lease there lapsed) and never restarts it:
      // the job goes back to the one queue, and is admitted again (there or elsewhere).
      if (!(await this.removeCopy(member, job))) return { requeueAfterMs: 500 };
      return this.requeue(job, "Fenced", `cluster ${cluster} stopped its copy: ${fenced.message}`);
    }
    const seeding = await this.seedCopy(member, job, copy, cluster);
    await this.mirrorStatus(job, copy, cluster);
    await this.mirrorEvents(member, job, copy, cluster);
    await this.syncCheckpoint(member, job, copy, cluster);
    if (seeding) return { requeueAfterMs: SEED_POLL_MS };
    if (isFinished(copy)) return {};
    return { requeueAfterMs: watched ? MIRROR_RESYNC_MS : MIRROR_INTERVAL_MS };
  }

  /**
   * A copy created with the control plane's checkpoint (FLEET_SEED_ANNOTATION): its first
   * attempt's workers wait until the member has it (member.seed). True while they still wait.
   */
  private async seedCopy(
    member: MemberCluster,
    job: TrainingJob,
    copy: TrainingJob,
    cluster: string,
  ): Promise<boolean> {
    const uid = copy.metadata.uid;
    if (
      this.seeded.get(job.metadata.uid) === uid ||
      copy.metadata.annotations?.[FLEET_SEED_ANNOTATION] === undefined
    )
      return false;
    if (!member.seed || !this.deps.vault || isFinished(copy) || (copy.status?.attempts ?? 0) > 1) {
      this.seeded.set(job.metadata.uid, uid);
      return false;
    }
    const project = job.metadata.project ?? "";
    try {
      const files = await this.deps.vault.files(job.metadata.uid);
      const waiting = files
        ? await member.seed({ kind: TRAININGJOB, project, name: job.metadata.name, uid }, files)
        : 0;
      if (waiting > 0) return true;
      this.seeded.set(job.metadata.uid, uid);
      await this.deps.events.record(
        ref(job),
        "Normal",
        "CheckpointSeeded",
        `cluster ${cluster} resumes from the checkpoint the control plane holds (step ${copy.metadata.annotations[FLEET_SEED_ANNOTATION]})`,
      );
      return false;
    } catch (err) {
      this.deps.log.warn(
        { err, cluster, job: `${project}/${job.metadata.name}` },
        "seeding the member's copy failed; retried",
      );
      return true;
    }
  }

  /** The member's copy, created (with its project) when missing; undefined if the name is taken. */
  private async ensureCopy(
    member: MemberCluster,
    job: TrainingJob,
    cluster: string,
  ): Promise<TrainingJob | undefined> {
    const project = job.metadata.project ?? "";
    const existing = await getOrUndefined<TrainingJob>(member.store, TRAININGJOB, project, job.metadata.name);
    if (existing) {
      if (existing.metadata.labels?.[FLEET_UID_LABEL] === job.metadata.uid) return existing;
      await this.condition(
        job,
        "MemberNameTaken",
        `cluster ${cluster} already has a TrainingJob ${project}/${job.metadata.name} that is not this one; delete it there or rename this job`,
      );
      return undefined;
    }
    if (!(await getOrUndefined(member.store, PROJECT, "", project)))
      // Quotas stay the control plane's (the queue is one): the member's project has none.
      await member.store.create({
        apiVersion: job.apiVersion,
        kind: PROJECT,
        metadata: { name: project },
        spec: {},
      } as never);
    const { clusters: _c, clusterSelector: _s, ...spec } = job.spec;
    // A checkpoint held here (the job ran elsewhere before): the copy's first attempt resumes from it.
    const held = member.seed ? await this.deps.vault?.step(job.metadata.uid) : undefined;
    const created = (await member.store.create({
      apiVersion: job.apiVersion,
      kind: TRAININGJOB,
      metadata: {
        name: job.metadata.name,
        project,
        labels: { ...job.metadata.labels, [FLEET_UID_LABEL]: job.metadata.uid },
        annotations: {
          ...job.metadata.annotations,
          // Attempts made elsewhere (before a preemption or failover moved it): numbers never reused.
          [FLEET_ATTEMPT_BASE_ANNOTATION]: String(job.status?.attempts ?? 0),
          // The member stops this copy when this control plane's lease there lapses (fence.ts).
          ...(this.deps.holder ? { [FLEET_HOLDER_ANNOTATION]: this.deps.holder } : {}),
          ...(held !== undefined ? { [FLEET_SEED_ANNOTATION]: String(held) } : {}),
        },
      },
      spec,
    } as never)) as TrainingJob;
    await this.deps.events.record(
      ref(job),
      "Normal",
      "Dispatched",
      `created in cluster ${cluster} (its Loom runs it; status, events and logs come back here)`,
    );
    return created;
  }

  private async mirrorStatus(job: TrainingJob, copy: TrainingJob, cluster: string): Promise<void> {
    const theirs = copy.status ?? {};
    const status: TrainingJobStatus = { ...job.status };
    for (const k of MIRRORED) {
      if (theirs[k] === undefined) delete status[k];
      else (status as Record<string, unknown>)[k] = theirs[k];
    }
    status.phase = theirs.phase ?? "Pending";
    // The copy counts its attempts from 1: after the ones the job made before it came here.
    const attempts = fleetAttemptBase(copy) + (theirs.attempts ?? 0);
    if (attempts > 0) status.attempts = attempts;
    // Our Admitted (the fleet's decision) beside the member's other conditions.
    const ours = job.status?.conditions?.find((c) => c.type === "Admitted");
    const conditions: Condition[] = (theirs.conditions ?? [])
      .filter((c) => c.type !== "Admitted")
      .map((c) => ({ ...c, message: `cluster ${cluster}: ${c.message}` }));
    status.conditions = ours ? [ours, ...conditions] : conditions;
    if (JSON.stringify(status) === JSON.stringify(job.status)) return;
    await this.deps.store.updateStatus({ ...job, status });
  }

  private async mirrorEvents(
    member: MemberCluster,
    job: TrainingJob,
    copy: TrainingJob,
    cluster: string,
  ): Promise<void> {
    if (!member.events) return;
    const theirs = await member.events.listFor(ref(copy), 50);
    const seen = this.mirrored.get(job.metadata.uid) ?? new Set<string>();
    this.mirrored.set(job.metadata.uid, seen);
    for (const e of [...theirs].reverse()) {
      const key = `${e.reason}|${e.message}|${e.count}|${e.firstTimestamp}`;
      if (seen.has(key)) continue;
      seen.add(key);
      await this.deps.events.record(ref(job), e.type, e.reason, `[cluster ${cluster}] ${e.message}`);
    }
  }

  /**
   * Copies the member's newest checkpoint of the job to the control plane (the vault) when the
   * copy reports a step newer than the one held: if the member is lost, the job's next attempt
   * resumes from it. Pulled by the control plane (it holds the member's credentials already;
   * the member's workers need no route back). A failed pull is retried on the next mirror.
   */
  private async syncCheckpoint(
    member: MemberCluster,
    job: TrainingJob,
    copy: TrainingJob,
    cluster: string,
  ): Promise<void> {
    const theirs = copy.status?.checkpoint?.step;
    if (!this.deps.vault || !member.checkpoint || theirs === undefined) return;
    const held = await this.deps.vault.step(job.metadata.uid);
    if (held !== undefined && held >= theirs) return;
    const project = job.metadata.project ?? "";
    try {
      const files = await member.checkpoint({
        kind: TRAININGJOB,
        project,
        name: job.metadata.name,
        uid: copy.metadata.uid,
      });
      if (!files) return;
      await this.deps.vault.put(job.metadata.uid, files);
      this.deps.log.info(
        { cluster, job: `${project}/${job.metadata.name}`, step: theirs, files: files.size },
        "checkpoint synced from member",
      );
    } catch (err) {
      this.deps.log.warn(
        { err, cluster, job: `${project}/${job.metadata.name}` },
        "checkpoint sync from member failed; retried at the next mirror",
      );
    }
  }

  /**
   * Deletes the member's copy; true once it is gone (its own operator stops the workers first,
   * gracefully, so the copy lingers while they stop).
   */
  private async removeCopy(member: MemberCluster, job: TrainingJob): Promise<boolean> {
    const project = job.metadata.project ?? "";
    const copy = await getOrUndefined<TrainingJob>(member.store, TRAININGJOB, project, job.metadata.name);
    if (!copy || copy.metadata.labels?.[FLEET_UID_LABEL] !== job.metadata.uid) return true;
    if (!copy.metadata.deletionTimestamp) {
      try {
        await member.store.delete(TRAININGJOB, project, job.metadata.name);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        return true;
      }
    }
    return !(await getOrUndefined(member.store, TRAININGJOB, project, job.metadata.name));
  }

  private async holdFinalizer(job: TrainingJob): Promise<TrainingJob> {
    const { store } = this.deps;
    return (
      store.addFinalizer
        ? await store.addFinalizer(job, RUNTIME_FINALIZER)
        : await store.update({
            ...job,
            metadata: {
              ...job.metadata,
              finalizers: [...(job.metadata.finalizers ?? []), RUNTIME_FINALIZER],
            },
          })
    ) as TrainingJob;
  }

  private async dropFinalizer(job: TrainingJob): Promise<ReconcileResult> {
    this.mirrored.delete(job.metadata.uid);
    this.seeded.delete(job.metadata.uid);
    if (!job.metadata.finalizers?.includes(RUNTIME_FINALIZER)) return {};
    await this.deps.store.update({
      ...job,
      metadata: {
        ...job.metadata,
        finalizers: job.metadata.finalizers.filter((f) => f !== RUNTIME_FINALIZER),
      },
    });
    return {};
  }

  /**
   * Preempted, or fenced by its member: its copy is gone, so it waits in the one queue again
   * (nothing counted against it).
   */
  private async requeue(
    job: TrainingJob,
    reason: "Preempted" | "Fenced",
    message: string,
  ): Promise<ReconcileResult> {
    const now = this.deps.now();
    const { admission: _a, preemption: _p, ...rest } = job.status!;
    await this.deps.store.updateStatus({
      ...job,
      status: {
        ...rest,
        phase: "Pending",
        ...(reason === "Preempted" ? { preemptions: (job.status?.preemptions ?? 0) + 1 } : {}),
        conditions: setCondition(
          job.status?.conditions,
          { type: "Admitted", status: "False", reason, message },
          now,
        ),
      },
    });
    if (reason === "Fenced") await this.deps.events.record(ref(job), "Warning", reason, message);
    return {};
  }

  private async condition(job: TrainingJob, reason: string, message: string): Promise<void> {
    const conditions = setCondition(
      job.status?.conditions,
      { type: "Dispatched", status: "False", reason, message },
      this.deps.now(),
    );
    if (JSON.stringify(conditions) === JSON.stringify(job.status?.conditions)) return;
    await this.deps.store.updateStatus({ ...job, status: { ...job.status, conditions } });
    await this.deps.events.record(ref(job), "Warning", reason, message);
  }
}

function ref(job: TrainingJob) {
  return {
    kind: TRAININGJOB,
    project: job.metadata.project ?? "",
    name: job.metadata.name,
    uid: job.metadata.uid,
  };
}

/** The object, or undefined where the store has none (the one lookup the fleet's loops share). */
export async function getOrUndefined<T>(
  store: ResourceStore,
  kind: string,
  project: string,
  name: string,
): Promise<T | undefined> {
  try {
    return (await store.get(kind, project, name)) as T;
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

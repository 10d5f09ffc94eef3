import type { Logger } from "pino";
import { FLEET_ATTEMPT_BASE_ANNOTATION, fleetAttemptBase } from "../../api/cluster.js";
import { NotFoundError } from "../../api/errors.js";
import { PROJECT, TRAININGJOB } from "../../api/kinds.js";
import { type Condition, setCondition } from "../../api/meta.js";
import { isFinished, type TrainingJob, type TrainingJobStatus } from "../../api/trainingjob.js";
import type { CheckpointVault, MemberCluster } from "../../ports/fleet.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ReconcileResult } from "../../reconcile/controller.js";

/** The label that ties a member's copy to the control plane's job (its uid). */
export const FLEET_UID_LABEL = "loom.dev/fleet-uid";
/** The control plane's finalizer on a job (the same one the local lifecycle uses). */
const RUNTIME_FINALIZER = "loom.dev/runtime";
/** How often a job running in a member is looked at again (status, events). */
export const MIRROR_INTERVAL_MS = 2000;

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
}

/**
 * TrainingJobs the queue placed in another member (status.admission.cluster): created there
 * through the member's Loom store (whose own operator runs them), their status and events
 * mirrored back here, stopped there when they are preempted or deleted here. The trainingjob
 * loop hands such jobs to this; it never runs them itself.
 */
export class RemoteJobs {
  /** Member events already mirrored, per job uid ("reason|message|count"). */
  private readonly mirrored = new Map<string, Set<string>>();

  constructor(private readonly deps: RemoteJobsDeps) {}

  /** Whether the job was placed in another member. */
  owns(job: TrainingJob): boolean {
    return !!job.status?.admission?.cluster;
  }

  async reconcile(job: TrainingJob): Promise<ReconcileResult> {
    const cluster = job.status!.admission!.cluster!;
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
      return this.requeue(job, cluster);
    }
    const copy = await this.ensureCopy(member, job, cluster);
    if (!copy) return { requeueAfterMs: MIRROR_INTERVAL_MS };
    await this.mirrorStatus(job, copy, cluster);
    await this.mirrorEvents(member, job, copy, cluster);
    await this.syncCheckpoint(member, job, copy, cluster);
    return isFinished(copy) ? {} : { requeueAfterMs: MIRROR_INTERVAL_MS };
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

  private async dropFinalizer(job: TrainingJob): Promise<ReconcileResult> {
    this.mirrored.delete(job.metadata.uid);
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

  /** Preempted: its copy is gone, so it waits in the one queue again (nothing counted against it). */
  private async requeue(job: TrainingJob, cluster: string): Promise<ReconcileResult> {
    const now = this.deps.now();
    const p = job.status!.preemption!;
    const { admission: _a, preemption: _p, ...rest } = job.status!;
    await this.deps.store.updateStatus({
      ...job,
      status: {
        ...rest,
        phase: "Pending",
        preemptions: (job.status?.preemptions ?? 0) + 1,
        conditions: setCondition(
          job.status?.conditions,
          {
            type: "Admitted",
            status: "False",
            reason: "Preempted",
            message: `stopped in cluster ${cluster}: ${p.message}`,
          },
          now,
        ),
      },
    });
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

/** The object, or undefined where the store has none by that name. */
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

import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { setCondition } from "../api/meta.js";
import {
  type Admission,
  isFinished,
  type TrainingJob,
  type TrainingJobStatus,
  type WorkerStatus,
} from "../api/trainingjob.js";
import { NotFoundError } from "../errors.js";
import type { GangObservation, Runtime, WorkerObservation, WorkloadRef } from "../runtime/port.js";
import type { Allocation } from "../scheduler/port.js";
import type { EventRecorder, ResourceStore } from "../store/port.js";
import type { ReconcileResult, Reconciler } from "./controller.js";

export const TRAININGJOB = "TrainingJob";
/** Held while the runtime may have processes for the job, so deletion waits until they are gone. */
export const RUNTIME_FINALIZER = "loom.dev/runtime";

export interface TrainingJobDeps {
  store: ResourceStore;
  /** The informer's copy, to skip a store read when there is clearly nothing to do. */
  cached?: (key: string) => TrainingJob | undefined;
  runtime: Runtime;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
  /** First restart delay; doubles per attempt up to maxBackoffMs. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * Drives a TrainingJob through Pending → Running → Succeeded | Failed once the admission loop
 * has given it capacity: starts attempts through the Runtime port, watches workers, restarts
 * the gang per failurePolicy with backoff, and on deletion stops every worker before letting go.
 */
export class TrainingJobReconciler implements Reconciler {
  readonly name = "trainingjob";
  /**
   * What this loop last wrote per key, until the informer's cache shows it: reads come from the
   * cache (no request per reconcile), and this keeps a reconcile that runs before its own write
   * came back through the watch from acting on the older copy.
   */
  private readonly written = new Map<string, TrainingJob>();

  constructor(private readonly deps: TrainingJobDeps) {}

  /** The job as of this loop's latest knowledge: the cache, or our own newer write. */
  private async read(key: string, project: string, name: string): Promise<TrainingJob | undefined> {
    if (!this.deps.cached) {
      try {
        return (await this.deps.store.get(TRAININGJOB, project, name)) as TrainingJob;
      } catch (err) {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      }
    }
    const cached = this.deps.cached(key);
    const mine = this.written.get(key);
    if (!cached) {
      this.written.delete(key);
      return undefined;
    }
    if (!mine) return cached;
    if (
      mine.metadata.uid !== cached.metadata.uid ||
      Number(mine.metadata.resourceVersion) <= Number(cached.metadata.resourceVersion)
    ) {
      this.written.delete(key);
      return cached;
    }
    return mine;
  }

  private remember(job: TrainingJob): TrainingJob {
    if (this.deps.cached) this.written.set(`${job.metadata.project}/${job.metadata.name}`, job);
    return job;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const [project, name] = splitKey(key);
    const seen = this.deps.cached?.(key);
    // Waiting for admission is the common case with a long queue: nothing to do, nothing to read.
    if (seen && !seen.status?.admission && !seen.metadata.deletionTimestamp && !isFinished(seen)) return {};
    // So is a finished job with nothing left running (every resync would otherwise read it).
    if (
      seen &&
      isFinished(seen) &&
      !seen.metadata.deletionTimestamp &&
      !seen.status?.workers?.some((w) => w.state === "Running")
    ) {
      return {};
    }
    const current = await this.read(key, project, name);
    if (!current) return {};
    let job = current;
    const ref = refOf(job);
    if (job.metadata.deletionTimestamp) return this.finalize(job, ref);
    if (isFinished(job)) return this.settleFinished(job, ref);
    if (!job.status?.admission) return {}; // the admission loop decides when it may start

    if (!job.metadata.finalizers?.includes(RUNTIME_FINALIZER)) {
      job = this.remember(
        (await this.deps.store.update({
          ...job,
          metadata: { ...job.metadata, finalizers: [...(job.metadata.finalizers ?? []), RUNTIME_FINALIZER] },
        })) as TrainingJob,
      );
    }

    if (job.status?.preemption) return this.yieldToPreemption(job, ref);

    const status: TrainingJobStatus = { ...job.status };
    const attempts = status.attempts ?? 0;
    // Admitted again after a preemption: a new attempt, once the stopped one is fully gone.
    if (status.preemptedAttempt !== undefined && status.preemptedAttempt >= attempts)
      return this.startAttempt(job, status, attempts + 1);
    const obs = await this.deps.runtime.observe(ref);
    const now = this.deps.now();

    if (!obs || obs.attempt < attempts) {
      if (attempts > 0 && !status.nextAttemptTime) {
        return this.attemptFailed(
          job,
          status,
          attempts,
          `the workers of attempt ${attempts} were lost by the runtime`,
        );
      }
      return this.startAttempt(job, status, attempts + 1);
    }

    status.attempts = obs.attempt;
    status.workers = obs.workers.map(toWorkerStatus);
    const running = obs.workers.filter((w) => w.state === "Running");
    const failed = obs.workers.filter((w) => w.state === "Failed" || w.state === "Unknown");

    if (failed.length === 0 && running.length > 0) {
      status.phase = "Running";
      await this.writeStatus(job, status);
      return {};
    }
    if (failed.length > 0 && running.length > 0) {
      // One worker failed: the gang goes down together before anything else happens.
      await this.writeStatus(job, status);
      const stopped = await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
      return stopped ? { requeueAfterMs: 0 } : { requeueAfterMs: 250 };
    }
    if (failed.length === 0) {
      status.phase = "Succeeded";
      status.completionTime = now.toISOString();
      status.conditions = setCondition(
        status.conditions,
        {
          type: "Succeeded",
          status: "True",
          reason: "Completed",
          message: `all ${obs.workers.length} worker(s) exited with code 0 on attempt ${obs.attempt}`,
        },
        now,
      );
      status.conditions = setCondition(
        status.conditions,
        { type: "Running", status: "False", reason: "Completed", message: "the job has finished" },
        now,
      );
      await this.writeStatus(job, status);
      await this.event(job, "Normal", "Completed", `succeeded on attempt ${obs.attempt}`);
      return {};
    }
    if (status.nextAttemptTime) {
      const wait = Date.parse(status.nextAttemptTime) - now.getTime();
      if (wait > 0) {
        await this.writeStatus(job, status);
        return { requeueAfterMs: wait };
      }
      return this.startAttempt(job, status, obs.attempt + 1);
    }
    return this.attemptFailed(job, status, obs.attempt, describeFailure(failed[0]!));
  }

  /** Records a failed attempt: schedules a restart with backoff, or fails the job for good. */
  private async attemptFailed(
    job: TrainingJob,
    status: TrainingJobStatus,
    attempt: number,
    what: string,
  ): Promise<ReconcileResult> {
    const now = this.deps.now();
    const maxRestarts = job.spec.failurePolicy.maxRestarts;
    // Attempts a preemption ended are not failures: they do not use up restarts.
    const preempted = status.preemptions ?? 0;
    const restartsUsed = attempt - 1 - preempted;
    const totalAttempts = maxRestarts + 1 + preempted;
    if (restartsUsed < maxRestarts) {
      const delay = Math.min(
        this.deps.maxBackoffMs ?? 60_000,
        (this.deps.baseBackoffMs ?? 1000) * 2 ** restartsUsed,
      );
      status.nextAttemptTime = new Date(now.getTime() + delay).toISOString();
      const message = `${what} on attempt ${attempt} of ${totalAttempts}; restarting in ${(delay / 1000).toFixed(1)}s (restart ${restartsUsed + 1} of ${maxRestarts})`;
      status.conditions = setCondition(
        status.conditions,
        { type: "Restarting", status: "True", reason: "WorkerFailed", message },
        now,
      );
      await this.writeStatus(job, status);
      await this.event(job, "Warning", "WorkerFailed", message);
      return { requeueAfterMs: delay };
    }
    status.phase = "Failed";
    status.completionTime = now.toISOString();
    status.nextAttemptTime = undefined;
    const message =
      maxRestarts === 0
        ? `${what} on attempt ${attempt} of ${totalAttempts}; failurePolicy.maxRestarts is 0, so the job is not restarted`
        : `${what} on attempt ${attempt} of ${totalAttempts}; all ${maxRestarts} restart(s) of failurePolicy.maxRestarts used`;
    status.conditions = setCondition(
      status.conditions,
      { type: "Restarting", status: "False", reason: "BackoffLimitExceeded", message },
      now,
    );
    status.conditions = setCondition(
      status.conditions,
      { type: "Running", status: "False", reason: "Failed", message: "the job has finished" },
      now,
    );
    status.conditions = setCondition(
      status.conditions,
      { type: "Failed", status: "True", reason: "BackoffLimitExceeded", message },
      now,
    );
    await this.writeStatus(job, status);
    await this.event(job, "Warning", "Failed", message);
    return {};
  }

  private async startAttempt(
    job: TrainingJob,
    status: TrainingJobStatus,
    attempt: number,
  ): Promise<ReconcileResult> {
    const admission = job.status!.admission!;
    const now = this.deps.now();
    const ref = refOf(job);
    // Attempts never overlap: anything left of the previous one goes first.
    if (!(await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds)))
      return { requeueAfterMs: 250 };
    const workers = Array.from({ length: job.spec.workers }, (_, index) => ({
      index,
      command: job.spec.command,
      image: job.spec.image,
      annotations: job.metadata.annotations,
      workingDir: job.spec.workingDir,
      allocation: allocationOf(admission, index),
      env: {
        ...job.spec.env,
        LOOM_PROJECT: ref.project,
        LOOM_WORKLOAD: ref.name,
        LOOM_WORKLOAD_KIND: ref.kind,
        LOOM_WORKLOAD_UID: ref.uid,
        LOOM_WORKER_INDEX: String(index),
        LOOM_WORKERS: String(job.spec.workers),
        LOOM_ATTEMPT: String(attempt),
      },
    }));
    try {
      await this.deps.runtime.start({ ref, attempt, workers });
    } catch (err) {
      // Say why in the object (quota, admission policy, image rules), then retry with backoff.
      const message = `cannot start attempt ${attempt}: ${(err as Error).message}`;
      const now = this.deps.now();
      await this.writeStatus(job, {
        ...status,
        conditions: setCondition(
          status.conditions,
          { type: "Running", status: "False", reason: "FailedCreate", message },
          now,
        ),
      });
      await this.event(job, "Warning", "FailedCreate", message);
      throw err;
    }
    status.attempts = attempt;
    status.preemptedAttempt = undefined;
    status.phase = "Running";
    status.startTime ??= now.toISOString();
    status.nextAttemptTime = undefined;
    status.workers = workers.map((w) => ({ index: w.index, state: "Pending" }));
    status.observedGeneration = job.metadata.generation;
    status.conditions = setCondition(
      status.conditions,
      {
        type: "Running",
        status: "True",
        reason: "Started",
        message: `attempt ${attempt} started on ${admission.node}`,
      },
      now,
    );
    if (attempt > 1) {
      status.conditions = setCondition(
        status.conditions,
        {
          type: "Restarting",
          status: "False",
          reason: "Restarted",
          message: `attempt ${attempt} started after a failure`,
        },
        now,
      );
    }
    await this.writeStatus(job, status);
    await this.event(
      job,
      "Normal",
      "Started",
      `attempt ${attempt}: started ${workers.length} worker(s) on ${admission.node}`,
    );
    return {};
  }

  /**
   * A preemption asked this job to give its capacity back: stop every worker gracefully (SIGTERM,
   * then the grace period, so it can checkpoint), then return to the queue keeping its attempt
   * count. The attempt does not count against failurePolicy.maxRestarts.
   */
  private async yieldToPreemption(job: TrainingJob, ref: WorkloadRef): Promise<ReconcileResult> {
    const preemption = job.status!.preemption!;
    const stopped = await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
    if (!stopped) return { requeueAfterMs: 250 };
    const now = this.deps.now();
    const attempts = job.status?.attempts ?? 0;
    const message = `preempted on attempt ${attempts} (${preemption.reason}) for ${preemption.for}: ${preemption.message}; back in the queue`;
    let conditions = setCondition(
      job.status?.conditions,
      { type: "Admitted", status: "False", reason: "Preempted", message },
      now,
    );
    conditions = setCondition(
      conditions,
      { type: "Running", status: "False", reason: "Preempted", message },
      now,
    );
    await this.writeStatus(job, {
      ...job.status,
      workers: undefined, // none now; the stopped attempt's logs stay (loom logs --attempt)
      phase: "Pending",
      admission: undefined,
      preemption: undefined,
      preemptions: (job.status?.preemptions ?? 0) + 1,
      preemptedAttempt: attempts,
      nextAttemptTime: undefined,
      conditions,
    });
    await this.event(job, "Warning", "Preempted", message);
    return {};
  }

  /** A finished job keeps its logs; only stragglers (a stop still in progress) are seen to. */
  private async settleFinished(job: TrainingJob, ref: WorkloadRef): Promise<ReconcileResult> {
    // Nothing was running when it finished: no need to ask the platform on every resync.
    if (!job.status?.workers?.some((w) => w.state === "Running")) return {};
    const obs = await this.deps.runtime.observe(ref);
    if (obs?.workers.some((w) => w.state === "Running")) {
      const stopped = await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
      return stopped ? {} : { requeueAfterMs: 250 };
    }
    return {};
  }

  private async finalize(job: TrainingJob, ref: WorkloadRef): Promise<ReconcileResult> {
    if (!job.metadata.finalizers?.includes(RUNTIME_FINALIZER)) return {};
    const stopped = await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
    if (!stopped) return { requeueAfterMs: 250 };
    await this.deps.runtime.release(ref);
    this.written.delete(`${job.metadata.project}/${job.metadata.name}`);
    await this.deps.store.update({
      ...job,
      metadata: {
        ...job.metadata,
        finalizers: job.metadata.finalizers.filter((f) => f !== RUNTIME_FINALIZER),
      },
    });
    this.deps.log.info({ project: ref.project, job: ref.name }, "workers stopped; job deleted");
    return {};
  }

  /** Writes the status if it changed: most pod events change nothing a user would see. */
  private async writeStatus(job: TrainingJob, status: TrainingJobStatus): Promise<void> {
    if (isDeepStrictEqual(job.status ?? {}, status)) return;
    this.remember((await this.deps.store.updateStatus({ ...job, status })) as TrainingJob);
  }

  private async event(
    job: TrainingJob,
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): Promise<void> {
    await this.deps.events.record(refOf(job), type, reason, message);
  }
}

/** Worker `index`'s share of an admission: its node and devices (placements, when written). */
function allocationOf(admission: Admission, index: number): Allocation {
  const placement = admission.placements?.find((p) => p.pod === index);
  if (!placement) {
    return {
      node: admission.node,
      cpuMillis: admission.cpuMillis,
      memoryBytes: admission.memoryBytes,
      gpus: admission.gpus,
      ...(admission.gpuShare !== undefined ? { gpuShare: admission.gpuShare } : {}),
    };
  }
  const share = placement.gpus.length === 1 ? placement.gpus[0]!.share : 1;
  return {
    node: placement.node,
    cpuMillis: admission.cpuMillis,
    memoryBytes: admission.memoryBytes,
    gpus: placement.gpus.map((g) => g.device),
    ...(share < 1 ? { gpuShare: share } : {}),
  };
}

export function refOf(job: TrainingJob): WorkloadRef {
  return {
    kind: TRAININGJOB,
    project: job.metadata.project ?? "",
    name: job.metadata.name,
    uid: job.metadata.uid,
  };
}

export function splitKey(key: string): [string, string] {
  const i = key.indexOf("/");
  return i < 0 ? ["", key] : [key.slice(0, i), key.slice(i + 1)];
}

function toWorkerStatus(w: WorkerObservation): WorkerStatus {
  const s: WorkerStatus = { index: w.index, state: w.state };
  if (w.pid !== undefined) s.pid = w.pid;
  if (w.exitCode !== undefined) s.exitCode = w.exitCode;
  if (w.signal !== undefined) s.signal = w.signal;
  if (w.startTime) s.startTime = w.startTime;
  if (w.finishTime) s.finishTime = w.finishTime;
  return s;
}

function describeFailure(w: WorkerObservation): string {
  if (w.signal && (w.exitCode === undefined || w.exitCode > 128))
    return `worker ${w.index} was killed by ${w.signal} (exit code ${w.exitCode ?? "none"})`;
  if (w.exitCode !== undefined) return `worker ${w.index} exited with code ${w.exitCode}`;
  return `worker ${w.index} ended with unknown status: ${w.message ?? "no exit code recorded"}`;
}

export type { GangObservation };

import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { NotFoundError } from "../../api/errors.js";
import { TRAININGJOB } from "../../api/kinds.js";
import { setCondition } from "../../api/meta.js";
import {
  type Admission,
  isFinished,
  parseDurationSeconds,
  type TrainingJob,
  type TrainingJobStatus,
  type WorkerStatus,
  workerRange,
} from "../../api/trainingjob.js";
import type {
  GangObservation,
  GangSpec,
  Runtime,
  WorkerObservation,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { Allocation } from "../../ports/scheduler.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { WorkloadTracking } from "../../ports/tracking.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { completionOf, planGang, portsPerWorker } from "./frameworks.js";

export { TRAININGJOB };
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
  /** Experiment tracking for workers (embedded): MLFLOW_* in their environment. */
  tracking?: WorkloadTracking;
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

    if (job.status?.resize) return this.yieldForResize(job, ref);

    const status: TrainingJobStatus = { ...job.status };
    const attempts = status.attempts ?? 0;
    // Admitted again after a preemption or resize: a new attempt, once the stopped one is gone.
    if (status.preemptedAttempt !== undefined && status.preemptedAttempt >= attempts)
      return this.startAttempt(job, status, attempts + 1);
    const obs = await this.deps.runtime.observe(ref);
    const now = this.deps.now();

    if (!obs || obs.attempt < attempts) {
      if (attempts > 0 && !status.nextAttemptTime) {
        // Node loss (or a wiped data dir): not the job's fault, so it does not use a restart.
        return this.attemptFailed(
          job,
          status,
          attempts,
          `the workers of attempt ${attempts} were lost by the runtime`,
          "RestartWithoutCounting",
        );
      }
      if (status.nextAttemptTime && Date.parse(status.nextAttemptTime) > now.getTime())
        return { requeueAfterMs: Date.parse(status.nextAttemptTime) - now.getTime() };
      return this.startAttempt(job, status, attempts + 1);
    }
    return this.track(job, status, obs, now);
  }

  /**
   * Status from what the runtime observes of the current attempt: workers' states, readiness,
   * checkpoints; a failure restarts or fails the job, a finished gang succeeds it.
   */
  private async track(
    job: TrainingJob,
    status: TrainingJobStatus,
    obs: GangObservation,
    now: Date,
  ): Promise<ReconcileResult> {
    const ref = refOf(job);
    const attempts = status.attempts ?? 0;
    status.attempts = obs.attempt;
    // A worker the platform no longer has at all (its pod deleted, as with node loss) is lost.
    const expected = obs.attempt === attempts ? (status.activeWorkers ?? 0) : 0;
    for (let index = 0; index < expected; index++) {
      if (!obs.workers.some((w) => w.index === index))
        obs.workers.push({
          index,
          state: "Unknown",
          message: "the worker is gone from the platform (node loss?)",
        });
    }
    obs.workers.sort((a, b) => a.index - b.index);
    status.workers = obs.workers.map(toWorkerStatus);
    const running = obs.workers.filter((w) => w.state === "Running");
    const failed = obs.workers.filter((w) => w.state === "Failed" || w.state === "Unknown");
    status.ready = `${running.length}/${obs.workers.length}`;
    status.activeWorkers = obs.workers.length;
    if (obs.checkpoint) status.checkpoint = obs.checkpoint;

    // A restart is scheduled: this attempt is over. What is left of it stops first (SIGTERM, so
    // it may checkpoint), then the backoff runs out, then the next attempt starts.
    if (status.nextAttemptTime) {
      await this.writeStatus(job, status);
      if (running.length > 0) {
        const stopped = await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
        if (!stopped) return { requeueAfterMs: 250 };
      }
      const wait = Date.parse(status.nextAttemptTime) - now.getTime();
      if (wait > 0) return { requeueAfterMs: wait };
      return this.startAttempt(job, status, obs.attempt + 1);
    }

    // MPI and Ray: the launcher (the head) is the job; the other workers only serve it.
    const leader = completionOf(job.spec.framework) === "leader" ? obs.workers[0] : undefined;
    const leaderDone = leader?.state === "Succeeded";
    const failures = leader
      ? failed.filter((w) => !leaderDone && (w.index === 0 || w.state === "Failed" || w.state === "Unknown"))
      : failed;

    if (failures.length > 0) {
      // The worker that failed first is the cause; the others may have failed because of it.
      const first = [...failures].sort(
        (a, b) => (a.finishTime ?? "").localeCompare(b.finishTime ?? "") || a.index - b.index,
      )[0]!;
      return this.attemptFailed(
        job,
        status,
        obs.attempt,
        describeFailure(first),
        classifyFailure(first, job.spec.failurePolicy.rules),
      );
    }
    if (leaderDone && running.length > 0) {
      await this.writeStatus(job, status);
      const stopped = await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
      return stopped ? { requeueAfterMs: 0 } : { requeueAfterMs: 250 };
    }
    if (running.length > 0) {
      status.phase = "Running";
      const hung = await this.hung(job, obs, now);
      if (hung.message) {
        return this.attemptFailed(job, status, obs.attempt, hung.message, "Restart");
      }
      await this.writeStatus(job, status);
      return hung.checkAgainMs !== undefined ? { requeueAfterMs: hung.checkAgainMs } : {};
    }
    status.phase = "Succeeded";
    status.completionTime = now.toISOString();
    status.conditions = setCondition(
      status.conditions,
      {
        type: "Succeeded",
        status: "True",
        reason: "Completed",
        message: leader
          ? `the launcher (worker 0) exited with code 0 on attempt ${obs.attempt}`
          : `all ${obs.workers.length} worker(s) exited with code 0 on attempt ${obs.attempt}`,
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

  /**
   * spec.progressTimeout: a gang whose workers have all gone quiet (no log line, no heartbeat)
   * for that long is hung, e.g. a collective waiting forever on a dead peer.
   */
  private async hung(
    job: TrainingJob,
    obs: GangObservation,
    now: Date,
  ): Promise<{ message?: string; checkAgainMs?: number }> {
    if (job.spec.progressTimeout === undefined) return {};
    const timeoutMs = (parseDurationSeconds(job.spec.progressTimeout) ?? 0) * 1000;
    if (timeoutMs <= 0) return {};
    const started = Math.max(0, ...obs.workers.map((w) => (w.startTime ? Date.parse(w.startTime) : 0)));
    const activity = (await this.deps.runtime.lastActivity(refOf(job)))?.getTime() ?? 0;
    const last = Math.max(started, activity);
    if (last === 0) return { checkAgainMs: timeoutMs };
    const quiet = now.getTime() - last;
    if (quiet < timeoutMs) return { checkAgainMs: timeoutMs - quiet + 100 };
    return {
      message: `no worker wrote a log line or heartbeat for ${Math.round(quiet / 1000)}s (spec.progressTimeout is ${job.spec.progressTimeout}): the gang is hung`,
    };
  }

  /**
   * Records a failed attempt: the gang stops, then restarts with backoff, or the job fails for
   * good. Only "Restart" uses one of failurePolicy.maxRestarts.
   */
  private async attemptFailed(
    job: TrainingJob,
    status: TrainingJobStatus,
    attempt: number,
    what: string,
    action: FailureAction,
  ): Promise<ReconcileResult> {
    const now = this.deps.now();
    const maxRestarts = job.spec.failurePolicy.maxRestarts;
    // Objects from before status.restarts: every attempt not ended by a preemption was a failure.
    const restartsUsed = status.restarts ?? Math.max(0, attempt - 1 - (status.preemptions ?? 0));
    // Attempts the job may have in all: those made so far plus the restarts left.
    const of = `on attempt ${attempt} of ${attempt + Math.max(0, maxRestarts - restartsUsed)}`;
    if (action === "Fail")
      return this.fail(
        job,
        status,
        `${what} on attempt ${attempt}; a failurePolicy rule says Fail, so the job is not restarted`,
        "FailurePolicyRule",
      );
    if (action === "RestartWithoutCounting" || restartsUsed < maxRestarts) {
      const counted = action === "Restart";
      const delay = counted
        ? restartDelayMs(restartsUsed, this.deps.baseBackoffMs ?? 1000, this.deps.maxBackoffMs ?? 60_000)
        : // Uncounted restarts have no limit: never faster than the base delay.
          (this.deps.baseBackoffMs ?? 1000);
      status.restarts = restartsUsed + (counted ? 1 : 0);
      status.nextAttemptTime = new Date(now.getTime() + delay).toISOString();
      const message = counted
        ? `${what} ${of}; restarting the gang in ${(delay / 1000).toFixed(1)}s (restart ${restartsUsed + 1} of ${maxRestarts})`
        : `${what} ${of}; restarting the gang in ${(delay / 1000).toFixed(1)}s (not counted against failurePolicy.maxRestarts)`;
      status.conditions = setCondition(
        status.conditions,
        { type: "Restarting", status: "True", reason: "WorkerFailed", message },
        now,
      );
      await this.writeStatus(job, status);
      await this.event(job, "Warning", "WorkerFailed", message);
      // Straight back: the rest of the gang stops now, during the backoff.
      return { requeueAfterMs: 0 };
    }
    return this.fail(
      job,
      status,
      maxRestarts === 0
        ? `${what} ${of}; failurePolicy.maxRestarts is 0, so the job is not restarted`
        : `${what} ${of}; all ${maxRestarts} restart(s) of failurePolicy.maxRestarts used`,
      "BackoffLimitExceeded",
    );
  }

  /** The job is Failed for good; what still runs of it is stopped by settleFinished. */
  private async fail(
    job: TrainingJob,
    status: TrainingJobStatus,
    message: string,
    reason: string,
  ): Promise<ReconcileResult> {
    const now = this.deps.now();
    status.phase = "Failed";
    status.completionTime = now.toISOString();
    status.nextAttemptTime = undefined;
    status.conditions = setCondition(
      status.conditions,
      { type: "Restarting", status: "False", reason, message },
      now,
    );
    status.conditions = setCondition(
      status.conditions,
      { type: "Running", status: "False", reason: "Failed", message: "the job has finished" },
      now,
    );
    status.conditions = setCondition(
      status.conditions,
      { type: "Failed", status: "True", reason, message },
      now,
    );
    await this.writeStatus(job, status);
    await this.event(job, "Warning", "Failed", message);
    return { requeueAfterMs: 0 };
  }

  private async startAttempt(
    job: TrainingJob,
    status: TrainingJobStatus,
    attempt: number,
  ): Promise<ReconcileResult> {
    const admission = job.status!.admission!;
    const ref = refOf(job);
    // Attempts never overlap: anything left of the previous one goes first.
    if (!(await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds)))
      return { requeueAfterMs: 250 };
    // Embedded, a named Python environment is built once (minutes, the first time).
    const prep = this.deps.runtime.prepare?.({ python: job.spec.python }) ?? { ready: true };
    if ("failed" in prep)
      return this.fail(
        job,
        status,
        `cannot build the Python environment (spec.python): ${prep.failed}`,
        "EnvironmentFailed",
      );
    if (!prep.ready) {
      const now = this.deps.now();
      await this.writeStatus(job, {
        ...status,
        conditions: setCondition(
          status.conditions,
          { type: "EnvironmentReady", status: "False", reason: "Building", message: prep.message },
          now,
        ),
      });
      return { requeueAfterMs: 1000 };
    }
    const count = admission.workers ?? admission.placements?.length ?? workerRange(job.spec).max;
    const endpoints = await this.deps.runtime.endpoints(
      ref,
      attempt,
      count,
      portsPerWorker(job.spec.framework),
    );
    const plan = planGang(job.spec, {
      rendezvousId: `${ref.uid.slice(0, 8)}-a${attempt}`,
      endpoints,
      mpiHost: this.deps.runtime.mpiHost,
    });
    const mlflow = await this.trackingEnv(job, status, attempt);
    const workers = plan.workers.map((p) => ({
      index: p.index,
      command: p.command,
      image: job.spec.image,
      annotations: job.metadata.annotations,
      workingDir: job.spec.workingDir,
      allocation: allocationOf(admission, p.index),
      terminationGracePeriodSeconds: job.spec.terminationGracePeriodSeconds,
      env: {
        // As Kubeflow's operators do: Python's output reaches the log (and progressTimeout) as it
        // is printed, not in 8 KiB blocks. The job's env may say otherwise.
        PYTHONUNBUFFERED: "1",
        ...mlflow.all,
        ...(p.index === 0 ? mlflow.rank0 : {}),
        ...job.spec.env,
        ...p.env,
        LOOM_PROJECT: ref.project,
        LOOM_WORKLOAD: ref.name,
        LOOM_WORKLOAD_KIND: ref.kind,
        LOOM_WORKLOAD_UID: ref.uid,
        LOOM_ATTEMPT: String(attempt),
      },
    }));
    try {
      const initCheckpoint = await this.initCheckpoint(job);
      await this.deps.runtime.start({
        ref,
        attempt,
        workers,
        checkpoint: job.spec.checkpoint,
        ...(initCheckpoint ? { initCheckpoint } : {}),
        ...(job.spec.python ? { python: job.spec.python } : {}),
      });
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
    const now = this.deps.now();
    const after = status.preemptedAttempt !== undefined ? "a preemption or resize" : "a failure";
    status.attempts = attempt;
    status.preemptedAttempt = undefined;
    status.phase = "Running";
    status.startTime ??= now.toISOString();
    status.nextAttemptTime = undefined;
    status.activeWorkers = count;
    status.ready = `0/${count}`;
    status.workers = workers.map((w) => ({ index: w.index, state: "Pending" }));
    status.observedGeneration = job.metadata.generation;
    if (job.spec.python)
      status.conditions = setCondition(
        status.conditions,
        {
          type: "EnvironmentReady",
          status: "True",
          reason: "Ready",
          message: "the Python environment is built",
        },
        now,
      );
    status.conditions = setCondition(
      status.conditions,
      {
        type: "Running",
        status: "True",
        reason: "Started",
        message: `attempt ${attempt} started with ${count} worker(s) on ${[...new Set(workers.map((w) => w.allocation.node))].join(", ")}`,
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
          message: `attempt ${attempt} started after ${after}`,
        },
        now,
      );
    }
    await this.event(
      job,
      "Normal",
      "Started",
      `attempt ${attempt}: started ${workers.length} worker(s) on ${admission.node}`,
    );
    // What the workers do now goes into the same write: their pids, or already their exit (a
    // short job). Written on its own, the start was one more write and reconcile per attempt.
    // Only once the runtime shows every worker (a Kubernetes pod cache may still lag, and a
    // worker missing from an observation counts as lost).
    const obs = await this.deps.runtime.observe(ref);
    if (obs && obs.attempt === attempt && workers.every((w) => obs.workers.some((o) => o.index === w.index)))
      return this.track(job, status, obs, this.deps.now());
    await this.writeStatus(job, status);
    return {};
  }

  /**
   * The mlflow client's settings for the workers: the project's tracking URI and a token, the
   * job's experiment, and its run (made once; every attempt logs to it) as MLFLOW_RUN_ID for
   * worker 0, which mlflow.start_run() then resumes. Tracking being down never stops a job.
   */
  /** The job whose checkpoints this one starts from (spec.initCheckpointFrom), checked to exist. */
  private async initCheckpoint(job: TrainingJob): Promise<GangSpec["initCheckpoint"]> {
    const from = job.spec.initCheckpointFrom;
    if (!from) return undefined;
    let source: TrainingJob;
    try {
      source = (await this.deps.store.get(TRAININGJOB, job.metadata.project!, from)) as TrainingJob;
    } catch (err) {
      if (err instanceof NotFoundError)
        throw new Error(
          `spec.initCheckpointFrom names TrainingJob ${from}, which does not exist in project ${job.metadata.project}: run it first (its checkpoints are what this job starts from)`,
        );
      throw err;
    }
    // Embedded, the runtime sees loom.json; on Kubernetes it cannot look into the claim, and a
    // finished job is what there is to start from.
    if (!source.status?.checkpoint && source.status?.phase !== "Succeeded")
      throw new Error(
        `TrainingJob ${from} (spec.initCheckpointFrom) has neither reported a checkpoint ($LOOM_CHECKPOINT_DIR/loom.json) nor succeeded yet; this job starts once it has`,
      );
    return {
      ref: { kind: TRAININGJOB, project: job.metadata.project!, name: from, uid: source.metadata.uid },
      ...(source.spec.checkpoint ? { checkpoint: source.spec.checkpoint } : {}),
    };
  }

  private async trackingEnv(
    job: TrainingJob,
    status: TrainingJobStatus,
    attempt: number,
  ): Promise<{ all: Record<string, string>; rank0: Record<string, string> }> {
    const tracking = this.deps.tracking;
    if (!tracking) return { all: {}, rank0: {} };
    const ref = refOf(job);
    const experiment = job.spec.experiment ?? job.metadata.name;
    try {
      const run = status.tracking ?? (await tracking.ensureRun(ref, experiment));
      status.tracking = run;
      await tracking.tagAttempt(ref.project, run.runId, attempt);
      return {
        all: {
          ...(await tracking.clientEnv(ref.project)),
          MLFLOW_EXPERIMENT_NAME: experiment,
          MLFLOW_EXPERIMENT_ID: run.experimentId,
          LOOM_MLFLOW_RUN_ID: run.runId,
        },
        rank0: { MLFLOW_RUN_ID: run.runId },
      };
    } catch (err) {
      this.deps.log.warn(
        { err, job: ref.name },
        "could not prepare the job's tracking run; starting without it",
      );
      return { all: {}, rank0: {} };
    }
  }

  /**
   * The admission loop offered an elastic job more workers: stop the gang (SIGTERM, so it
   * checkpoints), then go back to the queue to be admitted with the larger size. Not a failure.
   */
  private async yieldForResize(job: TrainingJob, ref: WorkloadRef): Promise<ReconcileResult> {
    const resize = job.status!.resize!;
    const stopped = await this.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
    if (!stopped) return { requeueAfterMs: 250 };
    const now = this.deps.now();
    const attempts = job.status?.attempts ?? 0;
    const message = `stopped attempt ${attempts} to grow to ${resize.workers} workers: ${resize.reason}`;
    await this.writeStatus(job, {
      ...job.status,
      workers: undefined,
      ready: undefined,
      phase: "Pending",
      admission: undefined,
      resize: undefined,
      preemptedAttempt: attempts,
      nextAttemptTime: undefined,
      conditions: setCondition(
        job.status?.conditions,
        { type: "Admitted", status: "False", reason: "Resizing", message },
        now,
      ),
    });
    await this.event(job, "Normal", "Resizing", message);
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
      ready: undefined,
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
      return stopped ? { requeueAfterMs: 0 } : { requeueAfterMs: 250 };
    }
    // Every worker has stopped: the status shows how each ended.
    if (obs && obs.attempt === job.status?.attempts) {
      await this.writeStatus(job, {
        ...job.status,
        workers: obs.workers.map(toWorkerStatus),
        ready: `0/${obs.workers.length}`,
      });
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

type FailureAction = "Restart" | "Fail" | "RestartWithoutCounting";

/**
 * The first restart is immediate (a one-off fault should cost only the gang's stop and start,
 * as with torchrun's own restarts); from the second on, base, 2×base, 4×base… up to max, so a
 * job that fails on every start does not spin.
 */
export function restartDelayMs(restartsUsed: number, baseMs: number, maxMs: number): number {
  return restartsUsed === 0 ? 0 : Math.min(maxMs, baseMs * 2 ** (restartsUsed - 1));
}

/** failurePolicy.rules for the worker that failed first; a lost worker is the platform's fault. */
export function classifyFailure(
  w: WorkerObservation,
  rules: { exitCodes?: number[]; signals?: string[]; action: FailureAction }[],
): FailureAction {
  if (w.state === "Unknown") return "RestartWithoutCounting";
  for (const r of rules) {
    if (w.exitCode !== undefined && r.exitCodes?.includes(w.exitCode)) return r.action;
    if (w.signal !== undefined && r.signals?.includes(w.signal)) return r.action;
  }
  return "Restart";
}

function describeFailure(w: WorkerObservation): string {
  if (w.signal && (w.exitCode === undefined || w.exitCode > 128))
    return `worker ${w.index} was killed by ${w.signal} (exit code ${w.exitCode ?? "none"})`;
  if (w.exitCode !== undefined) return `worker ${w.index} exited with code ${w.exitCode}`;
  return `worker ${w.index} ended with unknown status: ${w.message ?? "no exit code recorded"}`;
}

export type { GangObservation };

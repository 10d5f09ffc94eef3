import { FLEET_UID_LABEL, seedsCheckpoint } from "../../api/cluster.js";
import { NotFoundError } from "../../api/errors.js";
import { setCondition } from "../../api/meta.js";
import {
  type Admission,
  type TrainingJob,
  type TrainingJobStatus,
  workerRange,
} from "../../api/trainingjob.js";
import { type ModelAccess, withModelAccess } from "../../ports/models.js";
import type { GangObservation, GangSpec, SecretFile, WorkerSpec, WorkloadRef } from "../../ports/runtime.js";
import type { Allocation } from "../../ports/scheduler.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import { sshKeysFile } from "../sshkeys.js";
import { type JobContext, refOf, TRAININGJOB } from "./context.js";
import { fail } from "./failure.js";
import { planGang, portsPerWorker } from "./frameworks.js";
import { mirrorWorkers, track } from "./observe.js";
import { awaitSeed } from "./seed.js";

/**
 * Starts attempt `attempt` of an admitted job: what is left of the previous one stopped, its
 * environment ready, its workers planned for the framework (fresh endpoints, the tracking run,
 * the job's env), then the gang started through the runtime and the status saying so.
 */
export async function startAttempt(
  ctx: JobContext,
  job: TrainingJob,
  status: TrainingJobStatus,
  attempt: number,
  holding?: Promise<TrainingJob>,
): Promise<ReconcileResult> {
  try {
    return await startGang(ctx, job, status, attempt, holding);
  } finally {
    // The finalizer's write is never left behind a step that returned or failed without it.
    await holding?.catch(() => undefined);
  }
}

/**
 * startAttempt's steps. `holding`: the runtime finalizer's write, under way; the runtime makes
 * the gang beside it and runs no worker before it is written, and every status write here waits
 * for it (it changes the job's resourceVersion).
 */
async function startGang(
  ctx: JobContext,
  seen: TrainingJob,
  status: TrainingJobStatus,
  attempt: number,
  holding: Promise<TrainingJob> | undefined,
): Promise<ReconcileResult> {
  let job = seen;
  const stored = async () => (holding ? ctx.rebase(seen, await holding) : seen);
  const admission = job.status!.admission!;
  const ref = refOf(job);
  // Attempts never overlap: anything left of the previous one goes first.
  if (!(await ctx.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds)))
    return { requeueAfterMs: 250 };
  const notReady = await prepareEnvironment(ctx, job, status, stored);
  if (notReady) return notReady;
  // A fleet copy's first attempt resumes from the control plane's checkpoint: not before it is here.
  const unseeded = await awaitSeed(ctx, job, status, attempt, stored);
  if (unseeded) return unseeded;
  const count = admission.workers ?? admission.placements?.length ?? workerRange(job.spec).max;
  const workers = await planWorkers(ctx, job, status, attempt, count);
  await launch(ctx, job, status, attempt, workers, holding);
  job = await stored();
  markStarted(job, status, attempt, count, workers, ctx.deps.now());
  // An admission written with this start: one event says both (an event is a write on Kubernetes).
  const admitted = ctx.offeredAdmission(job);
  const started = `${admitted ? `${admitted}; ` : ""}attempt ${attempt}: started ${workers.length} worker(s) on ${admission.node}`;
  // The Started event goes out beside the status write that follows, not before it.
  return ctx.alongsideEvent([job, "Normal", "Started", started], async (ctx) => {
    // What the workers do now goes into the same write: their pids, or already their exit (a
    // short job). Written on its own, the start was one more write and reconcile per attempt.
    // Only once the runtime shows every worker (a Kubernetes pod cache may still lag, and a
    // worker missing from an observation counts as lost).
    const obs = await ctx.deps.runtime.observe(ref);
    if (obs && obs.attempt === attempt && workers.every((w) => obs.workers.some((o) => o.index === w.index)))
      return track(ctx, job, status, obs, ctx.deps.now());
    await ctx.writeStatus(job, status);
    return {};
  });
}

/**
 * A restart is scheduled (status.nextAttemptTime): this attempt is over. What is left of it
 * stops first (SIGTERM, so it may checkpoint), then the backoff runs out, then the next attempt
 * starts.
 */
export async function restartAfterBackoff(
  ctx: JobContext,
  job: TrainingJob,
  status: TrainingJobStatus,
  obs: GangObservation,
  now: Date,
): Promise<ReconcileResult> {
  const { running } = mirrorWorkers(status, obs);
  // The next attempt starts from the job as just written (from the older copy, its write would
  // conflict), with a status of its own (the store may hand back the very object it was given).
  const written = await ctx.writeStatus(job, status);
  if (running.length > 0) {
    const stopped = await ctx.deps.runtime.stop(refOf(job), job.spec.terminationGracePeriodSeconds);
    if (!stopped) return { requeueAfterMs: 250 };
  }
  const wait = Date.parse(status.nextAttemptTime!) - now.getTime();
  if (wait > 0) return { requeueAfterMs: wait };
  return startAttempt(ctx, written, { ...status }, obs.attempt + 1);
}

/** The gang's environment, or what to return while it is not ready (or cannot be built). */
async function prepareEnvironment(
  ctx: JobContext,
  seen: TrainingJob,
  status: TrainingJobStatus,
  stored: () => Promise<TrainingJob>,
): Promise<ReconcileResult | undefined> {
  // Embedded, a named Python environment is built once (minutes, the first time).
  const prep = ctx.deps.runtime.prepare?.({ python: seen.spec.python }) ?? { ready: true };
  if (!("failed" in prep) && prep.ready) return undefined;
  // Written below: after the finalizer's write, if one is under way.
  const job = await stored();
  await ctx.admittedWithoutStart(job);
  if ("failed" in prep)
    return fail(
      ctx,
      job,
      status,
      `cannot build the Python environment (spec.python): ${prep.failed}`,
      "EnvironmentFailed",
    );
  if (!prep.ready) {
    const now = ctx.deps.now();
    await ctx.writeStatus(job, {
      ...status,
      conditions: setCondition(
        status.conditions,
        { type: "EnvironmentReady", status: "False", reason: "BuildingEnvironment", message: prep.message },
        now,
      ),
    });
    return { requeueAfterMs: 1000 };
  }
  return undefined;
}

/** Every worker of the attempt: its command and env for the framework, on its share of the admission. */
async function planWorkers(
  ctx: JobContext,
  job: TrainingJob,
  status: TrainingJobStatus,
  attempt: number,
  count: number,
): Promise<WorkerSpec[]> {
  const admission = job.status!.admission!;
  const ref = refOf(job);
  const endpoints = await ctx.deps.runtime.endpoints(ref, attempt, count, portsPerWorker(job.spec.framework));
  const plan = planGang(job.spec, {
    rendezvousId: `${ref.uid.slice(0, 8)}-a${attempt}`,
    endpoints,
    mpiHost: ctx.deps.runtime.mpiHost,
  });
  const mlflow = await trackingEnv(ctx, job, status, attempt);
  // After tracking's: minting its token revokes every earlier credential of the workload.
  const models = await modelAccess(ctx, ref, attempt);
  const ssh = await sshKeysFile(ctx.deps.sshKeys, ctx.deps.log, ref.project);
  const files = [...mlflow.files, ...(models?.files ?? []), ...ssh.files];
  return plan.workers.map((p) => ({
    index: p.index,
    command: p.command,
    image: job.spec.image,
    annotations: job.metadata.annotations,
    workingDir: job.spec.workingDir,
    allocation: allocationOf(admission, p.index),
    terminationGracePeriodSeconds: job.spec.terminationGracePeriodSeconds,
    ...(job.spec.tolerations?.length ? { tolerations: job.spec.tolerations } : {}),
    ...(files.length > 0 ? { files } : {}),
    env: withModelAccess(
      {
        // As Kubeflow's operators do: Python's output reaches the log (and progressTimeout) as it
        // is printed, not in 8 KiB blocks. The job's env may say otherwise.
        PYTHONUNBUFFERED: "1",
        ...mlflow.all,
        ...ssh.env,
        ...(p.index === 0 ? mlflow.rank0 : {}),
        ...job.spec.env,
        ...p.env,
        LOOM_PROJECT: ref.project,
        LOOM_WORKLOAD: ref.name,
        LOOM_WORKLOAD_KIND: ref.kind,
        LOOM_WORKLOAD_UID: ref.uid,
        LOOM_ATTEMPT: String(attempt),
      },
      models,
    ),
  }));
}

/** The project's models for the workers (ports/models.ts); being unable to mint a key never stops a job. */
async function modelAccess(
  ctx: JobContext,
  ref: WorkloadRef,
  attempt: number,
): Promise<ModelAccess | undefined> {
  try {
    return await ctx.deps.models?.access(ref, `attempt-${attempt}`, { exclusive: true });
  } catch (err) {
    ctx.deps.log.warn({ err, job: ref.name }, "could not make the job's model key; starting without it");
    return undefined;
  }
}

/** Starts the gang; if the runtime refuses, the status says why before the error goes up. */
async function launch(
  ctx: JobContext,
  seen: TrainingJob,
  status: TrainingJobStatus,
  attempt: number,
  workers: WorkerSpec[],
  holding: Promise<TrainingJob> | undefined,
): Promise<void> {
  const ref = refOf(seen);
  let job = seen;
  try {
    const initCheckpoint = await resolveInitCheckpoint(ctx, job);
    // A member's copy seeded by its control plane, or a job back here from a member (selfseed.ts).
    const seed = seedsCheckpoint(job, attempt) || (await ctx.deps.selfSeed?.due(job)) !== undefined;
    await ctx.starting(job, () =>
      ctx.deps.runtime.start(
        {
          ref,
          attempt,
          workers,
          checkpoint: job.spec.checkpoint,
          ...(initCheckpoint ? { initCheckpoint } : {}),
          ...(job.spec.python ? { python: job.spec.python } : {}),
          ...(job.spec.fromWorkspace ? { snapshot: true } : {}),
          ...(seed ? { seedCheckpoint: true } : {}),
          // Its checkpoint is read by others: a fleet's control plane, jobs that start from it.
          ...(job.spec.checkpoint || job.metadata.labels?.[FLEET_UID_LABEL]
            ? { reportCheckpoint: true }
            : {}),
        },
        holding,
      ),
    );
  } catch (err) {
    // The finalizer's write failed (the job changed or went): nothing ran; the retry sees why.
    const held = holding
      ? await holding.then(
          (j) => ctx.rebase(seen, j),
          () => undefined,
        )
      : seen;
    if (!held) throw err;
    job = held;
    // Say why in the object (quota, admission policy, image rules), then retry with backoff.
    const message = `cannot start attempt ${attempt}: ${(err as Error).message}`;
    const now = ctx.deps.now();
    await ctx.writeStatus(job, {
      ...status,
      conditions: setCondition(
        status.conditions,
        { type: "Running", status: "False", reason: "FailedCreate", message },
        now,
      ),
    });
    await ctx.admittedWithoutStart(job);
    await ctx.event(job, "Warning", "FailedCreate", message);
    throw err;
  }
}

/** The status of an attempt just started: Running, its workers Pending, its conditions. */
function markStarted(
  job: TrainingJob,
  status: TrainingJobStatus,
  attempt: number,
  count: number,
  workers: WorkerSpec[],
  now: Date,
): void {
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
}

/** The job whose checkpoints this one starts from (spec.initCheckpointFrom), checked to exist. */
async function resolveInitCheckpoint(ctx: JobContext, job: TrainingJob): Promise<GangSpec["initCheckpoint"]> {
  const from = job.spec.initCheckpointFrom;
  if (!from) return undefined;
  let source: TrainingJob;
  try {
    source = (await ctx.deps.store.get(TRAININGJOB, job.metadata.project!, from)) as TrainingJob;
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

/**
 * The mlflow client's settings for the workers: the project's tracking URI and the job's own token (in files), the
 * job's experiment, and its run (made once; every attempt logs to it) as MLFLOW_RUN_ID for
 * worker 0, which mlflow.start_run() then resumes. Tracking being down never stops a job.
 */
async function trackingEnv(
  ctx: JobContext,
  job: TrainingJob,
  status: TrainingJobStatus,
  attempt: number,
): Promise<{ all: Record<string, string>; rank0: Record<string, string>; files: SecretFile[] }> {
  const tracking = ctx.deps.tracking;
  if (!tracking) return { all: {}, rank0: {}, files: [] };
  const ref = refOf(job);
  const experiment = job.spec.experiment ?? job.metadata.name;
  try {
    let run = status.tracking;
    let tagged = false;
    if (!run) {
      const made = await tracking.ensureRun(ref, experiment, attempt);
      run = { experimentId: made.experimentId, runId: made.runId };
      tagged = made.created === true;
    }
    status.tracking = run;
    if (!tagged) await tracking.tagAttempt(ref.project, run.runId, attempt);
    const credentials = await tracking.clientCredentials(ref);
    return {
      files: credentials.files,
      all: {
        ...credentials.env,
        MLFLOW_EXPERIMENT_NAME: experiment,
        MLFLOW_EXPERIMENT_ID: run.experimentId,
        LOOM_MLFLOW_RUN_ID: run.runId,
      },
      rank0: { MLFLOW_RUN_ID: run.runId },
    };
  } catch (err) {
    ctx.deps.log.warn(
      { err, job: ref.name },
      "could not prepare the job's tracking run; starting without it",
    );
    return { all: {}, rank0: {}, files: [] };
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

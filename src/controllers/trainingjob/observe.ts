import { setCondition } from "../../api/meta.js";
import {
  parseDurationSeconds,
  type TrainingJob,
  type TrainingJobStatus,
  type WorkerStatus,
} from "../../api/trainingjob.js";
import type { GangObservation, WorkerObservation } from "../../ports/runtime.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import { type JobContext, refOf } from "./context.js";
import { attemptFailed, classifyFailure, describeFailure } from "./failure.js";
import { completionOf } from "./frameworks.js";

/**
 * Mirrors what the runtime observes of the current attempt into the status: workers' states,
 * readiness, the latest checkpoint. Returns the workers still running and those that failed.
 */
export function mirrorWorkers(
  status: TrainingJobStatus,
  obs: GangObservation,
): { running: WorkerObservation[]; failed: WorkerObservation[] } {
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
  return { running, failed };
}

/**
 * Status from what the runtime observes of the current attempt (no restart scheduled: that is
 * restartAfterBackoff's): a failure restarts or fails the job, a finished gang succeeds it, a
 * quiet one past spec.progressTimeout is hung.
 */
export async function track(
  ctx: JobContext,
  job: TrainingJob,
  status: TrainingJobStatus,
  obs: GangObservation,
  now: Date,
): Promise<ReconcileResult> {
  const ref = refOf(job);
  const { running, failed } = mirrorWorkers(status, obs);

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
    return attemptFailed(
      ctx,
      job,
      status,
      obs.attempt,
      describeFailure(first),
      classifyFailure(first, job.spec.failurePolicy.rules),
    );
  }
  if (leaderDone && running.length > 0) {
    await ctx.writeStatus(job, status);
    const stopped = await ctx.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
    return stopped ? { requeueAfterMs: 0 } : { requeueAfterMs: 250 };
  }
  if (running.length > 0) {
    status.phase = "Running";
    const hung = await checkProgress(ctx, job, obs, now);
    if (hung.message) {
      return attemptFailed(ctx, job, status, obs.attempt, hung.message, "Restart");
    }
    await ctx.writeStatus(job, status);
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
  await ctx.writeStatus(job, status);
  await ctx.event(job, "Normal", "Completed", `succeeded on attempt ${obs.attempt}`);
  return {};
}

/**
 * spec.progressTimeout: a gang whose workers have all gone quiet (no log line, no heartbeat)
 * for that long is hung, e.g. a collective waiting forever on a dead peer.
 */
async function checkProgress(
  ctx: JobContext,
  job: TrainingJob,
  obs: GangObservation,
  now: Date,
): Promise<{ message?: string; checkAgainMs?: number }> {
  if (job.spec.progressTimeout === undefined) return {};
  const timeoutMs = (parseDurationSeconds(job.spec.progressTimeout) ?? 0) * 1000;
  if (timeoutMs <= 0) return {};
  const started = Math.max(0, ...obs.workers.map((w) => (w.startTime ? Date.parse(w.startTime) : 0)));
  const activity = (await ctx.deps.runtime.lastActivity(refOf(job)))?.getTime() ?? 0;
  const last = Math.max(started, activity);
  if (last === 0) return { checkAgainMs: timeoutMs };
  const quiet = now.getTime() - last;
  if (quiet < timeoutMs) return { checkAgainMs: timeoutMs - quiet + 100 };
  return {
    message: `no worker wrote a log line or heartbeat for ${Math.round(quiet / 1000)}s (spec.progressTimeout is ${job.spec.progressTimeout}): the gang is hung`,
  };
}

/** A worker's line in the status, from the runtime's observation. */
export function toWorkerStatus(w: WorkerObservation): WorkerStatus {
  const s: WorkerStatus = { index: w.index, state: w.state };
  if (w.pid !== undefined) s.pid = w.pid;
  if (w.exitCode !== undefined) s.exitCode = w.exitCode;
  if (w.signal !== undefined) s.signal = w.signal;
  if (w.startTime) s.startTime = w.startTime;
  if (w.finishTime) s.finishTime = w.finishTime;
  return s;
}

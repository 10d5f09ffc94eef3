import { setCondition } from "../../api/meta.js";
import type { TrainingJob, TrainingJobStatus } from "../../api/trainingjob.js";
import type { WorkerObservation } from "../../ports/runtime.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import type { JobContext } from "./context.js";

/**
 * Records a failed attempt: the gang stops, then restarts with backoff, or the job fails for
 * good. Only "Restart" uses one of failurePolicy.maxRestarts.
 */
export async function attemptFailed(
  ctx: JobContext,
  job: TrainingJob,
  status: TrainingJobStatus,
  attempt: number,
  what: string,
  action: FailureAction,
): Promise<ReconcileResult> {
  const now = ctx.deps.now();
  const maxRestarts = job.spec.failurePolicy.maxRestarts;
  // Objects from before status.restarts: every attempt not ended by a preemption was a failure.
  const restartsUsed = status.restarts ?? Math.max(0, attempt - 1 - (status.preemptions ?? 0));
  // Attempts the job may have in all: those made so far plus the restarts left.
  const of = `on attempt ${attempt} of ${attempt + Math.max(0, maxRestarts - restartsUsed)}`;
  if (action === "Fail")
    return fail(
      ctx,
      job,
      status,
      `${what} on attempt ${attempt}; a failurePolicy rule says Fail, so the job is not restarted`,
      "FailurePolicyRule",
    );
  if (action === "RestartWithoutCounting" || restartsUsed < maxRestarts) {
    const counted = action === "Restart";
    const delay = counted
      ? restartDelayMs(restartsUsed, ctx.deps.baseBackoffMs ?? 1000, ctx.deps.maxBackoffMs ?? 60_000)
      : // Uncounted restarts have no limit: never faster than the base delay.
        (ctx.deps.baseBackoffMs ?? 1000);
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
    await ctx.writeStatus(job, status);
    await ctx.event(job, "Warning", "WorkerFailed", message);
    // Straight back: the rest of the gang stops now, during the backoff.
    return { requeueAfterMs: 0 };
  }
  return fail(
    ctx,
    job,
    status,
    maxRestarts === 0
      ? `${what} ${of}; failurePolicy.maxRestarts is 0, so the job is not restarted`
      : `${what} ${of}; all ${maxRestarts} restart(s) of failurePolicy.maxRestarts used`,
    "BackoffLimitExceeded",
  );
}

/** The job is Failed for good; what still runs of it is stopped by settleFinished. */
export async function fail(
  ctx: JobContext,
  job: TrainingJob,
  status: TrainingJobStatus,
  message: string,
  reason: string,
): Promise<ReconcileResult> {
  const now = ctx.deps.now();
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
  await ctx.writeStatus(job, status);
  await ctx.event(job, "Warning", "Failed", message);
  return { requeueAfterMs: 0 };
}

/** What a failed attempt leads to (failurePolicy.rules[].action, or the platform's fault). */
export type FailureAction = "Restart" | "Fail" | "RestartWithoutCounting";

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

const UNINFORMATIVE = new Set(["Error", "Completed"]);

/** What ended the worker, for a person: its exit code or signal, and why where the platform knows (out of memory). */
export function describeFailure(w: WorkerObservation): string {
  // Kubernetes' "Error" and "Completed" only restate the exit code; "OOMKilled", or the embedded
  // runtime's out-of-memory and could-not-start reasons, say why.
  const why = w.message && !UNINFORMATIVE.has(w.message) ? ` (${w.message})` : "";
  if (w.signal && (w.exitCode === undefined || w.exitCode > 128))
    return `worker ${w.index} was killed by ${w.signal} (exit code ${w.exitCode ?? "none"})${why}`;
  if (w.exitCode !== undefined) return `worker ${w.index} exited with code ${w.exitCode}${why}`;
  return `worker ${w.index} ended with unknown status: ${w.message ?? "no exit code recorded"}`;
}

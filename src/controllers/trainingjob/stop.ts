import { FENCED_CONDITION } from "../../api/cluster.js";
import { setCondition } from "../../api/meta.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { WorkloadRef } from "../../ports/runtime.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import type { JobContext } from "./context.js";
import { toWorkerStatus } from "./observe.js";

/**
 * The admission loop offered an elastic job more workers: stop the gang (SIGTERM, so it
 * checkpoints), then go back to the queue to be admitted with the larger size. Not a failure.
 */
export async function yieldForResize(
  ctx: JobContext,
  job: TrainingJob,
  ref: WorkloadRef,
): Promise<ReconcileResult> {
  const resize = job.status!.resize!;
  const stopped = await ctx.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
  if (!stopped) return { requeueAfterMs: 250 };
  const now = ctx.deps.now();
  const attempts = job.status?.attempts ?? 0;
  const message = `stopped attempt ${attempts} to grow to ${resize.workers} workers: ${resize.reason}`;
  await ctx.writeStatus(job, {
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
  await ctx.event(job, "Normal", "Resizing", message);
  return {};
}

/** A stopped attempt's status: no workers now (their logs stay: loom logs --attempt), Pending. */
const STOPPED = {
  workers: undefined,
  ready: undefined,
  phase: "Pending",
  nextAttemptTime: undefined,
} as const;

/**
 * A preemption asked this job to give its capacity back: stop every worker gracefully (SIGTERM,
 * then the grace period, so it can checkpoint), then return to the queue keeping its attempt
 * count. The attempt does not count against failurePolicy.maxRestarts.
 */
export async function yieldToPreemption(
  ctx: JobContext,
  job: TrainingJob,
  ref: WorkloadRef,
): Promise<ReconcileResult> {
  const preemption = job.status!.preemption!;
  const stopped = await ctx.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
  if (!stopped) return { requeueAfterMs: 250 };
  const now = ctx.deps.now();
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
  await ctx.writeStatus(job, {
    ...job.status,
    ...STOPPED,
    admission: undefined,
    preemption: undefined,
    preemptions: (job.status?.preemptions ?? 0) + 1,
    preemptedAttempt: attempts,
    conditions,
  });
  await ctx.event(job, "Warning", "Preempted", message);
  return {};
}

/** A finished job keeps its logs; only stragglers (a stop still in progress) are seen to. */
export async function settleFinished(
  ctx: JobContext,
  job: TrainingJob,
  ref: WorkloadRef,
): Promise<ReconcileResult> {
  // Nothing was running when it finished: no need to ask the platform on every resync.
  if (!job.status?.workers?.some((w) => w.state === "Running")) return {};
  const obs = await ctx.deps.runtime.observe(ref);
  if (obs?.workers.some((w) => w.state === "Running")) {
    const stopped = await ctx.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
    return stopped ? { requeueAfterMs: 0 } : { requeueAfterMs: 250 };
  }
  // Every worker has stopped: the status shows how each ended.
  if (obs && obs.attempt === job.status?.attempts) {
    await ctx.writeStatus(job, {
      ...job.status,
      workers: obs.workers.map(toWorkerStatus),
      ready: `0/${obs.workers.length}`,
    });
  }
  return {};
}

/**
 * A fleet copy whose control plane's lease lapsed (controllers/cluster/fence.ts): stop every
 * worker (SIGTERM, then a grace short enough to end before the control plane re-admits the job
 * elsewhere) and say why, once. The copy stays stopped, whatever the lease does next: the
 * control plane deletes it or admits the job again when it reaches this member.
 */
export async function yieldToFence(
  ctx: JobContext,
  job: TrainingJob,
  ref: WorkloadRef,
  message: string,
  graceSeconds: number,
): Promise<ReconcileResult> {
  const stopped = await ctx.deps.runtime.stop(ref, graceSeconds);
  if (!stopped) return { requeueAfterMs: 250 };
  if (job.status?.conditions?.some((c) => c.type === FENCED_CONDITION && c.status === "True")) return {};
  const now = ctx.deps.now();
  let conditions = setCondition(
    job.status?.conditions,
    { type: FENCED_CONDITION, status: "True", reason: "LeaseExpired", message },
    now,
  );
  conditions = setCondition(conditions, { type: "Running", status: "False", reason: "Fenced", message }, now);
  await ctx.writeStatus(job, { ...job.status, ...STOPPED, conditions });
  await ctx.event(job, "Warning", "Fenced", message);
  return {};
}

import type { TrainingJob } from "../../api/trainingjob.js";
import type { WorkloadRef } from "../../ports/runtime.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import { type JobContext, RUNTIME_FINALIZER } from "./context.js";

/**
 * The job is being deleted: every worker stops (SIGTERM, then the grace period), the runtime
 * forgets it, and only then does the finalizer go, letting the store remove the object.
 */
export async function finalize(
  ctx: JobContext,
  job: TrainingJob,
  ref: WorkloadRef,
): Promise<ReconcileResult> {
  if (!job.metadata.finalizers?.includes(RUNTIME_FINALIZER)) return {};
  const stopped = await ctx.deps.runtime.stop(ref, job.spec.terminationGracePeriodSeconds);
  if (!stopped) return { requeueAfterMs: 250 };
  await ctx.deps.runtime.release(ref);
  await ctx.revokeCredentials(ref);
  ctx.forget(job);
  await ctx.deps.store.update({
    ...job,
    metadata: {
      ...job.metadata,
      finalizers: job.metadata.finalizers.filter((f) => f !== RUNTIME_FINALIZER),
    },
  });
  ctx.deps.log.info({ project: ref.project, job: ref.name }, "workers stopped; job deleted");
  return {};
}

import { isFinished, type TrainingJob } from "../../api/trainingjob.js";
import { type JobContext, RUNTIME_FINALIZER } from "./context.js";

/**
 * Whether the informer's copy shows there is nothing to do, so not even a read is needed:
 * waiting for admission (the admission loop decides when a job may start), or finished with
 * nothing left running.
 */
export function nothingToDo(seen: TrainingJob): boolean {
  // Waiting for admission is the common case with a long queue: nothing to do, nothing to read.
  if (!seen.status?.admission && !seen.metadata.deletionTimestamp && !isFinished(seen)) return true;
  // So is a finished job with nothing left running (every resync would otherwise read it).
  return (
    isFinished(seen) &&
    !seen.metadata.deletionTimestamp &&
    !seen.status?.workers?.some((w) => w.state === "Running")
  );
}

/** An admitted job holds the runtime finalizer before anything runs, so deletion waits for its workers. */
export async function holdRuntimeFinalizer(ctx: JobContext, job: TrainingJob): Promise<TrainingJob> {
  if (job.metadata.finalizers?.includes(RUNTIME_FINALIZER)) return job;
  const { store } = ctx.deps;
  // The finalizer alone where the store can (on Kubernetes a far smaller write than the job).
  return ctx.track(job, async () =>
    store.addFinalizer
      ? ((await store.addFinalizer(job, RUNTIME_FINALIZER)) as TrainingJob)
      : ((await store.update({
          ...job,
          metadata: { ...job.metadata, finalizers: [...(job.metadata.finalizers ?? []), RUNTIME_FINALIZER] },
        })) as TrainingJob),
  );
}

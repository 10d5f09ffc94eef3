import { NotFoundError } from "../../api/errors.js";
import { isFinished, type TrainingJob, type TrainingJobStatus } from "../../api/trainingjob.js";
import type { GangObservation, WorkloadRef } from "../../ports/runtime.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { WriteOverlay } from "../../reconcile/overlay.js";
import { type AdmissionOffer, admittedStatus } from "../admission/offer.js";
import { holdRuntimeFinalizer, nothingToDo } from "./admit.js";
import {
  JobContext,
  keyOf,
  RUNTIME_FINALIZER,
  refOf,
  splitKey,
  TRAININGJOB,
  type TrainingJobDeps,
} from "./context.js";
import { finalize } from "./delete.js";
import { attemptFailed } from "./failure.js";
import { track } from "./observe.js";
import { restartAfterBackoff, startAttempt } from "./start.js";
import { settleFinished, yieldForResize, yieldToFence, yieldToPreemption } from "./stop.js";

// What other modules import from here; each phase of the lifecycle has a file of its own:
// admit.ts (waiting, the finalizer), start.ts (an attempt, and a restart after backoff),
// observe.ts (the workers, success, hangs), failure.ts (restart or fail), stop.ts (preemption,
// resize, a finished job's stragglers), delete.ts (the finalizer's work).
export { RUNTIME_FINALIZER, refOf, splitKey, TRAININGJOB, type TrainingJobDeps } from "./context.js";
export { classifyFailure, restartDelayMs } from "./failure.js";
export type { GangObservation };

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
  private readonly overlay: WriteOverlay<TrainingJob> | undefined;
  private readonly ctx: JobContext;

  constructor(private readonly deps: TrainingJobDeps) {
    this.overlay = deps.cached ? new WriteOverlay<TrainingJob>(keyOf) : undefined;
    this.ctx = new JobContext(deps, this.overlay);
  }

  /**
   * Whether the informer's event for `job` only brings back this loop's own latest write: the
   * reconcile that wrote it already acted on that state (it returned a requeue where it needed
   * one), so the echo needs no reconcile of its own (one per status write before).
   */
  isOwnWrite(key: string, job: TrainingJob): boolean {
    return this.overlay?.isOwn(key, job) ?? false;
  }

  /**
   * Whether a runtime change of `key` is only the start this loop is making (the start's
   * reconcile observes the gang right after it): no reconcile of its own.
   */
  isStarting(key: string): boolean {
    return this.ctx.isStarting(key);
  }

  /**
   * Whether an event of `job` has nothing for this loop: it waits for admission (the admission
   * loop decides when it may start, and hands it over with an offer) and none is in hand. The
   * caller still has a job with an invalid spec reconciled, which marks it Failed.
   */
  waitsForAdmission(key: string, job: TrainingJob): boolean {
    return nothingToDo(job) && !isFinished(job) && !this.offers.has(key) && !this.deps.remote?.owns(job);
  }

  /** Holds an event for `key` while this loop writes the job; `replay` runs once the write ended. */
  holdEcho(key: string, replay: () => void): boolean {
    return this.overlay?.holdEcho(key, replay) ?? false;
  }

  /** The job as of this loop's latest knowledge: the cache, or our own newer write. */
  private async read(
    key: string,
    project: string,
    name: string,
    seen: TrainingJob | undefined,
  ): Promise<TrainingJob | undefined> {
    if (!this.overlay) {
      try {
        return (await this.deps.store.get(TRAININGJOB, project, name)) as TrainingJob;
      } catch (err) {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      }
    }
    return this.overlay.get(key, seen);
  }

  /**
   * Admissions the admission loop handed over (AdmissionDeps.offer), by key: the start writes
   * the admission with the workers it started, in one status write instead of two.
   */
  private readonly offers = new Map<string, { job: TrainingJob; offer: AdmissionOffer }>();

  /**
   * Takes an admission to write with the job's start (the caller enqueues the job); `job` is
   * the admission loop's copy, which may be newer than the cache (its own waiting write).
   */
  offer(job: TrainingJob, offer: AdmissionOffer): void {
    this.offers.set(keyOf(job), { job, offer });
  }

  /**
   * The job to start with its admission offered, while the offer still applies (not yet
   * written, same job): the newer of `current` and the copy the offer came with, so the start's
   * write does not conflict with the admission loop's write the cache does not show yet.
   */
  private offerFor(
    key: string,
    current: TrainingJob,
  ): { job: TrainingJob; offer: AdmissionOffer } | undefined {
    const held = this.offers.get(key);
    if (!held) return undefined;
    if (
      held.job.metadata.uid === current.metadata.uid &&
      !current.status?.admission &&
      !isFinished(current)
    ) {
      const newer =
        Number(held.job.metadata.resourceVersion) > Number(current.metadata.resourceVersion)
          ? held.job
          : current;
      return { job: newer, offer: held.offer };
    }
    this.offers.delete(key);
    return undefined;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const [project, name] = splitKey(key);
    const seen = this.deps.cached?.(key);
    if (seen && nothingToDo(seen) && !this.offers.has(key) && !this.deps.remote?.owns(seen)) return {};
    const current = await this.read(key, project, name, seen);
    if (!current) {
      this.offers.delete(key);
      return {};
    }
    if (this.deps.remote?.owns(current)) return this.deps.remote.reconcile(current);
    const ref = refOf(current);
    if (current.metadata.deletionTimestamp) return finalize(this.ctx, current, ref);
    if (isFinished(current)) return settleFinished(this.ctx, current, ref);
    // A fleet copy whose control plane's lease lapsed never runs here again (fence.ts).
    const fence = this.deps.fence?.verdict(current);
    if (fence?.action === "stop")
      return yieldToFence(this.ctx, current, ref, fence.message, this.deps.fence!.graceSeconds(current));
    if (fence?.action === "wait") return { requeueAfterMs: 1000 };
    // Admitted and not yet written: the attempt's first status write carries the admission.
    const offered = this.offerFor(key, current);
    if (!current.status?.admission && !offered) return {}; // the admission loop decides when it may start

    let job = offered?.job ?? current;
    // The finalizer's write goes beside a start (the runtime makes the gang meanwhile, and lets
    // no worker run before it is written: Runtime.start's `held`); every other step waits for it.
    const holding = job.metadata.finalizers?.includes(RUNTIME_FINALIZER)
      ? undefined
      : holdRuntimeFinalizer(this.ctx, job);
    // Whatever path this takes awaits it (its error is the step's); never an unhandled rejection.
    holding?.catch(() => undefined);
    if (offered) job = this.ctx.unwritten({ ...job, status: admittedStatus(job, offered.offer) });
    const held = async () => (holding ? this.ctx.rebase(job, await holding) : job);
    if (job.status?.preemption) return yieldToPreemption(this.ctx, await held(), ref);
    if (job.status?.resize) return yieldForResize(this.ctx, await held(), ref);
    return this.advance(job, ref, holding);
  }

  /**
   * An admitted job, neither preempted nor resizing: start, restart or follow its attempt.
   * `holding`: the finalizer's write, under way (a start goes beside it; anything else waits).
   */
  private async advance(
    seen: TrainingJob,
    ref: WorkloadRef,
    holding?: Promise<TrainingJob>,
  ): Promise<ReconcileResult> {
    const status: TrainingJobStatus = { ...seen.status };
    const attempts = status.attempts ?? 0;
    // Admitted again after a preemption or resize: a new attempt, once the stopped one is gone.
    if (status.preemptedAttempt !== undefined && status.preemptedAttempt >= attempts)
      return startAttempt(this.ctx, seen, status, attempts + 1, holding);
    const obs = await this.deps.runtime.observe(ref).catch(async (err: unknown) => {
      await holding?.catch(() => undefined);
      throw err;
    });
    const now = this.deps.now();
    const fresh = !obs && attempts === 0 && !status.nextAttemptTime;
    // Only a first start goes beside the finalizer's write: it is the only step that can lack it.
    if (fresh) return startAttempt(this.ctx, seen, status, 1, holding);
    const job = holding ? this.ctx.rebase(seen, await holding) : seen;

    if (!obs || obs.attempt < attempts) {
      if (attempts > 0 && !status.nextAttemptTime) {
        // Node loss (or a wiped data dir): not the job's fault, so it does not use a restart.
        return attemptFailed(
          this.ctx,
          job,
          status,
          attempts,
          `the workers of attempt ${attempts} were lost by the runtime`,
          "RestartWithoutCounting",
        );
      }
      if (status.nextAttemptTime && Date.parse(status.nextAttemptTime) > now.getTime())
        return { requeueAfterMs: Date.parse(status.nextAttemptTime) - now.getTime() };
      return startAttempt(this.ctx, job, status, attempts + 1);
    }
    if (status.nextAttemptTime) return restartAfterBackoff(this.ctx, job, status, obs, now);
    // The attempt's workers may wait for the checkpoint this platform's vault holds (selfseed.ts):
    // a file read while none is due.
    const seeding = await this.deps.selfSeed?.push(job, obs.attempt);
    const tracked = await track(this.ctx, job, status, obs, now);
    return seeding ? soonest(tracked, seeding) : tracked;
  }
}

/** The earlier of two requeues (none: the other's). */
function soonest(a: ReconcileResult, b: ReconcileResult): ReconcileResult {
  if (a.requeueAfterMs === undefined) return b;
  if (b.requeueAfterMs === undefined) return a;
  return { requeueAfterMs: Math.min(a.requeueAfterMs, b.requeueAfterMs) };
}

import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import type { TrainingJob, TrainingJobStatus } from "../../api/trainingjob.js";
import type { MemberCheckpoints } from "../../ports/fleet.js";
import type { WorkloadModels } from "../../ports/models.js";
import type { Runtime, WorkloadRef } from "../../ports/runtime.js";
import type { SshKeyStore } from "../../ports/sshkeys.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { WorkloadTracking } from "../../ports/tracking.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import type { WriteOverlay } from "../../reconcile/overlay.js";
import type { Fence } from "../cluster/fence.js";

export const TRAININGJOB = "TrainingJob";
const ENDED = new Set(["Succeeded", "Failed"]);
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
  /** The project's models for workers: OPENAI_BASE_URL and a key file (ports/models.ts). */
  models?: WorkloadModels;
  /**
   * Users' SSH keys: each worker gets the keys of its project's editors and admins as a file
   * (LOOM_SSH_AUTHORIZED_KEYS_FILE), which runtimes/loom-sshd authorizes.
   */
  sshKeys?: Pick<SshKeyStore, "authorizedKeys">;
  /**
   * Jobs the fleet's queue placed in another member (status.admission.cluster): they run there,
   * and this hands them over whole (controllers/cluster/dispatch.ts).
   */
  remote?: { owns(job: TrainingJob): boolean; reconcile(job: TrainingJob): Promise<ReconcileResult> };
  /** Fleet copies placed here by a control plane whose lease lapsed are stopped (self-fencing). */
  fence?: Pick<Fence, "verdict" | "graceSeconds">;
  /**
   * This platform's jobs' checkpoints as a fleet's control plane seeds them (a Loom member): a
   * seeded copy's first attempt starts once `seeded` says so (seed.ts).
   */
  memberCheckpoints?: Pick<MemberCheckpoints, "seeded">;
  /**
   * A job back on this platform from a fleet member resumes from the checkpoint synced from there
   * (selfseed.ts), where the fleet's vault is not its own checkpoint storage here (the operator).
   */
  selfSeed?: {
    due(job: TrainingJob): Promise<number | undefined>;
    push(job: TrainingJob, attempt: number): Promise<ReconcileResult | undefined>;
  };
  /** First restart delay; doubles per attempt up to maxBackoffMs. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
}

interface SharedState {
  /** Jobs whose status holds what the store does not have yet (an admission offered). */
  unwritten: WeakSet<TrainingJob>;
  /** Keys whose gang this loop is starting now. */
  starting: Set<string>;
}

/**
 * What every phase of the lifecycle shares: the deps, and the writes that keep this loop's
 * overlay of the informer's cache (see WriteOverlay) up to date.
 */
export class JobContext {
  constructor(
    readonly deps: TrainingJobDeps,
    /** Present when reads come from the informer's cache (deps.cached). */
    private readonly overlay?: WriteOverlay<TrainingJob>,
    /** An event still being recorded: events recorded here go after it, in order. */
    private readonly pendingEvent?: Promise<void>,
    /** What every context of this loop shares (alongsideEvent makes contexts of its own). */
    private readonly shared: SharedState = { unwritten: new WeakSet(), starting: new Set() },
  ) {}

  /**
   * Runs `start` (the runtime's start of the job's gang) with the job marked as starting: the
   * runtime's own announcement of the start calls for no reconcile, as the caller observes the
   * gang right after.
   */
  async starting<T>(job: TrainingJob, start: () => Promise<T>): Promise<T> {
    const key = keyOf(job);
    this.shared.starting.add(key);
    try {
      return await start();
    } finally {
      this.shared.starting.delete(key);
    }
  }

  /**
   * The admission an offered job brings (its Admitted condition's words), while not written
   * yet: the write that carries it says so in its event. Undefined for a job as stored.
   */
  offeredAdmission(job: TrainingJob): string | undefined {
    if (!this.shared.unwritten.has(job)) return undefined;
    return job.status?.conditions?.find((c) => c.type === "Admitted" && c.status === "True")?.message;
  }

  /** Records the Admitted event of an offered job whose admission goes out without a start. */
  async admittedWithoutStart(job: TrainingJob): Promise<void> {
    const admitted = this.offeredAdmission(job);
    if (admitted) await this.event(job, "Normal", "Admitted", admitted);
  }

  /** Whether this loop is starting the job's gang now (see starting). */
  isStarting(key: string): boolean {
    return this.shared.starting.has(key);
  }

  /** Marks a job whose status holds more than the store has: its next status write always goes out. */
  unwritten(job: TrainingJob): TrainingJob {
    this.shared.unwritten.add(job);
    return job;
  }

  /**
   * Records an event while the caller goes on with `then` (one round trip less than waiting for
   * it first); events that `then` records come after it. Resolves with `then`'s result once both
   * are done.
   */
  async alongsideEvent<T>(
    event: Parameters<JobContext["event"]>,
    then: (ctx: JobContext) => Promise<T>,
  ): Promise<T> {
    const recorded = this.event(...event);
    const [, result] = await Promise.all([
      recorded,
      then(new JobContext(this.deps, this.overlay, recorded, this.shared)),
    ]);
    return result;
  }

  /**
   * `job` as the store now has it after this loop's write of its metadata (`stored`: the
   * finalizer's), with the status `job` carries, still to be written if it was unwritten.
   */
  rebase(job: TrainingJob, stored: TrainingJob): TrainingJob {
    const out = { ...stored, status: job.status };
    if (this.shared.unwritten.has(job)) this.shared.unwritten.add(out);
    return out;
  }

  /** Notes this loop's own write, so the next reconcile does not act on the cache's older copy. */
  remember(job: TrainingJob): TrainingJob {
    return this.overlay ? this.overlay.remember(job) : job;
  }

  /** Runs one write of the job (`op` returns it as stored) and notes it, as remember does. */
  track(job: TrainingJob, op: () => Promise<TrainingJob>): Promise<TrainingJob> {
    return this.overlay ? this.overlay.write(keyOf(job), op) : op();
  }

  /** Drops what this loop wrote of the job (it is about to go). */
  forget(job: TrainingJob): void {
    this.overlay?.forget(keyOf(job));
  }

  /**
   * Writes the status if it changed: most pod events change nothing a user would see. Returns
   * the job as stored now, for a phase that goes on to write again.
   */
  async writeStatus(job: TrainingJob, status: TrainingJobStatus): Promise<TrainingJob> {
    if (!this.shared.unwritten.has(job) && isDeepStrictEqual(job.status ?? {}, status)) return job;
    const written = await this.track(
      job,
      async () => (await this.deps.store.updateStatus({ ...job, status })) as TrainingJob,
    );
    // Finished: the job's own credential goes with it (verify refuses it anyway once the phase
    // shows; this removes it). Every terminal phase is written here, once.
    if (ENDED.has(status.phase ?? "") && !ENDED.has(job.status?.phase ?? ""))
      await this.revokeCredentials(refOf(job));
    return written;
  }

  /** Revokes the workload's tracking credential and model key; a failure is logged, not the job's error. */
  async revokeCredentials(ref: WorkloadRef): Promise<void> {
    try {
      await this.deps.tracking?.revokeCredentials(ref);
      await this.deps.models?.revoke(ref);
    } catch (err) {
      this.deps.log.warn({ err, job: ref.name }, "could not revoke the job's credential");
    }
  }

  async event(job: TrainingJob, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    // A failed earlier event is the caller's error (it awaits that one too), not a reason to drop this.
    if (this.pendingEvent) await this.pendingEvent.catch(() => undefined);
    await this.deps.events.record(refOf(job), type, reason, message);
  }
}

/** The job's work queue and cache key: "project/name". */
export function keyOf(job: TrainingJob): string {
  return `${job.metadata.project}/${job.metadata.name}`;
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

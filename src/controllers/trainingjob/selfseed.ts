import type { Logger } from "pino";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { CheckpointVault, SelfSeedMarks } from "../../ports/fleet.js";
import type { Runtime } from "../../ports/runtime.js";
import type { EventRecorder } from "../../ports/store.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import { refOf } from "./context.js";

/** How often a seeded attempt's workers are looked at while they wait for the checkpoint. */
export const SELF_SEED_POLL_MS = 1000;

export interface SelfSeedingDeps {
  vault: CheckpointVault & { self: SelfSeedMarks };
  runtime: Required<Pick<Runtime, "seedCheckpoint">>;
  events: EventRecorder;
  log: Logger;
}

/**
 * A job that comes back to the control plane's own platform (the `self` member) after it ran in
 * a member resumes from the checkpoint synced from there (issue 23), where the vault is not the
 * job's own checkpoint storage here (the operator: its data dir, while the job's pods checkpoint
 * to their own volume). Its first attempt here starts with its workers waiting
 * (GangSpec.seedCheckpoint) until the vault's files are written into their LOOM_CHECKPOINT_DIR
 * (Runtime.seedCheckpoint), as a member's copy is seeded (cluster/dispatch.ts). Embedded, the
 * vault is the job's own directory and there is nothing to do: no SelfSeeding is made.
 *
 * Whether a seed is due is read from the vault alone: its step is newer than the one last seeded
 * here (the vault only takes a member's newer step), so later attempts here, which resume from
 * their own storage, are not seeded again, and an operator that restarts while workers wait
 * seeds them still.
 */
export class SelfSeeding {
  /** Attempts ("uid/attempt") this process wrote the checkpoint into: only those say so in an event. */
  private readonly written = new Set<string>();

  constructor(private readonly deps: SelfSeedingDeps) {}

  /** The step a new attempt of the job here starts from (its workers wait for it), if one is due. */
  async due(job: TrainingJob): Promise<number | undefined> {
    const uid = job.metadata.uid;
    const held = await this.deps.vault.step(uid);
    if (held === undefined) return undefined;
    const seeded = await this.deps.vault.self.seeded(uid);
    return seeded === undefined || held > seeded ? held : undefined;
  }

  /**
   * Writes the vault's checkpoint into the waiting workers of `attempt` while a seed is due;
   * a requeue while some still wait for it, undefined once none does.
   */
  async push(job: TrainingJob, attempt: number): Promise<ReconcileResult | undefined> {
    const ref = refOf(job);
    try {
      const step = await this.due(job);
      if (step === undefined) return undefined;
      const files = await this.deps.vault.files(ref.uid);
      const key = `${ref.uid}/${attempt}`;
      const seeded = files
        ? await this.deps.runtime.seedCheckpoint(ref, attempt, files)
        : { waiting: 0, written: 0 };
      if (seeded.written > 0) this.written.add(key);
      if (seeded.waiting > 0) return { requeueAfterMs: SELF_SEED_POLL_MS };
      // Marked even when no worker took it (none waited: not retried for ever).
      await this.deps.vault.self.markSeeded(ref.uid, step);
      if (this.written.delete(key))
        await this.deps.events.record(
          ref,
          "Normal",
          "CheckpointSeeded",
          `attempt ${attempt} resumes on the control plane's own cluster from the checkpoint synced from the member it ran in (step ${step})`,
        );
      else
        this.deps.log.warn(
          { job: `${ref.project}/${ref.name}`, attempt, step },
          "no worker of the attempt waited for the control plane's checkpoint (started without it, or seeded before this process started); it resumes from its own storage",
        );
      return undefined;
    } catch (err) {
      this.deps.log.warn(
        { err, job: `${ref.project}/${ref.name}`, attempt },
        "seeding the job's checkpoint on the control plane's own cluster failed; retried",
      );
      return { requeueAfterMs: SELF_SEED_POLL_MS };
    }
  }
}

/** A SelfSeeding where the vault is not the job's own storage here and the runtime can seed. */
export function selfSeedingOf(deps: {
  vault?: CheckpointVault;
  runtime: Runtime;
  events: EventRecorder;
  log: Logger;
}): SelfSeeding | undefined {
  const { vault, runtime } = deps;
  if (!vault?.self || !runtime.seedCheckpoint) return undefined;
  return new SelfSeeding({
    vault: vault as CheckpointVault & { self: SelfSeedMarks },
    runtime: { seedCheckpoint: runtime.seedCheckpoint.bind(runtime) },
    events: deps.events,
    log: deps.log,
  });
}

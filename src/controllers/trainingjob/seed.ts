import { FLEET_SEED_ANNOTATION, seedsCheckpoint } from "../../api/cluster.js";
import { setCondition } from "../../api/meta.js";
import type { TrainingJob, TrainingJobStatus } from "../../api/trainingjob.js";
import type { ReconcileResult } from "../../reconcile/controller.js";
import { type JobContext, refOf } from "./context.js";

/**
 * How long a seeded copy's first attempt waits for the control plane's checkpoint before it starts
 * without it (a Kubernetes member's workers wait as long in their init container).
 */
export const SEED_WAIT_MS = 600_000;
/** The condition a seeded copy shows while it waits, and once seeded. */
export const SEED_CONDITION = "CheckpointSeeded";
/** How often a waiting copy looks for the seed (the control plane writes it within a poll or two). */
const SEED_POLL_MS = 1000;

/**
 * The first attempt of a fleet copy created with the control plane's checkpoint
 * (FLEET_SEED_ANNOTATION) starts from that checkpoint. Where the platform's workers do not wait
 * for it themselves (deps.memberCheckpoints.seeded: this platform as a Loom member), the attempt
 * waits here, admitted and Pending with a condition saying why, until the control plane has
 * written it; after SEED_WAIT_MS it starts without it (a Warning says so). Returns what to return
 * while waiting, undefined to start (`status` then says whether the seed came).
 */
export async function awaitSeed(
  ctx: JobContext,
  seen: TrainingJob,
  status: TrainingJobStatus,
  attempt: number,
  stored: () => Promise<TrainingJob>,
): Promise<ReconcileResult | undefined> {
  const seeds = ctx.deps.memberCheckpoints;
  if (!seeds?.seeded || !seedsCheckpoint(seen, attempt)) return undefined;
  const step = seen.metadata.annotations?.[FLEET_SEED_ANNOTATION];
  const now = ctx.deps.now();
  const waiting = status.conditions?.find((c) => c.type === SEED_CONDITION && c.status === "False");
  const set = (s: "True" | "False", reason: string, message: string) =>
    setCondition(status.conditions, { type: SEED_CONDITION, status: s, reason, message }, now);
  if (await seeds.seeded(refOf(seen))) {
    status.conditions = set(
      "True",
      "Seeded",
      `resumes from the checkpoint the fleet's control plane wrote (step ${step})`,
    );
    return undefined;
  }
  const since = waiting?.lastTransitionTime ? Date.parse(waiting.lastTransitionTime) : now.getTime();
  if (now.getTime() - since >= SEED_WAIT_MS) {
    const message = `the fleet's control plane did not write the job's checkpoint (step ${step}) within ${SEED_WAIT_MS / 1000} s (is it reachable?); attempt ${attempt} starts without it`;
    status.conditions = set("False", "SeedTimedOut", message);
    await ctx.event(seen, "Warning", "SeedTimedOut", message);
    return undefined;
  }
  // Written after the finalizer's write, if one is under way.
  const job = await stored();
  await ctx.admittedWithoutStart(job);
  await ctx.writeStatus(job, {
    ...status,
    conditions: set(
      "False",
      "WaitingForCheckpoint",
      `waiting for the fleet's control plane to write the checkpoint of step ${step} into LOOM_CHECKPOINT_DIR (at most ${SEED_WAIT_MS / 1000} s, then the job starts without it)`,
    ),
  });
  return { requeueAfterMs: SEED_POLL_MS };
}

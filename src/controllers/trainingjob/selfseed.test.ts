import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { TrainingJob } from "../../api/trainingjob.js";
import { DirCheckpointVault, StagedCheckpointVault } from "../../platforms/embedded/checkpointvault.js";
import type { CheckpointFiles, Runtime, WorkloadRef } from "../../ports/runtime.js";
import type { EventRecorder } from "../../ports/store.js";
import { SELF_SEED_POLL_MS, selfSeedingOf } from "./selfseed.js";

// A job back on the operator's own cluster from a member: seeded from the operator's vault once
// per arrival (the vault's step newer than the one last seeded), never over what later attempts
// here wrote to their own storage.

const job = {
  apiVersion: "loom.dev/v1alpha1",
  kind: "TrainingJob",
  metadata: { name: "train", project: "p", uid: "job-uid" },
  spec: {},
} as unknown as TrainingJob;

function setup() {
  const vault = new StagedCheckpointVault(mkdtempSync(join(tmpdir(), "loom-selfseed-")));
  const seeded: { ref: WorkloadRef; attempt: number; files: CheckpointFiles }[] = [];
  let waiting = 1;
  const runtime = {
    seedCheckpoint: async (ref: WorkloadRef, attempt: number, files: CheckpointFiles) => {
      seeded.push({ ref, attempt, files });
      return { waiting, written: waiting > 0 ? 1 : 0 };
    },
  } as unknown as Runtime;
  const events: string[] = [];
  const recorder = {
    record: async (_ref: unknown, _type: string, reason: string, message: string) => {
      events.push(`${reason}: ${message}`);
    },
  } as unknown as EventRecorder;
  const seeding = selfSeedingOf({ vault, runtime, events: recorder, log: pino({ level: "silent" }) })!;
  return { vault, seeding, seeded, events, setWaiting: (n: number) => (waiting = n) };
}

describe("SelfSeeding", () => {
  it("is due once per checkpoint synced from a member; pushes until the attempt's workers have it", async () => {
    const { vault, seeding, seeded, events, setWaiting } = setup();
    // Never ran in a member: nothing held, nothing due, nothing written.
    expect(await seeding.due(job)).toBeUndefined();
    expect(await seeding.push(job, 1)).toBeUndefined();
    expect(seeded).toEqual([]);

    await vault.put("job-uid", new Map([["loom.json", Buffer.from('{"step": 20}')]]));
    expect(await seeding.due(job)).toBe(20);
    // Its pods wait to be ready for it: asked again soon, nothing marked.
    expect(await seeding.push(job, 3)).toEqual({ requeueAfterMs: SELF_SEED_POLL_MS });
    expect(seeded.map((s) => [s.ref.uid, s.attempt, s.files.get("loom.json")?.toString()])).toEqual([
      ["job-uid", 3, '{"step": 20}'],
    ]);
    expect(await vault.self.seeded("job-uid")).toBeUndefined();
    setWaiting(0);
    expect(await seeding.push(job, 3)).toBeUndefined();
    expect(await vault.self.seeded("job-uid")).toBe(20);
    expect(events).toEqual([
      "CheckpointSeeded: attempt 3 resumes on the control plane's own cluster from the checkpoint synced from the member it ran in (step 20)",
    ]);
    // A later attempt here resumes from its own storage: not seeded again with the older files.
    expect(await seeding.due(job)).toBeUndefined();
    expect(await seeding.push(job, 4)).toBeUndefined();
    expect(seeded).toHaveLength(2);
    // It ran in a member again and synced a newer step: due on its next arrival.
    await vault.put("job-uid", new Map([["loom.json", Buffer.from('{"step": 35}')]]));
    expect(await seeding.due(job)).toBe(35);
    // No worker waited for it (the attempt started without it): marked, but no event says seeded.
    expect(await seeding.push(job, 6)).toBeUndefined();
    expect(await vault.self.seeded("job-uid")).toBe(35);
    expect(events).toHaveLength(1);
  });

  it("a failed write is retried, never marked", async () => {
    const { vault } = setup();
    await vault.put("job-uid", new Map([["loom.json", Buffer.from('{"step": 5}')]]));
    const failing = selfSeedingOf({
      vault,
      runtime: {
        seedCheckpoint: async () => {
          throw new Error("pods/exec refused");
        },
      } as unknown as Runtime,
      events: { record: async () => {} } as unknown as EventRecorder,
      log: pino({ level: "silent" }),
    })!;
    expect(await failing.push(job, 2)).toEqual({ requeueAfterMs: SELF_SEED_POLL_MS });
    expect(await vault.self.seeded("job-uid")).toBeUndefined();
  });

  it("is not made where the vault is the job's own directory (embedded) or the runtime cannot seed", () => {
    const log = pino({ level: "silent" });
    const events = { record: async () => {} } as unknown as EventRecorder;
    const embedded = new DirCheckpointVault({ checkpointDir: (uid) => join(tmpdir(), uid) });
    const k8s = { seedCheckpoint: async () => ({ waiting: 0, written: 0 }) } as unknown as Runtime;
    expect(selfSeedingOf({ vault: embedded, runtime: k8s, events, log })).toBeUndefined();
    const staged = new StagedCheckpointVault(tmpdir());
    expect(selfSeedingOf({ vault: staged, runtime: {} as Runtime, events, log })).toBeUndefined();
    expect(selfSeedingOf({ runtime: k8s, events, log })).toBeUndefined();
    expect(selfSeedingOf({ vault: staged, runtime: k8s, events, log })).toBeDefined();
  });
});

import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FLEET_SEED_ANNOTATION } from "../../api/cluster.js";
import { type TrainingJob, TrainingJobSpec } from "../../api/trainingjob.js";
import { type OpenedDatabase, openSqlite } from "../../platforms/embedded/db.js";
import { SqliteEventRecorder } from "../../platforms/embedded/events.js";
import { SqliteResourceStore } from "../../platforms/embedded/store.js";
import type { Runtime, WorkloadRef } from "../../ports/runtime.js";
import { JobContext, TRAININGJOB } from "./context.js";
import { awaitSeed, SEED_CONDITION, SEED_WAIT_MS } from "./seed.js";

/**
 * A fleet copy seeded by its control plane, on a platform whose workers do not wait for the seed
 * themselves (a Loom member): its first attempt waits, saying why, until the seed is there, and
 * starts without it after SEED_WAIT_MS; other attempts and other jobs never wait.
 */
describe("awaitSeed", () => {
  let database: OpenedDatabase;
  let store: SqliteResourceStore;
  let events: SqliteEventRecorder;
  let clock: number;
  let seeded: Set<string>;
  let asked: WorkloadRef[];
  let ctx: JobContext;
  const now = () => new Date(clock);

  beforeEach(async () => {
    clock = Date.parse("2026-12-08T00:00:00.000Z");
    database = await openSqlite(":memory:");
    store = await SqliteResourceStore.open(database.db, { now });
    events = new SqliteEventRecorder(database.db, now);
    seeded = new Set();
    asked = [];
    ctx = new JobContext({
      store,
      events,
      runtime: {} as Runtime,
      log: pino({ level: "silent" }),
      now,
      memberCheckpoints: {
        seeded: async (ref) => {
          asked.push(ref);
          return seeded.has(ref.uid);
        },
      },
    });
  });

  afterEach(async () => {
    await store.close();
    await database.close();
  });

  const create = async (annotations?: Record<string, string>) =>
    (await store.create({
      apiVersion: "loom.dev/v1alpha1",
      kind: TRAININGJOB,
      metadata: { name: "train", project: "p", ...(annotations ? { annotations } : {}) },
      spec: TrainingJobSpec.parse({ command: ["python", "train.py"] }),
    } as never)) as TrainingJob;
  const get = async () => (await store.get(TRAININGJOB, "p", "train")) as TrainingJob;
  const step = (job: TrainingJob, attempt = 1) => {
    const status = { ...job.status };
    return awaitSeed(ctx, job, status, attempt, async () => get()).then((r) => ({ r, status }));
  };
  const condition = (job: TrainingJob) => job.status?.conditions?.find((c) => c.type === SEED_CONDITION);

  it("waits for the seed, saying so, then starts with the condition saying it came", async () => {
    const job = await create({ [FLEET_SEED_ANNOTATION]: "40" });
    const first = await step(job);
    expect(first.r).toEqual({ requeueAfterMs: 1000 });
    const waiting = condition(await get());
    expect(waiting).toMatchObject({ status: "False", reason: "WaitingForCheckpoint" });
    expect(waiting?.message).toMatch(/checkpoint of step 40 into LOOM_CHECKPOINT_DIR/);
    clock += 30_000;
    expect((await step(await get())).r).toEqual({ requeueAfterMs: 1000 });
    // Still the first wait's time: the timeout counts from it.
    expect(condition(await get())?.lastTransitionTime).toBe(waiting?.lastTransitionTime);
    seeded.add(job.metadata.uid);
    const go = await step(await get());
    expect(go.r).toBeUndefined();
    expect(go.status.conditions?.find((c) => c.type === SEED_CONDITION)).toMatchObject({
      status: "True",
      reason: "Seeded",
    });
  });

  it("starts without the seed after SEED_WAIT_MS, with a Warning", async () => {
    await create({ [FLEET_SEED_ANNOTATION]: "40" });
    await step(await get());
    clock += SEED_WAIT_MS;
    const go = await step(await get());
    expect(go.r).toBeUndefined();
    expect(go.status.conditions?.find((c) => c.type === SEED_CONDITION)?.reason).toBe("SeedTimedOut");
    const warned = await events.listFor({ kind: TRAININGJOB, project: "p", name: "train" });
    expect(warned.map((e) => e.reason)).toContain("SeedTimedOut");
  });

  it("never waits for a job without the annotation, nor for a later attempt", async () => {
    const plain = await create();
    expect((await step(plain)).r).toBeUndefined();
    await store.delete(TRAININGJOB, "p", "train");
    const copy = await create({ [FLEET_SEED_ANNOTATION]: "40" });
    expect((await step(copy, 2)).r).toBeUndefined();
    expect(asked).toEqual([]);
  });
});

import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OpenedDatabase, openSqlite } from "../store/sqlite/db.js";
import { MlflowError } from "./errors.js";
import { TrackingStore } from "./store.js";

let database: OpenedDatabase;
let store: TrackingStore;
beforeAll(async () => {
  database = await openSqlite(":memory:");
  store = new TrackingStore(database.db as unknown as Kysely<unknown>, () => 1_000);
});
afterAll(() => database.close());

describe("TrackingStore", () => {
  it("keeps the latest metric by step, then timestamp; NaN never matches a comparison", async () => {
    const exp = await store.createExperiment("p", "e1");
    const run = await store.createRun("p", { experimentId: exp, runName: "r" });
    const id = run.info.run_id;
    await store.logBatch("p", id, {
      metrics: [
        { key: "x", value: 5, timestamp: 10, step: 2 },
        { key: "x", value: 9, timestamp: 99, step: 1 },
        { key: "n", value: "NaN", timestamp: 1, step: 0 },
      ],
    });
    const got = await store.getRun("p", id);
    expect(got.data.metrics).toEqual(
      expect.arrayContaining([
        { key: "x", value: 5, timestamp: 10, step: 2 },
        { key: "n", value: "NaN", timestamp: 1, step: 0 },
      ]),
    );
    const hits = await store.searchRuns("p", { experimentIds: [exp], filter: "metrics.n >= 0" });
    expect(hits.runs).toEqual([]);
    const history = await store.metricHistory("p", id, "x");
    expect(history.metrics.map((m) => m.step)).toEqual([2, 1]); // by timestamp, as MLflow
  });

  it("orders runs lacking the ordered-by metric last, both ways", async () => {
    const exp = await store.createExperiment("p", "e2");
    for (const [name, m] of [
      ["a", 1],
      ["b", undefined],
      ["c", 3],
    ] as const) {
      const r = await store.createRun("p", { experimentId: exp, runName: name });
      if (m !== undefined)
        await store.logBatch("p", r.info.run_id, {
          metrics: [{ key: "m", value: m, timestamp: 1, step: 0 }],
        });
    }
    const names = async (order: string) =>
      (await store.searchRuns("p", { experimentIds: [exp], orderBy: [order] })).runs.map(
        (r) => r.info.run_name,
      );
    expect(await names("metrics.m ASC")).toEqual(["a", "c", "b"]);
    expect(await names("metrics.m DESC")).toEqual(["c", "a", "b"]);
  });

  it("another project's experiment and runs do not exist; default experiment 0 is per project", async () => {
    const exp = await store.createExperiment("p", "e3");
    const run = await store.createRun("p", { experimentId: exp });
    await expect(store.getExperiment("q", exp)).rejects.toMatchObject({
      errorCode: "RESOURCE_DOES_NOT_EXIST",
    });
    await expect(store.getRun("q", run.info.run_id)).rejects.toBeInstanceOf(MlflowError);
    const p0 = await store.getExperiment("p", "0");
    const q0 = await store.getExperiment("q", "0");
    expect(p0.name).toBe("Default");
    expect(p0.experiment_id).not.toBe(q0.experiment_id);
  });

  it("refuses a bad page token, max_results over 50,000 and logging to a deleted run", async () => {
    const exp = await store.createExperiment("p", "e4");
    await expect(store.searchRuns("p", { experimentIds: [exp], pageToken: "!!" })).rejects.toThrow(
      /page token/,
    );
    await expect(store.searchRuns("p", { experimentIds: [exp], maxResults: 50_001 })).rejects.toThrow(
      /at most 50000/,
    );
    const run = await store.createRun("p", { experimentId: exp });
    await store.setRunLifecycle("p", run.info.run_id, "deleted");
    await expect(
      store.logBatch("p", run.info.run_id, { params: [{ key: "a", value: "b" }] }),
    ).rejects.toThrow(/must be in the 'active' state/);
  });
});

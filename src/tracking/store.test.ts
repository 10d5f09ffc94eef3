import { beforeAll, describe, expect, it } from "vitest";
import { TRACKING_BACKENDS, useTrackingBackend } from "../../test/postgres.js";
import { MlflowError } from "./errors.js";
import { TrackingStore } from "./store.js";

describe.each(TRACKING_BACKENDS)("TrackingStore on $name", (backend) => {
  const opened = useTrackingBackend(backend);
  let store: TrackingStore;
  beforeAll(() => {
    const database = opened()?.database;
    if (database) store = new TrackingStore(database.db, () => 1_000, database.dialect);
  });

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

  it("get-history-bulk-interval samples each run evenly, keeping its first and last values, in the runs' order", async () => {
    const exp = await store.createExperiment("p", "e5");
    const run = async (steps: number[], key = "loss") => {
      const r = await store.createRun("p", { experimentId: exp });
      await store.logBatch("p", r.info.run_id, {
        metrics: steps.map((step) => ({ key, value: step / 10, timestamp: 100 + step, step })),
      });
      return r.info.run_id;
    };
    const a = await run([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const b = await run([5, 1, 3]);
    const other = await store.createRun("q", { experimentId: "0" });
    await store.logBatch("q", other.info.run_id, {
      metrics: [{ key: "loss", value: 1, timestamp: 1, step: 1 }],
    });
    const bulk = (
      runIds: string[],
      opts: { maxResults?: number; startStep?: number; endStep?: number } = {},
    ) => store.metricHistoryBulkInterval("p", { runIds, metricKey: "loss", ...opts });
    const steps = async (runIds: string[], opts: Parameters<typeof bulk>[1] = {}) =>
      (await bulk(runIds, opts)).metrics.map((m) => [m.run_id === a ? "a" : "b", m.step]);
    // 10 values in 4 buckets (3, 3, 2, 2): the first of each, the last bucket's replaced by the last value.
    expect(await steps([a], { maxResults: 4 })).toEqual([
      ["a", 0],
      ["a", 3],
      ["a", 6],
      ["a", 9],
    ]);
    expect(await steps([a], { maxResults: 1 })).toEqual([["a", 9]]);
    expect((await steps([a])).length).toBe(10);
    expect(await steps([a], { maxResults: 3, startStep: 2, endStep: 7 })).toEqual([
      ["a", 2],
      ["a", 4],
      ["a", 7],
    ]);
    // By run as asked for, then by step; another project's run and an unknown one give nothing.
    expect(await steps([b, other.info.run_id, "nope", a], { maxResults: 2 })).toEqual([
      ["b", 1],
      ["b", 5],
      ["a", 0],
      ["a", 9],
    ]);
    const one = (await bulk([b], { maxResults: 1 })).metrics;
    expect(one).toEqual([{ key: "loss", value: 0.5, timestamp: 105, step: 5, run_id: b }]);
  });

  it("get-history-bulk-interval matches MLflow's sampling on random histories", async () => {
    const exp = await store.createExperiment("p", "e6");
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let trial = 0; trial < 25; trial++) {
      const r = await store.createRun("p", { experimentId: exp });
      const values = Array.from({ length: 1 + rand(60) }, (_, i) => ({
        key: "m",
        value: rand(5),
        timestamp: rand(4),
        step: rand(30),
        i,
      }));
      await store.logBatch("p", r.info.run_id, { metrics: values });
      const max = 1 + rand(20);
      const range = rand(2) ? { startStep: rand(10), endStep: 10 + rand(20) } : {};
      // MLflow's SqlAlchemyStore: NTILE buckets' first rows, the last row replacing the last one.
      const sorted = values
        .filter(
          (v) => range.startStep === undefined || (v.step >= range.startStep && v.step <= range.endStep!),
        )
        .sort((x, y) => x.step - y.step || x.timestamp - y.timestamp || x.value - y.value);
      const n = sorted.length;
      const k = Math.min(max, n);
      const firsts: typeof sorted = [];
      for (let bucket = 0, pos = 0; bucket < k; bucket++) {
        firsts.push(sorted[pos]!);
        pos += Math.floor(n / max) + (bucket < n % max ? 1 : 0) || 1;
      }
      const expected = n === 0 ? [] : [...firsts.slice(0, k - 1), sorted[n - 1]!];
      const got = await store.metricHistoryBulkInterval("p", {
        runIds: [r.info.run_id],
        metricKey: "m",
        maxResults: max,
        ...range,
      });
      expect(
        got.metrics.map((m) => [m.step, m.timestamp, m.value]),
        JSON.stringify({ values, max, range }),
      ).toEqual(expected.map((v) => [v.step, v.timestamp, v.value]));
    }
  });

  it("searches with MLflow's filters the same way on every backend: LIKE is case-sensitive, ILIKE not, IN, numbers, pages", async () => {
    const exp = await store.createExperiment("p", "Search-Exp", undefined, [{ key: "team", value: "NLP" }]);
    const ids: Record<string, string> = {};
    for (const [name, x, p, t] of [
      ["alpha", 1.5, "a_1", "Has-X"],
      ["beta", 2.5, "b%2", "has-x"],
      ["Gamma", -3, "a*1", "none"],
    ] as const) {
      const r = await store.createRun("p", { experimentId: exp, runName: name, startTime: 1_000 + x * 10 });
      ids[name] = r.info.run_id;
      await store.logBatch("p", r.info.run_id, {
        metrics: [{ key: "x", value: x, timestamp: 5, step: 0 }],
        params: [{ key: "p", value: p }],
        tags: [{ key: "t", value: t }],
      });
    }
    const names = async (filter: string, orderBy?: string[]) =>
      (
        await store.searchRuns("p", {
          experimentIds: [exp],
          filter,
          orderBy: orderBy ?? ["attributes.run_name ASC"],
        })
      ).runs.map((r) => r.info.run_name);
    expect(await names("tags.t LIKE '%X%'")).toEqual(["alpha"]);
    expect(await names("tags.t LIKE '%x%'")).toEqual(["beta"]);
    expect(await names("tags.t ILIKE '%X%'")).toEqual(["alpha", "beta"]);
    expect(await names("attributes.run_name LIKE 'G%'")).toEqual(["Gamma"]);
    expect(await names("attributes.run_name ILIKE 'g%'")).toEqual(["Gamma"]);
    // _ matches one character; GLOB's own specials mean nothing to LIKE.
    expect(await names("params.p LIKE 'a_1'")).toEqual(["Gamma", "alpha"]);
    expect(await names("params.p LIKE 'a*%'")).toEqual(["Gamma"]);
    expect(await names(`attributes.run_id IN ('${ids.alpha}', '${ids.beta}')`)).toEqual(["alpha", "beta"]);
    expect(await names(`attributes.run_id NOT IN ('${ids.alpha}', '${ids.beta}')`)).toEqual(["Gamma"]);
    expect(await names(`attributes.run_id IN ('${ids.beta}')`)).toEqual(["beta"]);
    expect(await names("metrics.x > 1.5")).toEqual(["beta"]);
    expect(await names("metrics.x >= 1.5")).toEqual(["alpha", "beta"]);
    expect(await names("metrics.x < 0")).toEqual(["Gamma"]);
    expect(await names("metrics.x != 2.5")).toEqual(["Gamma", "alpha"]);
    expect(await names("attributes.start_time > 1000")).toEqual(["alpha", "beta"]);
    expect(await names("attributes.status = 'RUNNING' and metrics.x <= 2.5 and params.p != 'a*1'")).toEqual([
      "alpha",
      "beta",
    ]);
    // Byte order for text (upper case first), as SQLite and MLflow's tests expect.
    expect(await names("", ["attributes.run_name DESC"])).toEqual(["beta", "alpha", "Gamma"]);
    expect(await names("", ["params.p ASC"])).toEqual(["Gamma", "alpha", "beta"]);
    expect(await names("", ["attributes.start_time ASC"])).toEqual(["Gamma", "alpha", "beta"]);
    // Pages: the token carries on where the last page stopped, and the last page has none.
    const page1 = await store.searchRuns("p", {
      experimentIds: [exp],
      maxResults: 2,
      orderBy: ["metrics.x ASC"],
    });
    expect(page1.runs.map((r) => r.info.run_name)).toEqual(["Gamma", "alpha"]);
    const page2 = await store.searchRuns("p", {
      experimentIds: [exp],
      maxResults: 2,
      orderBy: ["metrics.x ASC"],
      pageToken: page1.next_page_token,
    });
    expect(page2.runs.map((r) => r.info.run_name)).toEqual(["beta"]);
    expect(page2.next_page_token).toBeUndefined();
    // Experiments: by name LIKE (case-sensitive) and ILIKE, and by tag.
    const exps = async (filter: string) =>
      (await store.searchExperiments("p", { filter })).experiments.map((e) => e.name);
    expect(await exps("name LIKE 'Search-%'")).toEqual(["Search-Exp"]);
    expect(await exps("name LIKE 'search-%'")).toEqual([]);
    expect(await exps("name ILIKE 'search-%'")).toEqual(["Search-Exp"]);
    expect(await exps("tags.team = 'NLP'")).toEqual(["Search-Exp"]);
    expect(await exps("tags.team LIKE 'nlp'")).toEqual([]);
  });

  it("keeps metric history with NaN and ±infinity, large timestamps and steps, and pages it", async () => {
    const exp = await store.createExperiment("p", "history");
    const run = await store.createRun("p", { experimentId: exp });
    const id = run.info.run_id;
    const t = 1_767_225_600_000; // ms timestamps are past 2^31
    await store.logBatch("p", id, {
      metrics: [
        { key: "v", value: 0.1, timestamp: t, step: 0 },
        { key: "v", value: "NaN", timestamp: t + 1, step: 1 },
        { key: "v", value: "Infinity", timestamp: t + 2, step: 2 },
        { key: "v", value: "-Infinity", timestamp: t + 3, step: 3 },
        { key: "v", value: 1e-300, timestamp: t + 4, step: 5_000_000_000 },
      ],
    });
    const all = await store.metricHistory("p", id, "v");
    expect(all.metrics).toEqual([
      { key: "v", value: 0.1, timestamp: t, step: 0 },
      { key: "v", value: "NaN", timestamp: t + 1, step: 1 },
      { key: "v", value: 1.7976931348623157e308, timestamp: t + 2, step: 2 },
      { key: "v", value: -1.7976931348623157e308, timestamp: t + 3, step: 3 },
      { key: "v", value: 1e-300, timestamp: t + 4, step: 5_000_000_000 },
    ]);
    const first = await store.metricHistory("p", id, "v", { maxResults: 3 });
    expect(first.metrics.map((m) => m.step)).toEqual([0, 1, 2]);
    const rest = await store.metricHistory("p", id, "v", { maxResults: 3, pageToken: first.next_page_token });
    expect(rest.metrics.map((m) => m.step)).toEqual([3, 5_000_000_000]);
    expect(rest.next_page_token).toBeUndefined();
    expect((await store.getRun("p", id)).data.metrics).toEqual([
      { key: "v", value: 1e-300, timestamp: t + 4, step: 5_000_000_000 },
    ]);
    expect((await store.getRun("p", id)).info.start_time).toBe(1_000);
    // Infinity compares as the largest double, NaN as nothing.
    const names = async (filter: string) =>
      (await store.searchRuns("p", { experimentIds: [exp], filter })).runs.length;
    expect(await names("metrics.v > 0")).toBe(1);
    const bulk = await store.metricHistoryBulkInterval("p", { runIds: [id], metricKey: "v", maxResults: 2 });
    expect(bulk.metrics.map((m) => [m.step, m.value])).toEqual([
      [0, 0.1],
      [5_000_000_000, 1e-300],
    ]);
  });

  it("a name made twice at once is one experiment and one RESOURCE_ALREADY_EXISTS", async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 4 }, () => store.createExperiment("p", "racing")),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results)
      if (r.status === "rejected") expect(r.reason).toMatchObject({ errorCode: "RESOURCE_ALREADY_EXISTS" });
    // The default experiment, asked for by many at once, is made once.
    const defaults = await Promise.all(Array.from({ length: 4 }, () => store.getExperiment("race", "0")));
    expect(new Set(defaults.map((e) => e.experiment_id)).size).toBe(1);
  });

  it("get-history-bulk-interval refuses what MLflow refuses", async () => {
    const call = (req: Partial<Parameters<TrackingStore["metricHistoryBulkInterval"]>[1]>) =>
      store.metricHistoryBulkInterval("p", { runIds: ["x"], metricKey: "loss", ...req });
    const refused = async (req: Parameters<typeof call>[0], message: RegExp) =>
      expect(call(req)).rejects.toMatchObject({
        errorCode: "INVALID_PARAMETER_VALUE",
        message: expect.stringMatching(message),
      });
    await refused(
      { runIds: Array.from({ length: 101 }, (_, i) => `r${i}`) },
      /at most 100 run_ids. Received 101/,
    );
    await refused({ runIds: [] }, /'run_ids'/);
    await refused({ metricKey: "" }, /'metric_key'/);
    await refused({ maxResults: 0 }, /between 1 and 2500/);
    await refused({ maxResults: 2501 }, /between 1 and 2500/);
    await refused({ startStep: 1 }, /both must be specified/);
    await refused({ startStep: 5, endStep: 4 }, /end_step must be greater than start_step/);
    expect(await call({ runIds: Array.from({ length: 100 }, (_, i) => `r${i}`) })).toEqual({ metrics: [] });
  });
});

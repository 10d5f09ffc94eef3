import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { TRACKING_BACKENDS, useTrackingBackend } from "../../test/postgres.js";
import { type Tracking, trackingOn } from "./db.js";
import { sweepTraces } from "./trace-retention.js";
import { durationMs, timestampMs } from "./traces.js";

const DAY = 86_400_000;

/** A TraceInfo as the client sends it (proto3 JSON). */
const info = (id: string, exp: string, ms: number, tags: Record<string, string> = {}) => ({
  trace_id: id,
  trace_location: { type: "MLFLOW_EXPERIMENT", mlflow_experiment: { experiment_id: exp } },
  request_time: new Date(ms).toISOString(),
  execution_duration: "0.25s",
  state: "OK",
  request_preview: '{"q": 1}',
  trace_metadata: { "mlflow.sourceRun": "r1" },
  tags: { "mlflow.traceName": id.startsWith("a") ? "answer" : "other", ...tags },
});

describe.each(TRACKING_BACKENDS)("traces on $name", (backend) => {
  const opened = useTrackingBackend(backend);
  let t: Tracking;
  let clock = 1_767_225_600_000;
  beforeAll(() => {
    const database = opened()?.database;
    if (database) t = trackingOn(database, () => clock);
  });

  it("assessments: created with an id, in the trace's info, updated by mask, deleted; another project's trace is not found; linked runs are searched", async () => {
    const exp = await t.store.createExperiment("p", "assess");
    await t.traces.start("p", info("as-1", exp, clock));
    const a = await t.traces.createAssessment("p", "as-1", {
      assessment_name: "short",
      feedback: { value: true },
      source: { source_type: "CODE", source_id: "short" },
    });
    expect(a.assessment_id).toMatch(/^a-[0-9a-f]{32}$/);
    expect((await t.traces.get("p", "as-1")).assessments).toEqual([a]);
    const updated = await t.traces.updateAssessment(
      "p",
      "as-1",
      a.assessment_id,
      { feedback: { value: false }, rationale: "no" },
      ["feedback"],
    );
    expect(updated.feedback).toEqual({ value: false });
    expect(updated.rationale).toBeUndefined();
    // Another project: the trace does not exist there, for reading or writing.
    await expect(
      t.traces.createAssessment("q", "as-1", { assessment_name: "x", feedback: { value: 1 } }),
    ).rejects.toThrow(/not found/);
    await expect(t.traces.getAssessment("q", "as-1", a.assessment_id)).rejects.toThrow(/not found/);
    await expect(t.traces.createAssessment("p", "as-1", { assessment_name: "x" })).rejects.toThrow(
      /feedback.*expectation/,
    );
    await t.traces.deleteAssessment("p", "as-1", a.assessment_id);
    expect((await t.traces.get("p", "as-1")).assessments).toBeUndefined();
    await t.traces.linkToRun("p", ["as-1"], "eval-run");
    const found = await t.traces.search("p", {
      experimentIds: [exp],
      filter: "attribute.run_id = 'eval-run'",
    });
    expect(found.traces.map((x) => x.trace_id)).toEqual(["as-1"]);
    const source = await t.traces.search("p", { experimentIds: [exp], filter: "attribute.run_id = 'r1'" });
    expect(source.traces.map((x) => x.trace_id)).toEqual(["as-1"]);
  });

  it("spans kept in the record (gateway traces) are read back by id, and only in their project", async () => {
    const exp = await t.store.createExperiment("p", "kept");
    await t.traces.startMany("p", [info("sp-1", exp, clock)], ['{"spans":[]}']);
    expect(await t.traces.spans("p", "sp-1")).toBe('{"spans":[]}');
    expect(await t.traces.spans("q", "sp-1")).toBeUndefined();
  });

  it("keeps a trace's info as sent, with the artifact location its spans go to; per project", async () => {
    const exp = await t.store.createExperiment("p", "tr");
    const got = await t.traces.start("p", info("a-1", exp, clock - 1000, { team: "nlp" }));
    expect(got).toMatchObject({
      trace_id: "a-1",
      trace_location: { mlflow_experiment: { experiment_id: exp } },
      request_time: new Date(clock - 1000).toISOString(),
      execution_duration: "0.25s",
      state: "OK",
      request_preview: '{"q": 1}',
      trace_metadata: { "mlflow.sourceRun": "r1" },
      tags: {
        team: "nlp",
        "mlflow.artifactLocation": `mlflow-artifacts:/${exp}/traces/a-1/artifacts`,
        "mlflow.trace.spansLocation": "ARTIFACT_REPO",
      },
    });
    expect(await t.traces.get("p", "a-1")).toEqual(got);
    // Another project does not see it, even by id, and may use the same id for its own.
    await expect(t.traces.get("q", "a-1")).rejects.toMatchObject({ errorCode: "RESOURCE_DOES_NOT_EXIST" });
    expect((await t.traces.search("q", { experimentIds: [exp] })).traces).toEqual([]);
    // Sent again (a retry), it is replaced, not doubled.
    await t.traces.start("p", info("a-1", exp, clock - 1000, { team: "nlp" }));
    expect((await t.traces.search("p", { experimentIds: [exp] })).traces).toHaveLength(1);
    await expect(
      t.traces.start("p", { ...info("../x", exp, clock), trace_id: "../x" }),
    ).rejects.toMatchObject({
      errorCode: "INVALID_PARAMETER_VALUE",
    });
  });

  it("searches by tag, time, state, name, metadata; orders and pages", async () => {
    const exp = await t.store.createExperiment("p", "search");
    await t.traces.start("p", info("a-2", exp, clock - 3000, { team: "nlp" }));
    await t.traces.start("p", info("b-2", exp, clock - 2000, { team: "cv" }));
    await t.traces.start("p", { ...info("c-2", exp, clock - 1000), state: "ERROR" });
    const ids = async (filter?: string, orderBy?: string[]) =>
      (await t.traces.search("p", { experimentIds: [exp], filter, orderBy })).traces.map((x) => x.trace_id);
    expect(await ids()).toEqual(["c-2", "b-2", "a-2"]);
    expect(await ids("tags.team = 'nlp'")).toEqual(["a-2"]);
    expect(await ids("tag.team != 'nlp'")).toEqual(["c-2", "b-2"]);
    expect(await ids(`timestamp_ms > ${clock - 2500} AND timestamp_ms <= ${clock - 2000}`)).toEqual(["b-2"]);
    expect(await ids("attributes.status = 'ERROR'")).toEqual(["c-2"]);
    expect(await ids("name = 'answer'")).toEqual(["a-2"]);
    expect(await ids("metadata.`mlflow.sourceRun` = 'r1'")).toHaveLength(3);
    expect(await ids("execution_time_ms >= 250")).toHaveLength(3);
    expect(await ids(undefined, ["timestamp_ms ASC"])).toEqual(["a-2", "b-2", "c-2"]);
    const first = await t.traces.search("p", { experimentIds: [exp], maxResults: 2 });
    expect(first.traces.map((x) => x.trace_id)).toEqual(["c-2", "b-2"]);
    const second = await t.traces.search("p", {
      experimentIds: [exp],
      maxResults: 2,
      pageToken: first.next_page_token,
    });
    expect(second.traces.map((x) => x.trace_id)).toEqual(["a-2"]);
    await expect(ids("metrics.x > 1")).rejects.toMatchObject({ errorCode: "INVALID_PARAMETER_VALUE" });
    await expect(ids(undefined, ["nope"])).rejects.toMatchObject({ errorCode: "INVALID_PARAMETER_VALUE" });
  });

  it("pages without a filter (ordered and paged by the database) exactly as with one (in memory): every trace once, in order, ties by id", async () => {
    const exp = await t.store.createExperiment("p", "paging");
    // 23 traces, times with ties, states mixed, execution times with ties.
    for (let i = 0; i < 23; i++)
      await t.traces.start("p", {
        ...info(`pg-${String(i).padStart(2, "0")}`, exp, clock - (i % 7) * 1000),
        state: i % 3 === 0 ? "ERROR" : "OK",
        execution_duration: `${(i % 4) * 0.5}s`,
      });
    const all = async (orderBy: string[] | undefined, filter?: string) => {
      const out: string[] = [];
      let pageToken: string | undefined;
      do {
        const page = await t.traces.search("p", {
          experimentIds: [exp],
          maxResults: 5,
          orderBy,
          filter,
          pageToken,
        });
        out.push(...page.traces.map((x) => x.trace_id));
        pageToken = page.next_page_token;
      } while (pageToken);
      return out;
    };
    // A filter that every trace passes takes the in-memory path: both must agree.
    const everything = "attributes.timestamp_ms > 0";
    for (const orderBy of [
      undefined,
      ["timestamp_ms ASC"],
      ["execution_time_ms DESC", "status"],
      ["state", "timestamp DESC"],
    ]) {
      const inSql = await all(orderBy);
      expect(inSql, JSON.stringify(orderBy)).toEqual(await all(orderBy, everything));
      expect(new Set(inSql).size).toBe(23);
    }
  });

  it("sets and deletes tags; deletes by id and by age", async () => {
    const exp = await t.store.createExperiment("p", "edit");
    await t.traces.start("p", info("a-3", exp, clock - 3000));
    await t.traces.start("p", info("b-3", exp, clock - 2000));
    await t.traces.setTag("p", "a-3", "k", "v");
    expect((await t.traces.get("p", "a-3")).tags.k).toBe("v");
    await t.traces.deleteTag("p", "a-3", "k");
    expect((await t.traces.get("p", "a-3")).tags.k).toBeUndefined();
    await expect(t.traces.setTag("q", "a-3", "k", "v")).rejects.toMatchObject({
      errorCode: "RESOURCE_DOES_NOT_EXIST",
    });
    expect(await t.traces.delete("q", { experimentId: exp, traceIds: ["a-3"] })).toEqual([]);
    expect(await t.traces.delete("p", { experimentId: exp, maxTimestampMs: clock - 2500 })).toEqual([
      { experiment_id: Number(exp), trace_id: "a-3" },
    ]);
    expect((await t.traces.search("p", { experimentIds: [exp] })).traces.map((x) => x.trace_id)).toEqual([
      "b-3",
    ]);
  });

  it("the retention sweep removes traces older than the retention, records and spans, in every project", async () => {
    const dir = mkdtempSync(join(tmpdir(), "loom-traces-"));
    const exp = await t.store.createExperiment("p", "sweep");
    const expQ = await t.store.createExperiment("q", "sweep");
    const spans = (project: string, e: string, id: string) =>
      join(dir, project, e, "traces", id, "artifacts");
    for (const [project, e, id, age] of [
      ["p", exp, "old-p", 31 * DAY],
      ["q", expQ, "old-q", 40 * DAY],
      ["p", exp, "new-p", 29 * DAY],
    ] as const) {
      await t.traces.start(project, info(id, e, clock - age));
      mkdirSync(spans(project, e, id), { recursive: true });
      writeFileSync(join(spans(project, e, id), "traces.json"), "{}");
    }
    // The whole store is swept (earlier tests' traces, all newer than 30 days, stay).
    expect(await sweepTraces(t.traces, dir, 30 * DAY)).toBe(2);
    await expect(t.traces.get("p", "old-p")).rejects.toMatchObject({ errorCode: "RESOURCE_DOES_NOT_EXIST" });
    await expect(t.traces.get("q", "old-q")).rejects.toMatchObject({ errorCode: "RESOURCE_DOES_NOT_EXIST" });
    expect((await t.traces.get("p", "new-p")).trace_id).toBe("new-p");
    expect(existsSync(spans("p", exp, "old-p"))).toBe(false);
    expect(existsSync(spans("q", expQ, "old-q"))).toBe(false);
    expect(existsSync(join(spans("p", exp, "new-p"), "traces.json"))).toBe(true);
    // Time passes: the next sweep takes the rest.
    clock += 2 * DAY;
    expect(await sweepTraces(t.traces, dir, 30 * DAY)).toBe(1);
    expect(existsSync(spans("p", exp, "new-p"))).toBe(false);
    expect(await sweepTraces(t.traces, dir, 30 * DAY)).toBe(0);
  });
});

describe("protobuf JSON times", () => {
  it("reads Timestamps with any fraction and Durations in seconds", () => {
    expect(timestampMs("2026-01-02T03:04:05.123456789Z")).toBe(Date.UTC(2026, 0, 2, 3, 4, 5, 123));
    expect(timestampMs("2026-01-02T03:04:05Z")).toBe(Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(durationMs("1.5s")).toBe(1500);
    expect(durationMs("0.000250s")).toBe(0);
    expect(() => timestampMs("yesterday")).toThrow(/Invalid timestamp/);
    expect(() => durationMs("5m")).toThrow(/Invalid duration/);
  });
});

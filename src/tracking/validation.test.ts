import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TRACKING_BACKENDS, useTrackingBackend } from "../../test/postgres.js";
import type { TokenInfo } from "../ports/store.js";
import { installJsonParsers } from "../server/jsonbody.js";
import { type Tracking, trackingOn } from "./db.js";
import { trackingRoutes } from "./routes.js";

/**
 * Bad input to the MLflow API is a 4xx with MLflow's error code and a message, and stores
 * nothing: each case below is sent over HTTP and the tables are counted before and after.
 */
describe.each(TRACKING_BACKENDS)("MLflow bad input on $name", (backend) => {
  const opened = useTrackingBackend(backend);
  let t: Tracking;
  let app: FastifyInstance;
  let dir: string;
  let exp: string;
  let runId: string;
  const admin = { name: "admin", role: "admin" } as TokenInfo;
  const API = "/mlflow/projects/p/api/2.0/mlflow";

  beforeAll(async () => {
    const database = opened()?.database;
    if (!database) return;
    t = trackingOn(database);
    dir = mkdtempSync(join(tmpdir(), "loom-bad-input-"));
    app = Fastify({ bodyLimit: 8 * 1024 * 1024 });
    installJsonParsers(app);
    app.addHook("onRequest", async (req) => {
      req.principal = admin;
    });
    await trackingRoutes(app, {
      ...t,
      artifactsDir: dir,
      projectExists: async (p) => p === "p" || p === "q",
    });
    exp = await t.store.createExperiment("p", "base");
    runId = (await t.store.createRun("p", { experimentId: exp })).info.run_id;
  });
  afterAll(async () => {
    await app?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Rows in every tracking table: what a refused request must leave as it was. */
  async function counts(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const table of [
      "tr_experiments",
      "tr_experiment_tags",
      "tr_runs",
      "tr_tags",
      "tr_params",
      "tr_metrics",
      "tr_inputs",
      "tr_registered_models",
      "tr_model_versions",
      "tr_registry_tags",
      "tr_logged_models",
    ]) {
      const r = await sql<{ n: number | string }>`select count(*) as n from ${sql.table(table)}`.execute(
        t.store ? opened().database.db : opened().database.db,
      );
      out[table] = Number(r.rows[0]!.n);
    }
    return out;
  }

  async function refused(path: string, body: unknown, status = 400, code = "INVALID_PARAMETER_VALUE") {
    const before = await counts();
    const res = await app.inject({
      method: "POST",
      url: `${API}/${path}`,
      headers: { "content-type": "application/json" },
      payload: typeof body === "string" ? body : JSON.stringify(body),
    });
    expect(res.statusCode, res.body).toBe(status);
    expect(res.json()).toMatchObject({ error_code: code });
    expect(res.json().message).toEqual(expect.any(String));
    expect(await counts()).toEqual(before);
    return res.json().message as string;
  }

  it.each([
    ["an empty tag", { tags: [{}] }],
    ["a tag without key", { tags: [{ value: "v" }] }],
    ["a boolean tag value", { tags: [{ key: "k", value: true }] }],
    ["an object tag value", { tags: [{ key: "k", value: { a: 1 } }] }],
    ["tags that are not a list", { tags: "k=v" }],
    ["a tag key over 250 characters", { tags: [{ key: "k".repeat(251), value: "v" }] }],
    ["a NUL in a tag key", { tags: [{ key: "a\u0000b", value: "v" }] }],
  ])("experiments/create with %s: 400, nothing stored", async (_what, extra) => {
    await refused("experiments/create", { name: `e-${Math.random()}`, ...extra });
  });

  it("experiments/create with a NUL in the name or an artifact_location elsewhere: 400", async () => {
    expect(await refused("experiments/create", { name: "a\u0000b" })).toMatch(/'name' contains a NUL/);
    expect(
      await refused("experiments/create", { name: "x", artifact_location: "mlflow-artifacts:/../q" }),
    ).toMatch(/artifact_location/);
  });

  it("experiments/create of an existing name: RESOURCE_ALREADY_EXISTS (400)", async () => {
    await refused("experiments/create", { name: "base" }, 400, "RESOURCE_ALREADY_EXISTS");
  });

  it.each([
    ["an empty tag", { tags: [{}] }],
    ["a boolean tag value", { tags: [{ key: "k", value: false }] }],
    ["a tag value over 8,000 characters", { tags: [{ key: "k", value: "v".repeat(8001) }] }],
  ])("runs/create with %s: 400, nothing stored", async (_what, extra) => {
    await refused("runs/create", { experiment_id: exp, ...extra });
  });

  it.each([
    ["an empty tag", { tags: [{}] }],
    ["a tag without key", { tags: [{ value: "v" }] }],
    ["a boolean tag value", { tags: [{ key: "k", value: true }] }],
  ])("registered-models/create with %s: 400, nothing stored", async (_what, extra) => {
    await refused("registered-models/create", { name: `m-${Math.random()}`, ...extra });
  });

  it("logged-models with a bad tag: 400, nothing stored", async () => {
    await refused("logged-models", { experiment_id: exp, tags: [{ key: 1 }] });
  });

  it.each([
    [
      "100,000 metrics",
      { metrics: Array.from({ length: 100_000 }, (_, i) => ({ key: "m", value: i, timestamp: 1, step: i })) },
      /at most 1000 metrics/,
    ],
    [
      "101 params",
      { params: Array.from({ length: 101 }, (_, i) => ({ key: `p${i}`, value: "v" })) },
      /at most 100 params/,
    ],
    [
      "101 tags",
      { tags: Array.from({ length: 101 }, (_, i) => ({ key: `t${i}`, value: "v" })) },
      /at most 100 tags/,
    ],
    [
      "a param of 6,001 characters",
      { params: [{ key: "p", value: "v".repeat(6001) }] },
      /length limit of 6000/,
    ],
    [
      "a null metric value",
      { metrics: [{ key: "m", value: null, timestamp: 1 }] },
      /value' must be a number/,
    ],
    ["a metric without timestamp", { metrics: [{ key: "m", value: 1 }] }, /timestamp/],
    [
      "a metric value that is an object",
      { metrics: [{ key: "m", value: { v: 1 }, timestamp: 1 }] },
      /must be a number/,
    ],
    [
      "a valid metric then a bad one",
      {
        metrics: [
          { key: "ok", value: 1, timestamp: 1 },
          { key: "", value: 1, timestamp: 1 },
        ],
      },
      /metrics\[1\]\.key/,
    ],
  ])("runs/log-batch with %s: 400, nothing stored", async (_what, extra, message) => {
    expect(await refused("runs/log-batch", { run_id: runId, ...extra })).toMatch(message);
  });

  it("log-metric with a null value is refused, not stored as 0", async () => {
    await refused("runs/log-metric", { run_id: runId, key: "m", value: null, timestamp: 1 });
  });

  it("a 10,000-level JSON body (metric value, tags) is a 400 before anything parses it", async () => {
    const deep = `${"[".repeat(10_000)}${"]".repeat(10_000)}`;
    expect(
      await refused("runs/log-metric", `{"run_id":"${runId}","key":"m","timestamp":1,"value":${deep}}`),
    ).toMatch(/deeper than 64/);
  });

  it("model versions: sources and run_ids of another project are refused, naming the field", async () => {
    const other = await t.store.createExperiment("q", "theirs");
    const theirRun = (await t.store.createRun("q", { experimentId: other })).info.run_id;
    await t.registry.createModel("p", "mine");
    for (const [body, field] of [
      [{ source: "mlflow-artifacts:/../q/1/x" }, /'\.\.' segments/],
      [{ source: "mlflow-artifacts:/%2e%2e/q/1/x" }, /'\.\.' segments/],
      [{ source: `mlflow-artifacts:/${other}/${theirRun}/artifacts/model` }, /not in project p/],
      [{ source: `runs:/${theirRun}/model` }, /'source' names run/],
      [{ source: `runs:/${runId}/model`, run_id: theirRun }, /'run_id' names run/],
      [{ source: "/data/artifacts/q/1" }, /local paths/],
      [{ source: "file:///etc" }, /local paths/],
    ] as const) {
      expect(await refused("model-versions/create", { name: "mine", ...body })).toMatch(field);
    }
    const ok = await app.inject({
      method: "POST",
      url: `${API}/model-versions/create`,
      payload: { name: "mine", source: `runs:/${runId}/model` },
    });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(ok.json().model_version).toMatchObject({ version: "1", run_id: runId });
  });

  it("creates at once: one registered model wins (the others: RESOURCE_ALREADY_EXISTS), versions get distinct numbers", async () => {
    const made = await Promise.allSettled(
      Array.from({ length: 4 }, () => t.registry.createModel("p", "race")),
    );
    expect(made.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of made.filter((r) => r.status === "rejected"))
      expect((r as PromiseRejectedResult).reason).toMatchObject({ errorCode: "RESOURCE_ALREADY_EXISTS" });
    const versions = await Promise.all(
      Array.from({ length: 4 }, () => t.registry.createVersion("p", { name: "race", source: "s3://b/m" })),
    );
    expect(versions.map((v) => v.version).sort()).toEqual(["1", "2", "3", "4"]);
  });

  it("artifacts: a NUL in the path is a 400; a cut-off upload leaves no temp file", async () => {
    const nul = await app.inject({
      method: "PUT",
      url: `/mlflow/projects/p/api/2.0/mlflow-artifacts/artifacts/${exp}/a%00b`,
      payload: "x",
    });
    expect(nul.statusCode).toBe(400);
    expect(nul.json()).toMatchObject({ error_code: "INVALID_PARAMETER_VALUE" });
    // A real socket, so the upload can be cut off half-way.
    await app.listen({ port: 0, host: "127.0.0.1" });
    const { port } = app.server.address() as AddressInfo;
    const cutDir = join(dir, "p", exp, "cut");
    const left = () => {
      try {
        return readdirSync(cutDir);
      } catch {
        return [];
      }
    };
    const pause = () => new Promise((r) => setTimeout(r, 20));
    await new Promise<void>((resolve) => {
      const req = httpRequest({
        host: "127.0.0.1",
        port,
        method: "PUT",
        path: `/mlflow/projects/p/api/2.0/mlflow-artifacts/artifacts/${exp}/cut/model.bin`,
        headers: { "content-length": "1000000" },
      });
      req.on("error", () => resolve());
      req.on("close", () => resolve());
      // Cut off only once the server writes the upload's temp file: cut earlier (a loaded
      // machine), the check below could pass before the server made the file at all.
      req.write(Buffer.alloc(1000, 1), async () => {
        while (left().length === 0) await pause();
        req.destroy();
      });
    });
    // The server sees the abort and removes the temp file; wait until it has (no timing bound).
    while (left().length > 0) await pause();
    expect(readdirSync(cutDir)).toEqual([]);
  });
});

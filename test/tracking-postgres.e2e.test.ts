import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { setUpOnce, startPostgres, type ThrowawayPostgres } from "./postgres.js";
import { clientSuite, mlflowPython } from "./tracking-client.js";

/**
 * `loom up --tracking-db postgres://…`: the official mlflow client's whole suite against tracking
 * kept in PostgreSQL (a throwaway server of this file's own), while tokens, objects and events
 * stay in the data dir's SQLite file.
 */
describe("MLflow tracking on PostgreSQL (loom up --tracking-db), driven by the official mlflow client", () => {
  let pg: ThrowawayPostgres | undefined;
  let url = "";
  let loom: LoomProcess;
  let python = "";
  const count = async (sql: string, values: unknown[] = []) =>
    Number((await pg!.query<{ n: string }>("loom", sql, values))[0]!.n);

  // A failure here (no PostgreSQL installed) fails every test, rather than skipping them.
  setUpOnce(async () => {
    python = mlflowPython();
    pg = await startPostgres();
    url = await pg.createDatabase("loom");
    loom = new LoomProcess(["--tracking-db", url]);
    await loom.start();
  }, 300_000);
  afterAll(async () => {
    await loom?.stop();
    await pg?.stop();
  });

  it("passes the client suite (search filters, order, pages, history, NaN, registry, aliases, logged models), all of it in PostgreSQL", async () => {
    const r = await clientSuite(python, loom.url, loom.token, "pg");
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/OK 67 checks/);
    // It is in PostgreSQL, with timestamps as bigint ...
    expect(await count("select count(*) as n from tr_runs where project = 'default'")).toBeGreaterThanOrEqual(
      3,
    );
    expect(await count("select count(*) as n from tr_metrics")).toBeGreaterThan(0);
    expect(await count("select count(*) as n from tr_logged_models")).toBeGreaterThan(0);
    expect(await count("select count(*) as n from tr_registered_models")).toBeGreaterThan(0);
    const types = await pg!.query<{ column_name: string; data_type: string }>(
      "loom",
      "select column_name, data_type from information_schema.columns where table_name = 'tr_metrics' order by column_name",
    );
    expect(Object.fromEntries(types.map((t) => [t.column_name, t.data_type]))).toMatchObject({
      timestamp: "bigint",
      step: "bigint",
      value: "double precision",
    });
    // ... and not in SQLite, where the tokens are.
    const sqlite = new Database(join(loom.dataDir, "loom.db"), { readonly: true });
    try {
      expect(sqlite.prepare("select count(*) as n from tr_runs").get()).toEqual({ n: 0 });
      expect(sqlite.prepare("select count(*) as n from tr_experiments").get()).toEqual({ n: 0 });
      expect((sqlite.prepare("select count(*) as n from tokens").get() as { n: number }).n).toBeGreaterThan(
        0,
      );
    } finally {
      sqlite.close();
    }
  }, 180_000);

  it("serves a project at its own URI with a project token, the suite again, apart from the default project", async () => {
    const project = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: team-pg}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: project })).code).toBe(0);
    const created = await loom.cli(["token", "create", "alice", "-p", "team-pg", "--role", "editor"]);
    expect(created.code, created.stderr).toBe(0);
    const r = await clientSuite(
      python,
      `${loom.url}/mlflow/projects/team-pg`,
      created.stdout.trim(),
      "team-pg",
    );
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/OK 67 checks/);
    const byProject = await pg!.query<{ project: string; n: string }>(
      "loom",
      "select project, count(*) as n from tr_experiments group by project order by project",
    );
    expect(byProject.map((x) => x.project)).toEqual(["default", "team-pg"]);
    const search = await loom.api("POST", "/api/2.0/mlflow/experiments/search", {
      filter: "name LIKE '%team-pg'",
    });
    expect(search).toEqual({ status: 200, body: {} });
  }, 180_000);

  it("samples a metric across runs for the UI's charts (get-history-bulk-interval)", async () => {
    const api = (path: string, body?: unknown) => loom.api(body ? "POST" : "GET", path, body);
    const exp = await api("/api/2.0/mlflow/experiments/create", { name: "charts" });
    const expId = (exp.body as { experiment_id: string }).experiment_id;
    const run = async (steps: number[]) => {
      const created = await api("/api/2.0/mlflow/runs/create", { experiment_id: expId });
      const id = (created.body as { run: { info: { run_id: string } } }).run.info.run_id;
      const metrics = steps.map((step) => ({ key: "loss", value: step / 2, timestamp: 1_000 + step, step }));
      expect((await api("/api/2.0/mlflow/runs/log-batch", { run_id: id, metrics })).status).toBe(200);
      return id;
    };
    const a = await run([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const b = await run([4, 2]);
    const got = await api(
      `/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids=${b}&run_ids=${a}&metric_key=loss&max_results=4`,
    );
    expect(got.status).toBe(200);
    expect(
      (got.body as { metrics: { run_id: string; step: number }[] }).metrics.map((m) => [m.run_id, m.step]),
    ).toEqual([
      [b, 2],
      [b, 4],
      [a, 0],
      [a, 3],
      [a, 6],
      [a, 9],
    ]);
    const ranged = await api(
      `/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids=${a}&metric_key=loss&start_step=2&end_step=5&max_results=2`,
    );
    expect(ranged.body).toEqual({
      metrics: [
        { key: "loss", value: 1, timestamp: 1_002, step: 2, run_id: a },
        { key: "loss", value: 2.5, timestamp: 1_005, step: 5, run_id: a },
      ],
    });
  }, 60_000);

  it("closes its connections on shutdown, and a restart finds everything still there", async () => {
    const before = await loom.api("POST", "/api/2.0/mlflow/experiments/search", { max_results: 1000 });
    const names = (r: { body: unknown }) =>
      ((r.body as { experiments?: { name: string }[] }).experiments ?? []).map((e) => e.name).sort();
    expect(names(before)).toContain("charts");
    expect(await loom.kill("SIGTERM")).toBe(0);
    expect(
      await count(
        "select count(*) as n from pg_stat_activity where datname = 'loom' and pid <> pg_backend_pid()",
      ),
    ).toBe(0);
    loom = new LoomProcess(["--tracking-db", url], loom.home);
    await loom.start();
    const after = await loom.api("POST", "/api/2.0/mlflow/experiments/search", { max_results: 1000 });
    expect(names(after)).toEqual(names(before));
  }, 60_000);

  it("refuses to start when the tracking database cannot be reached, saying so", async () => {
    const down = new LoomProcess(["--tracking-db", `${pg!.baseUrl}no_such_db`]);
    try {
      await expect(down.start()).rejects.toThrow(/tracking database .*no_such_db cannot be reached/);
      const bad = new LoomProcess(["--tracking-db", "mysql://x"]);
      await expect(bad.start()).rejects.toThrow(
        /--tracking-db must be a postgres:\/\/ or postgresql:\/\/ URL/,
      );
      await bad.stop();
    } finally {
      await down.stop();
    }
  }, 60_000);
});

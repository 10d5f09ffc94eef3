import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { type Kysely, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSqlite } from "../src/platforms/embedded/db.js";
import { openTrackingDatabase, sqliteTracking, trackingOn } from "../src/tracking/db.js";
import { startPostgres, type ThrowawayPostgres } from "./postgres.js";

/**
 * Tracking's tables were declared twice (SQLite migrations 0003-0005 in the embedded store, and
 * again for PostgreSQL); now once, in src/tracking/schema.ts. Users' loom.db files recorded the old
 * migrations: these tests pin the schema those made, byte for byte, and open such a database.
 */

/** What SQLite's sqlite_master held for Loom's tables before the change (all seven migrations). */
const OLD_LOOM_DDL = [
  `CREATE TABLE "resources" ("kind" text not null, "project" text not null, "name" text not null, "uid" text not null, "rv" integer not null, "body" text not null, constraint "resources_pk" primary key ("kind", "project", "name"))`,
  `CREATE TABLE "changes" ("rv" integer primary key autoincrement, "kind" text not null, "project" text not null, "name" text not null, "type" text not null, "body" text not null)`,
  `CREATE INDEX "changes_kind_rv" on "changes" ("kind", "rv")`,
  `CREATE TABLE "events" ("id" integer primary key autoincrement, "kind" text not null, "project" text not null, "name" text not null, "uid" text not null, "type" text not null, "reason" text not null, "message" text not null, "count" integer not null, "first_ts" text not null, "last_ts" text not null)`,
  `CREATE INDEX "events_object" on "events" ("kind", "project", "name")`,
  `CREATE TABLE "meta" ("key" text primary key, "value" text not null)`,
  `CREATE INDEX "events_uid_id" on "events" ("uid", "id")`,
];
/** The tokens table as 0001_initial made it, and as 0006 and 0007 left it. */
const OLD_TOKENS_0001 = `CREATE TABLE "tokens" ("id" text primary key, "name" text not null, "role" text not null, "hash" text not null unique, "created_at" text not null)`;
const OLD_TOKENS_0007 = `CREATE TABLE "tokens" ("id" text primary key, "name" text not null, "role" text not null, "hash" text not null unique, "created_at" text not null, "project" text, "kind" text, "services" text)`;

/** Tracking's tables as the old SQLite migrations 0003-0005 made them. */
const OLD_TRACKING_DDL = [
  `CREATE TABLE "tr_experiments" ("experiment_id" integer primary key autoincrement, "project" text not null, "name" text not null, "artifact_location" text not null, "lifecycle_stage" text not null, "creation_time" integer not null, "last_update_time" integer not null, constraint "tr_experiments_name" unique ("project", "name"))`,
  `CREATE TABLE "tr_experiment_tags" ("experiment_id" integer not null, "key" text not null, "value" text not null, constraint "tr_experiment_tags_pk" primary key ("experiment_id", "key"))`,
  `CREATE TABLE "tr_runs" ("run_uuid" text primary key, "experiment_id" integer not null, "project" text not null, "run_name" text not null, "user_id" text not null, "status" text not null, "start_time" integer not null, "end_time" integer, "lifecycle_stage" text not null, "artifact_uri" text not null)`,
  `CREATE INDEX "tr_runs_experiment" on "tr_runs" ("experiment_id", "start_time")`,
  `CREATE TABLE "tr_params" ("run_uuid" text not null, "key" text not null, "value" text not null, constraint "tr_params_pk" primary key ("run_uuid", "key"))`,
  `CREATE TABLE "tr_tags" ("run_uuid" text not null, "key" text not null, "value" text not null, constraint "tr_tags_pk" primary key ("run_uuid", "key"))`,
  `CREATE TABLE "tr_metrics" ("run_uuid" text not null, "key" text not null, "value" real not null, "is_nan" integer not null, "timestamp" integer not null, "step" integer not null)`,
  `CREATE INDEX "tr_metrics_history" on "tr_metrics" ("run_uuid", "key", "timestamp", "step")`,
  `CREATE TABLE "tr_latest_metrics" ("run_uuid" text not null, "key" text not null, "value" real not null, "is_nan" integer not null, "timestamp" integer not null, "step" integer not null, constraint "tr_latest_metrics_pk" primary key ("run_uuid", "key"))`,
  `CREATE TABLE "tr_inputs" ("run_uuid" text not null, "name" text not null, "digest" text not null, "context" text, "body" text not null, constraint "tr_inputs_pk" primary key ("run_uuid", "name", "digest"))`,
  `CREATE TABLE "tr_registered_models" ("project" text not null, "name" text not null, "description" text, "creation_timestamp" integer not null, "last_updated_timestamp" integer not null, constraint "tr_registered_models_pk" primary key ("project", "name"))`,
  `CREATE TABLE "tr_model_versions" ("project" text not null, "name" text not null, "version" integer not null, "description" text not null, "source" text not null, "run_id" text, "run_link" text not null, "current_stage" text not null, "creation_timestamp" integer not null, "last_updated_timestamp" integer not null, constraint "tr_model_versions_pk" primary key ("project", "name", "version"))`,
  `CREATE TABLE "tr_registry_tags" ("project" text not null, "name" text not null, "version" integer not null, "key" text not null, "value" text not null, constraint "tr_registry_tags_pk" primary key ("project", "name", "version", "key"))`,
  `CREATE TABLE "tr_model_aliases" ("project" text not null, "name" text not null, "alias" text not null, "version" integer not null, constraint "tr_model_aliases_pk" primary key ("project", "name", "alias"))`,
  `CREATE TABLE "tr_logged_models" ("model_id" text primary key, "project" text not null, "experiment_id" integer not null, "name" text not null, "status" text not null, "source_run_id" text not null, "artifact_uri" text not null, "creation_timestamp_ms" integer not null, "last_updated_timestamp_ms" integer not null, "body" text not null)`,
  `CREATE TABLE "tr_run_outputs" ("run_uuid" text not null, "model_id" text not null, "step" integer not null, constraint "tr_run_outputs_pk" primary key ("run_uuid", "model_id"))`,
];

const MIGRATIONS = [
  "0001_initial",
  "0002_events_by_uid",
  "0003_tracking",
  "0004_model_registry",
  "0005_logged_models",
  "0006_token_projects",
  "0007_api_keys",
];

/** What a database records once opened by this Loom: the old ones, then those added since (issue 17: token lifecycle, audit log; issue 20: traces; issue 23: member clusters' secrets). */
const CURRENT = [
  ...MIGRATIONS,
  "0008_token_lifecycle",
  "0009_audit",
  "0010_ssh_keys",
  "0011_traces",
  "0012_trace_batches",
  "0013_secrets",
];

/** Tracking's tables added since the old migrations (issue 20: MLflow 3's traces). */
const TRACES_DDL = [
  `CREATE TABLE "tr_traces" ("project" text not null, "trace_id" text not null, "experiment_id" integer not null, "client_request_id" text, "request_time" integer not null, "execution_ms" integer, "state" text not null, "request_preview" text, "response_preview" text, "body" text not null, "spans" text, constraint "tr_traces_pk" primary key ("project", "trace_id"))`,
  `CREATE INDEX "tr_traces_experiment" on "tr_traces" ("project", "experiment_id", "request_time")`,
  `CREATE INDEX "tr_traces_time" on "tr_traces" ("request_time")`,
  `CREATE TABLE "tr_trace_batches" ("id" integer primary key autoincrement, "created_ms" integer not null, "items" text not null, "data" blob not null)`,
];

/** Some of everything tracking keeps, written as the old Loom wrote it. */
const OLD_DATA = [
  `INSERT INTO tr_experiments VALUES (7, 'default', 'old-exp', 'mlflow-artifacts:/7', 'active', 1000, 1000)`,
  `INSERT INTO tr_experiment_tags VALUES (7, 'team', 'a')`,
  `INSERT INTO tr_runs VALUES ('r1', 7, 'default', 'old-run', 'me', 'FINISHED', 1000, 2000, 'active', 'mlflow-artifacts:/7/r1/artifacts')`,
  `INSERT INTO tr_params VALUES ('r1', 'lr', '0.1')`,
  `INSERT INTO tr_tags VALUES ('r1', 'mlflow.runName', 'old-run')`,
  `INSERT INTO tr_metrics VALUES ('r1', 'loss', 0.5, 0, 1100, 0), ('r1', 'loss', 0.25, 0, 1200, 1)`,
  `INSERT INTO tr_latest_metrics VALUES ('r1', 'loss', 0.25, 0, 1200, 1)`,
  `INSERT INTO tr_registered_models VALUES ('default', 'm', 'old model', 1000, 1000)`,
  `INSERT INTO tr_model_versions VALUES ('default', 'm', 1, '', 'models:/m-0123abcd', 'r1', '', 'None', 1000, 1000)`,
  `INSERT INTO tr_model_aliases VALUES ('default', 'm', 'champion', 1)`,
  `INSERT INTO tr_logged_models VALUES ('m-0123abcd', 'default', 7, 'model', 'LOGGED_MODEL_READY', 'r1', 'mlflow-artifacts:/7/models/m-0123abcd/artifacts', 1000, 1000, '{"tags":[],"params":[]}')`,
  `INSERT INTO tr_run_outputs VALUES ('r1', 'm-0123abcd', 0)`,
];

/** A loom.db as the old migrations left it, after `applied` of them. */
function oldDatabase(file: string, applied: string[]): void {
  const raw = new Database(file);
  raw.pragma("journal_mode = WAL");
  for (const ddl of [
    ...OLD_LOOM_DDL,
    applied.includes("0007_api_keys") ? OLD_TOKENS_0007 : OLD_TOKENS_0001,
    ...OLD_TRACKING_DDL,
    `CREATE TABLE "kysely_migration" ("name" varchar(255) not null primary key, "timestamp" varchar(255) not null)`,
    `CREATE TABLE "kysely_migration_lock" ("id" varchar(255) not null primary key, "is_locked" integer default 0 not null)`,
    `INSERT INTO kysely_migration_lock VALUES ('migration_lock', 0)`,
    ...OLD_DATA,
  ])
    raw.exec(ddl);
  const record = raw.prepare("INSERT INTO kysely_migration VALUES (?, ?)");
  for (const name of applied) record.run(name, "2026-01-01T00:00:00.000Z");
  raw.close();
}

async function trackingDdl(db: Kysely<unknown>): Promise<string[]> {
  const rows = await sql<{ sql: string }>`select sql from sqlite_master
    where name like 'tr\\_%' escape '\\' and sql is not null order by rowid`.execute(db);
  return rows.rows.map((r) => r.sql);
}

describe("tracking's schema, declared once (src/tracking/schema.ts)", () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "loom-tracking-schema-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("makes, on a new SQLite database, exactly the tables and indexes the old migrations 0003-0005 made, recorded under the same names", async () => {
    const opened = await openSqlite(":memory:");
    const db = opened.db as unknown as Kysely<unknown>;
    expect(await trackingDdl(db)).toEqual([...OLD_TRACKING_DDL, ...TRACES_DDL]);
    const names = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db);
    expect(names.rows.map((r) => r.name)).toEqual(CURRENT);
    await opened.close();
  });

  for (const [label, applied] of [
    ["every old migration applied", MIGRATIONS],
    ["a Loom from before project tokens (0001-0005 applied)", MIGRATIONS.slice(0, 5)],
  ] as const) {
    it(`opens an old loom.db (${label}) without re-running tracking's migrations, and keeps its data`, async () => {
      const file = join(dir, `${applied.length}.db`);
      oldDatabase(file, [...applied]);
      const opened = await openSqlite(file);
      const db = opened.db as unknown as Kysely<unknown>;
      const recorded = await sql<{
        name: string;
        timestamp: string;
      }>`select name, timestamp from kysely_migration
        order by name`.execute(db);
      expect(recorded.rows.map((r) => r.name)).toEqual(CURRENT);
      // The old ones kept their record: none ran again.
      for (const r of recorded.rows.filter((x) => applied.includes(x.name)))
        expect(r.timestamp).toBe("2026-01-01T00:00:00.000Z");
      // The old tables as they were; the traces table added after them.
      expect(await trackingDdl(db)).toEqual([...OLD_TRACKING_DDL, ...TRACES_DDL]);

      const t = trackingOn(sqliteTracking(db));
      const exp = await t.store.getExperimentByName("default", "old-exp");
      expect(exp).toMatchObject({ experiment_id: "7", tags: [{ key: "team", value: "a" }] });
      const run = await t.store.getRun("default", "r1");
      expect(run.info).toMatchObject({ run_name: "old-run", status: "FINISHED", end_time: 2000 });
      expect(run.data).toEqual({
        metrics: [{ key: "loss", value: 0.25, timestamp: 1200, step: 1 }],
        params: [{ key: "lr", value: "0.1" }],
        tags: [{ key: "mlflow.runName", value: "old-run" }],
      });
      const history = await t.store.metricHistory("default", "r1", "loss");
      expect(history.metrics.map((m) => m.value)).toEqual([0.5, 0.25]);
      const found = await t.store.searchRuns("default", {
        experimentIds: ["7"],
        filter: "metrics.loss < 0.3",
      });
      expect(found.runs.map((r) => r.info.run_id)).toEqual(["r1"]);
      expect(await t.registry.getModel("default", "m")).toMatchObject({
        name: "m",
        description: "old model",
        aliases: [{ alias: "champion", version: "1" }],
      });
      expect((await t.loggedModels.get("default", "m-0123abcd")).info.source_run_id).toBe("r1");
      expect((await t.loggedModels.outputsOf(["r1"])).get("r1")).toEqual([
        { model_id: "m-0123abcd", step: 0 },
      ]);
      // Ids go on from the old ones (AUTOINCREMENT's sequence came along).
      expect(await t.store.createExperiment("default", "new-exp")).toBe("8");
      await opened.close();
    });
  }
});

describe("tracking's schema on PostgreSQL", () => {
  let server: ThrowawayPostgres | undefined;
  afterAll(() => server?.stop());

  it("is the schema the old PostgreSQL migrations made: the same tables, column types, keys and indexes, under the same migration names", async () => {
    server = await startPostgres();
    const database = await openTrackingDatabase(await server.createDatabase("schema"));
    await database.close();
    const columns = await server.query<{ table_name: string; cols: string }>(
      "schema",
      `select table_name, string_agg(column_name || ' ' || data_type || case when is_nullable = 'NO' then '!' else '' end
         || case when is_identity = 'YES' then ' identity' else '' end, ', ' order by ordinal_position) as cols
       from information_schema.columns where table_schema = 'public' and table_name like 'tr\\_%'
       group by table_name order by table_name`,
    );
    expect(columns.map((c) => `${c.table_name}: ${c.cols}`)).toEqual([
      "tr_experiment_tags: experiment_id integer!, key text!, value text!",
      "tr_experiments: experiment_id integer! identity, project text!, name text!, artifact_location text!, lifecycle_stage text!, creation_time bigint!, last_update_time bigint!",
      "tr_inputs: run_uuid text!, name text!, digest text!, context text, body text!",
      "tr_latest_metrics: run_uuid text!, key text!, value double precision!, is_nan integer!, timestamp bigint!, step bigint!",
      "tr_logged_models: model_id text!, project text!, experiment_id integer!, name text!, status text!, source_run_id text!, artifact_uri text!, creation_timestamp_ms bigint!, last_updated_timestamp_ms bigint!, body text!",
      "tr_metrics: run_uuid text!, key text!, value double precision!, is_nan integer!, timestamp bigint!, step bigint!",
      "tr_model_aliases: project text!, name text!, alias text!, version integer!",
      "tr_model_versions: project text!, name text!, version integer!, description text!, source text!, run_id text, run_link text!, current_stage text!, creation_timestamp bigint!, last_updated_timestamp bigint!",
      "tr_params: run_uuid text!, key text!, value text!",
      "tr_registered_models: project text!, name text!, description text, creation_timestamp bigint!, last_updated_timestamp bigint!",
      "tr_registry_tags: project text!, name text!, version integer!, key text!, value text!",
      "tr_run_outputs: run_uuid text!, model_id text!, step bigint!",
      "tr_runs: run_uuid text!, experiment_id integer!, project text!, run_name text!, user_id text!, status text!, start_time bigint!, end_time bigint, lifecycle_stage text!, artifact_uri text!",
      "tr_tags: run_uuid text!, key text!, value text!",
      "tr_trace_batches: id integer! identity, created_ms bigint!, items text!, data bytea!",
      "tr_traces: project text!, trace_id text!, experiment_id integer!, client_request_id text, request_time bigint!, execution_ms bigint, state text!, request_preview text, response_preview text, body text!, spans text",
    ]);
    const indexes = await server.query<{ indexdef: string }>(
      "schema",
      "select indexdef from pg_indexes where schemaname = 'public' and tablename like 'tr\\_%' order by indexname",
    );
    expect(indexes.map((i) => i.indexdef)).toEqual([
      "CREATE UNIQUE INDEX tr_experiment_tags_pk ON public.tr_experiment_tags USING btree (experiment_id, key)",
      "CREATE UNIQUE INDEX tr_experiments_name ON public.tr_experiments USING btree (project, name)",
      "CREATE UNIQUE INDEX tr_experiments_pkey ON public.tr_experiments USING btree (experiment_id)",
      "CREATE UNIQUE INDEX tr_inputs_pk ON public.tr_inputs USING btree (run_uuid, name, digest)",
      "CREATE UNIQUE INDEX tr_latest_metrics_pk ON public.tr_latest_metrics USING btree (run_uuid, key)",
      "CREATE UNIQUE INDEX tr_logged_models_pkey ON public.tr_logged_models USING btree (model_id)",
      'CREATE INDEX tr_metrics_history ON public.tr_metrics USING btree (run_uuid, key, "timestamp", step)',
      "CREATE UNIQUE INDEX tr_model_aliases_pk ON public.tr_model_aliases USING btree (project, name, alias)",
      "CREATE UNIQUE INDEX tr_model_versions_pk ON public.tr_model_versions USING btree (project, name, version)",
      "CREATE UNIQUE INDEX tr_params_pk ON public.tr_params USING btree (run_uuid, key)",
      "CREATE UNIQUE INDEX tr_registered_models_pk ON public.tr_registered_models USING btree (project, name)",
      "CREATE UNIQUE INDEX tr_registry_tags_pk ON public.tr_registry_tags USING btree (project, name, version, key)",
      "CREATE UNIQUE INDEX tr_run_outputs_pk ON public.tr_run_outputs USING btree (run_uuid, model_id)",
      "CREATE INDEX tr_runs_experiment ON public.tr_runs USING btree (experiment_id, start_time)",
      "CREATE UNIQUE INDEX tr_runs_pkey ON public.tr_runs USING btree (run_uuid)",
      "CREATE UNIQUE INDEX tr_tags_pk ON public.tr_tags USING btree (run_uuid, key)",
      "CREATE UNIQUE INDEX tr_trace_batches_pkey ON public.tr_trace_batches USING btree (id)",
      "CREATE INDEX tr_traces_experiment ON public.tr_traces USING btree (project, experiment_id, request_time)",
      "CREATE UNIQUE INDEX tr_traces_pk ON public.tr_traces USING btree (project, trace_id)",
      "CREATE INDEX tr_traces_time ON public.tr_traces USING btree (request_time)",
    ]);
    const names = await server.query<{ name: string }>(
      "schema",
      "select name from loom_tracking_migration order by name",
    );
    expect(names.map((n) => n.name)).toEqual([
      "0001_tracking",
      "0002_model_registry",
      "0003_logged_models",
      "0004_traces",
      "0005_trace_batches",
    ]);
    // Opening it again (an upgraded Loom on a database the old one made) runs nothing.
    const again = await openTrackingDatabase(`${server.baseUrl}schema`);
    await again.close();
  }, 120_000);
});

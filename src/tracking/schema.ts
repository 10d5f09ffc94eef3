import type { ColumnDefinitionBuilder, Generated, Kysely, Migration } from "kysely";

/** The SQL dialect under tracking (tracking/db.ts opens one of each). */
export type TrackingDialect = "sqlite" | "postgres";

// ---- tables, as the stores see them ------------------------------------------------------

/** Experiments, runs and what runs log (migration step "tracking"); TrackingStore's tables. */
export interface RunsSchema {
  tr_experiments: {
    experiment_id: number | undefined;
    project: string;
    name: string;
    artifact_location: string;
    lifecycle_stage: string;
    creation_time: number;
    last_update_time: number;
  };
  tr_experiment_tags: { experiment_id: number; key: string; value: string };
  tr_runs: {
    run_uuid: string;
    experiment_id: number;
    project: string;
    run_name: string;
    user_id: string;
    status: string;
    start_time: number;
    end_time: number | null;
    lifecycle_stage: string;
    artifact_uri: string;
  };
  tr_params: { run_uuid: string; key: string; value: string };
  tr_tags: { run_uuid: string; key: string; value: string };
  tr_metrics: {
    run_uuid: string;
    key: string;
    value: number;
    is_nan: number;
    timestamp: number;
    step: number;
  };
  tr_latest_metrics: {
    run_uuid: string;
    key: string;
    value: number;
    is_nan: number;
    timestamp: number;
    step: number;
  };
  tr_inputs: { run_uuid: string; name: string; digest: string; context: string | null; body: string };
}

/** The model registry's tables (migration step "model_registry"); ModelRegistry's. */
export interface RegistrySchema {
  tr_registered_models: {
    project: string;
    name: string;
    description: string | null;
    creation_timestamp: number;
    last_updated_timestamp: number;
  };
  tr_model_versions: {
    project: string;
    name: string;
    version: number;
    description: string;
    source: string;
    run_id: string | null;
    run_link: string;
    current_stage: string;
    creation_timestamp: number;
    last_updated_timestamp: number;
  };
  tr_registry_tags: { project: string; name: string; version: number; key: string; value: string };
  tr_model_aliases: { project: string; name: string; alias: string; version: number };
}

/** MLflow 3's logged models (migration step "logged_models"); LoggedModels' tables. */
export interface LoggedSchema {
  tr_logged_models: {
    model_id: string;
    project: string;
    experiment_id: number;
    name: string;
    status: string;
    source_run_id: string;
    artifact_uri: string;
    creation_timestamp_ms: number;
    last_updated_timestamp_ms: number;
    /** Tags and params, as JSON. */
    body: string;
  };
  tr_run_outputs: { run_uuid: string; model_id: string; step: number };
}

/** MLflow 3's traces (migration step "traces"); TraceStore's table. Spans are artifacts. */
export interface TracesSchema {
  tr_traces: {
    project: string;
    trace_id: string;
    experiment_id: number;
    client_request_id: string | null;
    /** ms */
    request_time: number;
    execution_ms: number | null;
    state: string;
    request_preview: string | null;
    response_preview: string | null;
    /** Metadata and tags, as JSON. */
    body: string;
    /**
     * The spans (traces.json), for traces written by Loom itself (the gateway's): a file per trace
     * cost more than the request it traced. Null: the client uploaded them as an artifact.
     */
    spans: string | null;
  };
  /**
   * Gateway-recorded traces not read yet (migration step "trace_batches"): one row per batch of
   * raw exchanges, as the gateway kept them. The first read of traces turns each into tr_traces
   * records (traces-gateway.ts) and deletes it: a trace costs the request path a copy and 1/256
   * of an INSERT, not JSON parsing and span building.
   */
  tr_trace_batches: {
    id: Generated<number>;
    created_ms: number;
    /** The batch's items (PackedItem[]) as JSON: who asked, what served it, times, body offsets. */
    items: string;
    /** The items' request and response bodies, one after another. */
    data: Uint8Array;
  };
}

// ---- migrations ------------------------------------------------------------------------

/**
 * Tracking's schema changes, in order. Each database's migrator names them its own way (they are
 * 0003-0005 among Loom's SQLite migrations, 0001-0003 on PostgreSQL: the names databases already
 * recorded), so a step added here must be named in both (the Record types make that a compile
 * error until it is). Never edit a released step: add the next.
 */
export const TRACKING_STEPS = [
  "tracking",
  "model_registry",
  "logged_models",
  "traces",
  "trace_batches",
] as const;
export type TrackingStep = (typeof TRACKING_STEPS)[number];

/** Tracking's migrations for `dialect`, under the names `names` gives each step. */
export function trackingMigrations(
  dialect: TrackingDialect,
  names: Record<TrackingStep, string>,
): Record<string, Migration> {
  const types = columnTypes(dialect);
  const out: Record<string, Migration> = {};
  for (const step of TRACKING_STEPS) out[names[step]] = { up: (db) => STEPS[step](db, types) };
  return out;
}

interface ColumnTypes {
  /** ms timestamps and steps. */
  bigint: "integer" | "bigint";
  /** Metric values. */
  double: "real" | "double precision";
  /** Bytes. */
  blob: "blob" | "bytea";
  /** An integer primary key the database numbers. */
  serial(c: ColumnDefinitionBuilder): ColumnDefinitionBuilder;
}

/**
 * The one place the dialects differ: PostgreSQL's bigint and double precision are SQLite's integer
 * and real (which are 64-bit anyway), and a numbered key is an identity column there, AUTOINCREMENT
 * (ids never reused) here. SQLite keeps the exact column types its databases were made with.
 */
function columnTypes(dialect: TrackingDialect): ColumnTypes {
  return dialect === "postgres"
    ? {
        bigint: "bigint",
        double: "double precision",
        blob: "bytea",
        serial: (c) => c.primaryKey().generatedByDefaultAsIdentity(),
      }
    : { bigint: "integer", double: "real", blob: "blob", serial: (c) => c.primaryKey().autoIncrement() };
}

const STEPS: Record<TrackingStep, (db: Kysely<unknown>, t: ColumnTypes) => Promise<void>> = {
  // MLflow-compatible experiment tracking (src/tracking/): experiments belong to a project.
  async tracking(db, t) {
    await db.schema
      .createTable("tr_experiments")
      .addColumn("experiment_id", "integer", t.serial)
      .addColumn("project", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("artifact_location", "text", (c) => c.notNull())
      .addColumn("lifecycle_stage", "text", (c) => c.notNull())
      .addColumn("creation_time", t.bigint, (c) => c.notNull())
      .addColumn("last_update_time", t.bigint, (c) => c.notNull())
      .addUniqueConstraint("tr_experiments_name", ["project", "name"])
      .execute();
    await db.schema
      .createTable("tr_experiment_tags")
      .addColumn("experiment_id", "integer", (c) => c.notNull())
      .addColumn("key", "text", (c) => c.notNull())
      .addColumn("value", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("tr_experiment_tags_pk", ["experiment_id", "key"])
      .execute();
    await db.schema
      .createTable("tr_runs")
      .addColumn("run_uuid", "text", (c) => c.primaryKey())
      .addColumn("experiment_id", "integer", (c) => c.notNull())
      .addColumn("project", "text", (c) => c.notNull())
      .addColumn("run_name", "text", (c) => c.notNull())
      .addColumn("user_id", "text", (c) => c.notNull())
      .addColumn("status", "text", (c) => c.notNull())
      .addColumn("start_time", t.bigint, (c) => c.notNull())
      .addColumn("end_time", t.bigint)
      .addColumn("lifecycle_stage", "text", (c) => c.notNull())
      .addColumn("artifact_uri", "text", (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex("tr_runs_experiment")
      .on("tr_runs")
      .columns(["experiment_id", "start_time"])
      .execute();
    for (const table of ["tr_params", "tr_tags"]) {
      await db.schema
        .createTable(table)
        .addColumn("run_uuid", "text", (c) => c.notNull())
        .addColumn("key", "text", (c) => c.notNull())
        .addColumn("value", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint(`${table}_pk`, ["run_uuid", "key"])
        .execute();
    }
    await db.schema
      .createTable("tr_metrics")
      .addColumn("run_uuid", "text", (c) => c.notNull())
      .addColumn("key", "text", (c) => c.notNull())
      .addColumn("value", t.double, (c) => c.notNull())
      .addColumn("is_nan", "integer", (c) => c.notNull())
      .addColumn("timestamp", t.bigint, (c) => c.notNull())
      .addColumn("step", t.bigint, (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex("tr_metrics_history")
      .on("tr_metrics")
      .columns(["run_uuid", "key", "timestamp", "step"])
      .execute();
    await db.schema
      .createTable("tr_latest_metrics")
      .addColumn("run_uuid", "text", (c) => c.notNull())
      .addColumn("key", "text", (c) => c.notNull())
      .addColumn("value", t.double, (c) => c.notNull())
      .addColumn("is_nan", "integer", (c) => c.notNull())
      .addColumn("timestamp", t.bigint, (c) => c.notNull())
      .addColumn("step", t.bigint, (c) => c.notNull())
      .addPrimaryKeyConstraint("tr_latest_metrics_pk", ["run_uuid", "key"])
      .execute();
    await db.schema
      .createTable("tr_inputs")
      .addColumn("run_uuid", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("digest", "text", (c) => c.notNull())
      .addColumn("context", "text")
      .addColumn("body", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("tr_inputs_pk", ["run_uuid", "name", "digest"])
      .execute();
  },

  // MLflow's model registry (src/tracking/registry.ts), per project.
  async model_registry(db, t) {
    await db.schema
      .createTable("tr_registered_models")
      .addColumn("project", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("description", "text")
      .addColumn("creation_timestamp", t.bigint, (c) => c.notNull())
      .addColumn("last_updated_timestamp", t.bigint, (c) => c.notNull())
      .addPrimaryKeyConstraint("tr_registered_models_pk", ["project", "name"])
      .execute();
    await db.schema
      .createTable("tr_model_versions")
      .addColumn("project", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("version", "integer", (c) => c.notNull())
      .addColumn("description", "text", (c) => c.notNull())
      .addColumn("source", "text", (c) => c.notNull())
      .addColumn("run_id", "text")
      .addColumn("run_link", "text", (c) => c.notNull())
      .addColumn("current_stage", "text", (c) => c.notNull())
      .addColumn("creation_timestamp", t.bigint, (c) => c.notNull())
      .addColumn("last_updated_timestamp", t.bigint, (c) => c.notNull())
      .addPrimaryKeyConstraint("tr_model_versions_pk", ["project", "name", "version"])
      .execute();
    // Tags of models (version 0) and of versions; aliases point at a version.
    await db.schema
      .createTable("tr_registry_tags")
      .addColumn("project", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("version", "integer", (c) => c.notNull())
      .addColumn("key", "text", (c) => c.notNull())
      .addColumn("value", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("tr_registry_tags_pk", ["project", "name", "version", "key"])
      .execute();
    await db.schema
      .createTable("tr_model_aliases")
      .addColumn("project", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("alias", "text", (c) => c.notNull())
      .addColumn("version", "integer", (c) => c.notNull())
      .addPrimaryKeyConstraint("tr_model_aliases_pk", ["project", "name", "alias"])
      .execute();
  },

  // MLflow 3's logged models (what log_model makes) and the runs that output them.
  async logged_models(db, t) {
    await db.schema
      .createTable("tr_logged_models")
      .addColumn("model_id", "text", (c) => c.primaryKey())
      .addColumn("project", "text", (c) => c.notNull())
      .addColumn("experiment_id", "integer", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("status", "text", (c) => c.notNull())
      .addColumn("source_run_id", "text", (c) => c.notNull())
      .addColumn("artifact_uri", "text", (c) => c.notNull())
      .addColumn("creation_timestamp_ms", t.bigint, (c) => c.notNull())
      .addColumn("last_updated_timestamp_ms", t.bigint, (c) => c.notNull())
      .addColumn("body", "text", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("tr_run_outputs")
      .addColumn("run_uuid", "text", (c) => c.notNull())
      .addColumn("model_id", "text", (c) => c.notNull())
      .addColumn("step", t.bigint, (c) => c.notNull())
      .addPrimaryKeyConstraint("tr_run_outputs_pk", ["run_uuid", "model_id"])
      .execute();
  },

  // MLflow 3's traces (issue 20): searched by experiment and time; the retention sweep by time.
  async traces(db, t) {
    await db.schema
      .createTable("tr_traces")
      .addColumn("project", "text", (c) => c.notNull())
      .addColumn("trace_id", "text", (c) => c.notNull())
      .addColumn("experiment_id", "integer", (c) => c.notNull())
      .addColumn("client_request_id", "text")
      .addColumn("request_time", t.bigint, (c) => c.notNull())
      .addColumn("execution_ms", t.bigint)
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("request_preview", "text")
      .addColumn("response_preview", "text")
      .addColumn("body", "text", (c) => c.notNull())
      .addColumn("spans", "text")
      .addPrimaryKeyConstraint("tr_traces_pk", ["project", "trace_id"])
      .execute();
    await db.schema
      .createIndex("tr_traces_experiment")
      .on("tr_traces")
      .columns(["project", "experiment_id", "request_time"])
      .execute();
    await db.schema.createIndex("tr_traces_time").on("tr_traces").column("request_time").execute();
  },

  // Gateway-recorded traces as raw batches, made into tr_traces records when first read.
  async trace_batches(db, t) {
    await db.schema
      .createTable("tr_trace_batches")
      .addColumn("id", "integer", t.serial)
      .addColumn("created_ms", t.bigint, (c) => c.notNull())
      .addColumn("items", "text", (c) => c.notNull())
      .addColumn("data", t.blob, (c) => c.notNull())
      .execute();
  },
};

import { Kysely, type Migration, Migrator, PostgresDialect } from "kysely";
import pg from "pg";
import type { Logger } from "pino";
import { LoggedModels } from "./logged.js";
import { ModelRegistry } from "./registry.js";
import { type TrackingDialect, TrackingStore } from "./store.js";

export type { TrackingDialect };

/**
 * Where tracking's tables live: the embedded SQLite database (migrations 0003-0005 of
 * src/platforms/embedded/db.ts) or PostgreSQL. The stores run the same Kysely queries on both; the
 * few spots where SQL must differ branch on this flag.
 */

export interface TrackingDatabase {
  db: Kysely<unknown>;
  dialect: TrackingDialect;
  /** Closes what this database owns (a PostgreSQL pool); SQLite's is closed with Loom's database. */
  close(): Promise<void>;
}

/** Tracking's stores on one database: the one composition path of `loom up` and `loom operator`. */
export interface Tracking {
  store: TrackingStore;
  registry: ModelRegistry;
  loggedModels: LoggedModels;
}

export function trackingOn(database: TrackingDatabase, now: () => number = Date.now): Tracking {
  const store = new TrackingStore(database.db, now, database.dialect);
  return {
    store,
    registry: new ModelRegistry(database.db, now),
    loggedModels: new LoggedModels(database.db, store, now),
  };
}

/** Tracking in Loom's own SQLite database (its tables come with that database's migrations). */
export function sqliteTracking(db: Kysely<unknown>): TrackingDatabase {
  return { db, dialect: "sqlite", close: async () => {} };
}

/**
 * Tracking's database for a server: PostgreSQL at `url` when one is given, else Loom's own SQLite
 * database (`sqlite`, whose migrations made tracking's tables).
 */
export async function trackingDatabase(
  sqlite: Kysely<unknown>,
  url: string | undefined,
  log: Logger,
): Promise<TrackingDatabase> {
  if (!url) return sqliteTracking(sqlite);
  const database = await openTrackingDatabase(url, {
    onError: (err) => log.warn({ err }, "tracking database connection failed"),
  });
  log.info({ trackingDb: redactUrl(url) }, "MLflow tracking on PostgreSQL");
  return database;
}

export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//i.test(url);
}

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, "//$1:***@");
  }
}

/** int8 (OID 20) as a JS number: tracking's bigints are ms timestamps and steps, well within 2^53. */
const TYPES = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === pg.types.builtins.INT8
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
};

/**
 * Opens tracking's database at a postgres:// (or postgresql://) URL and brings its schema up to
 * date: the tables of SQLite's migrations 0003-0005, with bigint for ms timestamps and steps and
 * double precision for metric values. Tokens, resources and events stay in Loom's SQLite database.
 */
export async function openTrackingDatabase(
  url: string,
  opts: { onError?: (err: Error) => void; max?: number } = {},
): Promise<TrackingDatabase> {
  if (!isPostgresUrl(url))
    throw new Error(
      `tracking database URL must start with postgres:// or postgresql://, got "${redactUrl(url)}"`,
    );
  // allowExitOnIdle: idle connections alone do not keep the process alive (a server that failed
  // to start after opening this exits instead of hanging).
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    types: TYPES,
    allowExitOnIdle: true,
  });
  // An idle connection that breaks (the server restarted) must not crash the process.
  pool.on("error", (err) => opts.onError?.(err));
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  try {
    const client = await pool.connect();
    client.release();
  } catch (err) {
    await db.destroy();
    throw new Error(`tracking database ${redactUrl(url)} cannot be reached: ${(err as Error).message}`);
  }
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => POSTGRES_MIGRATIONS },
    // Its own bookkeeping tables, so tracking can share a database with other applications.
    migrationTableName: "loom_tracking_migration",
    migrationLockTableName: "loom_tracking_migration_lock",
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    const failed = results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
    throw new Error(`tracking database migration ${failed} failed on ${redactUrl(url)}: ${String(error)}`);
  }
  return {
    db,
    dialect: "postgres",
    close: async () => {
      await db.destroy();
    },
  };
}

/**
 * Tracking's schema on PostgreSQL: SQLite's migrations 0003-0005 (src/platforms/embedded/db.ts), table
 * for table and index for index. Never edit a released one: add the next, here and there.
 */
const POSTGRES_MIGRATIONS: Record<string, Migration> = {
  "0001_tracking": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("tr_experiments")
        .addColumn("experiment_id", "integer", (c) => c.primaryKey().generatedByDefaultAsIdentity())
        .addColumn("project", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("artifact_location", "text", (c) => c.notNull())
        .addColumn("lifecycle_stage", "text", (c) => c.notNull())
        .addColumn("creation_time", "bigint", (c) => c.notNull())
        .addColumn("last_update_time", "bigint", (c) => c.notNull())
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
        .addColumn("start_time", "bigint", (c) => c.notNull())
        .addColumn("end_time", "bigint")
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
        .addColumn("value", "double precision", (c) => c.notNull())
        .addColumn("is_nan", "integer", (c) => c.notNull())
        .addColumn("timestamp", "bigint", (c) => c.notNull())
        .addColumn("step", "bigint", (c) => c.notNull())
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
        .addColumn("value", "double precision", (c) => c.notNull())
        .addColumn("is_nan", "integer", (c) => c.notNull())
        .addColumn("timestamp", "bigint", (c) => c.notNull())
        .addColumn("step", "bigint", (c) => c.notNull())
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
  },
  "0002_model_registry": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("tr_registered_models")
        .addColumn("project", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("description", "text")
        .addColumn("creation_timestamp", "bigint", (c) => c.notNull())
        .addColumn("last_updated_timestamp", "bigint", (c) => c.notNull())
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
        .addColumn("creation_timestamp", "bigint", (c) => c.notNull())
        .addColumn("last_updated_timestamp", "bigint", (c) => c.notNull())
        .addPrimaryKeyConstraint("tr_model_versions_pk", ["project", "name", "version"])
        .execute();
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
  },
  "0003_logged_models": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("tr_logged_models")
        .addColumn("model_id", "text", (c) => c.primaryKey())
        .addColumn("project", "text", (c) => c.notNull())
        .addColumn("experiment_id", "integer", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("source_run_id", "text", (c) => c.notNull())
        .addColumn("artifact_uri", "text", (c) => c.notNull())
        .addColumn("creation_timestamp_ms", "bigint", (c) => c.notNull())
        .addColumn("last_updated_timestamp_ms", "bigint", (c) => c.notNull())
        .addColumn("body", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("tr_run_outputs")
        .addColumn("run_uuid", "text", (c) => c.notNull())
        .addColumn("model_id", "text", (c) => c.notNull())
        .addColumn("step", "bigint", (c) => c.notNull())
        .addPrimaryKeyConstraint("tr_run_outputs_pk", ["run_uuid", "model_id"])
        .execute();
    },
  },
};

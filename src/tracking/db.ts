import { Kysely, Migrator, PostgresDialect } from "kysely";
import pg from "pg";
import type { Logger } from "pino";
import { LoggedModels } from "./logged.js";
import { ModelRegistry } from "./registry.js";
import { type TrackingDialect, trackingMigrations } from "./schema.js";
import { TrackingStore } from "./store.js";
import { TraceStore } from "./traces.js";

export type { TrackingDialect };

/**
 * Where tracking's tables live: the embedded SQLite database (whose migrations 0003-0005 are
 * tracking's steps, src/tracking/schema.ts) or PostgreSQL. The stores run the same Kysely queries on both; the
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
  traces: TraceStore;
}

export function trackingOn(database: TrackingDatabase, now: () => number = Date.now): Tracking {
  const store = new TrackingStore(database.db, now, database.dialect);
  return {
    store,
    registry: new ModelRegistry(database.db, now),
    loggedModels: new LoggedModels(database.db, store, now),
    traces: new TraceStore(database.db, now),
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
 * date: tracking's steps (schema.ts), with bigint for ms timestamps and steps and double precision
 * for metric values. Tokens, resources and events stay in Loom's SQLite database.
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

/** Tracking's schema on PostgreSQL: the steps SQLite runs as its migrations 0003-0005. */
const POSTGRES_MIGRATIONS = trackingMigrations("postgres", {
  tracking: "0001_tracking",
  model_registry: "0002_model_registry",
  logged_models: "0003_logged_models",
  traces: "0004_traces",
  trace_batches: "0005_trace_batches",
});

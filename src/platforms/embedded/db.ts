import { chmodSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { type Generated, Kysely, type Migration, Migrator, SqliteDialect, sql } from "kysely";
import { trackingMigrations } from "../../tracking/schema.js";

export interface ResourcesTable {
  kind: string;
  project: string;
  name: string;
  uid: string;
  rv: number;
  body: string;
}

export interface ChangesTable {
  rv: Generated<number>;
  kind: string;
  project: string;
  name: string;
  type: string;
  body: string;
}

export interface EventsTable {
  id: Generated<number>;
  kind: string;
  project: string;
  name: string;
  uid: string;
  type: string;
  reason: string;
  message: string;
  count: number;
  first_ts: string;
  last_ts: string;
}

export interface TokensTable {
  id: string;
  name: string;
  role: string;
  hash: string;
  created_at: string;
  /** The one project the token reaches; null for every project. */
  project: string | null;
  /** "apikey": reaches the gateway only (its services, or all of its project's when null). */
  kind: string | null;
  services: string | null;
  /** ISO time from which it is refused; null: never. */
  expires_at: string | null;
  /** The project's metadata.uid when the token was made; null for unscoped or older tokens. */
  project_uid: string | null;
  /** The workload it belongs to (JSON WorkloadRef), and that workload's uid for revoking. */
  workload: string | null;
  workload_uid: string | null;
  last_used_at: string | null;
}

/** The audit log (src/ports/audit.ts): one row per write or refused request. */
export interface AuditTable {
  id: Generated<number>;
  /** ms since the epoch. */
  ts: number;
  principal_id: string | null;
  principal_name: string | null;
  principal_role: string | null;
  principal_project: string | null;
  api_key: number;
  verb: string;
  method: string;
  path: string;
  kind: string | null;
  project: string | null;
  name: string | null;
  subresource: string | null;
  address: string;
  user_agent: string | null;
  status: number;
  allowed: number;
  reason: string | null;
}

/** Users' SSH public keys (src/ports/sshkeys.ts): a user is a token name. */
export interface SshKeysTable {
  user: string;
  name: string;
  type: string;
  /** The key's base64 blob, as its .pub file has it. */
  data: string;
  fingerprint: string;
  comment: string | null;
  created_at: string;
}

/** Platform secrets (a member cluster's kubeconfig): the database file is the server user's only. */
export interface SecretsTable {
  name: string;
  data: string;
  updated_at: string;
}

export interface MetaTable {
  key: string;
  value: string;
}

export interface Schema {
  resources: ResourcesTable;
  changes: ChangesTable;
  events: EventsTable;
  tokens: TokensTable;
  meta: MetaTable;
  audit: AuditTable;
  ssh_keys: SshKeysTable;
  secrets: SecretsTable;
}

/**
 * Migrations run in order on every start; each is applied once. Never edit a released one: add
 * the next.
 */
const MIGRATIONS: Record<string, Migration> = {
  "0001_initial": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("resources")
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("project", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("uid", "text", (c) => c.notNull())
        .addColumn("rv", "integer", (c) => c.notNull())
        .addColumn("body", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("resources_pk", ["kind", "project", "name"])
        .execute();
      // The change log: one row per write, its rowid is the resourceVersion. Watches replay it.
      await db.schema
        .createTable("changes")
        .addColumn("rv", "integer", (c) => c.primaryKey().autoIncrement())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("project", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("body", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("changes_kind_rv").on("changes").columns(["kind", "rv"]).execute();
      await db.schema
        .createTable("events")
        .addColumn("id", "integer", (c) => c.primaryKey().autoIncrement())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("project", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("uid", "text", (c) => c.notNull())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("reason", "text", (c) => c.notNull())
        .addColumn("message", "text", (c) => c.notNull())
        .addColumn("count", "integer", (c) => c.notNull())
        .addColumn("first_ts", "text", (c) => c.notNull())
        .addColumn("last_ts", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("events_object")
        .on("events")
        .columns(["kind", "project", "name"])
        .execute();
      await db.schema
        .createTable("tokens")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("role", "text", (c) => c.notNull())
        .addColumn("hash", "text", (c) => c.notNull().unique())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("meta")
        .addColumn("key", "text", (c) => c.primaryKey())
        .addColumn("value", "text", (c) => c.notNull())
        .execute();
    },
  },
  "0002_events_by_uid": {
    // Pruning an object's old events (WHERE uid = ? AND id <= ?) scanned the whole table: 7 ms
    // at 60,000 events, on every event write (bench:scheduler).
    async up(db: Kysely<unknown>) {
      await db.schema.createIndex("events_uid_id").on("events").columns(["uid", "id"]).execute();
    },
  },
  // Tracking's tables (src/tracking/schema.ts, the same steps PostgreSQL runs), under the names
  // existing databases recorded them.
  ...trackingMigrations("sqlite", {
    tracking: "0003_tracking",
    model_registry: "0004_model_registry",
    logged_models: "0005_logged_models",
    // Added after 0010: the name sorts it last, where the migrator runs it.
    traces: "0011_traces",
    trace_batches: "0012_trace_batches",
  }),
  "0006_token_projects": {
    // Tokens scoped to one project (tracking's tenancy; workloads get one for their project).
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("tokens").addColumn("project", "text").execute();
    },
  },
  "0007_api_keys": {
    // Project API keys for the inference gateway: a token that reaches the gateway only.
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("tokens").addColumn("kind", "text").execute();
      await db.schema.alterTable("tokens").addColumn("services", "text").execute();
    },
  },
  "0008_token_lifecycle": {
    // Expiry, the project's uid (a re-created project honours none of the old tokens), the
    // workload a credential belongs to (revoked when it ends), and when a token was last used.
    async up(db: Kysely<unknown>) {
      for (const column of ["expires_at", "project_uid", "workload", "workload_uid", "last_used_at"])
        await db.schema.alterTable("tokens").addColumn(column, "text").execute();
      await db.schema.createIndex("tokens_workload_uid").on("tokens").column("workload_uid").execute();
    },
  },
  "0009_audit": {
    // The audit log (issue 17): read by time and by project, pruned by time and by count.
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("audit")
        .addColumn("id", "integer", (c) => c.primaryKey().autoIncrement())
        .addColumn("ts", "integer", (c) => c.notNull())
        .addColumn("principal_id", "text")
        .addColumn("principal_name", "text")
        .addColumn("principal_role", "text")
        .addColumn("principal_project", "text")
        .addColumn("api_key", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("verb", "text", (c) => c.notNull())
        .addColumn("method", "text", (c) => c.notNull())
        .addColumn("path", "text", (c) => c.notNull())
        .addColumn("kind", "text")
        .addColumn("project", "text")
        .addColumn("name", "text")
        .addColumn("subresource", "text")
        .addColumn("address", "text", (c) => c.notNull())
        .addColumn("user_agent", "text")
        .addColumn("status", "integer", (c) => c.notNull())
        .addColumn("allowed", "integer", (c) => c.notNull())
        .addColumn("reason", "text")
        .execute();
      await db.schema.createIndex("audit_ts").on("audit").column("ts").execute();
      await db.schema.createIndex("audit_project").on("audit").columns(["project", "id"]).execute();
      await db.schema
        .createIndex("audit_principal_project")
        .on("audit")
        .columns(["principal_project", "id"])
        .execute();
    },
  },
  "0010_ssh_keys": {
    // `loom ssh-key add`: one user's key once (by name and by fingerprint).
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("ssh_keys")
        .addColumn("user", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("data", "text", (c) => c.notNull())
        .addColumn("fingerprint", "text", (c) => c.notNull())
        .addColumn("comment", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("ssh_keys_pk", ["user", "name"])
        .addUniqueConstraint("ssh_keys_user_fingerprint", ["user", "fingerprint"])
        .execute();
    },
  },
  "0013_secrets": {
    // Member clusters' kubeconfigs (issue 23): kept out of the objects, never served back.
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("secrets")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("data", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();
    },
  },
};

export interface OpenedDatabase {
  db: Kysely<Schema>;
  close(): Promise<void>;
}

/**
 * Opens (creating if needed) the embedded database and brings its schema up to date. WAL with
 * synchronous=NORMAL: a committed write is in the WAL file before the client hears back, so it
 * survives the process being killed; synchronous=FULL also survives power loss, at some speed.
 */
export async function openSqlite(
  file: string,
  opts: { synchronous?: "NORMAL" | "FULL" } = {},
): Promise<OpenedDatabase> {
  if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
  const raw = new Database(file);
  raw.pragma("journal_mode = WAL");
  // Tokens' hashes, every project's objects: the server's user only (the WAL and shared-memory
  // files SQLite makes beside it take the database's mode).
  if (file !== ":memory:") ownerOnly(file);
  raw.pragma(`synchronous = ${opts.synchronous ?? "NORMAL"}`);
  raw.pragma("foreign_keys = ON");
  raw.pragma("busy_timeout = 5000");
  const db = new Kysely<Schema>({ dialect: new SqliteDialect({ database: reusingStatements(raw) }) });
  writers.set(db, new SqliteWriter(raw));
  const migrator = new Migrator({ db, provider: { getMigrations: async () => MIGRATIONS } });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    const failed = results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
    throw new Error(`database migration ${failed} failed on ${file}: ${String(error)}`);
  }
  return {
    db,
    close: async () => {
      await db.destroy();
    },
  };
}

/** chmod 0600 on the database and, where they exist, its -wal and -shm files. */
function ownerOnly(file: string): void {
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      chmodSync(f, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
}

export async function getMeta(db: Kysely<Schema>, key: string): Promise<string | undefined> {
  const row = await db.selectFrom("meta").select("value").where("key", "=", key).executeTakeFirst();
  return row?.value;
}

export async function setMeta(db: Kysely<Schema>, key: string, value: string): Promise<void> {
  await db
    .insertInto("meta")
    .values({ key, value })
    .onConflict((oc) => oc.column("key").doUpdateSet({ value }))
    .execute();
}

export { sql };

/**
 * Kysely prepares every query anew; preparing was 12% of the server's CPU in bench:scheduler.
 * Queries are built from a small set of shapes (values are bound parameters), so the statements
 * are kept by their SQL and reused. better-sqlite3 runs a statement to completion synchronously,
 * so reuse is safe as long as nothing iterates lazily (Loom's stores never stream).
 */
function reusingStatements(raw: Database.Database, max = 512): Database.Database {
  const cache = new Map<string, Database.Statement>();
  const prepare = raw.prepare.bind(raw);
  raw.prepare = ((source: string) => {
    let stmt = cache.get(source);
    if (!stmt) {
      stmt = prepare(source);
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
      cache.set(source, stmt);
    }
    return stmt;
  }) as typeof raw.prepare;
  return raw;
}

const writers = new WeakMap<object, SqliteWriter>();

/** The group-commit writer of a database opened by openSqlite (its Kysely instance as the key). */
export function writerOf(db: Kysely<Schema>): SqliteWriter {
  const w = writers.get(db);
  if (!w)
    throw new Error("this database was not opened with openSqlite: the embedded store needs its writer");
  return w;
}

/** One write of a batch: runs inside the batch's transaction, synchronously. */
export interface SqliteWrite<T> {
  /** Its statements; throwing rolls back this write alone (a savepoint), not the batch. */
  run(db: Database.Database): T;
  /** After the batch committed, in submission order (the resource store tells watchers here). */
  committed?(result: T): void;
  /** The write did not happen (it threw, or the batch failed): undo what run() did in memory. */
  undone?(): void;
}

interface Queued {
  write: SqliteWrite<unknown>;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  result?: unknown;
  error?: unknown;
  failed?: boolean;
}

/**
 * Group commit for the embedded store: the writes submitted while the event loop is busy (an
 * admission cycle's decisions, the events that go with them, several reconcilers' status
 * writes) run in one transaction, each in its own savepoint, straight on better-sqlite3. Through
 * Kysely, each statement cost about 0.2 ms of CPU (an event was three of them, 0.7 ms), and each
 * write its own commit; bench:scheduler made ten such writes per job.
 *
 * Runs synchronously, so nothing else on this connection interleaves with a batch. A Kysely
 * transaction in progress on the same connection (tracking, a list) is waited for: a batch must
 * never become part of someone else's transaction, which could still roll back.
 */
export class SqliteWriter {
  private queue: Queued[] = [];
  private scheduled = false;
  private readonly one: (q: Queued) => unknown;
  private readonly all: (qs: Queued[]) => void;

  constructor(private readonly raw: Database.Database) {
    this.one = raw.transaction((q: Queued) => q.write.run(raw));
    this.all = raw.transaction((qs: Queued[]) => {
      for (const q of qs) {
        try {
          q.result = this.one(q);
        } catch (err) {
          q.failed = true;
          q.error = err;
          q.write.undone?.();
        }
      }
    });
  }

  submit<T>(write: SqliteWrite<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        write: write as SqliteWrite<unknown>,
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    if (this.raw.inTransaction) {
      // Someone's transaction is open on the connection: after it.
      setImmediate(() => this.flush());
      return;
    }
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    try {
      this.all(batch);
    } catch (err) {
      // The commit itself failed: none of the batch happened.
      for (let i = batch.length - 1; i >= 0; i--) {
        const q = batch[i]!;
        if (!q.failed) {
          q.failed = true;
          q.error = err;
          q.write.undone?.();
        }
      }
    }
    for (const q of batch) {
      if (q.failed) q.reject(q.error);
      else {
        try {
          q.write.committed?.(q.result);
          q.resolve(q.result);
        } catch (err) {
          q.reject(err); // a watcher threw: the write itself is committed
        }
      }
    }
  }
}

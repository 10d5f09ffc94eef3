import { type OpenedDatabase, openSqlite } from "./db.js";
import { SqliteEventRecorder } from "./events.js";
import { SqliteResourceStore } from "./store.js";

/**
 * A store and event recorder in an in-memory SQLite database, for tests that need a real store
 * (the same SQL, the same resourceVersions) without a data directory. Close `db` when done.
 */
export async function memoryStore(): Promise<{
  db: OpenedDatabase;
  store: SqliteResourceStore;
  events: SqliteEventRecorder;
}> {
  const db = await openSqlite(":memory:");
  return { db, store: await SqliteResourceStore.open(db.db), events: new SqliteEventRecorder(db.db) };
}

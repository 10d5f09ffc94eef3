import type Database from "better-sqlite3";
import type { Kysely } from "kysely";
import type { EventRecorder, EventRef, ObjectEvent } from "../../ports/store.js";
import { type Schema, type SqliteWriter, writerOf } from "./db.js";

/** Keeps at most this many events per object; older ones are pruned on write. */
const PER_OBJECT = 50;

export class SqliteEventRecorder implements EventRecorder {
  private readonly writer: SqliteWriter;
  private statements: ReturnType<typeof prepareStatements> | undefined;

  constructor(
    private readonly db: Kysely<Schema>,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.writer = writerOf(db);
  }

  /** Runs in the store's group commit: one event was three statements and three commits. */
  record(ref: EventRef, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const ts = this.now().toISOString();
    return this.writer.submit({
      run: (raw) => {
        this.statements ??= prepareStatements(raw);
        const st = this.statements;
        const last = st.last.get(ref.uid);
        if (last && last.reason === reason && last.message === message && last.type === type) {
          st.repeat.run(ts, last.id);
          return;
        }
        const { id } = st.insert.get(
          ref.kind,
          ref.project,
          ref.name,
          ref.uid,
          type,
          reason,
          message,
          ts,
          ts,
        )!;
        st.prune.run(ref.uid, id - PER_OBJECT);
      },
    });
  }

  async listFor(ref: Omit<EventRef, "uid"> & { uid?: string }, limit = 20): Promise<ObjectEvent[]> {
    let q = this.db
      .selectFrom("events")
      .selectAll()
      .where("kind", "=", ref.kind)
      .where("project", "=", ref.project)
      .where("name", "=", ref.name);
    if (ref.uid) q = q.where("uid", "=", ref.uid);
    const rows = await q.orderBy("id", "desc").limit(limit).execute();
    return rows.reverse().map((r) => ({
      type: r.type as ObjectEvent["type"],
      reason: r.reason,
      message: r.message,
      count: r.count,
      firstTimestamp: r.first_ts,
      lastTimestamp: r.last_ts,
    }));
  }
}

function prepareStatements(raw: Database.Database) {
  return {
    last: raw.prepare<[string], { id: number; reason: string; message: string; type: string }>(
      "SELECT id, reason, message, type FROM events WHERE uid = ? ORDER BY id DESC LIMIT 1",
    ),
    repeat: raw.prepare<[string, number]>("UPDATE events SET count = count + 1, last_ts = ? WHERE id = ?"),
    insert: raw.prepare<
      [string, string, string, string, string, string, string, string, string],
      { id: number }
    >(
      "INSERT INTO events (kind, project, name, uid, type, reason, message, count, first_ts, last_ts) " +
        "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING id",
    ),
    prune: raw.prepare<[string, number]>("DELETE FROM events WHERE uid = ? AND id <= ?"),
  };
}

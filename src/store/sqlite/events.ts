import type { Kysely } from "kysely";
import type { EventRecorder, EventRef, ObjectEvent } from "../port.js";
import type { Schema } from "./db.js";

/** Keeps at most this many events per object; older ones are pruned on write. */
const PER_OBJECT = 50;

export class SqliteEventRecorder implements EventRecorder {
  constructor(
    private readonly db: Kysely<Schema>,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async record(ref: EventRef, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const ts = this.now().toISOString();
    const last = await this.db
      .selectFrom("events")
      .select(["id", "reason", "message", "type"])
      .where("uid", "=", ref.uid)
      .orderBy("id", "desc")
      .limit(1)
      .executeTakeFirst();
    if (last && last.reason === reason && last.message === message && last.type === type) {
      await this.db
        .updateTable("events")
        .set((eb) => ({ count: eb("count", "+", 1), last_ts: ts }))
        .where("id", "=", last.id)
        .execute();
      return;
    }
    const { id } = await this.db
      .insertInto("events")
      .values({ ...ref, type, reason, message, count: 1, first_ts: ts, last_ts: ts })
      .returning("id")
      .executeTakeFirstOrThrow();
    await this.db
      .deleteFrom("events")
      .where("uid", "=", ref.uid)
      .where("id", "<=", id - PER_OBJECT)
      .execute();
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

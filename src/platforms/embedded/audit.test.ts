import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AuditEntry } from "../../ports/audit.js";
import { SqliteAuditLog } from "./audit.js";
import { type OpenedDatabase, openSqlite } from "./db.js";

const HOUR = 3_600_000;

function entry(over: Partial<AuditEntry> = {}): AuditEntry {
  return {
    time: Date.now(),
    principal: { id: "t1", name: "alice", role: "editor", project: "a" },
    verb: "create",
    method: "POST",
    path: "/apis/loom.dev/v1alpha1/projects/a/trainingjobs",
    object: { kind: "trainingjobs", project: "a", name: "job1" },
    source: { address: "127.0.0.1", userAgent: "loom-cli" },
    status: 201,
    allowed: true,
    ...over,
  };
}

describe("SqliteAuditLog", () => {
  let database: OpenedDatabase;
  let log: SqliteAuditLog | undefined;

  beforeEach(async () => {
    database = await openSqlite(":memory:");
  });
  afterEach(async () => {
    await log?.close();
    log = undefined;
    await database.close();
  });

  it("records entries and lists them back, oldest first, every field kept", async () => {
    log = new SqliteAuditLog(database.db);
    const created = entry();
    const refused = entry({
      principal: undefined,
      verb: "delete",
      method: "DELETE",
      path: "/apis/loom.dev/v1alpha1/projects/b/trainingjobs/x",
      object: { kind: "trainingjobs", project: "b", name: "x", subresource: "status" },
      source: { address: "10.0.0.9" },
      status: 401,
      allowed: false,
      reason: "missing bearer token",
    });
    log.record(created);
    log.record(refused);
    const items = await log.list({});
    expect(items.map(({ id: _, ...rest }) => rest)).toEqual([created, refused]);
    expect(items[0]!.id).toBeLessThan(items[1]!.id);
    expect(log.counts()).toEqual({ written: 2, dropped: 0 });
  });

  it("filters by project (the object's, or the token's), by time, and keeps the newest `limit`", async () => {
    log = new SqliteAuditLog(database.db);
    const now = Date.now();
    log.record(entry({ time: now - 3 * HOUR, object: { kind: "trainingjobs", project: "a", name: "old" } }));
    log.record(entry({ object: { kind: "trainingjobs", project: "a", name: "new" } }));
    log.record(
      entry({
        principal: { id: "t2", name: "bob", role: "admin" },
        object: { kind: "sweeps", project: "b" },
      }),
    );
    // A token of project a refused on project b: in both projects' views.
    log.record(
      entry({ object: { kind: "trainingjobs", project: "b", name: "probe" }, status: 403, allowed: false }),
    );
    const names = async (q: Parameters<SqliteAuditLog["list"]>[0]) =>
      (await log!.list(q)).map((e) => e.object.name ?? e.object.kind);
    expect(await names({ project: "a" })).toEqual(["old", "new", "probe"]);
    expect(await names({ project: "b" })).toEqual(["sweeps", "probe"]);
    expect(await names({ project: "c" })).toEqual([]);
    expect(await names({ since: now - HOUR })).toEqual(["new", "sweeps", "probe"]);
    expect(await names({ limit: 2 })).toEqual(["sweeps", "probe"]);
  });

  it("writes in batches off the caller's path: nothing is stored until the batch is due", async () => {
    log = new SqliteAuditLog(database.db, { flushMs: 60_000, batchRows: 3 });
    const stored = async () =>
      (await database.db
        .selectFrom("audit")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .executeTakeFirst())!.n;
    log.record(entry());
    log.record(entry());
    expect(await stored()).toBe(0);
    log.record(entry()); // the third fills the batch
    await log.flush();
    expect(await stored()).toBe(3);
    log.record(entry());
    await log.close(); // close writes what is queued
    expect(await stored()).toBe(4);
    log.record(entry()); // after close: dropped, counted
    expect(log.counts()).toEqual({ written: 4, dropped: 1 });
  });

  it("drops and counts entries beyond the queue's bound instead of growing without limit", async () => {
    log = new SqliteAuditLog(database.db, { flushMs: 60_000, batchRows: 1000, maxQueued: 5 });
    for (let i = 0; i < 8; i++) log.record(entry());
    await log.flush();
    expect(log.counts()).toEqual({ written: 5, dropped: 3 });
  });

  it("prunes entries older than the retention and beyond the row cap", async () => {
    let now = Date.now();
    log = new SqliteAuditLog(database.db, { maxAgeMs: 24 * HOUR, maxRows: 3, now: () => now });
    log.record(entry({ time: now - 48 * HOUR, object: { kind: "k", name: "ancient" } }));
    for (const name of ["n1", "n2", "n3", "n4"])
      log.record(entry({ time: now, object: { kind: "k", name } }));
    await log.flush();
    await log.prune();
    expect((await log.list({})).map((e) => e.object.name)).toEqual(["n2", "n3", "n4"]);
    now += 25 * HOUR;
    await log.prune();
    expect(await log.list({})).toEqual([]);
  });

  it("a batch that fails to write is counted as dropped and reported, and the log goes on", async () => {
    const errors: unknown[] = [];
    log = new SqliteAuditLog(database.db, { onError: (err) => errors.push(err) });
    // A value SQLite cannot bind makes the batch fail inside the writer's transaction.
    log.record(entry({ status: { bad: true } as unknown as number }));
    await log.flush();
    expect(log.counts()).toEqual({ written: 0, dropped: 1 });
    expect(errors).toHaveLength(1);
    log.record(entry());
    expect(await log.list({})).toHaveLength(1);
  });
});

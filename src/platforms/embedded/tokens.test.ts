import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type OpenedDatabase, openSqlite } from "./db.js";
import { SqliteTokenStore } from "./tokens.js";

describe("SqliteTokenStore", () => {
  let database: OpenedDatabase;
  let clock: number;
  let tokens: SqliteTokenStore;
  beforeEach(async () => {
    database = await openSqlite(":memory:");
    clock = Date.parse("2026-01-01T00:00:00Z");
    tokens = new SqliteTokenStore(database.db, { now: () => new Date(clock) });
  });
  afterEach(() => database.close());

  it("a token with a ttl verifies until it expires, then never again", async () => {
    const { token, info } = await tokens.create("ci", "editor", { ttlSeconds: 30 });
    expect(info.expiresAt).toBe("2026-01-01T00:00:30.000Z");
    expect(await tokens.verify(token)).toMatchObject({ name: "ci", expiresAt: info.expiresAt });
    clock += 29_999;
    expect(await tokens.verify(token)).toBeDefined();
    clock += 1;
    expect(await tokens.verify(token)).toBeUndefined();
    // Listed as what it was (the CLI shows "expired"), pruned a day later.
    expect((await tokens.list()).map((t) => t.id)).toEqual([info.id]);
    clock += 25 * 3600_000;
    await tokens.create("other", "viewer");
    expect((await tokens.list()).map((t) => t.name)).toEqual(["other"]);
  });

  it("revoke removes one token by id; an unknown id is false", async () => {
    const a = await tokens.create("a", "viewer");
    const b = await tokens.create("b", "viewer");
    expect(await tokens.revoke(a.info.id)).toBe(true);
    expect(await tokens.revoke(a.info.id)).toBe(false);
    expect(await tokens.verify(a.token)).toBeUndefined();
    expect(await tokens.verify(b.token)).toBeDefined();
  });

  it("lists tokens or a project's API keys, never a secret or its hash, with last use", async () => {
    const admin = await tokens.create("admin", "admin");
    clock += 1; // listed by creation time
    const scoped = await tokens.create("dev", "editor", { project: "p1", projectUid: "u1" });
    const key = await tokens.create("app", "viewer", { project: "p1", apiKey: { services: ["s"] } });
    await tokens.create("other-key", "viewer", "p2", {});
    clock += 999;
    await tokens.verify(admin.token);
    const all = await tokens.list();
    expect(all.map((t) => t.name)).toEqual(["admin", "dev"]);
    expect(all[0]).toMatchObject({
      createdAt: "2026-01-01T00:00:00.000Z",
      lastUsedAt: "2026-01-01T00:00:01.000Z",
    });
    expect(all[1]).toMatchObject({ project: "p1", projectUid: "u1" });
    expect(await tokens.list({ project: "p1" })).toHaveLength(1);
    const keys = await tokens.list({ project: "p1", apiKeys: true });
    expect(keys).toMatchObject([{ id: key.info.id, apiKey: { services: ["s"] } }]);
    const text = JSON.stringify([...all, ...keys]);
    for (const secret of [admin.token, scoped.token, key.token]) expect(text).not.toContain(secret);
    expect(text).not.toMatch(/[0-9a-f]{64}/);
  });

  it("a workload's tokens carry it and go with revokeWorkload", async () => {
    const ref = { kind: "TrainingJob", project: "p1", name: "j", uid: "w-1" };
    const first = await tokens.create("trainingjob/j", "editor", { project: "p1", workload: ref });
    const second = await tokens.create("trainingjob/j", "editor", { project: "p1", workload: ref });
    const other = await tokens.create("x", "editor", {
      project: "p1",
      workload: { ...ref, uid: "w-2" },
    });
    expect(await tokens.verify(first.token)).toMatchObject({ workload: ref, role: "editor", project: "p1" });
    expect(await tokens.revokeWorkload("w-1")).toBe(2);
    expect(await tokens.verify(first.token)).toBeUndefined();
    expect(await tokens.verify(second.token)).toBeUndefined();
    expect(await tokens.verify(other.token)).toBeDefined();
  });

  it("revokeWorkload with apiKeys removes the workload's API keys and leaves its token", async () => {
    const ref = { kind: "TrainingJob", project: "p1", name: "j", uid: "w-1" };
    const token = await tokens.create("trainingjob/j", "editor", { project: "p1", workload: ref });
    const key = await tokens.create("trainingjob/j", "viewer", { project: "p1", apiKey: {}, workload: ref });
    const othersKey = await tokens.create("trainingjob/k", "viewer", {
      project: "p1",
      apiKey: {},
      workload: { ...ref, name: "k", uid: "w-2" },
    });
    expect(await tokens.revokeWorkload("w-1", { apiKeys: true })).toBe(1);
    expect(await tokens.verify(key.token)).toBeUndefined();
    expect(await tokens.verify(token.token)).toBeDefined();
    expect(await tokens.verify(othersKey.token)).toBeDefined();
  });
});

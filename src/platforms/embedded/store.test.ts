import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AlreadyExistsError, ConflictError, ExpiredError, NotFoundError } from "../../api/errors.js";
import type { Resource } from "../../api/meta.js";
import type { StopWatch, WatchEvent } from "../../ports/store.js";
import { type OpenedDatabase, openSqlite } from "./db.js";
import { SqliteResourceStore, type SqliteStoreOptions } from "./store.js";

const NOW = new Date("2024-05-06T07:08:09.000Z");

function tj(
  name: string,
  opts: { project?: string; labels?: Record<string, string>; spec?: unknown } = {},
): Resource {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: {
      name,
      project: opts.project ?? "default",
      labels: opts.labels,
      uid: "",
      resourceVersion: "",
      generation: 0,
      creationTimestamp: "",
    },
    spec: opts.spec ?? { command: ["train"] },
  };
}

function project(name: string): Resource {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "Project",
    metadata: { name, uid: "", resourceVersion: "", generation: 0, creationTimestamp: "" },
    spec: {},
  };
}

async function until(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

const rvOf = (o: Resource) => Number(o.metadata.resourceVersion);
const rvOfEvent = (e: WatchEvent) => Number(e.object.metadata.resourceVersion);
const summary = (events: WatchEvent[]) => events.map((e) => `${e.type} ${e.object.metadata.name}`);

describe("SqliteResourceStore", () => {
  let database: OpenedDatabase;
  let store: SqliteResourceStore;
  let stops: StopWatch[];
  let uids: number;
  /** Called once, from inside the next write's transaction (the store reads the clock there). */
  let onNow: (() => void) | undefined;

  async function open(opts: SqliteStoreOptions = {}) {
    database = await openSqlite(":memory:");
    const now = () => {
      const hook = onNow;
      onNow = undefined;
      hook?.();
      return NOW;
    };
    store = await SqliteResourceStore.open(database.db, { now, newUid: () => `uid-${++uids}`, ...opts });
  }

  /** Starts a watch that collects its events into the returned array. */
  async function collect(
    kind: string,
    opts: Parameters<SqliteResourceStore["watch"]>[1],
  ): Promise<WatchEvent[]> {
    const events: WatchEvent[] = [];
    stops.push(await store.watch(kind, opts, (e) => events.push(e)));
    return events;
  }

  beforeEach(async () => {
    stops = [];
    uids = 0;
    onNow = undefined;
    await open();
  });

  afterEach(async () => {
    for (const stop of stops) stop();
    await store.close();
    await database.close();
  });

  describe("create and get", () => {
    it("assigns uid, resourceVersion, generation 1 and creationTimestamp", async () => {
      const input = tj("a");
      input.metadata.uid = "client-uid";
      input.metadata.resourceVersion = "999";
      input.metadata.generation = 5;
      input.metadata.deletionTimestamp = "2020-01-01T00:00:00.000Z";
      const created = await store.create(input);
      expect(created.metadata).toMatchObject({
        name: "a",
        project: "default",
        uid: "uid-1",
        generation: 1,
        creationTimestamp: NOW.toISOString(),
      });
      expect(created.metadata.resourceVersion).toMatch(/^[1-9][0-9]*$/);
      expect(created.metadata.resourceVersion).not.toBe("999");
      expect(created.metadata.deletionTimestamp).toBeUndefined();
      expect(await store.get("TrainingJob", "default", "a")).toEqual(created);
    });

    it("uses a fresh random uid by default", async () => {
      const s = await SqliteResourceStore.open(database.db);
      const a = await s.create(tj("x"));
      const b = await s.create(tj("y"));
      expect(a.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
      expect(a.metadata.uid).not.toBe(b.metadata.uid);
      await s.close();
    });

    it("rejects a duplicate with AlreadyExistsError but allows the name in another project or kind", async () => {
      await store.create(tj("a"));
      await expect(store.create(tj("a"))).rejects.toBeInstanceOf(AlreadyExistsError);
      await expect(store.create(tj("a"))).rejects.toThrow(/default\/a/);
      await store.create(tj("a", { project: "other" }));
      await store.create(project("a"));
      expect((await store.list("TrainingJob")).items).toHaveLength(2);
    });

    it("throws NotFoundError naming the object and project", async () => {
      await store.create(tj("a"));
      await expect(store.get("TrainingJob", "default", "b")).rejects.toBeInstanceOf(NotFoundError);
      await expect(store.get("TrainingJob", "other", "a")).rejects.toThrow(
        /"a" not found in project "other"/,
      );
      await expect(store.get("Project", "", "a")).rejects.toBeInstanceOf(NotFoundError);
    });

    it("gives every write a strictly greater resourceVersion, across kinds", async () => {
      const rvs: number[] = [];
      rvs.push(rvOf(await store.create(tj("a"))));
      rvs.push(rvOf(await store.create(project("p"))));
      const b = await store.create(tj("b", { project: "p" }));
      rvs.push(rvOf(b));
      rvs.push(rvOf(await store.updateStatus({ ...b, status: { phase: "Running" } })));
      rvs.push(
        rvOf(await store.update({ ...(await store.get("Project", "", "p")), spec: { description: "x" } })),
      );
      rvs.push(rvOf(await store.delete("TrainingJob", "default", "a")));
      for (let i = 1; i < rvs.length; i++) expect(rvs[i]).toBeGreaterThan(rvs[i - 1]!);
    });
  });

  describe("update", () => {
    it("rejects a stale resourceVersion with ConflictError and keeps the stored object", async () => {
      const v1 = await store.create(tj("a"));
      const v2 = await store.update({ ...v1, spec: { command: ["v2"] } });
      const stale = { ...v1, spec: { command: ["stale"] } };
      await expect(store.update(stale)).rejects.toBeInstanceOf(ConflictError);
      await expect(store.update(stale)).rejects.toThrow(
        new RegExp(`resourceVersion ${v2.metadata.resourceVersion}`),
      );
      expect(await store.get("TrainingJob", "default", "a")).toEqual(v2);
    });

    it("succeeds without a resourceVersion (last write wins)", async () => {
      const v1 = await store.create(tj("a"));
      await store.update({ ...v1, spec: { command: ["v2"] } });
      const v3 = await store.update({
        ...v1,
        metadata: { ...v1.metadata, resourceVersion: "" },
        spec: { command: ["v3"] },
      });
      expect(v3.spec).toEqual({ command: ["v3"] });
      expect((await store.get("TrainingJob", "default", "a")).spec).toEqual({ command: ["v3"] });
    });

    it("throws NotFoundError for an object that does not exist", async () => {
      await expect(store.update(tj("ghost"))).rejects.toBeInstanceOf(NotFoundError);
    });

    it("bumps generation on spec changes only", async () => {
      const v1 = await store.create(tj("a", { spec: { command: ["x"], env: { A: "1", B: "2" } } }));
      const labelled = await store.update({ ...v1, metadata: { ...v1.metadata, labels: { team: "nlp" } } });
      expect(labelled.metadata.generation).toBe(1);
      expect(labelled.metadata.labels).toEqual({ team: "nlp" });
      expect(rvOf(labelled)).toBeGreaterThan(rvOf(v1));
      // Same spec with keys in another order is not a change.
      const reordered = await store.update({
        ...labelled,
        spec: { env: { B: "2", A: "1" }, command: ["x"] },
      });
      expect(reordered.metadata.generation).toBe(1);
      const changed = await store.update({ ...labelled, spec: { command: ["y"] } });
      expect(changed.metadata.generation).toBe(2);
      const again = await store.update({ ...changed, spec: { command: ["z"] } });
      expect(again.metadata.generation).toBe(3);
    });

    it("keeps the resourceVersion and emits nothing for a no-op update", async () => {
      const v1 = await store.create(tj("a", { labels: { x: "1" } }));
      const events = await collect("TrainingJob", { resourceVersion: v1.metadata.resourceVersion });
      const same = await store.update({ ...v1 });
      expect(same.metadata.resourceVersion).toBe(v1.metadata.resourceVersion);
      expect(same).toEqual(v1);
      const marker = await store.create(tj("marker"));
      await until(() => events.length > 0);
      expect(summary(events)).toEqual(["ADDED marker"]);
      expect(rvOf(marker)).toBe(rvOf(v1) + 1);
    });

    it("keeps status, uid and creationTimestamp, and ignores server-owned fields sent by the client", async () => {
      const v1 = await store.create(tj("a"));
      const withStatus = await store.updateStatus({ ...v1, status: { phase: "Running" } });
      const next = await store.update({
        ...withStatus,
        metadata: {
          ...withStatus.metadata,
          uid: "forged",
          generation: 99,
          creationTimestamp: "1999-01-01T00:00:00Z",
        },
        spec: { command: ["y"] },
        status: { phase: "Failed" },
      });
      expect(next.status).toEqual({ phase: "Running" });
      expect(next.metadata).toMatchObject({
        uid: v1.metadata.uid,
        generation: 2,
        creationTimestamp: NOW.toISOString(),
      });
    });
  });

  describe("updateStatus", () => {
    it("replaces status only, leaving spec and generation alone", async () => {
      const v1 = await store.create(tj("a"));
      const next = await store.updateStatus({
        ...v1,
        metadata: { ...v1.metadata, labels: { sneaky: "yes" } },
        spec: { command: ["changed"] },
        status: { phase: "Running", attempts: 1 },
      });
      expect(next.spec).toEqual({ command: ["train"] });
      expect(next.metadata.generation).toBe(1);
      expect(next.metadata.labels).toBeUndefined();
      expect(next.status).toEqual({ phase: "Running", attempts: 1 });
      expect(rvOf(next)).toBeGreaterThan(rvOf(v1));
      expect(await store.get("TrainingJob", "default", "a")).toEqual(next);
    });

    it("rejects a stale resourceVersion and keeps the version for an unchanged status", async () => {
      const v1 = await store.create(tj("a"));
      const v2 = await store.updateStatus({ ...v1, status: { phase: "Running" } });
      await expect(store.updateStatus({ ...v1, status: { phase: "Failed" } })).rejects.toBeInstanceOf(
        ConflictError,
      );
      const same = await store.updateStatus({ ...v2, status: { phase: "Running" } });
      expect(same.metadata.resourceVersion).toBe(v2.metadata.resourceVersion);
    });
  });

  describe("list", () => {
    it("filters by project and label selector, sorted by project and name", async () => {
      await store.create(tj("b", { labels: { env: "prod" } }));
      await store.create(tj("a", { labels: { env: "dev" } }));
      await store.create(tj("c", { project: "other", labels: { env: "prod" } }));
      await store.create(project("default"));
      const names = (r: { items: Resource[] }) =>
        r.items.map((o) => `${o.metadata.project}/${o.metadata.name}`);
      expect(names(await store.list("TrainingJob"))).toEqual(["default/a", "default/b", "other/c"]);
      expect(names(await store.list("TrainingJob", { project: "default" }))).toEqual([
        "default/a",
        "default/b",
      ]);
      expect(names(await store.list("TrainingJob", { project: "nope" }))).toEqual([]);
      expect(names(await store.list("TrainingJob", { labelSelector: "env=prod" }))).toEqual([
        "default/b",
        "other/c",
      ]);
      expect(
        names(await store.list("TrainingJob", { project: "other", labelSelector: "env!=prod" })),
      ).toEqual([]);
      expect((await store.list("Project")).items.map((o) => o.metadata.name)).toEqual(["default"]);
    });

    it("returns the store's latest resourceVersion, whatever the kind", async () => {
      expect((await store.list("TrainingJob")).resourceVersion).toBe("0");
      const a = await store.create(tj("a"));
      expect((await store.list("TrainingJob")).resourceVersion).toBe(a.metadata.resourceVersion);
      const p = await store.create(project("p"));
      expect((await store.list("TrainingJob")).resourceVersion).toBe(p.metadata.resourceVersion);
      const gone = await store.delete("TrainingJob", "default", "a");
      expect((await store.list("TrainingJob")).resourceVersion).toBe(gone.metadata.resourceVersion);
    });

    it("rejects an invalid label selector", async () => {
      await expect(store.list("TrainingJob", { labelSelector: "env in prod" })).rejects.toThrow(
        /invalid label selector/,
      );
    });
  });

  describe("delete", () => {
    it("deletes an object without finalizers at once and emits DELETED", async () => {
      const v1 = await store.create(tj("a"));
      const events = await collect("TrainingJob", { resourceVersion: v1.metadata.resourceVersion });
      const deleted = await store.delete("TrainingJob", "default", "a");
      expect(rvOf(deleted)).toBeGreaterThan(rvOf(v1));
      await expect(store.get("TrainingJob", "default", "a")).rejects.toBeInstanceOf(NotFoundError);
      await until(() => events.length === 1);
      expect(events[0]).toEqual({ type: "DELETED", object: deleted });
      await expect(store.delete("TrainingJob", "default", "a")).rejects.toBeInstanceOf(NotFoundError);
    });

    it("honours a resourceVersion precondition", async () => {
      const v1 = await store.create(tj("a"));
      await store.updateStatus({ ...v1, status: { phase: "Running" } });
      await expect(
        store.delete("TrainingJob", "default", "a", { resourceVersion: v1.metadata.resourceVersion }),
      ).rejects.toBeInstanceOf(ConflictError);
      await store.get("TrainingJob", "default", "a");
    });

    it("with finalizers marks deletionTimestamp; removing the last finalizer deletes", async () => {
      const created = await store.create({
        ...tj("a"),
        metadata: { ...tj("a").metadata, finalizers: ["loom.dev/cleanup", "other"] },
      });
      expect(created.metadata.finalizers).toEqual(["loom.dev/cleanup", "other"]);
      const events = await collect("TrainingJob", { resourceVersion: created.metadata.resourceVersion });

      const marked = await store.delete("TrainingJob", "default", "a");
      expect(marked.metadata.deletionTimestamp).toBe(NOW.toISOString());
      expect(await store.get("TrainingJob", "default", "a")).toEqual(marked);
      // Deleting again changes nothing.
      const again = await store.delete("TrainingJob", "default", "a");
      expect(again.metadata.resourceVersion).toBe(marked.metadata.resourceVersion);

      const one = await store.update({ ...marked, metadata: { ...marked.metadata, finalizers: ["other"] } });
      expect(one.metadata.deletionTimestamp).toBe(NOW.toISOString());
      await store.get("TrainingJob", "default", "a");

      const gone = await store.update({ ...one, metadata: { ...one.metadata, finalizers: [] } });
      await expect(store.get("TrainingJob", "default", "a")).rejects.toBeInstanceOf(NotFoundError);
      await until(() => events.length === 3);
      expect(events.map((e) => e.type)).toEqual(["MODIFIED", "MODIFIED", "DELETED"]);
      expect(events[2]!.object).toEqual(gone);
    });
  });

  describe("watch", () => {
    it("from a list's resourceVersion sees exactly the later changes, in order", async () => {
      await store.create(tj("a"));
      const b = await store.create(tj("b"));
      const listed = await store.list("TrainingJob");
      // Changes made after the list but before the watch starts must be replayed.
      await store.create(tj("c"));
      await store.create(project("noise"));
      await store.updateStatus({ ...b, status: { phase: "Running" } });
      const events = await collect("TrainingJob", { resourceVersion: listed.resourceVersion });
      // ... and live changes after it must follow without gaps or duplicates.
      await store.delete("TrainingJob", "default", "a");
      await store.create(tj("d", { project: "other" }));
      await until(() => events.length >= 4);
      await new Promise((r) => setTimeout(r, 20));
      expect(summary(events)).toEqual(["ADDED c", "MODIFIED b", "DELETED a", "ADDED d"]);
      const rvs = events.map((e) => rvOf(e.object));
      expect(rvs[0]).toBeGreaterThan(Number(listed.resourceVersion));
      for (let i = 1; i < rvs.length; i++) expect(rvs[i]).toBeGreaterThan(rvs[i - 1]!);
      expect(events[1]!.object.status).toEqual({ phase: "Running" });
    });

    it("without a resourceVersion sends ADDED for what exists, then live changes", async () => {
      await store.create(tj("b"));
      await store.create(tj("a"));
      await store.create(tj("x", { project: "other" }));
      const events = await collect("TrainingJob", { project: "default" });
      expect(summary(events)).toEqual(["ADDED a", "ADDED b"]);
      await store.create(tj("c"));
      await store.create(tj("y", { project: "other" }));
      await store.delete("TrainingJob", "default", "b");
      await until(() => events.length >= 4);
      expect(summary(events)).toEqual(["ADDED a", "ADDED b", "ADDED c", "DELETED b"]);
    });

    it.each([
      ["from a revision", true],
      ["without a revision", false],
    ])("%s, neither loses nor repeats a change committed while it starts", async (_name, fromRevision) => {
      await store.create(tj("old"));
      const listed = await store.list("TrainingJob");
      // Start the watch from inside the next write's transaction: it subscribes before that write
      // commits and announces itself, but its replay (or initial list) reads after the commit,
      // so the change reaches it twice and must be delivered once.
      let started: Promise<WatchEvent[]> | undefined;
      onNow = () => {
        started = collect("TrainingJob", fromRevision ? { resourceVersion: listed.resourceVersion } : {});
      };
      const racer = await store.create(tj("racer"));
      expect(started).toBeDefined();
      const events = await started!;
      const after = await store.create(tj("after"));
      const expected = fromRevision
        ? [racer, after]
        : [{ ...(await store.get("TrainingJob", "default", "old")) }, racer, after];
      await until(() => events.length >= expected.length);
      await new Promise((r) => setTimeout(r, 20));
      expect(events).toEqual(expected.map((object) => ({ type: "ADDED", object })));
    });

    it("filters by label selector", async () => {
      await store.create(tj("a", { labels: { env: "prod" } }));
      await store.create(tj("b", { labels: { env: "dev" } }));
      const events = await collect("TrainingJob", { labelSelector: "env=prod" });
      await store.create(tj("c", { labels: { env: "prod" } }));
      await store.create(tj("d"));
      await until(() => events.length >= 2);
      await new Promise((r) => setTimeout(r, 20));
      expect(summary(events)).toEqual(["ADDED a", "ADDED c"]);
    });

    it("stops delivering once stopped", async () => {
      const events: WatchEvent[] = [];
      const stop = await store.watch("TrainingJob", {}, (e) => events.push(e));
      await store.create(tj("a"));
      stop();
      stop();
      await store.create(tj("b"));
      await new Promise((r) => setTimeout(r, 20));
      expect(summary(events)).toEqual(["ADDED a"]);
    });

    it("rejects a revision older than the retained history with ExpiredError", async () => {
      await store.close();
      await database.close();
      await open({ historySize: 10 });
      // 1000 writes (rv 1..1000) trigger one compaction, keeping rv 991..1000.
      let obj = await store.create(tj("a"));
      for (let i = 1; i < 1000; i++) obj = await store.updateStatus({ ...obj, status: { attempts: i } });
      expect(obj.metadata.resourceVersion).toBe("1000");
      await expect(store.watch("TrainingJob", { resourceVersion: "1" }, () => {})).rejects.toBeInstanceOf(
        ExpiredError,
      );
      await expect(store.watch("TrainingJob", { resourceVersion: "989" }, () => {})).rejects.toThrow(
        /too old/,
      );
      const events = await collect("TrainingJob", { resourceVersion: "990" });
      await until(() => events.length === 10);
      expect(events.map(rvOfEvent)).toEqual(Array.from({ length: 10 }, (_, i) => 991 + i));
      // A list's revision is always recent enough.
      const listed = await store.list("TrainingJob");
      await collect("TrainingJob", { resourceVersion: listed.resourceVersion });
    });

    it("rejects a malformed resourceVersion", async () => {
      await expect(store.watch("TrainingJob", { resourceVersion: "abc" }, () => {})).rejects.toThrow(
        /invalid resourceVersion "abc"/,
      );
    });

    it("delivers 200 concurrent creates with distinct resourceVersions, in order", async () => {
      const listed = await store.list("TrainingJob");
      const events = await collect("TrainingJob", { resourceVersion: listed.resourceVersion });
      const created = await Promise.all(Array.from({ length: 200 }, (_, i) => store.create(tj(`job-${i}`))));
      const rvs = created.map(rvOf);
      expect(new Set(rvs).size).toBe(200);
      await until(() => events.length === 200);
      const seen = events.map(rvOfEvent);
      expect(seen).toEqual([...rvs].sort((a, b) => a - b));
      expect(new Set(events.map((e) => e.object.metadata.name)).size).toBe(200);
      expect(events.every((e) => e.type === "ADDED")).toBe(true);
    });
  });
});

describe("SqliteResourceStore on a file", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loom-store-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps objects, revisions and compaction across close and reopen", async () => {
    const file = join(dir, "sub", "loom.db");
    let database = await openSqlite(file);
    let store = await SqliteResourceStore.open(database.db, { historySize: 10 });
    let obj = await store.create(tj("a", { labels: { keep: "me" } }));
    for (let i = 1; i < 1000; i++) obj = await store.updateStatus({ ...obj, status: { attempts: i } });
    await store.create(project("p"));
    const before = await store.list("TrainingJob");
    await store.close();
    await database.close();

    database = await openSqlite(file);
    store = await SqliteResourceStore.open(database.db, { historySize: 10 });
    try {
      expect(await store.get("TrainingJob", "default", "a")).toEqual(obj);
      await store.get("Project", "", "p");
      const after = await store.list("TrainingJob");
      expect(after).toEqual(before);
      // The compaction point survives too: an old revision is still expired.
      await expect(store.watch("TrainingJob", { resourceVersion: "5" }, () => {})).rejects.toBeInstanceOf(
        ExpiredError,
      );
      const next = await store.create(tj("b"));
      expect(rvOf(next)).toBeGreaterThan(Number(after.resourceVersion));
    } finally {
      await store.close();
      await database.close();
    }
  });
});

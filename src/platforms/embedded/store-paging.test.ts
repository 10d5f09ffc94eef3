import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BadRequestError } from "../../api/errors.js";
import { decodeContinue, encodeContinue } from "../../api/listpage.js";
import type { Resource } from "../../api/meta.js";
import type { WatchEvent } from "../../ports/store.js";
import { type OpenedDatabase, openSqlite } from "./db.js";
import { SqliteResourceStore } from "./store.js";

function tj(name: string, project = "default", labels?: Record<string, string>): Resource {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name, project, labels, uid: "", resourceVersion: "", generation: 0, creationTimestamp: "" },
    spec: { command: ["train"] },
  };
}

/** Lists every page of a kind, as the console and a Kubernetes client do. */
async function allPages(store: SqliteResourceStore, limit: number, labelSelector?: string) {
  const pages: { names: string[]; rv: string }[] = [];
  let cont: string | undefined;
  do {
    const r = await store.list("TrainingJob", { limit, labelSelector, ...(cont ? { continue: cont } : {}) });
    pages.push({
      names: r.items.map((i) => `${i.metadata.project}/${i.metadata.name}`),
      rv: r.resourceVersion,
    });
    cont = r.continue;
  } while (cont);
  return pages;
}

/** Paged lists (limit and continue, as kube-apiserver pages them) over the SQLite store. */
describe("SqliteResourceStore paged list", () => {
  let database: OpenedDatabase;
  let store: SqliteResourceStore;

  beforeEach(async () => {
    database = await openSqlite(":memory:");
    store = await SqliteResourceStore.open(database.db, {});
    for (const p of ["a", "b"])
      for (let i = 0; i < 5; i++) await store.create(tj(`j${i}`, p, { odd: String(i % 2 === 1) }));
  });
  afterEach(async () => {
    await store.close();
    await database.close();
  });

  it("gives every item once, in order, across pages, each page reporting the first page's revision", async () => {
    const whole = (await store.list("TrainingJob")).items.map(
      (i) => `${i.metadata.project}/${i.metadata.name}`,
    );
    const pages = await allPages(store, 3);
    expect(pages.map((p) => p.names.length)).toEqual([3, 3, 3, 1]);
    expect(pages.flatMap((p) => p.names)).toEqual(whole);
    expect(new Set(pages.map((p) => p.rv)).size).toBe(1);
  });

  it("ends with no continue when the limit covers everything (exactly, too)", async () => {
    expect((await store.list("TrainingJob", { limit: 10 })).continue).toBeUndefined();
    expect((await store.list("TrainingJob", { limit: 50 })).items).toHaveLength(10);
  });

  it("pages a label-selected list by matches, not by rows", async () => {
    const pages = await allPages(store, 2, "odd=true");
    expect(pages.flatMap((p) => p.names)).toEqual(["a/j1", "a/j3", "b/j1", "b/j3"]);
    expect(pages.map((p) => p.names.length)).toEqual([2, 2]);
  });

  it("misses no change made while paging: the watch from the first page's revision replays it", async () => {
    const first = await store.list("TrainingJob", { limit: 4 });
    // Changes between pages: one created on a page already passed, one deleted on a page to come.
    await store.create(tj("a0", "a"));
    await store.delete("TrainingJob", "b", "j4");
    const seen = new Map<string, Resource>();
    for (const i of first.items) seen.set(`${i.metadata.project}/${i.metadata.name}`, i);
    let cont = first.continue;
    while (cont) {
      const r = await store.list("TrainingJob", { limit: 4, continue: cont });
      for (const i of r.items) seen.set(`${i.metadata.project}/${i.metadata.name}`, i);
      cont = r.continue;
    }
    const events: WatchEvent[] = [];
    const stop = await store.watch("TrainingJob", { resourceVersion: first.resourceVersion }, (e) =>
      events.push(e),
    );
    stop();
    for (const e of events) {
      const k = `${e.object.metadata.project}/${e.object.metadata.name}`;
      if (e.type === "DELETED") seen.delete(k);
      else seen.set(k, e.object);
    }
    const now = (await store.list("TrainingJob")).items.map(
      (i) => `${i.metadata.project}/${i.metadata.name}`,
    );
    expect([...seen.keys()].sort()).toEqual(now.sort());
  });

  it("refuses a continue token it did not give, saying what to do", async () => {
    await expect(store.list("TrainingJob", { limit: 2, continue: "not-a-token" })).rejects.toThrow(
      BadRequestError,
    );
    await expect(store.list("TrainingJob", { limit: 2, continue: "not-a-token" })).rejects.toThrow(
      /list again without it/,
    );
    expect(decodeContinue(encodeContinue({ rv: "7", project: "p", name: "n" }))).toEqual({
      rv: "7",
      project: "p",
      name: "n",
    });
  });
});

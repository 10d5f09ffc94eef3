import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { ExpiredError } from "../api/errors.js";
import type { Resource } from "../api/meta.js";
import { openSqlite } from "../platforms/embedded/db.js";
import { SqliteResourceStore } from "../platforms/embedded/store.js";
import type { ResourceStore, StopWatch, WatchEvent, WatchOptions } from "../ports/store.js";
import { Informer, storeSource } from "./informer.js";
import { createControllerMetrics } from "./metrics.js";

const log = pino({ level: "silent" });

function project(name: string): Resource {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "Project",
    metadata: { name } as Resource["metadata"],
    spec: {},
  };
}

async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await sleep(10);
  }
}

/** A store whose watch can be made to stall silently or to end with an error. */
class FlakyStore implements Partial<ResourceStore> {
  stall = false;
  lists = 0;
  private ends: ((err: Error) => void)[] = [];
  constructor(private readonly inner: ResourceStore) {}
  list(kind: string) {
    this.lists++;
    return this.inner.list(kind);
  }
  async watch(
    kind: string,
    opts: WatchOptions,
    onEvent: (e: WatchEvent) => void,
    onEnd?: (err: Error) => void,
  ): Promise<StopWatch> {
    if (onEnd) this.ends.push(onEnd);
    return this.inner.watch(kind, opts, (e) => {
      if (!this.stall) onEvent(e);
    });
  }
  expire() {
    for (const end of this.ends.splice(0)) end(new ExpiredError("too old"));
  }
}

describe("Informer", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
  });

  async function setup(opts: { relistMs?: number } = {}) {
    const { db, close } = await openSqlite(":memory:");
    const store = await SqliteResourceStore.open(db);
    const flaky = new FlakyStore(store);
    const seen: string[] = [];
    const informer = new Informer(
      storeSource(flaky as unknown as ResourceStore, "Project"),
      { onChange: (key, _o, type) => seen.push(`${type}:${key}`) },
      log,
      createControllerMetrics(new Registry()),
      { resyncMs: 60_000, relistMs: opts.relistMs, minBackoffMs: 5 },
    );
    cleanups.push(() => informer.stop(), close);
    return { store, flaky, informer, seen };
  }

  it("lists, then follows changes through the watch", async () => {
    const { store, informer, seen } = await setup();
    await store.create(project("a"));
    informer.start();
    await informer.waitForSync();
    expect(informer.get("a")).toBeDefined();
    await store.create(project("b"));
    await until(() => informer.get("b") !== undefined);
    await store.delete("Project", "", "a");
    await until(() => informer.get("a") === undefined);
    expect(seen).toEqual(["ADDED:a", "ADDED:b", "DELETED:a"]);
  });

  it("relists when the watch ends (history expired) and sees what changed meanwhile", async () => {
    const { store, flaky, informer } = await setup();
    informer.start();
    await informer.waitForSync();
    flaky.stall = true;
    await store.create(project("missed"));
    await sleep(20);
    expect(informer.get("missed")).toBeUndefined();
    flaky.stall = false;
    flaky.expire();
    await until(() => informer.get("missed") !== undefined);
    expect(flaky.lists).toBe(2);
  });

  it("relists periodically, so a watch that stalls silently is not fatal", async () => {
    const { store, flaky, informer } = await setup({ relistMs: 100 });
    informer.start();
    await informer.waitForSync();
    flaky.stall = true;
    await store.create(project("silent"));
    await until(() => flaky.lists >= 2 && informer.get("silent") !== undefined, 2000);
  });
});

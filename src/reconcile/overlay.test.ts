import { describe, expect, it } from "vitest";
import type { Resource } from "../api/meta.js";
import { WriteOverlay } from "./overlay.js";

function obj(name: string, resourceVersion: number, uid = `uid-${name}`, phase = "Pending"): Resource {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: {
      name,
      project: "p",
      uid,
      resourceVersion: String(resourceVersion),
      generation: 1,
      creationTimestamp: "",
    },
    spec: {},
    status: { phase },
  };
}

const byName = (o: Resource) => `${o.metadata.project}/${o.metadata.name}`;

describe("WriteOverlay.get (one object)", () => {
  it("gives the cache's copy when this loop wrote nothing", () => {
    const overlay = new WriteOverlay(byName);
    const cached = obj("a", 3);
    expect(overlay.get("p/a", cached)).toBe(cached);
  });

  it("gives this loop's write while the cache is older, then the cache once it caught up", () => {
    const overlay = new WriteOverlay(byName);
    const mine = overlay.remember(obj("a", 5, "uid-a", "Running"));
    expect(overlay.get("p/a", obj("a", 4))).toBe(mine);
    const caughtUp = obj("a", 5, "uid-a", "Running");
    expect(overlay.get("p/a", caughtUp)).toBe(caughtUp);
    // Dropped once seen: an older cache copy (a relist gone back in time) is no longer overlaid.
    const older = obj("a", 4);
    expect(overlay.get("p/a", older)).toBe(older);
  });

  it("prefers the cache when it is newer than the write (another writer came after us)", () => {
    const overlay = new WriteOverlay(byName);
    overlay.remember(obj("a", 5));
    const theirs = obj("a", 9, "uid-a", "Failed");
    expect(overlay.get("p/a", theirs)).toBe(theirs);
  });

  it("never gives a write of an earlier namesake (another uid), whatever its version", () => {
    const overlay = new WriteOverlay(byName);
    overlay.remember(obj("a", 50, "old-uid"));
    const remade = obj("a", 7, "new-uid");
    expect(overlay.get("p/a", remade)).toBe(remade);
  });

  it("gives nothing when the cache has nothing, and forgets the write", () => {
    const overlay = new WriteOverlay(byName);
    overlay.remember(obj("a", 5));
    expect(overlay.get("p/a", undefined)).toBeUndefined();
    const older = obj("a", 4);
    expect(overlay.get("p/a", older)).toBe(older);
  });

  it("forget drops the write", () => {
    const overlay = new WriteOverlay(byName);
    overlay.remember(obj("a", 5));
    overlay.forget("p/a");
    const older = obj("a", 4);
    expect(overlay.get("p/a", older)).toBe(older);
  });
});

describe("WriteOverlay.list (every cached object)", () => {
  const byUid = (o: Resource) => o.metadata.uid;

  it("overlays each listed object with this loop's newer write, keyed as the loop chooses", () => {
    const overlay = new WriteOverlay(byUid);
    const mine = overlay.remember(obj("b", 8, "uid-b", "Running"));
    const a = obj("a", 2);
    expect(overlay.list([a, obj("b", 6)])).toEqual([a, mine]);
  });

  it("drops writes for objects the cache no longer lists", () => {
    const overlay = new WriteOverlay(byUid);
    overlay.remember(obj("b", 8, "uid-b", "Running"));
    expect(overlay.list([obj("a", 2)]).map((o) => o.metadata.name)).toEqual(["a"]);
    // b shows up again with an old version: the dropped write no longer hides it.
    const b = obj("b", 6);
    expect(overlay.list([b])).toEqual([b]);
    expect(overlay.list([b])[0]).toBe(b);
  });
});

describe("WriteOverlay own writes (echoes through the watch)", () => {
  it("tells this loop's latest write from anyone else's, by uid and version", () => {
    const overlay = new WriteOverlay(byName);
    overlay.remember(obj("a", 8));
    expect(overlay.isOwn("p/a", obj("a", 8))).toBe(true);
    expect(overlay.isOwn("p/a", obj("a", 9))).toBe(false); // someone wrote after us
    expect(overlay.isOwn("p/a", obj("a", 8, "uid-other"))).toBe(false); // a namesake made again
    expect(overlay.isOwn("p/b", obj("b", 8))).toBe(false);
  });

  it("counts an earlier write's echo that comes after a later write as no news (finalizer, then status)", async () => {
    const overlay = new WriteOverlay(byName);
    await overlay.write("p/a", async () => obj("a", 8)); // the finalizer's patch
    await overlay.write("p/a", async () => obj("a", 9)); // the start's status write, made from 8
    // The watch brings 8 back only now: the loop read and acted on it before it wrote 9.
    expect(overlay.isOwn("p/a", obj("a", 8))).toBe(true);
    expect(overlay.isOwn("p/a", obj("a", 9))).toBe(true);
    expect(overlay.isOwn("p/a", obj("a", 10))).toBe(false); // another writer after us
    expect(overlay.isOwn("p/a", obj("a", 7, "uid-other"))).toBe(false); // a namesake made again
  });

  it("holds an event that comes while a write is in flight, and hands it back once the write is known", async () => {
    const overlay = new WriteOverlay(byName);
    let answer: (o: Resource) => void = () => undefined;
    const writing = overlay.write("p/a", () => new Promise<Resource>((r) => (answer = r)));
    const replays: boolean[] = [];
    // The store delivered the write's event before its answer: not decidable yet, so held.
    const echo = obj("a", 8);
    expect(overlay.holdEcho("p/a", () => replays.push(overlay.isOwn("p/a", echo)))).toBe(true);
    const other = obj("a", 9);
    expect(overlay.holdEcho("p/a", () => replays.push(overlay.isOwn("p/a", other)))).toBe(true);
    expect(replays).toEqual([]);
    answer(obj("a", 8));
    await writing;
    // Replayed once the write ended: the echo is ours, the other write is not.
    expect(replays).toEqual([true, false]);
    expect(overlay.holdEcho("p/a", () => undefined)).toBe(false);
  });

  it("hands held events back when the write fails, so none is lost", async () => {
    const overlay = new WriteOverlay(byName);
    const writing = overlay.write("p/a", () => Promise.reject(new Error("conflict")));
    let replayed = 0;
    overlay.holdEcho("p/a", () => replayed++);
    await expect(writing).rejects.toThrow("conflict");
    expect(replayed).toBe(1);
    expect(overlay.isOwn("p/a", obj("a", 8))).toBe(false);
  });
});

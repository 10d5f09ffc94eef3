import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AlreadyExistsError, ConflictError, ExpiredError, NotFoundError } from "../../src/api/errors.js";
import type { Resource } from "../../src/api/meta.js";
import type { ResourceStore, StopWatch, WatchEvent } from "../../src/ports/store.js";
import { eventually } from "./poll.js";

/**
 * The ResourceStore contract (src/ports/store.ts): one suite of cases that every platform's store
 * must pass, in the style of hono's router `common.case.test.ts`. Where two platforms
 * legitimately differ, the difference is a named option below, never a silent branch.
 */

/** What a platform hands the suite: a store and where it may write. */
export interface StoreFixture {
  store: ResourceStore;
  /**
   * Two projects namespaced objects may be created in, unique to this fixture, so that the suite
   * can run beside other tests on a shared server (on Kubernetes their namespaces exist).
   */
  projects: [string, string];
  /** A revision older than the store's retained history (the fixture makes its platform compact). */
  expiredRevision(): Promise<string>;
  /** Removes what the fixture made (projects, namespaces) and closes the store. */
  close(): Promise<void>;
}

export interface StoreContractOptions {
  /**
   * Kubernetes: the API server applies the CRD schema's defaults to spec on every write, so the
   * stored spec holds more than was sent. SQLite stores spec as given (the API layer defaults).
   */
  defaultsSpec: boolean;
  /**
   * Kubernetes: a namespaced object needs its project's namespace, else NotFoundError.
   * SQLite: a project is only a name.
   */
  projectMustExist: boolean;
  /**
   * How a watch from an expired revision fails: SQLite checks the revision before the watch starts
   * and rejects; the Kubernetes API server answers the watch request with a 410 ERROR event, which
   * the store hands to onEnd (the port allows both: "rejects with ExpiredError" / "onEnd ... history
   * expired").
   */
  expiredReportedBy: "rejection" | "onEnd";
  /**
   * The resourceVersion of the object delete() returns. "deletion": the delete is a write with
   * its own, newer revision (SQLite). "last-write": the object as last stored (the Kubernetes API
   * server answers a DELETE with the object before it went; the DELETED watch event carries the
   * deletion's revision).
   */
  deletedObjectVersion: "deletion" | "last-write";
}

const rvOf = (o: Resource) => Number(o.metadata.resourceVersion);
const summary = (events: WatchEvent[]) => events.map((e) => `${e.type} ${e.object.metadata.name}`);

export function resourceStoreContract(
  platform: string,
  open: () => Promise<StoreFixture>,
  options: StoreContractOptions,
): void {
  describe(`ResourceStore contract: ${platform}`, () => {
    let fx: StoreFixture;
    let store: ResourceStore;
    let p1: string;
    let p2: string;
    const stops: StopWatch[] = [];
    /** Every object of this run carries this label: lists across projects select by it. */
    const run = `c${randomUUID().slice(0, 8)}`;
    let seq = 0;
    /** A name unique within this run (tests share the fixture's projects). */
    const unique = (base: string) => `${base}-${++seq}`;
    const RUN = `contract-run=${run}`;

    function tj(
      name: string,
      opts: { project?: string; labels?: Record<string, string>; spec?: Record<string, unknown> } = {},
    ): Resource {
      return {
        apiVersion: "loom.dev/v1alpha1",
        kind: "TrainingJob",
        metadata: {
          name,
          project: opts.project ?? p1,
          labels: { "contract-run": run, ...opts.labels },
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
        metadata: {
          name,
          labels: { "contract-run": run },
          uid: "",
          resourceVersion: "",
          generation: 0,
          creationTimestamp: "",
        },
        spec: { description: "contract" },
      };
    }

    /** The stored spec holds what was sent (and, where the platform defaults, more). */
    function expectSpec(actual: unknown, sent: Record<string, unknown>) {
      if (options.defaultsSpec) expect(actual).toMatchObject(sent);
      else expect(actual).toEqual(sent);
    }

    async function collect(kind: string, opts: Parameters<ResourceStore["watch"]>[1]) {
      const events: WatchEvent[] = [];
      stops.push(await store.watch(kind, opts, (e) => events.push(e)));
      return events;
    }

    /** Events of this run only: on a shared server other tests write the same kinds. */
    const ours = (events: WatchEvent[]) =>
      events.filter((e) => e.object.metadata.labels?.["contract-run"] === run);

    beforeAll(async () => {
      fx = await open();
      store = fx.store;
      [p1, p2] = fx.projects;
    }, 120_000);

    afterAll(async () => {
      for (const stop of stops) stop();
      await fx?.close();
    }, 120_000);

    describe("create and get", () => {
      it("assigns uid, resourceVersion, generation 1 and creationTimestamp; get returns the same object", async () => {
        const input = tj(unique("a"));
        input.metadata.resourceVersion = "";
        const created = await store.create(input);
        expect(created.metadata.name).toBe(input.metadata.name);
        expect(created.metadata.project).toBe(p1);
        expect(created.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
        expect(created.metadata.resourceVersion).toMatch(/^[1-9][0-9]*$/);
        expect(created.metadata.generation).toBe(1);
        expect(Number.isNaN(Date.parse(created.metadata.creationTimestamp))).toBe(false);
        expect(created.metadata.deletionTimestamp).toBeUndefined();
        expect(created.metadata.labels).toEqual({ "contract-run": run });
        expectSpec(created.spec, { command: ["train"] });
        expect(await store.get("TrainingJob", p1, input.metadata.name)).toEqual(created);
      });

      it("gives each object its own uid", async () => {
        const a = await store.create(tj(unique("u")));
        const b = await store.create(tj(unique("u")));
        expect(a.metadata.uid).not.toBe(b.metadata.uid);
      });

      it("rejects a duplicate with AlreadyExistsError, but allows the name in another project", async () => {
        const name = unique("dup");
        const first = await store.create(tj(name));
        await expect(store.create(tj(name))).rejects.toBeInstanceOf(AlreadyExistsError);
        const other = await store.create(tj(name, { project: p2 }));
        expect(other.metadata.uid).not.toBe(first.metadata.uid);
        expect((await store.get("TrainingJob", p1, name)).metadata.uid).toBe(first.metadata.uid);
      });

      it("throws NotFoundError for a missing name, or a name in another project", async () => {
        const name = unique("nf");
        await store.create(tj(name));
        await expect(store.get("TrainingJob", p1, unique("ghost"))).rejects.toBeInstanceOf(NotFoundError);
        await expect(store.get("TrainingJob", p2, name)).rejects.toBeInstanceOf(NotFoundError);
        await expect(store.get("Project", "", `${p1}-ghost`)).rejects.toBeInstanceOf(NotFoundError);
      });

      it(
        options.projectMustExist
          ? "refuses a namespaced object in a project that does not exist (projectMustExist)"
          : "accepts a namespaced object in any project (a project is only a name)",
        async () => {
          const nowhere = `${p1}-nowhere`;
          const attempt = store.create(tj(unique("lost"), { project: nowhere }));
          if (options.projectMustExist) await expect(attempt).rejects.toBeInstanceOf(NotFoundError);
          else expect((await attempt).metadata.project).toBe(nowhere);
        },
      );

      it("keeps cluster-scoped Projects without a project, got and listed by name", async () => {
        const name = `${p1}-proj`;
        const created = await store.create(project(name));
        expect(created.metadata.project).toBeUndefined();
        expect(created.metadata.generation).toBe(1);
        expect(await store.get("Project", "", name)).toEqual(created);
        await expect(store.create(project(name))).rejects.toBeInstanceOf(AlreadyExistsError);
        const listed = await store.list("Project", { labelSelector: RUN });
        expect(listed.items.map((o) => o.metadata.name)).toEqual([name]);
        await store.delete("Project", "", name);
        await expect(store.get("Project", "", name)).rejects.toBeInstanceOf(NotFoundError);
      });

      // The port: "ListOptions.project ... cluster-scoped kinds ignore it". Found failing on SQLite
      // (list and watch filter Projects by project, so nothing matches); reported, not hidden.
      it("ignores a project filter for a cluster-scoped kind, in list and watch", async () => {
        const name = `${p1}-scoped`;
        const listed = await store.list("Project", { project: p1, labelSelector: RUN });
        const events = await collect("Project", {
          project: p1,
          labelSelector: RUN,
          resourceVersion: listed.resourceVersion,
        });
        await store.create(project(name));
        try {
          const filtered = await store.list("Project", { project: p1, labelSelector: RUN });
          expect(filtered.items.map((o) => o.metadata.name)).toEqual([name]);
          await eventually("the Project's ADDED event", () => events.length >= 1, 5_000);
          expect(summary(events)).toEqual([`ADDED ${name}`]);
        } finally {
          await store.delete("Project", "", name);
        }
      });

      it("gives every write a strictly greater resourceVersion", async () => {
        const name = unique("rv");
        const rvs: number[] = [];
        const a = await store.create(tj(name));
        rvs.push(rvOf(a));
        const b = await store.updateStatus({ ...a, status: { phase: "Running" } });
        rvs.push(rvOf(b));
        const c = await store.update({ ...b, spec: { command: ["again"] } });
        rvs.push(rvOf(c));
        for (let i = 1; i < rvs.length; i++) expect(rvs[i]).toBeGreaterThan(rvs[i - 1]!);
        const gone = await store.delete("TrainingJob", p1, name);
        if (options.deletedObjectVersion === "deletion") expect(rvOf(gone)).toBeGreaterThan(rvOf(c));
        else expect(rvOf(gone)).toBe(rvOf(c));
        // Either way the store's revision moved on: a list after the delete is newer.
        expect(Number((await store.list("TrainingJob", { project: p1 })).resourceVersion)).toBeGreaterThan(
          rvOf(c),
        );
      });
    });

    describe("list", () => {
      it("filters by project and by label selector, sorted by project then name", async () => {
        const team = unique("team");
        const names = [unique("b"), unique("a")];
        const [b, a] = names as [string, string];
        await store.create(tj(b, { labels: { env: "prod", team } }));
        await store.create(tj(a, { labels: { env: "dev", team } }));
        const c = unique("c");
        await store.create(tj(c, { project: p2, labels: { env: "prod", team } }));
        const keys = (r: { items: Resource[] }) =>
          r.items.map((o) => `${o.metadata.project}/${o.metadata.name}`);
        const sel = `team=${team}`;
        const byName = [a, b].sort();
        expect(keys(await store.list("TrainingJob", { labelSelector: sel }))).toEqual(
          [...byName.map((n) => `${p1}/${n}`), `${p2}/${c}`].sort(),
        );
        expect(keys(await store.list("TrainingJob", { project: p1, labelSelector: sel }))).toEqual(
          byName.map((n) => `${p1}/${n}`),
        );
        expect(keys(await store.list("TrainingJob", { labelSelector: `${sel},env=prod` }))).toEqual(
          [`${p1}/${b}`, `${p2}/${c}`].sort(),
        );
        expect(keys(await store.list("TrainingJob", { labelSelector: `${sel},env!=prod` }))).toEqual([
          `${p1}/${a}`,
        ]);
        expect(keys(await store.list("TrainingJob", { labelSelector: `${sel},env in (dev,qa)` }))).toEqual([
          `${p1}/${a}`,
        ]);
        expect(
          keys(await store.list("TrainingJob", { project: p2, labelSelector: `${sel},env=dev` })),
        ).toEqual([]);
        // Everything of one project, without a selector.
        const all = await store.list("TrainingJob", { project: p2 });
        expect(all.items.every((o) => o.metadata.project === p2)).toBe(true);
        expect(all.items.map((o) => o.metadata.name)).toContain(c);
      });

      it("returns a resourceVersion at least that of every listed object", async () => {
        const made = await store.create(tj(unique("lrv")));
        const listed = await store.list("TrainingJob", { project: p1 });
        expect(Number(listed.resourceVersion)).toBeGreaterThanOrEqual(rvOf(made));
        for (const o of listed.items) expect(Number(listed.resourceVersion)).toBeGreaterThanOrEqual(rvOf(o));
      });
      it("pages with limit and continue: every item once, in order, each page reporting the first page's revision", async () => {
        const team = unique("pages");
        const names = Array.from({ length: 5 }, () => unique("pg")).sort();
        for (const n of names) await store.create(tj(n, { labels: { team } }));
        const seen: string[] = [];
        const revisions = new Set<string>();
        let cont: string | undefined;
        let pages = 0;
        do {
          const page = await store.list("TrainingJob", {
            project: p1,
            labelSelector: `team=${team}`,
            limit: 2,
            continue: cont,
          });
          expect(page.items.length).toBeLessThanOrEqual(2);
          seen.push(...page.items.map((o) => o.metadata.name));
          revisions.add(page.resourceVersion);
          cont = page.continue;
          pages++;
          // A write between pages before where the list stopped: no later page repeats or shows it.
          if (pages === 1) await store.create(tj(unique("pa-late"), { labels: { team } }));
        } while (cont && pages < 10);
        expect(seen).toEqual(names);
        expect(pages).toBe(3);
        expect(revisions.size).toBe(1);
        // Unpaged: all of it, the late one too, and no continue.
        const all = await store.list("TrainingJob", { project: p1, labelSelector: `team=${team}` });
        expect(all.items).toHaveLength(6);
        expect(all.continue).toBeUndefined();
        // A continue value the store never gave is refused, saying what to do.
        await expect(
          store.list("TrainingJob", { project: p1, limit: 2, continue: "bm90LWEtdG9rZW4" }),
        ).rejects.toThrow(/invalid continue token.*list again without it/);
      });
    });

    describe("update", () => {
      it("rejects a stale resourceVersion with ConflictError and keeps the stored object", async () => {
        const v1 = await store.create(tj(unique("stale")));
        const v2 = await store.update({ ...v1, spec: { command: ["v2"] } });
        await expect(store.update({ ...v1, spec: { command: ["stale"] } })).rejects.toBeInstanceOf(
          ConflictError,
        );
        await expect(store.updateStatus({ ...v1, status: { phase: "Failed" } })).rejects.toBeInstanceOf(
          ConflictError,
        );
        expect(await store.get("TrainingJob", p1, v1.metadata.name)).toEqual(v2);
      });

      it("without a resourceVersion, the last write wins", async () => {
        const v1 = await store.create(tj(unique("lww")));
        await store.update({ ...v1, spec: { command: ["v2"] } });
        const v3 = await store.update({
          ...v1,
          metadata: { ...v1.metadata, resourceVersion: "" },
          spec: { command: ["v3"] },
        });
        expectSpec(v3.spec, { command: ["v3"] });
        expectSpec((await store.get("TrainingJob", p1, v1.metadata.name)).spec, { command: ["v3"] });
      });

      it("throws NotFoundError for an object that does not exist", async () => {
        await expect(store.update(tj(unique("ghost")))).rejects.toBeInstanceOf(NotFoundError);
      });

      it("bumps generation on spec changes only, not on labels or status", async () => {
        const v1 = await store.create(tj(unique("gen"), { spec: { command: ["x"], env: { A: "1" } } }));
        const labelled = await store.update({
          ...v1,
          metadata: { ...v1.metadata, labels: { ...v1.metadata.labels, team: "nlp" } },
        });
        expect(labelled.metadata.generation).toBe(1);
        expect(labelled.metadata.labels).toEqual({ "contract-run": run, team: "nlp" });
        expect(rvOf(labelled)).toBeGreaterThan(rvOf(v1));
        const withStatus = await store.updateStatus({ ...labelled, status: { phase: "Running" } });
        expect(withStatus.metadata.generation).toBe(1);
        const changed = await store.update({ ...withStatus, spec: { command: ["y"], env: { A: "1" } } });
        expect(changed.metadata.generation).toBe(2);
        const again = await store.update({ ...changed, spec: { command: ["z"], env: { A: "1" } } });
        expect(again.metadata.generation).toBe(3);
        // An update that changes nothing is no new generation, and repeating it writes nothing.
        // (Kubernetes may write once: server-side apply records that Loom now owns the fields the
        // server defaulted; SQLite writes nothing at all.)
        const same = await store.update({ ...again });
        expect(same.metadata.generation).toBe(3);
        const repeated = await store.update({ ...same });
        expect(repeated.metadata.generation).toBe(3);
        expect(repeated.metadata.resourceVersion).toBe(same.metadata.resourceVersion);
      });

      it("keeps status, uid and creationTimestamp", async () => {
        const v1 = await store.create(tj(unique("keep")));
        const withStatus = await store.updateStatus({ ...v1, status: { phase: "Running" } });
        const next = await store.update({
          ...withStatus,
          spec: { command: ["y"] },
          status: { phase: "Failed" },
        });
        expect(next.status).toEqual({ phase: "Running" });
        expect(next.metadata.uid).toBe(v1.metadata.uid);
        expect(next.metadata.creationTimestamp).toBe(v1.metadata.creationTimestamp);
      });
    });

    describe("updateStatus", () => {
      it("replaces status only, leaving spec, labels and generation alone", async () => {
        const v1 = await store.create(tj(unique("st")));
        const next = await store.updateStatus({
          ...v1,
          metadata: { ...v1.metadata, labels: { sneaky: "yes" } },
          spec: { command: ["changed"] },
          status: { phase: "Running", attempts: 1 },
        });
        expectSpec(next.spec, { command: ["train"] });
        expect(next.metadata.generation).toBe(1);
        expect(next.metadata.labels).toEqual({ "contract-run": run });
        expect(next.status).toEqual({ phase: "Running", attempts: 1 });
        expect(rvOf(next)).toBeGreaterThan(rvOf(v1));
        expect(await store.get("TrainingJob", p1, v1.metadata.name)).toEqual(next);
        const replaced = await store.updateStatus({ ...next, status: { phase: "Succeeded" } });
        expect(replaced.status).toEqual({ phase: "Succeeded" });
      });
    });

    describe("delete", () => {
      it("deletes an object without finalizers at once; a second delete is NotFoundError", async () => {
        const v1 = await store.create(tj(unique("del")));
        const gone = await store.delete("TrainingJob", p1, v1.metadata.name);
        expect(gone.metadata.uid).toBe(v1.metadata.uid);
        await expect(store.get("TrainingJob", p1, v1.metadata.name)).rejects.toBeInstanceOf(NotFoundError);
        await expect(store.delete("TrainingJob", p1, v1.metadata.name)).rejects.toBeInstanceOf(NotFoundError);
      });

      it("honours a resourceVersion precondition", async () => {
        const v1 = await store.create(tj(unique("pre")));
        const v2 = await store.updateStatus({ ...v1, status: { phase: "Running" } });
        await expect(
          store.delete("TrainingJob", p1, v1.metadata.name, { resourceVersion: v1.metadata.resourceVersion }),
        ).rejects.toBeInstanceOf(ConflictError);
        expect((await store.get("TrainingJob", p1, v1.metadata.name)).metadata.uid).toBe(v1.metadata.uid);
        await store.delete("TrainingJob", p1, v1.metadata.name, {
          resourceVersion: v2.metadata.resourceVersion,
        });
        await expect(store.get("TrainingJob", p1, v1.metadata.name)).rejects.toBeInstanceOf(NotFoundError);
      });

      it("with finalizers marks deletionTimestamp; removing the last finalizer deletes", async () => {
        const name = unique("fin");
        // Added by update, as reconcilers add theirs.
        const plain = await store.create(tj(name));
        const created = await store.update({
          ...plain,
          metadata: { ...plain.metadata, finalizers: ["loom.dev/contract-a", "loom.dev/contract-b"] },
        });
        expect(created.metadata.finalizers).toEqual(["loom.dev/contract-a", "loom.dev/contract-b"]);
        const events = await collect("TrainingJob", {
          project: p1,
          resourceVersion: created.metadata.resourceVersion,
        });

        const marked = await store.delete("TrainingJob", p1, name);
        expect(marked.metadata.deletionTimestamp).toBeDefined();
        expect(Number.isNaN(Date.parse(marked.metadata.deletionTimestamp!))).toBe(false);
        const got = await store.get("TrainingJob", p1, name);
        expect(got.metadata.deletionTimestamp).toBe(marked.metadata.deletionTimestamp);
        expect(got.metadata.finalizers).toEqual(["loom.dev/contract-a", "loom.dev/contract-b"]);

        const one = await store.update({
          ...got,
          metadata: { ...got.metadata, finalizers: ["loom.dev/contract-b"] },
        });
        expect(one.metadata.deletionTimestamp).toBe(marked.metadata.deletionTimestamp);
        expect(one.metadata.finalizers).toEqual(["loom.dev/contract-b"]);
        expect((await store.get("TrainingJob", p1, name)).metadata.finalizers).toEqual([
          "loom.dev/contract-b",
        ]);

        await store.update({ ...one, metadata: { ...one.metadata, finalizers: [] } });
        await expect(store.get("TrainingJob", p1, name)).rejects.toBeInstanceOf(NotFoundError);
        await eventually("the DELETED event", () => ours(events).some((e) => e.type === "DELETED"));
        const mine = ours(events).filter((e) => e.object.metadata.name === name);
        expect(mine.map((e) => e.type)).toEqual(["MODIFIED", "MODIFIED", "DELETED"]);
        expect(mine[0]!.object.metadata.deletionTimestamp).toBeDefined();
      });
    });

    describe("finalizers given at create", () => {
      // Found failing on Kubernetes: create() POSTs (field manager "loom", operation Update) and
      // update() server-side applies (manager "loom", operation Apply), so a finalizer that came
      // with the object is owned by the former and an apply without it does not remove it. The
      // embedded API adds TrainingJob finalizers at create; a manifest may carry its own.
      it("are removed by an update without them, and the object then goes", async () => {
        const name = unique("cfin");
        const base = tj(name);
        const created = await store.create({
          ...base,
          metadata: { ...base.metadata, finalizers: ["loom.dev/contract-c"] },
        });
        expect(created.metadata.finalizers).toEqual(["loom.dev/contract-c"]);
        const kept = await store.update({ ...created, metadata: { ...created.metadata, finalizers: [] } });
        expect(kept.metadata.finalizers).toBeUndefined();
        const marked = await store.delete("TrainingJob", p1, name);
        expect(marked.metadata.deletionTimestamp).toBeUndefined();
        await expect(store.get("TrainingJob", p1, name)).rejects.toBeInstanceOf(NotFoundError);
      });
    });

    describe("addFinalizer (where the store has it)", () => {
      it("adds the finalizer beside others, changes nothing else, refuses a stale version, and update() removes it", async () => {
        if (!store.addFinalizer) return;
        const name = unique("afin");
        const base = tj(name);
        const created = await store.create({
          ...base,
          metadata: { ...base.metadata, labels: { team: "a" }, finalizers: ["loom.dev/contract-d"] },
        });
        const held = await store.addFinalizer(created, "loom.dev/contract-e");
        expect([...(held.metadata.finalizers ?? [])].sort()).toEqual([
          "loom.dev/contract-d",
          "loom.dev/contract-e",
        ]);
        expect(held.spec).toEqual(created.spec);
        expect(held.metadata.labels).toEqual({ team: "a" });
        expect(held.metadata.resourceVersion).not.toBe(created.metadata.resourceVersion);
        // Written against the version before: someone else's write came in between.
        await expect(store.addFinalizer(created, "loom.dev/contract-f")).rejects.toMatchObject({
          code: "Conflict",
        });
        const back = await store.update({
          ...held,
          metadata: { ...held.metadata, finalizers: ["loom.dev/contract-d"] },
        });
        expect(back.metadata.finalizers).toEqual(["loom.dev/contract-d"]);
        await store.update({ ...back, metadata: { ...back.metadata, finalizers: [] } });
        await store.delete("TrainingJob", p1, name);
        await expect(store.get("TrainingJob", p1, name)).rejects.toBeInstanceOf(NotFoundError);
      });
    });

    describe("watch", () => {
      it("from a list's resourceVersion delivers exactly the later changes, in revision order", async () => {
        const [a, b, c, d] = [unique("wa"), unique("wb"), unique("wc"), unique("wd")];
        await store.create(tj(a));
        const vb = await store.create(tj(b));
        const listed = await store.list("TrainingJob", { project: p1 });
        // Changes after the list but before the watch starts must be replayed...
        await store.create(tj(c));
        await store.updateStatus({ ...vb, status: { phase: "Running" } });
        const events = await collect("TrainingJob", { project: p1, resourceVersion: listed.resourceVersion });
        // ... and live ones after it follow without gaps or duplicates.
        await store.delete("TrainingJob", p1, a);
        await store.create(tj(d, { project: p2 })); // another project: not this watch's
        const marker = unique("wmarker");
        await store.create(tj(marker));
        await eventually("the marker", () => events.some((e) => e.object.metadata.name === marker));
        expect(summary(ours(events))).toEqual([
          `ADDED ${c}`,
          `MODIFIED ${b}`,
          `DELETED ${a}`,
          `ADDED ${marker}`,
        ]);
        const rvs = ours(events).map((e) => rvOf(e.object));
        expect(rvs[0]).toBeGreaterThan(Number(listed.resourceVersion));
        for (let i = 1; i < rvs.length; i++) expect(rvs[i]).toBeGreaterThan(rvs[i - 1]!);
        expect(ours(events)[1]!.object.status).toEqual({ phase: "Running" });
      });

      it("resumes from the last revision seen, missing nothing made while stopped", async () => {
        const start = await store.list("TrainingJob", { project: p2 });
        const first: WatchEvent[] = [];
        const stop = await store.watch(
          "TrainingJob",
          { project: p2, resourceVersion: start.resourceVersion },
          (e) => first.push(e),
        );
        const one = unique("r1");
        await store.create(tj(one, { project: p2 }));
        await eventually("the first event", () => ours(first).length >= 1);
        stop();
        stop(); // idempotent
        const last = ours(first).at(-1)!.object.metadata.resourceVersion;
        // Made while no watch runs.
        const [two, three] = [unique("r2"), unique("r3")];
        const v2 = await store.create(tj(two, { project: p2 }));
        await store.updateStatus({ ...v2, status: { phase: "Running" } });
        await store.create(tj(three, { project: p2 }));
        const resumed = await collect("TrainingJob", { project: p2, resourceVersion: last });
        await eventually("the resumed events", () => ours(resumed).length >= 3);
        expect(summary(ours(resumed))).toEqual([`ADDED ${two}`, `MODIFIED ${two}`, `ADDED ${three}`]);
        // The stopped watch delivered nothing more: the resumed one has seen all three.
        expect(summary(ours(first))).toEqual([`ADDED ${one}`]);
      });

      it("without a resourceVersion sends ADDED for what exists, then live changes", async () => {
        const team = unique("now");
        const [x, y] = [unique("nx"), unique("ny")];
        await store.create(tj(x, { labels: { team } }));
        await store.create(tj(y, { project: p2, labels: { team } }));
        const events = await collect("TrainingJob", { project: p1, labelSelector: `team=${team}` });
        expect(summary(events)).toEqual([`ADDED ${x}`]);
        const z = unique("nz");
        await store.create(tj(z, { labels: { team } }));
        await store.delete("TrainingJob", p1, x);
        await eventually("the live events", () => events.length >= 3);
        expect(summary(events)).toEqual([`ADDED ${x}`, `ADDED ${z}`, `DELETED ${x}`]);
      });

      it("filters by label selector", async () => {
        const team = unique("sel");
        const listed = await store.list("TrainingJob");
        const events = await collect("TrainingJob", {
          labelSelector: `team=${team},env=prod`,
          resourceVersion: listed.resourceVersion,
        });
        const [a, b, c] = [unique("sa"), unique("sb"), unique("sc")];
        await store.create(tj(a, { labels: { team, env: "prod" } }));
        await store.create(tj(b, { labels: { team, env: "dev" } }));
        await store.create(tj(c, { project: p2, labels: { team, env: "prod" } }));
        await eventually("both matching objects", () => events.length >= 2);
        expect(summary(events)).toEqual([`ADDED ${a}`, `ADDED ${c}`]);
      });

      it("watches cluster-scoped Projects", async () => {
        const listed = await store.list("Project");
        const events = await collect("Project", {
          labelSelector: RUN,
          resourceVersion: listed.resourceVersion,
        });
        const name = `${p1}-wproj`;
        const made = await store.create(project(name));
        await store.update({ ...made, spec: { description: "changed" } });
        await store.delete("Project", "", name);
        await eventually("three Project events", () => events.length >= 3);
        expect(summary(events)).toEqual([`ADDED ${name}`, `MODIFIED ${name}`, `DELETED ${name}`]);
      });

      it(`reports a revision older than the retained history with ExpiredError (${options.expiredReportedBy})`, async () => {
        const old = await fx.expiredRevision();
        if (options.expiredReportedBy === "rejection") {
          await expect(store.watch("TrainingJob", { resourceVersion: old }, () => {})).rejects.toBeInstanceOf(
            ExpiredError,
          );
        } else {
          let ended: Error | undefined;
          const delivered: WatchEvent[] = [];
          stops.push(
            await store.watch(
              "TrainingJob",
              { project: p1, resourceVersion: old },
              (e) => delivered.push(e),
              (err) => {
                ended = err;
              },
            ),
          );
          const err = await eventually("the watch to end", () => ended);
          expect(err).toBeInstanceOf(ExpiredError);
          expect(delivered).toEqual([]);
        }
        // A list's revision is always recent enough.
        const listed = await store.list("TrainingJob", { project: p1 });
        const events = await collect("TrainingJob", { project: p1, resourceVersion: listed.resourceVersion });
        const fresh = unique("fresh");
        await store.create(tj(fresh));
        await eventually("the fresh event", () => events.length >= 1);
        expect(summary(events)).toEqual([`ADDED ${fresh}`]);
      });
    });
  });
}

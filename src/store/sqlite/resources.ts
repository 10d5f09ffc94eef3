import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Kysely, Transaction } from "kysely";
import type { Resource } from "../../api/meta.js";
import {
  AlreadyExistsError,
  BadRequestError,
  ConflictError,
  ExpiredError,
  NotFoundError,
} from "../../errors.js";
import { canonicalJson } from "../json.js";
import type {
  ListOptions,
  ListResult,
  ResourceStore,
  StopWatch,
  WatchEvent,
  WatchEventType,
  WatchOptions,
} from "../port.js";
import { parseLabelSelector } from "../selector.js";
import { getMeta, type Schema, setMeta } from "./db.js";

export interface SqliteStoreOptions {
  /** How many changes the log keeps for watches to resume from (etcd's compaction, by count). */
  historySize?: number;
  now?: () => Date;
  newUid?: () => string;
}

const COMPACTED_KEY = "compacted_rv";

/** The embedded ResourceStore: one SQLite file, a change log for watches, writes serialised. */
export class SqliteResourceStore implements ResourceStore {
  private readonly emitter = new EventEmitter();
  private readonly historySize: number;
  private readonly now: () => Date;
  private readonly newUid: () => string;
  /** Writes run one after another so that watchers see changes in resourceVersion order, after commit. */
  private writeChain: Promise<unknown> = Promise.resolve();
  private writesSinceCompaction = 0;
  private compactedRv = 0;
  /** The last resourceVersion handed out. Writes are serialised, so the next one is known up front. */
  private lastRv = 0;

  private constructor(
    private readonly db: Kysely<Schema>,
    opts: SqliteStoreOptions,
  ) {
    this.emitter.setMaxListeners(0);
    this.historySize = opts.historySize ?? 100_000;
    this.now = opts.now ?? (() => new Date());
    this.newUid = opts.newUid ?? randomUUID;
  }

  static async open(db: Kysely<Schema>, opts: SqliteStoreOptions = {}): Promise<SqliteResourceStore> {
    const store = new SqliteResourceStore(db, opts);
    store.compactedRv = Number((await getMeta(db, COMPACTED_KEY)) ?? 0);
    store.lastRv = await currentRv(db);
    return store;
  }

  async get(kind: string, project: string, name: string): Promise<Resource> {
    const row = await this.db
      .selectFrom("resources")
      .select("body")
      .where("kind", "=", kind)
      .where("project", "=", project)
      .where("name", "=", name)
      .executeTakeFirst();
    if (!row) throw new NotFoundError(notFoundMessage(kind, project, name));
    return JSON.parse(row.body) as Resource;
  }

  async list(kind: string, opts: ListOptions = {}): Promise<ListResult> {
    const selector = parseLabelSelector(opts.labelSelector);
    return this.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom("resources").select("body").where("kind", "=", kind);
      if (opts.project !== undefined) q = q.where("project", "=", opts.project);
      const rows = await q.orderBy("project").orderBy("name").execute();
      const items = rows
        .map((r) => JSON.parse(r.body) as Resource)
        .filter((o) => selector.matches(o.metadata.labels));
      return { items, resourceVersion: String(await currentRv(trx)) };
    });
  }

  async watch(kind: string, opts: WatchOptions, onEvent: (e: WatchEvent) => void): Promise<StopWatch> {
    const selector = parseLabelSelector(opts.labelSelector);
    const wanted = (o: Resource) =>
      (opts.project === undefined || (o.metadata.project ?? "") === opts.project) &&
      selector.matches(o.metadata.labels);
    let lastRv = 0;
    let live = false;
    const buffer: WatchEvent[] = [];
    let stopped = false;
    const deliver = (e: WatchEvent) => {
      const rv = Number(e.object.metadata.resourceVersion);
      if (stopped || rv <= lastRv) return;
      lastRv = rv;
      if (wanted(e.object)) onEvent(e);
    };
    const listener = (e: WatchEvent) => (live ? deliver(e) : buffer.push(e));
    // Subscribe first, then replay: an event committed meanwhile arrives twice and is dropped by rv.
    this.emitter.on(kind, listener);
    const stop = () => {
      stopped = true;
      this.emitter.off(kind, listener);
    };
    try {
      if (opts.resourceVersion !== undefined && opts.resourceVersion !== "") {
        const from = Number(opts.resourceVersion);
        if (!Number.isInteger(from) || from < 0)
          throw new BadRequestError(
            `invalid resourceVersion "${opts.resourceVersion}": use the resourceVersion of a list`,
          );
        if (from < this.compactedRv) {
          throw new ExpiredError(
            `resourceVersion ${from} is too old (history starts after ${this.compactedRv}): list again and watch from the list's resourceVersion`,
          );
        }
        const rows = await this.db
          .selectFrom("changes")
          .select(["type", "body"])
          .where("kind", "=", kind)
          .where("rv", ">", from)
          .orderBy("rv")
          .execute();
        lastRv = from;
        for (const r of rows)
          deliver({ type: r.type as WatchEventType, object: JSON.parse(r.body) as Resource });
      } else {
        // Kubernetes semantics for a watch without a revision: the current state as ADDED, then changes.
        const current = await this.list(kind, { project: opts.project, labelSelector: opts.labelSelector });
        for (const o of current.items) onEvent({ type: "ADDED", object: o });
        lastRv = Number(current.resourceVersion);
      }
    } catch (err) {
      stop();
      throw err;
    }
    live = true;
    for (const e of buffer.splice(0)) deliver(e);
    return stop;
  }

  create(obj: Resource): Promise<Resource> {
    return this.write(async (trx) => {
      const { kind, project, name } = keyParts(obj);
      const existing = await trx
        .selectFrom("resources")
        .select("rv")
        .where("kind", "=", kind)
        .where("project", "=", project)
        .where("name", "=", name)
        .executeTakeFirst();
      if (existing) throw new AlreadyExistsError(`${kind} "${displayName(project, name)}" already exists`);
      const created: Resource = {
        ...obj,
        metadata: {
          ...obj.metadata,
          uid: this.newUid(),
          resourceVersion: "",
          generation: 1,
          creationTimestamp: this.now().toISOString(),
        },
      };
      delete created.metadata.deletionTimestamp;
      return this.record(trx, "ADDED", created);
    });
  }

  update(obj: Resource): Promise<Resource> {
    return this.write(async (trx) => {
      const current = await this.current(trx, obj);
      const next: Resource = {
        ...current,
        spec: obj.spec,
        metadata: {
          ...current.metadata,
          labels: obj.metadata.labels,
          annotations: obj.metadata.annotations,
          finalizers: obj.metadata.finalizers?.length ? obj.metadata.finalizers : undefined,
        },
      };
      if (canonicalJson(next.spec) !== canonicalJson(current.spec))
        next.metadata.generation = current.metadata.generation + 1;
      if (next.metadata.deletionTimestamp && !next.metadata.finalizers) return this.remove(trx, next);
      if (canonicalJson(next) === canonicalJson(current)) return current;
      return this.record(trx, "MODIFIED", next);
    });
  }

  updateStatus(obj: Resource): Promise<Resource> {
    return this.write(async (trx) => {
      const current = await this.current(trx, obj);
      const next: Resource = { ...current, status: obj.status };
      if (canonicalJson(next.status) === canonicalJson(current.status)) return current;
      return this.record(trx, "MODIFIED", next);
    });
  }

  delete(
    kind: string,
    project: string,
    name: string,
    opts: { resourceVersion?: string } = {},
  ): Promise<Resource> {
    return this.write(async (trx) => {
      const current = await this.current(trx, {
        kind,
        metadata: { project, name, resourceVersion: opts.resourceVersion },
      } as Resource);
      if (current.metadata.finalizers?.length) {
        if (current.metadata.deletionTimestamp) return current;
        const marked = {
          ...current,
          metadata: { ...current.metadata, deletionTimestamp: this.now().toISOString() },
        };
        return this.record(trx, "MODIFIED", marked);
      }
      return this.remove(trx, current);
    });
  }

  async close(): Promise<void> {
    await this.writeChain.catch(() => undefined);
    this.emitter.removeAllListeners();
  }

  /** Runs one write transaction after the previous one, then tells watchers. */
  private write(fn: (trx: Transaction<Schema>) => Promise<Resource>): Promise<Resource> {
    const pending: WatchEvent[] = [];
    const run = async () => {
      const rvBefore = this.lastRv;
      const result = await this.db
        .transaction()
        .execute(async (trx) => {
          this.pendingEvents = pending;
          try {
            return await fn(trx);
          } finally {
            this.pendingEvents = undefined;
          }
        })
        .catch((err: unknown) => {
          // Rolled back: the revisions this write took were never committed.
          this.lastRv = rvBefore;
          pending.length = 0;
          throw err;
        });
      for (const e of pending) this.emitter.emit(e.object.kind, e);
      if (pending.length > 0 && ++this.writesSinceCompaction >= 1000) await this.compact();
      return result;
    };
    const p = this.writeChain.then(run, run);
    this.writeChain = p.catch(() => undefined);
    return p;
  }

  private pendingEvents: WatchEvent[] | undefined;

  private async current(trx: Transaction<Schema>, obj: Resource): Promise<Resource> {
    const { kind, project, name } = keyParts(obj);
    const row = await trx
      .selectFrom("resources")
      .select("body")
      .where("kind", "=", kind)
      .where("project", "=", project)
      .where("name", "=", name)
      .executeTakeFirst();
    if (!row) throw new NotFoundError(notFoundMessage(kind, project, name));
    const current = JSON.parse(row.body) as Resource;
    const expected = obj.metadata.resourceVersion;
    if (expected && expected !== current.metadata.resourceVersion) {
      throw new ConflictError(
        `${kind} "${displayName(project, name)}" was modified (resourceVersion ${current.metadata.resourceVersion}, you sent ${expected}): get the latest version and apply your change again`,
      );
    }
    return current;
  }

  /** Appends to the change log (its rowid becomes the resourceVersion) and stores the object. */
  private async record(trx: Transaction<Schema>, type: WatchEventType, obj: Resource): Promise<Resource> {
    const { kind, project, name } = keyParts(obj);
    const rv = ++this.lastRv;
    const stored: Resource = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
    const body = JSON.stringify(stored);
    await trx.insertInto("changes").values({ rv, kind, project, name, type, body }).execute();
    if (type === "DELETED") {
      await trx
        .deleteFrom("resources")
        .where("kind", "=", kind)
        .where("project", "=", project)
        .where("name", "=", name)
        .execute();
    } else {
      await trx
        .insertInto("resources")
        .values({ kind, project, name, uid: stored.metadata.uid, rv, body })
        .onConflict((oc) =>
          oc.columns(["kind", "project", "name"]).doUpdateSet({ uid: stored.metadata.uid, rv, body }),
        )
        .execute();
    }
    this.pendingEvents?.push({ type, object: stored });
    return stored;
  }

  private remove(trx: Transaction<Schema>, obj: Resource): Promise<Resource> {
    return this.record(trx, "DELETED", obj);
  }

  /** Drops change-log rows beyond the retained history; older watch revisions then get ExpiredError. */
  private async compact(): Promise<void> {
    this.writesSinceCompaction = 0;
    const rv = await currentRv(this.db);
    const cutoff = rv - this.historySize;
    if (cutoff <= this.compactedRv) return;
    await this.db.deleteFrom("changes").where("rv", "<=", cutoff).execute();
    await setMeta(this.db, COMPACTED_KEY, String(cutoff));
    this.compactedRv = cutoff;
  }
}

async function currentRv(db: Kysely<Schema>): Promise<number> {
  const row = await db
    .selectFrom("changes")
    .select((eb) => eb.fn.max("rv").as("rv"))
    .executeTakeFirst();
  return Number(row?.rv ?? 0);
}

function keyParts(obj: Resource) {
  return { kind: obj.kind, project: obj.metadata.project ?? "", name: obj.metadata.name };
}

function displayName(project: string, name: string) {
  return project ? `${project}/${name}` : name;
}

function notFoundMessage(kind: string, project: string, name: string) {
  return project ? `${kind} "${name}" not found in project "${project}"` : `${kind} "${name}" not found`;
}

import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type Database from "better-sqlite3";
import type { Kysely } from "kysely";
import {
  AlreadyExistsError,
  BadRequestError,
  ConflictError,
  ExpiredError,
  NotFoundError,
} from "../../api/errors.js";
import { kindByKind } from "../../api/kinds.js";
import { decodeContinue, encodeContinue } from "../../api/listpage.js";
import type { Resource } from "../../api/meta.js";
import { parseLabelSelector } from "../../api/selector.js";
import { canonicalJson } from "../../lib/json.js";
import type {
  ListOptions,
  ListResult,
  ResourceStore,
  StopWatch,
  WatchEvent,
  WatchEventType,
  WatchOptions,
} from "../../ports/store.js";
import { getMeta, type Schema, type SqliteWriter, writerOf } from "./db.js";

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
  /** Writes run one after another, in batches, so watchers see changes in resourceVersion order, after commit. */
  private readonly writer: SqliteWriter;
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
    this.writer = writerOf(db);
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
    const after = opts.continue ? decodeContinue(opts.continue) : undefined;
    const { limit } = opts;
    return this.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom("resources").select(["body", "project", "name"]).where("kind", "=", kind);
      const project = projectFilter(kind, opts.project);
      if (project !== undefined) q = q.where("project", "=", project);
      // Keyset paging on the primary key's order: later pages cost what the first does.
      if (after)
        q = q.where((eb) =>
          eb.or([
            eb("project", ">", after.project),
            eb.and([eb("project", "=", after.project), eb("name", ">", after.name)]),
          ]),
        );
      q = q.orderBy("project").orderBy("name");
      // With a label selector rows are matched here, so the limit cannot go to SQL.
      if (limit !== undefined && !opts.labelSelector) q = q.limit(limit + 1);
      const rows = (await q.execute()).filter((r) => {
        if (!opts.labelSelector) return true;
        return selector.matches((JSON.parse(r.body) as Resource).metadata.labels);
      });
      const page = limit !== undefined ? rows.slice(0, limit) : rows;
      const items = page.map((r) => JSON.parse(r.body) as Resource);
      // Every page reports the first page's revision: the watch after the last page starts there.
      const resourceVersion = after?.rv ?? String(await currentRv(trx));
      const last = page.at(-1);
      const more = limit !== undefined && rows.length > limit && last;
      return {
        items,
        resourceVersion,
        ...(more
          ? { continue: encodeContinue({ rv: resourceVersion, project: last.project, name: last.name }) }
          : {}),
      };
    });
  }

  async watch(kind: string, opts: WatchOptions, onEvent: (e: WatchEvent) => void): Promise<StopWatch> {
    const selector = parseLabelSelector(opts.labelSelector);
    const project = projectFilter(kind, opts.project);
    const wanted = (o: Resource) =>
      (project === undefined || (o.metadata.project ?? "") === project) &&
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
    return this.write((tx) => {
      const { kind, project, name } = keyParts(obj);
      if (tx.select.get(kind, project, name))
        throw new AlreadyExistsError(`${kind} "${displayName(project, name)}" already exists`);
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
      return tx.record("ADDED", created);
    });
  }

  update(obj: Resource): Promise<Resource> {
    return this.write((tx) => {
      const current = tx.current(obj);
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
      if (next.metadata.deletionTimestamp && !next.metadata.finalizers) return tx.record("DELETED", next);
      if (canonicalJson(next) === canonicalJson(current)) return current;
      return tx.record("MODIFIED", next);
    });
  }

  updateStatus(obj: Resource): Promise<Resource> {
    return this.write((tx) => {
      const current = tx.current(obj);
      const next: Resource = { ...current, status: obj.status };
      if (canonicalJson(next.status) === canonicalJson(current.status)) return current;
      return tx.record("MODIFIED", next);
    });
  }

  delete(
    kind: string,
    project: string,
    name: string,
    opts: { resourceVersion?: string } = {},
  ): Promise<Resource> {
    return this.write((tx) => {
      const current = tx.current({
        kind,
        metadata: { project, name, resourceVersion: opts.resourceVersion },
      } as Resource);
      if (current.metadata.finalizers?.length) {
        if (current.metadata.deletionTimestamp) return current;
        const marked = {
          ...current,
          metadata: { ...current.metadata, deletionTimestamp: this.now().toISOString() },
        };
        return tx.record("MODIFIED", marked);
      }
      return tx.record("DELETED", current);
    });
  }

  async close(): Promise<void> {
    await this.lastWrite.catch(() => undefined);
    this.emitter.removeAllListeners();
  }

  /**
   * One write: its statements run in a savepoint of the writer's next batch (group commit, see
   * SqliteWriter); watchers hear of it after the batch committed, in resourceVersion order.
   */
  private write(fn: (tx: WriteTx) => Resource): Promise<Resource> {
    const pending: WatchEvent[] = [];
    let rvBefore = 0;
    let db: Database.Database | undefined;
    const p = this.writer.submit<Resource>({
      run: (raw) => {
        db = raw;
        rvBefore = this.lastRv;
        return fn(this.tx(raw, pending));
      },
      undone: () => {
        // Rolled back: the revisions this write took were never committed.
        this.lastRv = rvBefore;
        pending.length = 0;
      },
      committed: () => {
        for (const e of pending) this.emitter.emit(e.object.kind, e);
        if (pending.length > 0 && ++this.writesSinceCompaction >= 1000) {
          try {
            this.compact(db!);
          } catch {
            // The write is committed; compaction is tried again 1,000 writes later.
          }
        }
      },
    });
    this.lastWrite = p.catch(() => undefined);
    return p;
  }

  private lastWrite: Promise<unknown> = Promise.resolve();
  private statements: Statements | undefined;

  /** The statements of a write, on the raw connection, and what one write does with them. */
  private tx(raw: Database.Database, pending: WatchEvent[]): WriteTx {
    this.statements ??= prepareStatements(raw);
    const st = this.statements;
    return {
      select: st.select,
      current: (obj) => {
        const { kind, project, name } = keyParts(obj);
        const row = st.select.get(kind, project, name);
        if (!row) throw new NotFoundError(notFoundMessage(kind, project, name));
        const current = JSON.parse(row.body) as Resource;
        const expected = obj.metadata.resourceVersion;
        if (expected && expected !== current.metadata.resourceVersion) {
          throw new ConflictError(
            `${kind} "${displayName(project, name)}" was modified (resourceVersion ${current.metadata.resourceVersion}, you sent ${expected}): get the latest version and apply your change again`,
          );
        }
        return current;
      },
      // Appends to the change log (its rowid becomes the resourceVersion) and stores the object.
      record: (type, obj) => {
        const { kind, project, name } = keyParts(obj);
        const rv = ++this.lastRv;
        const stored: Resource = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
        const body = JSON.stringify(stored);
        st.insertChange.run(rv, kind, project, name, type, body);
        if (type === "DELETED") st.remove.run(kind, project, name);
        else st.upsert.run(kind, project, name, stored.metadata.uid, rv, body);
        pending.push({ type, object: stored });
        return stored;
      },
    };
  }

  /**
   * Drops change-log rows beyond the retained history; older watch revisions then get ExpiredError.
   * Runs right after a batch committed (no transaction is open on the connection then).
   */
  private compact(raw: Database.Database): void {
    this.writesSinceCompaction = 0;
    const cutoff = this.lastRv - this.historySize;
    if (cutoff <= this.compactedRv) return;
    raw.transaction(() => {
      raw.prepare("DELETE FROM changes WHERE rv <= ?").run(cutoff);
      raw
        .prepare(
          "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .run(COMPACTED_KEY, String(cutoff));
    })();
    this.compactedRv = cutoff;
  }
}

interface WriteTx {
  select: Database.Statement<[string, string, string], { body: string }>;
  /** The stored object; NotFoundError, or ConflictError on a stale resourceVersion. */
  current(obj: Resource): Resource;
  record(type: WatchEventType, obj: Resource): Resource;
}

interface Statements {
  select: Database.Statement<[string, string, string], { body: string }>;
  insertChange: Database.Statement<[number, string, string, string, string, string]>;
  upsert: Database.Statement<[string, string, string, string, number, string]>;
  remove: Database.Statement<[string, string, string]>;
}

function prepareStatements(raw: Database.Database): Statements {
  return {
    select: raw.prepare("SELECT body FROM resources WHERE kind = ? AND project = ? AND name = ?"),
    insertChange: raw.prepare(
      "INSERT INTO changes (rv, kind, project, name, type, body) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    upsert: raw.prepare(
      "INSERT INTO resources (kind, project, name, uid, rv, body) VALUES (?, ?, ?, ?, ?, ?) " +
        "ON CONFLICT (kind, project, name) DO UPDATE SET uid = excluded.uid, rv = excluded.rv, body = excluded.body",
    ),
    remove: raw.prepare("DELETE FROM resources WHERE kind = ? AND project = ? AND name = ?"),
  };
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

/** A project filter applies to namespaced kinds only: cluster-scoped ones (Project) ignore it, as the port says. */
function projectFilter(kind: string, project: string | undefined): string | undefined {
  return kindByKind(kind)?.namespaced === false ? undefined : project;
}

function displayName(project: string, name: string) {
  return project ? `${project}/${name}` : name;
}

function notFoundMessage(kind: string, project: string, name: string) {
  return project ? `${kind} "${name}" not found in project "${project}"` : `${kind} "${name}" not found`;
}

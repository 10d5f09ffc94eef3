import type Database from "better-sqlite3";
import type { Kysely, Selectable } from "kysely";
import type { AuditCounts, AuditEntry, AuditLog, AuditQuery, AuditRecord } from "../../ports/audit.js";
import { type AuditTable, type Schema, writerOf } from "./db.js";

export interface SqliteAuditOptions {
  /** Keep entries this long (default 30 days); older ones are pruned. */
  maxAgeMs?: number;
  /** Keep at most this many entries (default 1,000,000); the oldest go first. */
  maxRows?: number;
  /** Write what is queued this often (default 100 ms)… */
  flushMs?: number;
  /** …or as soon as this many are queued (default 500). */
  batchRows?: number;
  /** Entries queued beyond this are dropped and counted (default 50,000): memory stays bounded. */
  maxQueued?: number;
  /** Prune this often (default every 10 minutes), and once shortly after opening. */
  pruneMs?: number;
  now?: () => number;
  /** Told when a batch or a prune fails (the log keeps going). */
  onError?: (err: unknown) => void;
}

const DAY = 86_400_000;
const INSERT = `INSERT INTO audit (ts, principal_id, principal_name, principal_role, principal_project, api_key,
  verb, method, path, kind, project, name, subresource, address, user_agent, status, allowed, reason)
  VALUES (@ts, @principal_id, @principal_name, @principal_role, @principal_project, @api_key, @verb, @method,
  @path, @kind, @project, @name, @subresource, @address, @user_agent, @status, @allowed, @reason)`;

/**
 * The audit log on the embedded SQLite file (and the operator's, where its tokens are). Entries
 * are queued in memory and written in batches through the database's group-commit writer, so a
 * request never waits on the audit write; close() writes what is left.
 */
export class SqliteAuditLog implements AuditLog {
  private queue: AuditEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly pruner: NodeJS.Timeout;
  private readonly firstPrune: NodeJS.Timeout;
  private inFlight: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly tally: AuditCounts = { written: 0, dropped: 0 };
  private readonly opts: Required<Omit<SqliteAuditOptions, "onError">> & Pick<SqliteAuditOptions, "onError">;

  constructor(
    private readonly db: Kysely<Schema>,
    options: SqliteAuditOptions = {},
  ) {
    this.opts = {
      maxAgeMs: options.maxAgeMs ?? 30 * DAY,
      maxRows: options.maxRows ?? 1_000_000,
      flushMs: options.flushMs ?? 100,
      batchRows: options.batchRows ?? 500,
      maxQueued: options.maxQueued ?? 50_000,
      pruneMs: options.pruneMs ?? 600_000,
      now: options.now ?? Date.now,
      onError: options.onError,
    };
    // Timers must not keep a stopping process alive.
    this.pruner = setInterval(() => void this.prune(), this.opts.pruneMs).unref();
    this.firstPrune = setTimeout(() => void this.prune(), 1000).unref();
  }

  record(entry: AuditEntry): void {
    if (this.closed || this.queue.length >= this.opts.maxQueued) {
      this.tally.dropped++;
      return;
    }
    this.queue.push(entry);
    if (this.queue.length >= this.opts.batchRows) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.opts.flushMs).unref();
  }

  counts(): AuditCounts {
    return { ...this.tally };
  }

  /** Writes what is queued as one transaction; resolves once it (and any write before it) is done. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue;
    this.queue = [];
    if (batch.length > 0) {
      const write = writerOf(this.db)
        .submit({
          run(raw: Database.Database) {
            const insert = raw.prepare(INSERT);
            for (const e of batch) insert.run(toRow(e));
          },
        })
        .then(
          () => {
            this.tally.written += batch.length;
          },
          (err: unknown) => {
            this.tally.dropped += batch.length;
            this.opts.onError?.(err);
          },
        );
      this.inFlight = this.inFlight.then(() => write);
    }
    return this.inFlight;
  }

  async list(query: AuditQuery): Promise<AuditRecord[]> {
    await this.flush();
    const limit = Math.max(1, Math.min(query.limit ?? 500, 10_000));
    let q = this.db.selectFrom("audit").selectAll();
    if (query.since !== undefined) q = q.where("ts", ">=", query.since);
    const project = query.project;
    if (project !== undefined)
      q = q.where((eb) => eb.or([eb("project", "=", project), eb("principal_project", "=", project)]));
    const rows = await q.orderBy("id", "desc").limit(limit).execute();
    return rows.reverse().map(fromRow);
  }

  /** Deletes entries older than maxAgeMs and beyond the newest maxRows. */
  async prune(): Promise<void> {
    try {
      const cutoff = this.opts.now() - this.opts.maxAgeMs;
      await this.db.deleteFrom("audit").where("ts", "<", cutoff).execute();
      const keep = await this.db
        .selectFrom("audit")
        .select("id")
        .orderBy("id", "desc")
        .offset(this.opts.maxRows - 1)
        .limit(1)
        .executeTakeFirst();
      if (keep) await this.db.deleteFrom("audit").where("id", "<", keep.id).execute();
    } catch (err) {
      this.opts.onError?.(err);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pruner);
    clearTimeout(this.firstPrune);
    await this.flush();
  }
}

function toRow(e: AuditEntry) {
  return {
    ts: e.time,
    principal_id: e.principal?.id ?? null,
    principal_name: e.principal?.name ?? null,
    principal_role: e.principal?.role ?? null,
    principal_project: e.principal?.project ?? null,
    api_key: e.principal?.apiKey ? 1 : 0,
    verb: e.verb,
    method: e.method,
    path: e.path,
    kind: e.object.kind ?? null,
    project: e.object.project ?? null,
    name: e.object.name ?? null,
    subresource: e.object.subresource ?? null,
    address: e.source.address,
    user_agent: e.source.userAgent ?? null,
    status: e.status,
    allowed: e.allowed ? 1 : 0,
    reason: e.reason ?? null,
  };
}

function fromRow(r: Selectable<AuditTable>): AuditRecord {
  const defined = <T extends object>(o: T) =>
    Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined)) as T;
  return {
    id: r.id,
    time: r.ts,
    ...(r.principal_id
      ? {
          principal: defined({
            id: r.principal_id,
            name: r.principal_name ?? "",
            role: r.principal_role ?? "",
            project: r.principal_project ?? undefined,
            apiKey: r.api_key ? true : undefined,
          }),
        }
      : {}),
    verb: r.verb,
    method: r.method,
    path: r.path,
    object: defined({
      kind: r.kind ?? undefined,
      project: r.project ?? undefined,
      name: r.name ?? undefined,
      subresource: r.subresource ?? undefined,
    }),
    source: defined({ address: r.address, userAgent: r.user_agent ?? undefined }),
    status: r.status,
    allowed: r.allowed === 1,
    ...(r.reason !== null ? { reason: r.reason } : {}),
  };
}

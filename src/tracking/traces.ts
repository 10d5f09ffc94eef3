import { randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import { invalidParameter, notFound } from "./errors.js";
import { type AttributeSpec, type Clause, type Grammar, parseFilter } from "./filter.js";
import type { TracesSchema } from "./schema.js";
import { gatewayRows, type PackedItem } from "./traces-gateway.js";
import {
  type Assessment,
  type Body,
  ROW_COLUMNS,
  type Row,
  type TraceInfo,
  toInfo,
  traceRow,
} from "./traces-row.js";

export {
  ARTIFACT_LOCATION_TAG,
  type Assessment,
  durationMs,
  type Row,
  type TraceInfo,
  timestampMs,
  traceArtifactPath,
  traceRow,
} from "./traces-row.js";

/**
 * MLflow 3's traces, per project: the trace's record (its TraceInfo: times, state, previews,
 * metadata, tags) is kept here; its spans are the `traces.json` the client uploads to the
 * artifact location this store hands it (`mlflow-artifacts:/EXP/traces/ID/artifacts`), as
 * MLflow's own server does when it does not take spans itself.
 *
 * The gateway's traces (spec.tracing) come as raw batches (writeBatch: one row per batch, no
 * parsing on the request path) and become records here when traces are next read (settle).
 */

const MAX_RESULTS = 500;

export class TraceStore {
  private readonly db: Kysely<TracesSchema>;

  constructor(
    db: Kysely<unknown>,
    private readonly now: () => number = Date.now,
  ) {
    this.db = db as Kysely<TracesSchema>;
  }

  /**
   * StartTraceV3 (sent when a trace ends): records it in its experiment, which the caller has
   * checked is the project's, with the artifact location its spans go to. Sent again (the
   * client retries), it replaces the record.
   */
  async start(project: string, raw: unknown): Promise<TraceInfo> {
    return (await this.startMany(project, [raw]))[0]!;
  }

  /**
   * Several traces in one transaction (the gateway records its traces in batches); each checked
   * before any is written.
   */
  async startMany(project: string, raws: unknown[], spans?: string[]): Promise<TraceInfo[]> {
    const rows: TracesSchema["tr_traces"][] = raws.map((raw, i) => ({
      ...traceRow(project, raw, this.now),
      spans: spans?.[i] ?? null,
    }));
    await this.writeRows(project, rows);
    return rows.map(toInfo);
  }

  /** Rows made by traceRow (with their spans), replacing any of the same ids, in one transaction. */
  async writeRows(project: string, rows: TracesSchema["tr_traces"][]): Promise<void> {
    await this.db.transaction().execute((tx) => writeRowsIn(tx, project, rows));
  }

  /**
   * A batch of the gateway's traced requests, kept raw (PackedItem[] as JSON, their bodies in
   * `data`, each item's experimentId set): one INSERT, read back as traces by settle.
   */
  async writeBatch(items: string, data: Uint8Array): Promise<void> {
    await this.db.insertInto("tr_trace_batches").values({ created_ms: this.now(), items, data }).execute();
  }

  private settling: Promise<number> | undefined;

  /**
   * Turns the gateway's raw batches into trace records (once: each batch goes as its records are
   * written, in one transaction), before anything reads traces. A batch at a time, the event loop
   * let go between them, so a backlog never holds the gateway's requests for long. Resolves with
   * the items that could not be read (skipped).
   */
  settle(): Promise<number> {
    // One pass at a time; a caller during a pass waits for it and then a pass of its own, so
    // a batch written before the call is always settled when it resolves.
    const previous = this.settling;
    const next = (previous ? previous.then(() => this.settleAll()) : this.settleAll()).finally(() => {
      if (this.settling === next) this.settling = undefined;
    });
    this.settling = next;
    return next;
  }

  private async settleAll(): Promise<number> {
    let failed = 0;
    for (;;) {
      const one = await this.settleOne();
      if (one === undefined) return failed;
      failed += one;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** The oldest batch as records; undefined when there is none. */
  private async settleOne(): Promise<number | undefined> {
    return this.db.transaction().execute(async (tx) => {
      const batch = await tx
        .selectFrom("tr_trace_batches")
        .selectAll()
        .orderBy("id")
        .limit(1)
        .executeTakeFirst();
      if (!batch) return undefined;
      // Claimed by its deletion: another API process settling it too deletes nothing and skips it.
      const gone = await tx.deleteFrom("tr_trace_batches").where("id", "=", batch.id).executeTakeFirst();
      if (Number(gone.numDeletedRows) === 0) return 0;
      let items: PackedItem[];
      try {
        items = JSON.parse(batch.items) as PackedItem[];
      } catch {
        return 1;
      }
      const { rows, failed } = gatewayRows({ items, data: batch.data });
      for (const [project, list] of rows) await writeRowsIn(tx, project, list);
      return failed;
    });
  }

  /** The spans (traces.json) Loom keeps for a trace it wrote itself, if it is one of those. */
  async spans(project: string, traceId: string): Promise<string | undefined> {
    await this.settle();
    const row = await this.db
      .selectFrom("tr_traces")
      .select("spans")
      .where("project", "=", project)
      .where("trace_id", "=", traceId)
      .executeTakeFirst();
    return row?.spans ?? undefined;
  }

  async get(project: string, traceId: string): Promise<TraceInfo> {
    return toInfo(await this.row(project, traceId));
  }

  /** SearchTracesV3 over some of the project's experiments: MLflow's trace filter, order and pages. */
  async search(
    project: string,
    opts: {
      experimentIds: string[];
      filter?: string;
      maxResults?: number;
      orderBy?: string[];
      pageToken?: string;
    },
  ): Promise<{ traces: TraceInfo[]; next_page_token?: string }> {
    const max = opts.maxResults ?? 100;
    if (!Number.isInteger(max) || max < 1 || max > MAX_RESULTS)
      throw invalidParameter(`'max_results' must be between 1 and ${MAX_RESULTS}, got ${max}`);
    const clauses = parseFilter(opts.filter, TRACE_GRAMMAR);
    const ids = opts.experimentIds.filter((id) => /^\d+$/.test(id)).map(Number);
    if (ids.length === 0) return { traces: [] };
    await this.settle();
    const rows = await this.db
      .selectFrom("tr_traces")
      .select(ROW_COLUMNS)
      .where("project", "=", project)
      .where("experiment_id", "in", ids)
      .execute();
    // Filtered and sorted on the rows' columns; only the page returned is parsed into TraceInfos
    // (paging through 30,000 traces parsed every one of them for each page of 500).
    const found = clauses.length ? rows.filter((r) => clauses.every((c) => matches(c, r))) : rows;
    const order = orderOf(opts.orderBy);
    found.sort((a, b) => {
      for (const o of order) {
        const x = o.key(a);
        const y = o.key(b);
        if (x !== y) return (x < y ? -1 : 1) * (o.ascending ? 1 : -1);
      }
      return a.trace_id < b.trace_id ? -1 : 1;
    });
    const offset = offsetOf(opts.pageToken);
    const out: { traces: TraceInfo[]; next_page_token?: string } = {
      traces: found.slice(offset, offset + max).map(toInfo),
    };
    if (found.length > offset + max)
      out.next_page_token = Buffer.from(JSON.stringify({ offset: offset + max })).toString("base64");
    return out;
  }

  async setTag(project: string, traceId: string, key: string, value: string): Promise<void> {
    await this.editBody(project, traceId, (b) => {
      b.tags[key] = value;
    });
  }

  async deleteTag(project: string, traceId: string, key: string): Promise<void> {
    await this.editBody(project, traceId, (b) => {
      if (!(key in b.tags)) throw notFound(`No trace tag with key '${key}' for trace with ID '${traceId}'`);
      delete b.tags[key];
    });
  }

  /**
   * DeleteTraces: by id, or the oldest (request time at most maxTimestampMs, at most maxTraces of
   * them) of one experiment. Returns what went, for the caller to remove their spans.
   */
  async delete(
    project: string,
    opts: { experimentId: string; traceIds?: string[]; maxTimestampMs?: number; maxTraces?: number },
  ): Promise<{ experiment_id: number; trace_id: string }[]> {
    await this.settle();
    let q = this.db
      .selectFrom("tr_traces")
      .select(["experiment_id", "trace_id"])
      .where("project", "=", project)
      .where("experiment_id", "=", Number(opts.experimentId));
    if (opts.traceIds?.length) q = q.where("trace_id", "in", opts.traceIds);
    else if (opts.maxTimestampMs !== undefined) q = q.where("request_time", "<=", opts.maxTimestampMs);
    else throw invalidParameter("Either 'max_timestamp_millis' or 'request_ids' must be specified.");
    q = q.orderBy("request_time");
    if (opts.maxTraces !== undefined) q = q.limit(opts.maxTraces);
    const gone = await q.execute();
    await this.remove(
      project,
      gone.map((g) => g.trace_id),
    );
    return gone;
  }

  /**
   * Retention: removes every project's traces that started over maxAgeMs ago (a batch at a time,
   * so one sweep never holds the database long), returning what went for their spans' removal.
   */
  async sweep(
    maxAgeMs: number,
    batch = 1000,
  ): Promise<{ project: string; experiment_id: number; trace_id: string }[]> {
    await this.settle();
    const cutoff = this.now() - maxAgeMs;
    const out: { project: string; experiment_id: number; trace_id: string }[] = [];
    for (;;) {
      const old = await this.db
        .selectFrom("tr_traces")
        .select(["project", "experiment_id", "trace_id"])
        .where("request_time", "<", cutoff)
        .limit(batch)
        .execute();
      if (old.length === 0) return out;
      for (const project of new Set(old.map((o) => o.project)))
        await this.remove(
          project,
          old.filter((o) => o.project === project).map((o) => o.trace_id),
        );
      out.push(...old);
      if (old.length < batch) return out;
    }
  }

  private async remove(project: string, traceIds: string[]): Promise<void> {
    for (let i = 0; i < traceIds.length; i += 500)
      await this.db
        .deleteFrom("tr_traces")
        .where("project", "=", project)
        .where("trace_id", "in", traceIds.slice(i, i + 500))
        .execute();
  }

  /** CreateAssessment: adds feedback or an expectation to a trace, with a new id and times. */
  async createAssessment(project: string, traceId: string, raw: unknown): Promise<Assessment> {
    const a = assessmentOf(raw);
    if (typeof a.assessment_name !== "string" || !a.assessment_name)
      throw invalidParameter("'assessment.assessment_name' must be given");
    if (!("feedback" in a) && !("expectation" in a))
      throw invalidParameter("'assessment' must carry a 'feedback' or an 'expectation'");
    const now = new Date(this.now()).toISOString();
    const out: Assessment = {
      valid: true,
      create_time: now,
      last_update_time: now,
      ...a,
      trace_id: traceId,
      assessment_id: `a-${randomBytes(16).toString("hex")}`,
    };
    await this.editBody(project, traceId, (b) => {
      if (typeof out.overrides === "string")
        for (const old of b.assessments ?? []) if (old.assessment_id === out.overrides) old.valid = false;
      b.assessments = [...(b.assessments ?? []), out];
    });
    return out;
  }

  async getAssessment(project: string, traceId: string, assessmentId: string): Promise<Assessment> {
    const body = JSON.parse((await this.row(project, traceId)).body) as Body;
    return findAssessment(body, traceId, assessmentId);
  }

  /** UpdateAssessment: the fields named by the update mask (all the given ones without one). */
  async updateAssessment(
    project: string,
    traceId: string,
    assessmentId: string,
    raw: unknown,
    mask: string[] | undefined,
  ): Promise<Assessment> {
    const a = assessmentOf(raw);
    let out: Assessment | undefined;
    await this.editBody(project, traceId, (b) => {
      const old = findAssessment(b, traceId, assessmentId);
      const fields = mask?.length ? mask : Object.keys(a);
      for (const f of fields)
        if (!["assessment_id", "trace_id", "create_time"].includes(f)) {
          if (f in a) old[f] = a[f];
          else delete old[f];
        }
      old.last_update_time = new Date(this.now()).toISOString();
      out = old;
    });
    return out!;
  }

  async deleteAssessment(project: string, traceId: string, assessmentId: string): Promise<void> {
    await this.editBody(project, traceId, (b) => {
      findAssessment(b, traceId, assessmentId);
      b.assessments = b.assessments!.filter((x) => x.assessment_id !== assessmentId);
    });
  }

  /** LinkTracesToRun: the traces are found by `run_id` searches of that run (an evaluation's). */
  async linkToRun(project: string, traceIds: string[], runId: string): Promise<void> {
    if (traceIds.length > 100) throw invalidParameter("At most 100 traces can be linked at a time.");
    for (const id of traceIds)
      await this.editBody(project, id, (b) => {
        b.runs = [...new Set([...(b.runs ?? []), runId])];
      });
  }

  private async row(project: string, traceId: string): Promise<Row> {
    await this.settle();
    const row = await this.db
      .selectFrom("tr_traces")
      .selectAll()
      .where("project", "=", project)
      .where("trace_id", "=", traceId)
      .executeTakeFirst();
    if (!row) throw notFound(`Trace with ID '${traceId}' not found.`);
    return row;
  }

  private async editBody(project: string, traceId: string, edit: (b: Body) => void): Promise<void> {
    await this.settle();
    await this.db.transaction().execute(async (tx) => {
      const row = await tx
        .selectFrom("tr_traces")
        .select("body")
        .where("project", "=", project)
        .where("trace_id", "=", traceId)
        .executeTakeFirst();
      if (!row) throw notFound(`Trace with ID '${traceId}' not found.`);
      const body = JSON.parse(row.body) as Body;
      edit(body);
      await tx
        .updateTable("tr_traces")
        .set({ body: JSON.stringify(body) })
        .where("project", "=", project)
        .where("trace_id", "=", traceId)
        .execute();
    });
  }
}

/** Rows made by traceRow, replacing any of the same ids, in the transaction `tx`. */
async function writeRowsIn(
  tx: Kysely<TracesSchema>,
  project: string,
  rows: TracesSchema["tr_traces"][],
): Promise<void> {
  for (let i = 0; i < rows.length; i += 200) {
    const ids = rows.slice(i, i + 200).map((r) => r.trace_id);
    await tx.deleteFrom("tr_traces").where("project", "=", project).where("trace_id", "in", ids).execute();
    await tx
      .insertInto("tr_traces")
      .values(rows.slice(i, i + 200))
      .execute();
  }
}

function assessmentOf(raw: unknown): Record<string, unknown> {
  if (!raw || typeof raw !== "object" || Array.isArray(raw))
    throw invalidParameter("'assessment' must be an Assessment object");
  return { ...(raw as Record<string, unknown>) };
}

function findAssessment(b: Body, traceId: string, assessmentId: string): Assessment {
  const a = b.assessments?.find((x) => x.assessment_id === assessmentId);
  if (!a) throw notFound(`Assessment with ID '${assessmentId}' not found for trace '${traceId}'`);
  return a;
}

// ---- MLflow's trace search grammar -------------------------------------------------------

const EQ: AttributeSpec["comparators"] = ["=", "!="];
const NUMERIC: AttributeSpec["comparators"] = [...EQ, ">", ">=", "<", "<="];
const TEXT: AttributeSpec["comparators"] = [...EQ, "LIKE", "ILIKE"];
const number = (canonical: string): AttributeSpec => ({ canonical, type: "number", comparators: NUMERIC });
const text = (canonical: string, comparators = TEXT): AttributeSpec => ({
  canonical,
  type: "string",
  comparators,
});

/**
 * search_traces' filter: the trace's times, state, name and ids as attributes, its tags, and its
 * metadata (`metadata.mlflow.sourceRun = '…'`), which this parser keeps as "param" clauses.
 */
export const TRACE_GRAMMAR: Grammar = {
  what: "traces",
  entities: {
    attribute: "attribute",
    attributes: "attribute",
    attr: "attribute",
    trace: "attribute",
    tag: "tag",
    tags: "tag",
    metadata: "param",
    request_metadata: "param",
  },
  backtickedEntity: false,
  attributes: {
    timestamp_ms: number("timestamp_ms"),
    timestamp: number("timestamp_ms"),
    execution_time_ms: number("execution_time_ms"),
    execution_time: number("execution_time_ms"),
    status: text("state", [...EQ, "IN", "NOT IN"]),
    state: text("state", [...EQ, "IN", "NOT IN"]),
    name: text("name"),
    trace_id: text("trace_id", [...EQ, "IN", "NOT IN"]),
    request_id: text("trace_id", [...EQ, "IN", "NOT IN"]),
    client_request_id: text("client_request_id"),
    run_id: text("run_id", EQ),
  },
  comparators: { tag: [...TEXT, "IS NULL", "IS NOT NULL"], param: [...TEXT, "IS NULL", "IS NOT NULL"] },
};

function attribute(r: Row, key: string): string | number | undefined {
  const body = JSON.parse(r.body) as Body;
  switch (key) {
    case "timestamp_ms":
      return r.request_time;
    case "execution_time_ms":
      return r.execution_ms ?? undefined;
    case "state":
      return r.state;
    case "name":
      return body.tags["mlflow.traceName"];
    case "trace_id":
      return r.trace_id;
    case "client_request_id":
      return r.client_request_id ?? undefined;
    case "run_id":
      return body.metadata["mlflow.sourceRun"];
    default:
      return undefined;
  }
}

function matches(c: Clause, r: Row): boolean {
  const body = JSON.parse(r.body) as Body;
  const actual =
    c.entity === "tag" ? body.tags[c.key] : c.entity === "param" ? body.metadata[c.key] : attribute(r, c.key);
  // A trace belongs to its source run and to each run it was linked to.
  if (c.entity === "attribute" && c.key === "run_id" && body.runs?.length) {
    const mine = [...body.runs, ...(actual === undefined ? [] : [String(actual)])];
    return c.comparator === "=" ? mine.includes(String(c.value)) : !mine.includes(String(c.value));
  }
  if (c.comparator === "IS NULL") return actual === undefined;
  if (c.comparator === "IS NOT NULL") return actual !== undefined;
  if (actual === undefined) return c.comparator === "!=" || c.comparator === "NOT IN";
  const v = c.value;
  switch (c.comparator) {
    case "=":
      return actual === v || String(actual) === String(v);
    case "!=":
      return String(actual) !== String(v);
    case ">":
      return Number(actual) > Number(v);
    case ">=":
      return Number(actual) >= Number(v);
    case "<":
      return Number(actual) < Number(v);
    case "<=":
      return Number(actual) <= Number(v);
    case "IN":
      return (v as (string | number)[]).map(String).includes(String(actual));
    case "NOT IN":
      return !(v as (string | number)[]).map(String).includes(String(actual));
    case "LIKE":
    case "ILIKE":
      return like(String(actual), String(v), c.comparator === "ILIKE");
    default:
      return false;
  }
}

function like(s: string, pattern: string, insensitive: boolean): boolean {
  const re = pattern
    .replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
    .replace(/%/g, ".*")
    .replace(/_/g, ".");
  return new RegExp(`^${re}$`, insensitive ? "is" : "s").test(s);
}

/** order_by: timestamp_ms (the default, newest first), execution_time_ms, state, name. */
function orderOf(orderBy: string[] | undefined): { key: (r: Row) => string | number; ascending: boolean }[] {
  const keys: Record<string, (r: Row) => string | number> = {
    timestamp_ms: (r) => r.request_time,
    timestamp: (r) => r.request_time,
    execution_time_ms: (r) => r.execution_ms ?? -1,
    execution_time: (r) => r.execution_ms ?? -1,
    state: (r) => r.state,
    status: (r) => r.state,
    name: (r) => String(attribute(r, "name") ?? ""),
  };
  if (!orderBy?.length) return [{ key: keys.timestamp_ms!, ascending: false }];
  return orderBy.map((o) => {
    const m = /^\s*(?:(?:attributes?|trace)\.)?`?(\w+)`?(?:\s+(ASC|DESC))?\s*$/i.exec(o);
    const key = m && keys[m[1]!];
    if (!key)
      throw invalidParameter(`Invalid order_by clause '${o}': order by ${Object.keys(keys).join(", ")}`);
    return { key, ascending: (m[2] ?? "ASC").toUpperCase() === "ASC" };
  });
}

function offsetOf(token: string | undefined): number {
  if (!token) return 0;
  try {
    const offset = Number(
      (JSON.parse(Buffer.from(token, "base64").toString("utf8")) as { offset: number }).offset,
    );
    if (Number.isInteger(offset) && offset >= 0) return offset;
  } catch {}
  throw invalidParameter("Invalid page token, could not base64-decode");
}

import { randomBytes } from "node:crypto";
import { type Kysely, sql } from "kysely";
import { invalidParameter, notFound } from "./errors.js";
import { parseFilter } from "./filter.js";
import type { TracesSchema } from "./schema.js";
import { gatewayRows, type PackedItem } from "./traces-gateway.js";
import { matches, type Order, offsetOf, orderOf, pageToken, TRACE_GRAMMAR } from "./traces-query.js";
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
    const order = orderOf(opts.orderBy);
    const offset = offsetOf(opts.pageToken);
    if (clauses.length === 0 && order.every((o) => o.column))
      return this.pageInSql(project, ids, order, offset, max);
    const rows = await this.db
      .selectFrom("tr_traces")
      .select(ROW_COLUMNS)
      .where("project", "=", project)
      .where("experiment_id", "in", ids)
      .execute();
    // Filtered and sorted on the rows' columns; only the page returned is parsed into TraceInfos
    // (paging through 30,000 traces parsed every one of them for each page of 500).
    const found = clauses.length ? rows.filter((r) => clauses.every((c) => matches(c, r))) : rows;
    found.sort((a, b) => {
      for (const o of order) {
        const x = o.key(a);
        const y = o.key(b);
        if (x !== y) return (x < y ? -1 : 1) * (o.ascending ? 1 : -1);
      }
      return a.trace_id < b.trace_id ? -1 : 1;
    });
    const out: { traces: TraceInfo[]; next_page_token?: string } = {
      traces: found.slice(offset, offset + max).map(toInfo),
    };
    if (found.length > offset + max) out.next_page_token = pageToken(offset + max);
    return out;
  }

  /**
   * A page with no filter, ordered by columns: the database orders and pages the trace ids (its
   * index, no body read), then reads the page's rows alone. Loading every row with its body for
   * each page made paging through 150,000 gateway traces take minutes.
   */
  private async pageInSql(
    project: string,
    ids: number[],
    order: Order[],
    offset: number,
    max: number,
  ): Promise<{ traces: TraceInfo[]; next_page_token?: string }> {
    let q = this.db
      .selectFrom("tr_traces")
      .select("trace_id")
      .where("project", "=", project)
      .where("experiment_id", "in", ids);
    for (const o of order) q = q.orderBy(sql.raw(o.column!), o.ascending ? "asc" : "desc");
    const page = await q
      .orderBy("trace_id", "asc")
      .limit(max + 1)
      .offset(offset)
      .execute();
    const wanted = page.slice(0, max).map((r) => r.trace_id);
    const rows = wanted.length
      ? await this.db
          .selectFrom("tr_traces")
          .select(ROW_COLUMNS)
          .where("project", "=", project)
          .where("trace_id", "in", wanted)
          .execute()
      : [];
    const byId = new Map(rows.map((r) => [r.trace_id, r]));
    return {
      traces: wanted.flatMap((id) => {
        const r = byId.get(id);
        return r ? [toInfo(r)] : [];
      }),
      ...(page.length > max ? { next_page_token: pageToken(offset + max) } : {}),
    };
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

import { type Kysely, sql } from "kysely";
import { invalidParameter } from "./errors.js";
import type { RunsSchema } from "./schema.js";
import { decodePageToken, encodePageToken } from "./search.js";
import type { Metric, RawMetric } from "./types.js";
import { keyOf } from "./validate.js";

/** The run a metric history is asked for, checked to be the project's. */
type RunOf = (project: string, runId: string | undefined) => Promise<{ run_uuid: string }>;

/** get-history-bulk-interval's limits, MLflow's: runs per call, and values per run (the default). */
const MAX_RUNS_BULK_INTERVAL = 100;
const MAX_RESULTS_PER_RUN = 2500;
/** What MLflow stores for ±infinity (its SQL stores do the same). */
const MAX_DOUBLE = 1.7976931348623157e308;

/** Metric histories: a run's values of one key, and one key across runs sampled for charts. */
export class MetricHistories {
  constructor(
    private readonly db: Kysely<RunsSchema>,
    private readonly runOf: RunOf,
  ) {}

  async metricHistory(
    project: string,
    runId: string | undefined,
    key: string,
    opts: { maxResults?: number; pageToken?: string } = {},
  ): Promise<{ metrics: Metric[]; next_page_token?: string }> {
    if (!key) throw invalidParameter("Missing value for required parameter 'metric_key'.");
    const run = await this.runOf(project, runId);
    const offset = decodePageToken(opts.pageToken);
    const max = opts.maxResults;
    let q = this.db
      .selectFrom("tr_metrics")
      .select(["key", "value", "is_nan", "timestamp", "step"])
      .where("run_uuid", "=", run.run_uuid)
      .where("key", "=", key)
      .orderBy("timestamp")
      .orderBy("step");
    if (max !== undefined) q = q.limit(max + 1).offset(offset);
    const rows = await q.execute();
    const page = max !== undefined ? rows.slice(0, max) : rows;
    return {
      metrics: page.map(fromStoredMetric),
      ...(max !== undefined && rows.length > max ? { next_page_token: encodePageToken(offset + max) } : {}),
    };
  }

  /**
   * One metric across many runs, sampled for charts (the UI's get-history-bulk-interval), as
   * MLflow's SQL store does it: each run's values in [startStep, endStep] (all of them when no
   * range is given), ordered by step, timestamp, value, go into `maxResults` equal buckets
   * (NTILE) and the first of each is kept, except that the run's last value always replaces the
   * first of the last bucket; a run with at most `maxResults` values gives them all. Runs that
   * do not exist in the project give nothing, as in MLflow. One query for all the runs.
   */
  async metricHistoryBulkInterval(
    project: string,
    req: { runIds: string[]; metricKey: string; maxResults?: number; startStep?: number; endStep?: number },
  ): Promise<{ metrics: (Metric & { run_id: string })[] }> {
    const { runIds, metricKey } = req;
    if (runIds.length === 0) throw invalidParameter("Missing value for required parameter 'run_ids'.");
    if (runIds.length > MAX_RUNS_BULK_INTERVAL)
      throw invalidParameter(
        `GetMetricHistoryBulkInterval request must specify at most ${MAX_RUNS_BULK_INTERVAL} run_ids. Received ${runIds.length} run_ids.`,
      );
    if (!metricKey) throw invalidParameter("Missing value for required parameter 'metric_key'.");
    const max = req.maxResults ?? MAX_RESULTS_PER_RUN;
    if (!Number.isInteger(max) || max < 1 || max > MAX_RESULTS_PER_RUN)
      throw invalidParameter(`max_results must be between 1 and ${MAX_RESULTS_PER_RUN}.`);
    const { startStep, endStep } = req;
    if ((startStep === undefined) !== (endStep === undefined))
      throw invalidParameter("If either start step or end step are specified, both must be specified.");
    for (const [k, v] of [
      ["start_step", startStep],
      ["end_step", endStep],
    ] as const)
      if (v !== undefined && !Number.isInteger(v))
        throw invalidParameter(`'${k}' must be an integer, got ${v}`);
    if (startStep !== undefined && endStep !== undefined && startStep > endStep)
      throw invalidParameter(
        `end_step must be greater than start_step. Found start_step=${startStep} and end_step=${endStep}.`,
      );
    const ids = [...new Set(runIds)];
    const range =
      startStep !== undefined && endStep !== undefined
        ? sql`and m.step between ${startStep} and ${endStep}`
        : sql``;
    // Each run's values in order, sampled here: reading 100,000 rows costs a third of the
    // window functions (NTILE, ROW_NUMBER twice) that picked the same rows in SQL.
    const metrics: (Metric & { run_id: string })[] = [];
    for (const id of ids) {
      const rows = await sql<StoredMetric>`
        select m.key, m.value, m.is_nan, m.timestamp, m.step
        from tr_metrics m join tr_runs r on r.run_uuid = m.run_uuid
        where r.project = ${project} and m.key = ${metricKey} and m.run_uuid = ${id} ${range}
        order by m.step, m.timestamp, m.value, m.is_nan`.execute(this.db);
      for (const r of ntileFirsts(rows.rows, max)) metrics.push({ ...fromStoredMetric(r), run_id: id });
    }
    return { metrics };
  }
}

/**
 * The rows MLflow's SQL store keeps of `n` ordered values in `max` NTILE buckets: the first of
 * each bucket but the last, then the last value (all of them when n ≤ max). NTILE gives the
 * first n % max buckets one row more than the rest, so bucket b starts at b·q + min(b, n % max).
 */
export function ntileFirsts<T>(rows: T[], max: number): T[] {
  const n = rows.length;
  if (n <= max) return rows;
  const q = Math.floor(n / max);
  const r = n % max;
  const out: T[] = [];
  for (let b = 0; b < max - 1; b++) out.push(rows[b * q + Math.min(b, r)]!);
  out.push(rows[n - 1]!);
  return out;
}

/**
 * Appends a run's metrics to its history and keeps tr_latest_metrics (what search and runs show)
 * at each key's latest value. Runs in the caller's transaction.
 */
export async function recordMetrics(
  tx: Kysely<RunsSchema>,
  runUuid: string,
  metrics: StoredMetric[],
): Promise<void> {
  if (!metrics.length) return;
  for (let i = 0; i < metrics.length; i += 100)
    await tx
      .insertInto("tr_metrics")
      .values(metrics.slice(i, i + 100).map((m) => ({ run_uuid: runUuid, ...m })))
      .execute();
  // The latest value per key: highest step, then newest timestamp, then largest value.
  for (const m of latestPerKey(metrics)) {
    await sql`insert into tr_latest_metrics (run_uuid, key, value, is_nan, timestamp, step)
        values (${runUuid}, ${m.key}, ${m.value}, ${m.is_nan}, ${m.timestamp}, ${m.step})
        on conflict (run_uuid, key) do update set value = excluded.value, is_nan = excluded.is_nan,
          timestamp = excluded.timestamp, step = excluded.step
        where excluded.step > tr_latest_metrics.step
           or (excluded.step = tr_latest_metrics.step and excluded.timestamp > tr_latest_metrics.timestamp)
           or (excluded.step = tr_latest_metrics.step and excluded.timestamp = tr_latest_metrics.timestamp and excluded.value >= tr_latest_metrics.value)`.execute(
      tx,
    );
  }
}

/** A metric value as its tables hold it: NaN as is_nan, ±infinity as ±MAX_DOUBLE. */
export interface StoredMetric {
  key: string;
  value: number;
  is_nan: number;
  timestamp: number;
  step: number;
}

/** A logged metric, checked, as stored; `field` names it in messages ("metrics[3]"). */
export function toStoredMetric(m: RawMetric, field = "metric"): StoredMetric {
  if (!m || typeof m !== "object" || Array.isArray(m))
    throw invalidParameter(`'${field}' must be an object with key, value, timestamp and step`);
  const key = keyOf(m.key, `${field}.key`);
  const timestamp = integerOf(m.timestamp, `${field}.timestamp`, true);
  const step = integerOf(m.step ?? 0, `${field}.step`, false);
  let value: number;
  let isNan = 0;
  const v: unknown = m.value;
  if (v === "NaN" || (typeof v === "number" && Number.isNaN(v))) {
    value = 0;
    isNan = 1;
  } else {
    // A number, or the strings proto3 JSON writes for doubles; null, booleans and objects are
    // refused (null is not 0).
    value =
      v === "Infinity"
        ? MAX_DOUBLE
        : v === "-Infinity"
          ? -MAX_DOUBLE
          : typeof v === "number"
            ? v
            : typeof v === "string" && v.trim() !== ""
              ? Number(v)
              : Number.NaN;
    if (Number.isNaN(value))
      throw invalidParameter(`'${field}.value' must be a number, got ${JSON.stringify(v) ?? "nothing"}`);
    if (!Number.isFinite(value)) value = value > 0 ? MAX_DOUBLE : -MAX_DOUBLE;
  }
  return { key, value, is_nan: isNan, timestamp, step };
}

/** A timestamp or step: an integer, or a string of one (proto3 JSON writes int64 as a string). */
function integerOf(v: unknown, field: string, required: boolean): number {
  if (v === undefined || v === null || v === "") {
    if (required) throw invalidParameter(`Missing value for required parameter '${field}'.`);
    return 0;
  }
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n))
    throw invalidParameter(`'${field}' must be an integer, got ${JSON.stringify(v)}`);
  return n;
}

/** A stored metric as MLflow returns it. */
export function fromStoredMetric(m: {
  key: string;
  value: number;
  is_nan: number;
  timestamp: number;
  step: number;
}): Metric {
  return { key: m.key, value: m.is_nan ? "NaN" : m.value, timestamp: m.timestamp, step: m.step };
}

function latestPerKey(metrics: StoredMetric[]): StoredMetric[] {
  const best = new Map<string, StoredMetric>();
  for (const m of metrics) {
    const b = best.get(m.key);
    if (
      !b ||
      m.step > b.step ||
      (m.step === b.step && m.timestamp > b.timestamp) ||
      (m.step === b.step && m.timestamp === b.timestamp && m.value >= b.value)
    )
      best.set(m.key, m);
  }
  return [...best.values()];
}

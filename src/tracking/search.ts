import { type RawBuilder, sql } from "kysely";
import { invalidParameter } from "./errors.js";
import { type Clause, EXPERIMENT_GRAMMAR, type OrderBy, parseFilter } from "./filter.js";
import type { TrackingDialect } from "./schema.js";

/**
 * Searches as SQL: MLflow's filter clauses and order-by on runs and experiments, in the dialect at
 * hand, and the offset-in-a-token paging every search shares.
 */

const MAX_RESULTS = 50_000;

/** A search's max_results, checked against MLflow's bounds. */
export function checkMaxResults(n: number): number {
  if (!Number.isInteger(n) || n < 1)
    throw invalidParameter(`max_results must be a positive integer, got ${n}`);
  if (n > MAX_RESULTS)
    throw invalidParameter(
      `Invalid value ${n} for parameter 'max_results' supplied. It must be at most ${MAX_RESULTS}`,
    );
  return n;
}

/** The next page starts at `offset`. */
export function encodePageToken(offset: number): string {
  return Buffer.from(JSON.stringify({ offset })).toString("base64");
}

/** Where the page a token names starts (0 without one). */
export function decodePageToken(token: string | undefined): number {
  if (!token) return 0;
  try {
    const offset = (JSON.parse(Buffer.from(token, "base64").toString("utf8")) as { offset?: unknown }).offset;
    if (typeof offset === "number" && Number.isInteger(offset) && offset >= 0) return offset;
  } catch {
    // falls through
  }
  throw invalidParameter("Invalid page token, could not base64-decode");
}

/** Experiments: name, experiment_id, creation_time, last_update_time and tags, in MLflow's grammar for them. */
export function parseExperimentFilter(text: string | undefined): Clause[] {
  return parseFilter(text, EXPERIMENT_GRAMMAR);
}

/** One experiment filter clause as a condition on `tr_experiments`. */
export function experimentClauseSql(dialect: TrackingDialect, c: Clause): RawBuilder<boolean> {
  if (c.entity !== "tag") return textCompare(dialect, sql.ref(`tr_experiments.${c.key}`), c);
  const tag = sql`select 1 from tr_experiment_tags t where t.experiment_id = tr_experiments.experiment_id and t.key = ${c.key}`;
  if (c.comparator === "IS NULL") return sql<boolean>`not exists (${tag})`;
  if (c.comparator === "IS NOT NULL") return sql<boolean>`exists (${tag})`;
  return sql<boolean>`exists (${tag} and ${textCompare(dialect, sql`t.value`, c)})`;
}

/** LIKE in MLflow is case-sensitive (SQLite's is not): as GLOB, with GLOB's specials escaped. */
function likeToGlob(pattern: string): string {
  let out = "";
  for (const ch of pattern) {
    if (ch === "%") out += "*";
    else if (ch === "_") out += "?";
    else if (ch === "*" || ch === "?" || ch === "[") out += `[${ch}]`;
    else out += ch;
  }
  return out;
}

/**
 * The one place the dialects differ: LIKE is case-sensitive on PostgreSQL (and has ILIKE), as
 * MLflow's LIKE is; SQLite's LIKE ignores case, so there it is GLOB, and ILIKE is LIKE.
 */
export function textCompare(
  dialect: TrackingDialect,
  column: RawBuilder<unknown> | ReturnType<typeof sql.ref>,
  c: { comparator: Clause["comparator"]; value: Clause["value"] },
): RawBuilder<boolean> {
  const v = c.value;
  switch (c.comparator) {
    case "LIKE":
      return dialect === "postgres"
        ? sql<boolean>`${column} like ${String(v)}`
        : sql<boolean>`${column} glob ${likeToGlob(String(v))}`;
    case "ILIKE":
      return dialect === "postgres"
        ? sql<boolean>`${column} ilike ${String(v)}`
        : sql<boolean>`lower(${column}) like lower(${String(v)})`;
    case "IN":
      return sql<boolean>`${column} in (${sql.join(v as unknown[])})`;
    case "NOT IN":
      return sql<boolean>`${column} not in (${sql.join(v as unknown[])})`;
    case "IS NULL":
    case "IS NOT NULL":
      // Callers test a key's presence themselves (a missing param or tag has no row, not a null).
      throw invalidParameter(`${c.comparator} is not a comparison of values`);
    default:
      return sql<boolean>`${column} ${sql.raw(c.comparator)} ${v}`;
  }
}

const ATTRIBUTE_COLUMNS: Record<string, string> = {
  run_id: "run_uuid",
  run_name: "run_name",
  status: "status",
  user_id: "user_id",
  start_time: "start_time",
  end_time: "end_time",
  artifact_uri: "artifact_uri",
};

/** One run filter clause as a condition on `tr_runs r`. */
export function clauseSql(dialect: TrackingDialect, c: Clause): RawBuilder<unknown> {
  switch (c.entity) {
    case "metric":
      // NaN differs from every number, so it is != all of them and nothing else (as MLflow 3).
      return c.comparator === "!="
        ? sql`exists (select 1 from tr_latest_metrics m where m.run_uuid = r.run_uuid and m.key = ${c.key} and (m.is_nan = 1 or m.value != ${c.value}))`
        : sql`exists (select 1 from tr_latest_metrics m where m.run_uuid = r.run_uuid and m.key = ${c.key} and m.is_nan = 0 and m.value ${sql.raw(c.comparator)} ${c.value})`;
    case "param":
    case "tag": {
      const [table, alias] = c.entity === "param" ? ["tr_params", "p"] : ["tr_tags", "t"];
      const row = sql`select 1 from ${sql.table(table)} ${sql.raw(alias)} where ${sql.ref(`${alias}.run_uuid`)} = r.run_uuid and ${sql.ref(`${alias}.key`)} = ${c.key}`;
      if (c.comparator === "IS NULL") return sql`not exists (${row})`;
      if (c.comparator === "IS NOT NULL") return sql`exists (${row})`;
      return sql`exists (${row} and ${textCompare(dialect, sql.ref(`${alias}.value`), c)})`;
    }
    case "dataset":
      return sql`exists (select 1 from tr_inputs d where d.run_uuid = r.run_uuid and ${textCompare(dialect, sql.ref(`d.${c.key}`), c)})`;
    default:
      return textCompare(dialect, sql.ref(`r.${ATTRIBUTE_COLUMNS[c.key]}`), c);
  }
}

/** Runs without the ordered-by value come last either way, as in MLflow. */
export function orderSqlOf(o: OrderBy): RawBuilder<unknown> {
  const dir = sql.raw(o.ascending ? "asc" : "desc");
  let value: RawBuilder<unknown>;
  switch (o.entity) {
    case "metric":
      value = sql`(select m.value from tr_latest_metrics m where m.run_uuid = r.run_uuid and m.key = ${o.key} and m.is_nan = 0)`;
      break;
    case "param":
      value = sql`(select p.value from tr_params p where p.run_uuid = r.run_uuid and p.key = ${o.key})`;
      break;
    case "tag":
      value = sql`(select t.value from tr_tags t where t.run_uuid = r.run_uuid and t.key = ${o.key})`;
      break;
    case "attribute":
      value = sql.ref(`r.${ATTRIBUTE_COLUMNS[o.key]}`) as unknown as RawBuilder<unknown>;
      break;
    default:
      throw invalidParameter("runs cannot be ordered by datasets");
  }
  return sql`${value} is null, ${value} ${dir}`;
}

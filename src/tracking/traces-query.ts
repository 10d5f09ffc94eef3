import { invalidParameter } from "./errors.js";
import type { AttributeSpec, Clause, Grammar } from "./filter.js";
import type { Body, Row } from "./traces-row.js";

/** search_traces' filter grammar, its matching of rows, and its order and page tokens. */

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

export function matches(c: Clause, r: Row): boolean {
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
/** One order_by key: how to read it from a row, and the SQL expression that orders the same way (when one does). */
export interface Order {
  key: (r: Row) => string | number;
  column?: string;
  ascending: boolean;
}

export function orderOf(orderBy: string[] | undefined): Order[] {
  const keys: Record<string, Omit<Order, "ascending">> = {
    timestamp_ms: { key: (r) => r.request_time, column: "request_time" },
    timestamp: { key: (r) => r.request_time, column: "request_time" },
    execution_time_ms: { key: (r) => r.execution_ms ?? -1, column: "coalesce(execution_ms, -1)" },
    execution_time: { key: (r) => r.execution_ms ?? -1, column: "coalesce(execution_ms, -1)" },
    state: { key: (r) => r.state, column: "state" },
    status: { key: (r) => r.state, column: "state" },
    name: { key: (r) => String(attribute(r, "name") ?? "") },
  };
  if (!orderBy?.length) return [{ ...keys.timestamp_ms!, ascending: false }];
  return orderBy.map((o) => {
    const m = /^\s*(?:(?:attributes?|trace)\.)?`?(\w+)`?(?:\s+(ASC|DESC))?\s*$/i.exec(o);
    const key = m && keys[m[1]!];
    if (!key)
      throw invalidParameter(`Invalid order_by clause '${o}': order by ${Object.keys(keys).join(", ")}`);
    return { ...key, ascending: (m[2] ?? "ASC").toUpperCase() === "ASC" };
  });
}

export function pageToken(offset: number): string {
  return Buffer.from(JSON.stringify({ offset })).toString("base64");
}

export function offsetOf(token: string | undefined): number {
  if (!token) return 0;
  try {
    const offset = Number(
      (JSON.parse(Buffer.from(token, "base64").toString("utf8")) as { offset: number }).offset,
    );
    if (Number.isInteger(offset) && offset >= 0) return offset;
  } catch {}
  throw invalidParameter("Invalid page token, could not base64-decode");
}

import { MlflowError } from "./errors.js";

/**
 * MLflow's search grammar for runs: `metrics.loss < 0.5 and params.lr = '0.01' and
 * tags."team" LIKE 'nlp%' and attributes.status = 'FINISHED' and run_name ILIKE 'a%'`, plus
 * `attributes.run_id IN ('…')` and `datasets.name IN (…)`; and order_by clauses such as
 * `metrics.loss DESC`. Parsed into a small AST the store turns into SQL.
 */

export type Entity = "metric" | "param" | "tag" | "attribute" | "dataset";

export interface Clause {
  entity: Entity;
  key: string;
  comparator: "=" | "!=" | ">" | ">=" | "<" | "<=" | "LIKE" | "ILIKE" | "IN" | "NOT IN";
  value: string | number | string[];
}

export interface OrderBy {
  entity: Entity;
  key: string;
  ascending: boolean;
}

const ENTITY_ALIASES: Record<string, Entity> = {
  metric: "metric",
  metrics: "metric",
  param: "param",
  params: "param",
  parameter: "param",
  parameters: "param",
  tag: "tag",
  tags: "tag",
  attribute: "attribute",
  attributes: "attribute",
  attr: "attribute",
  run: "attribute",
  dataset: "dataset",
  datasets: "dataset",
};

/** Attributes by the names the grammar accepts, to their canonical name. */
export const ATTRIBUTES: Record<string, string> = {
  run_id: "run_id",
  run_uuid: "run_id",
  run_name: "run_name",
  status: "status",
  user_id: "user_id",
  start_time: "start_time",
  end_time: "end_time",
  artifact_uri: "artifact_uri",
  created: "start_time",
  Created: "start_time",
};
const NUMERIC_ATTRIBUTES = new Set(["start_time", "end_time"]);
const DATASET_KEYS = new Set(["name", "digest", "context"]);

type Token = { t: "ident" | "string" | "number" | "op" | "lparen" | "rparen" | "comma" | "dot"; v: string };

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === "'" || c === '"' || c === "`") {
      let j = i + 1;
      let v = "";
      while (j < text.length && text[j] !== c) {
        if (text[j] === "\\" && j + 1 < text.length) j++;
        v += text[j];
        j++;
      }
      if (j >= text.length) throw invalid(`unterminated quoted text starting at character ${i + 1}`);
      // Backticks and double quotes quote keys; single quotes quote values (MLflow accepts
      // double-quoted values too).
      out.push({ t: c === "`" ? "ident" : "string", v });
      i = j + 1;
    } else if (c === "(") {
      out.push({ t: "lparen", v: c });
      i++;
    } else if (c === ")") {
      out.push({ t: "rparen", v: c });
      i++;
    } else if (c === ",") {
      out.push({ t: "comma", v: c });
      i++;
    } else if (c === ".") {
      out.push({ t: "dot", v: c });
      i++;
    } else if (/[<>=!]/.test(c)) {
      let j = i;
      while (j < text.length && /[<>=!]/.test(text[j]!)) j++;
      out.push({ t: "op", v: text.slice(i, j) });
      i = j;
    } else if (/[-+0-9]/.test(c) && /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?/.test(text.slice(i))) {
      const m = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?/.exec(text.slice(i))!;
      out.push({ t: "number", v: m[0] });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_\-:/]*/.exec(text.slice(i))!;
      out.push({ t: "ident", v: m[0] });
      i += m[0].length;
    } else {
      throw invalid(`unexpected character '${c}' at position ${i + 1}`);
    }
  }
  return out;
}

function invalid(message: string): MlflowError {
  return new MlflowError("INVALID_PARAMETER_VALUE", `Invalid search expression: ${message}`);
}

/** Reads `entity.key` (or a bare attribute name) from the tokens at i. */
function readIdentifier(
  tokens: Token[],
  i: number,
  attributes: Record<string, string>,
): { entity: Entity; key: string; next: number } {
  const first = tokens[i];
  if (!first || (first.t !== "ident" && first.t !== "string"))
    throw invalid("expected an identifier such as metrics.loss");
  if (tokens[i + 1]?.t === "dot") {
    const entity = ENTITY_ALIASES[first.v];
    if (!entity)
      throw invalid(
        `Invalid entity type '${first.v}'. Valid values are ['metric', 'parameter', 'tag', 'attribute', 'dataset']`,
      );
    const key = tokens[i + 2];
    if (!key || (key.t !== "ident" && key.t !== "string"))
      throw invalid(`expected a key after '${first.v}.'`);
    return { entity, key: key.v, next: i + 3 };
  }
  if (attributes[first.v]) return { entity: "attribute", key: first.v, next: i + 1 };
  throw invalid(
    `'${first.v}' is not an attribute; write metrics.KEY, params.KEY, tags.KEY or attributes.NAME`,
  );
}

function checkKey(entity: Entity, key: string, attributes: Record<string, string>): string {
  if (entity === "attribute") {
    const canonical = attributes[key];
    if (!canonical)
      throw invalid(
        `Invalid attribute key '${key}' specified. Valid keys are ${Object.keys(attributes).join(", ")}`,
      );
    return canonical;
  }
  if (entity === "dataset" && !DATASET_KEYS.has(key))
    throw invalid(`Invalid dataset key '${key}': use name, digest or context`);
  return key;
}

/** Fields of registered models and model versions, for the registry's searches. */
export const REGISTRY_ATTRIBUTES: Record<string, string> = {
  name: "name",
  run_id: "run_id",
  source: "source",
  version_number: "version_number",
};

export function parseFilter(
  text: string | undefined,
  attributes: Record<string, string> = ATTRIBUTES,
): Clause[] {
  if (!text?.trim()) return [];
  const tokens = tokenize(text);
  const clauses: Clause[] = [];
  let i = 0;
  for (;;) {
    const id = readIdentifier(tokens, i, attributes);
    const key = checkKey(id.entity, id.key, attributes);
    i = id.next;
    const opTok = tokens[i];
    let comparator: Clause["comparator"];
    if (opTok?.t === "op") {
      if (!["=", "!=", ">", ">=", "<", "<="].includes(opTok.v))
        throw invalid(`Invalid comparator '${opTok.v}' not one of '{'<', '<=', '>', '=', '!=', '>='}'`);
      comparator = opTok.v as Clause["comparator"];
      i++;
    } else if (opTok?.t === "ident" && /^(like|ilike|in)$/i.test(opTok.v)) {
      comparator = opTok.v.toUpperCase() as Clause["comparator"];
      i++;
    } else if (opTok?.t === "ident" && /^not$/i.test(opTok.v) && /^in$/i.test(tokens[i + 1]?.v ?? "")) {
      comparator = "NOT IN";
      i += 2;
    } else {
      throw invalid(`expected a comparator after ${id.entity}.${id.key}`);
    }
    let value: Clause["value"];
    if (comparator === "IN" || comparator === "NOT IN") {
      const inAllowed = (id.entity === "attribute" && key === "run_id") || id.entity === "dataset";
      if (!inAllowed)
        throw invalid(
          `IN is supported for attributes.run_id and datasets.* only, not ${id.entity}.${id.key}`,
        );
      if (tokens[i]?.t !== "lparen") throw invalid("expected '(' after IN");
      i++;
      const list: string[] = [];
      while (tokens[i] && tokens[i]!.t !== "rparen") {
        const v = tokens[i]!;
        if (v.t !== "string") throw invalid("IN takes a list of quoted strings");
        list.push(v.v);
        i++;
        if (tokens[i]?.t === "comma") i++;
      }
      if (tokens[i]?.t !== "rparen") throw invalid("expected ')' to close the IN list");
      i++;
      value = list;
    } else {
      const v = tokens[i];
      if (!v || (v.t !== "string" && v.t !== "number"))
        throw invalid(`expected a value after ${id.entity}.${id.key} ${comparator}`);
      i++;
      if (
        id.entity === "metric" ||
        (id.entity === "attribute" && (NUMERIC_ATTRIBUTES.has(key) || key === "version_number"))
      ) {
        if (v.t !== "number") throw invalid(`${id.entity}.${id.key} takes a number, not '${v.v}'`);
        if (comparator === "LIKE" || comparator === "ILIKE")
          throw invalid(`${comparator} needs a text value`);
        value = Number(v.v);
      } else {
        if (v.t !== "string")
          throw invalid(
            `Expected a quoted string value for ${id.entity} (e.g. 'my-value'). Got value ${v.v}`,
          );
        if ([">", ">=", "<", "<="].includes(comparator) && id.entity !== "attribute")
          throw invalid(`${comparator} compares numbers; ${id.entity}s are text: use =, !=, LIKE or ILIKE`);
        value = v.v;
      }
    }
    clauses.push({ entity: id.entity, key, comparator, value });
    if (i >= tokens.length) return clauses;
    if (tokens[i]!.t === "ident" && /^and$/i.test(tokens[i]!.v)) {
      i++;
      continue;
    }
    throw invalid(`expected AND or the end of the filter, got '${tokens[i]!.v}' (OR is not supported)`);
  }
}

export function parseOrderBy(items: string[] | undefined): OrderBy[] {
  return (items ?? []).map((item) => {
    const tokens = tokenize(item);
    const id = readIdentifier(tokens, 0, ATTRIBUTES);
    const key = checkKey(id.entity, id.key, ATTRIBUTES);
    const dir = tokens[id.next];
    if (tokens.length > id.next + 1 || (dir && !/^(asc|desc)$/i.test(dir.v)))
      throw invalid(`order_by '${item}' must be KEY, KEY ASC or KEY DESC`);
    return { entity: id.entity, key, ascending: !dir || /^asc$/i.test(dir.v) };
  });
}

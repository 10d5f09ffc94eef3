import { MlflowError } from "./errors.js";

/**
 * MLflow's search grammar, as MLflow 3's search_utils reads it: clauses joined by AND, each an
 * identifier, a comparator and a value (`metrics.loss < 0.5`, `tags.mlflow.parentRunId = '…'`,
 * ``tags.`my key` LIKE 'a%'``, `attributes.run_id IN ('…')`, `params.p IS NULL`). An identifier is
 * `ENTITY.KEY` or a bare attribute name; its text is split at its FIRST dot, so everything after
 * `tags.` is the key, dots included, and a key with other characters is quoted in backticks or
 * double quotes. Each search (runs, experiments, registered models, model versions) has its own
 * entities, attributes and comparators: a {@link Grammar}.
 */

export type Entity = "metric" | "param" | "tag" | "attribute" | "dataset";

export type Comparator =
  | "="
  | "!="
  | ">"
  | ">="
  | "<"
  | "<="
  | "LIKE"
  | "ILIKE"
  | "IN"
  | "NOT IN"
  | "IS NULL"
  | "IS NOT NULL";

export interface Clause {
  entity: Entity;
  key: string;
  comparator: Comparator;
  /** A number for metrics and numeric attributes, a list for IN, null for IS [NOT] NULL. */
  value: string | number | string[] | number[] | null;
}

export interface OrderBy {
  entity: Entity;
  key: string;
  ascending: boolean;
}

/** One attribute a search knows: the name it stands for, what its values are, what compares it. */
export interface AttributeSpec {
  canonical: string;
  type: "string" | "number";
  comparators: Comparator[];
  /** Whole numbers only; for string attributes (experiment_id), quoted whole numbers. */
  integer?: boolean;
  /** A quoted number is read as a number too (model versions' version_number). */
  numberFromString?: boolean;
}

export interface Grammar {
  /** What is searched, for messages. */
  what: string;
  /** The prefixes before the first dot, to their entity. */
  entities: Record<string, Entity>;
  /** Runs accept a backticked prefix (`` `tags`.x ``); the others do not. */
  backtickedEntity: boolean;
  attributes: Record<string, AttributeSpec>;
  /** The registry checks an attribute name before unquoting it, so ``attribute.`name` `` is refused. */
  attributeCheckedQuoted?: boolean;
  comparators: Partial<Record<Exclude<Entity, "attribute">, Comparator[]>>;
}

const EQ: Comparator[] = ["=", "!="];
const TEXT: Comparator[] = [...EQ, "LIKE", "ILIKE"];
const NUMERIC: Comparator[] = [...EQ, ">", ">=", "<", "<="];
const LIST: Comparator[] = ["IN", "NOT IN"];
const NULLS: Comparator[] = ["IS NULL", "IS NOT NULL"];

const text = (canonical: string, comparators = TEXT): AttributeSpec => ({
  canonical,
  type: "string",
  comparators,
});
const num = (canonical: string, integer = false): AttributeSpec => ({
  canonical,
  type: "number",
  comparators: NUMERIC,
  integer,
});

const RUN_ENTITIES: Record<string, Entity> = {
  metric: "metric",
  metrics: "metric",
  parameter: "param",
  parameters: "param",
  param: "param",
  params: "param",
  tag: "tag",
  tags: "tag",
  attribute: "attribute",
  attributes: "attribute",
  attr: "attribute",
  run: "attribute",
  dataset: "dataset",
  datasets: "dataset",
};
const REGISTRY_ENTITIES: Record<string, Entity> = { attribute: "attribute", tag: "tag", tags: "tag" };

/** search_runs: metrics, params, tags, the run's attributes and its datasets. */
export const RUN_GRAMMAR: Grammar = {
  what: "runs",
  entities: RUN_ENTITIES,
  backtickedEntity: true,
  attributes: {
    run_id: text("run_id", [...TEXT, ...LIST]),
    run_name: text("run_name"),
    "run name": text("run_name"),
    "Run name": text("run_name"),
    "Run Name": text("run_name"),
    status: text("status"),
    user_id: text("user_id"),
    artifact_uri: text("artifact_uri"),
    start_time: num("start_time"),
    end_time: num("end_time"),
    created: num("start_time"),
    Created: num("start_time"),
  },
  comparators: {
    metric: NUMERIC,
    param: [...TEXT, ...NULLS],
    tag: [...TEXT, ...NULLS],
    dataset: [...TEXT, ...LIST],
  },
};

/** search_experiments: name, experiment_id, the two times, and tags. */
export const EXPERIMENT_GRAMMAR: Grammar = {
  what: "experiments",
  entities: REGISTRY_ENTITIES,
  backtickedEntity: false,
  attributes: {
    name: text("name"),
    experiment_id: {
      canonical: "experiment_id",
      type: "string",
      comparators: [...EQ, ...LIST],
      integer: true,
    },
    creation_time: num("creation_time", true),
    last_update_time: num("last_update_time", true),
  },
  comparators: { tag: [...TEXT, ...NULLS] },
};

/** search_registered_models: name and tags. */
export const REGISTERED_MODEL_GRAMMAR: Grammar = {
  what: "registered models",
  entities: REGISTRY_ENTITIES,
  backtickedEntity: false,
  attributeCheckedQuoted: true,
  attributes: { name: text("name", [...TEXT, ...LIST]) },
  comparators: { tag: TEXT },
};

/** search_model_versions: name, run_id, source_path, version_number and tags. */
export const MODEL_VERSION_GRAMMAR: Grammar = {
  what: "model versions",
  entities: REGISTRY_ENTITIES,
  backtickedEntity: false,
  attributeCheckedQuoted: true,
  attributes: {
    name: text("name", [...TEXT, ...LIST]),
    run_id: text("run_id", [...TEXT, ...LIST]),
    source_path: text("source"),
    version_number: { ...num("version_number", true), numberFromString: true },
  },
  comparators: { tag: TEXT },
};

/** A search over a few string attributes compared with = and != (logged models). */
export function attributeGrammar(what: string, names: string[]): Grammar {
  return {
    ...REGISTERED_MODEL_GRAMMAR,
    what,
    attributes: Object.fromEntries(names.map((n) => [n, text(n)])),
  };
}

type Token =
  | { t: "ident"; v: string; at: number }
  | { t: "string" | "number" | "op" | "word" | "lparen" | "rparen" | "comma"; v: string; at: number };

const WORD = /^[\p{L}\p{N}_]+/u;
/** sqlparse's numbers: a number runs into no letter or underscore (`1x` is a name). */
const NUMBER = /^-?(\d+(\.\d+)?[eE]-?\d+|\d+\.\d*|\.\d+|\d+)(?![\p{L}_])/u;

function invalid(message: string): MlflowError {
  return new MlflowError("INVALID_PARAMETER_VALUE", `Invalid search filter: ${message}`);
}

/** A quoted run at i (`'…'`, `"…"` or `` `…` ``), as MLflow lexes it: '' and \' inside, kept as written. */
function quoted(s: string, i: number): number {
  const q = s[i]!;
  let j = i + 1;
  while (j < s.length) {
    if (s[j] === "\\" && q !== "`") j += 2;
    else if (s[j] === q && s[j + 1] === q) j += 2;
    else if (s[j] === q) return j + 1;
    else j++;
  }
  throw invalid(`unterminated ${q} quote starting at character ${i + 1}`);
}

/** An identifier: parts (a word, `…` or "…") joined by dots with nothing between them. */
function identifierEnd(s: string, i: number): number {
  let j = i;
  for (;;) {
    if (s[j] === "`" || s[j] === '"') j = quoted(s, j);
    else {
      const m = WORD.exec(s.slice(j));
      if (!m) throw invalid(`expected a key after '${s.slice(i, j)}' at character ${j + 1}`);
      j += m[0].length;
    }
    if (s[j] !== ".") return j;
    j++;
  }
}

function tokenize(s: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    const rest = s.slice(i);
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    let end: number;
    let t: Token["t"];
    if (c === "'") [t, end] = ["string", quoted(s, i)];
    else if (NUMBER.test(rest)) [t, end] = ["number", i + NUMBER.exec(rest)![0].length];
    else if (c === "`" || c === '"' || WORD.test(rest)) {
      end = identifierEnd(s, i);
      t = end === i + (WORD.exec(rest)?.[0].length ?? -1) ? "word" : "ident";
    } else if (/[<>=~!]/.test(c)) [t, end] = ["op", i + /^[<>=~!]+/.exec(rest)![0].length];
    else if (c === "(" || c === ")" || c === ",")
      [t, end] = [c === "(" ? "lparen" : c === ")" ? "rparen" : "comma", i + 1];
    else if (c === ";") throw invalid("a filter is one expression: join clauses with AND, not ';'");
    else
      throw invalid(
        `unexpected '${c}' at character ${i + 1}; quote keys with other characters in backticks, as in tags.\`my-key\``,
      );
    out.push({ t, v: s.slice(i, end), at: i } as Token);
    i = end;
  }
  return out;
}

function isQuoted(v: string, q: string): boolean {
  return v.length >= 2 && v.startsWith(q) && v.endsWith(q);
}

/** MLflow's _strip_quotes then _trim_backticks: only a key quoted whole loses its quotes. */
function unquoteKey(v: string): string {
  const s = isQuoted(v, "'") || isQuoted(v, '"') ? v.slice(1, -1) : v;
  return isQuoted(s, "`") ? s.slice(1, -1) : s;
}

/** `ENTITY.KEY` (split at the first dot) or a bare attribute name, checked against the grammar. */
function identify(raw: string, g: Grammar): { entity: Entity; key: string; spec?: AttributeSpec } {
  const dot = raw.indexOf(".");
  let entity: Entity = "attribute";
  let keyText = raw;
  if (dot >= 0) {
    let prefix = raw.slice(0, dot);
    if (g.backtickedEntity && isQuoted(prefix, "`")) prefix = prefix.slice(1, -1);
    const e = Object.hasOwn(g.entities, prefix) ? g.entities[prefix] : undefined;
    if (!e)
      throw invalid(
        `Invalid entity type '${prefix}' in '${raw}'. Valid values for ${g.what} are ${Object.keys(g.entities).join(", ")}`,
      );
    entity = e;
    keyText = raw.slice(dot + 1);
  }
  if (entity === "attribute") {
    const name = g.attributeCheckedQuoted ? keyText : unquoteKey(keyText);
    const spec = Object.hasOwn(g.attributes, name) ? g.attributes[name] : undefined;
    if (!spec)
      throw invalid(
        `Invalid attribute key '${name}' specified. Valid keys for ${g.what} are ${Object.keys(g.attributes).join(", ")}` +
          (dot < 0
            ? `; other keys are written ${Object.keys(g.entities)
                .filter((e) => !e.startsWith("attr") && e !== "run" && e.endsWith("s"))
                .map((e) => `${e}.KEY`)
                .join(", ")}`
            : ""),
      );
    return { entity, key: spec.canonical, spec };
  }
  const key = unquoteKey(keyText);
  if (entity === "dataset" && !["name", "digest", "context"].includes(key))
    throw invalid(`Invalid dataset key '${key}' specified. Valid keys are name, digest, context`);
  return { entity, key };
}

/** The comparator at i: an operator, LIKE, ILIKE, IN, NOT IN, IS NULL or IS NOT NULL. */
function readComparator(tokens: Token[], i: number, after: string): { comparator: string; next: number } {
  const word = (k: number) => (tokens[k]?.t === "word" ? tokens[k]!.v.toUpperCase() : undefined);
  const w = word(i);
  if (tokens[i]?.t === "op") return { comparator: tokens[i]!.v, next: i + 1 };
  if (w === "LIKE" || w === "ILIKE" || w === "IN") return { comparator: w, next: i + 1 };
  if (w === "NOT" && word(i + 1)) return { comparator: `NOT ${word(i + 1)}`, next: i + 2 };
  if (w === "IS" && word(i + 1) === "NULL") return { comparator: "IS NULL", next: i + 2 };
  if (w === "IS" && word(i + 1) === "NOT" && word(i + 2) === "NULL")
    return { comparator: "IS NOT NULL", next: i + 3 };
  throw invalid(`expected a comparator such as =, !=, <, LIKE, IN or IS NULL after ${after}`);
}

/** A Python string literal's body, as MLflow reads IN lists (ast.literal_eval). */
function pythonString(v: string): string {
  return v.slice(1, -1).replace(/\\(.)/g, (_, ch: string) => ({ n: "\n", t: "\t" })[ch] ?? ch);
}

/** `('a', "b")`: a non-empty list of quoted strings. */
function readList(tokens: Token[], i: number, after: string): { value: string[]; next: number } {
  if (tokens[i]?.t !== "lparen")
    throw invalid(`IN takes a parenthesised list of quoted strings, after ${after}`);
  const value: string[] = [];
  let j = i + 1;
  while (tokens[j] && tokens[j]!.t !== "rparen") {
    const v = tokens[j]!;
    if (!(v.t === "string" || (v.t === "ident" && isQuoted(v.v, '"'))))
      throw invalid(`IN takes a list of quoted strings, as in ('a', 'b'); got ${v.v}`);
    value.push(pythonString(v.v));
    j++;
    if (tokens[j]?.t === "comma") j++;
    else if (tokens[j]?.t !== "rparen") throw invalid("expected ',' or ')' in the IN list");
  }
  if (tokens[j]?.t !== "rparen") throw invalid("expected ')' to close the IN list");
  if (value.length === 0) throw invalid("IN takes a non-empty list of quoted strings");
  return { value, next: j + 1 };
}

/** A quoted value's text as MLflow keeps it: the quotes trimmed, nothing unescaped. */
function stringOf(v: Token | undefined, what: string): string | undefined {
  if (!v) return undefined;
  if (v.t === "string" || ((v.t === "ident" || v.t === "word") && (isQuoted(v.v, "'") || isQuoted(v.v, '"'))))
    return v.v.slice(1, -1);
  if (v.t === "ident" || v.t === "word")
    throw invalid(`${what} takes a value quoted in single or double quotes, as in '${v.v}'; got ${v.v}`);
  return undefined;
}

function integerOf(n: number, what: string, raw: string): number {
  if (!Number.isInteger(n)) throw invalid(`${what} takes a whole number, not ${raw}`);
  return n;
}

/** Reads and checks the value for one identifier and comparator. */
function readValue(
  tokens: Token[],
  i: number,
  id: { entity: Entity; key: string; spec?: AttributeSpec },
  comparator: Comparator,
  what: string,
): { value: Clause["value"]; next: number } {
  if (comparator === "IS NULL" || comparator === "IS NOT NULL") return { value: null, next: i };
  if (comparator === "IN" || comparator === "NOT IN") {
    const list = readList(tokens, i, what);
    if (id.spec?.integer)
      return { value: list.value.map((v) => integerOf(Number(v), what, `'${v}'`)), next: list.next };
    return list;
  }
  const v = tokens[i];
  if (v?.t === "lparen") throw invalid(`a list of values needs IN or NOT IN, after ${what}`);
  const numeric = id.entity === "metric" || id.spec?.type === "number";
  if (numeric) {
    const s = id.spec?.numberFromString ? stringOf(v, what) : undefined;
    if (v?.t !== "number" && s === undefined)
      throw invalid(`${what} takes a number, as in ${what} ${comparator} 0.5; got ${v?.v ?? "nothing"}`);
    const n = Number(s ?? v!.v);
    if (Number.isNaN(n)) throw invalid(`${what} takes a number; got ${v!.v}`);
    return { value: id.spec?.integer ? integerOf(n, what, v!.v) : n, next: i + 1 };
  }
  const s = stringOf(v, what);
  if (s === undefined)
    throw invalid(`${what} takes a quoted value, as in ${what} = 'x'; got ${v?.v ?? "nothing"}`);
  if (id.spec?.integer) return { value: integerOf(Number(s), what, `'${s}'`), next: i + 1 };
  return { value: s, next: i + 1 };
}

function comparatorsFor(g: Grammar, id: { entity: Entity; spec?: AttributeSpec }): Comparator[] {
  if (id.spec) return id.spec.comparators;
  return g.comparators[id.entity as Exclude<Entity, "attribute">] ?? [];
}

/** Parses a filter in the grammar of one search (runs by default); empty means no clauses. */
export function parseFilter(
  textIn: string | undefined,
  grammarIn: Grammar | Record<string, string> = RUN_GRAMMAR,
): Clause[] {
  if (!textIn?.trim()) return [];
  // A bare map of attribute names is a search of those string attributes and tags.
  const grammar =
    "entities" in grammarIn && typeof grammarIn.entities === "object"
      ? (grammarIn as Grammar)
      : attributeGrammar("this search", Object.keys(grammarIn));
  const tokens = tokenize(textIn);
  const clauses: Clause[] = [];
  let i = 0;
  for (;;) {
    const idTok = tokens[i];
    if (!idTok || (idTok.t !== "ident" && idTok.t !== "word"))
      throw invalid(
        `expected an identifier such as metrics.loss or tags.\`my.key\`${idTok ? `, got '${idTok.v}'` : " at the end"}`,
      );
    const id = identify(idTok.v, grammar);
    const what = idTok.v;
    const cmp = readComparator(tokens, i + 1, what);
    const allowed = comparatorsFor(grammar, id);
    if (!allowed.includes(cmp.comparator as Comparator))
      throw invalid(
        `Invalid comparator '${cmp.comparator}' for ${what} in a search of ${grammar.what}; use one of ${allowed.join(", ")}`,
      );
    const comparator = cmp.comparator as Comparator;
    const value = readValue(tokens, cmp.next, id, comparator, what);
    clauses.push({ entity: id.entity, key: id.key, comparator, value: value.value });
    i = value.next;
    if (i >= tokens.length) return clauses;
    const next = tokens[i]!;
    if (next.t === "word" && /^and$/i.test(next.v) && i + 1 < tokens.length) {
      i++;
      continue;
    }
    throw invalid(
      /^or$/i.test(next.v)
        ? "OR is not supported: MLflow's search joins clauses with AND only"
        : `expected AND or the end of the filter after ${what}, got '${next.v}'`,
    );
  }
}

/** Keys runs are ordered by: the run attributes less the "run name" spellings. */
const ORDERABLE = new Set([
  "run_id",
  "run_name",
  "status",
  "user_id",
  "artifact_uri",
  "start_time",
  "end_time",
  "created",
  "Created",
]);

/** search_runs' order_by: `metrics.loss DESC`, `attributes.start_time`, ``tags.`a.b` ASC``. */
export function parseOrderBy(items: string[] | undefined): OrderBy[] {
  return (items ?? []).map((item) => {
    const tokens = tokenize(item);
    const first = tokens[0];
    const dir = tokens[1];
    if (
      !first ||
      (first.t !== "ident" && first.t !== "word") ||
      tokens.length > 2 ||
      (dir && !(dir.t === "word" && /^(asc|desc)$/i.test(dir.v)))
    )
      throw invalid(`order_by '${item}' must be KEY, KEY ASC or KEY DESC`);
    const id = identify(first.v, RUN_GRAMMAR);
    if (id.entity === "attribute" && !ORDERABLE.has(unquoteKey(first.v.slice(first.v.indexOf(".") + 1))))
      throw invalid(`runs cannot be ordered by ${first.v}`);
    return { entity: id.entity, key: id.key, ascending: !dir || /^asc$/i.test(dir.v) };
  });
}

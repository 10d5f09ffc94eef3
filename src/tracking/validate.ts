import { invalidParameter } from "./errors.js";
import type { KeyValue } from "./types.js";

/**
 * MLflow's own input limits (mlflow/utils/validation.py of the client the tests pin, 3.17) and the checks every write runs before it
 * touches the database, so bad input is a 400 INVALID_PARAMETER_VALUE that stores nothing.
 */
export const LIMITS = {
  /** One log-batch: metrics, params + tags, and all of them together. */
  metricsPerBatch: 1000,
  paramsTagsPerBatch: 100,
  entitiesPerBatch: 1000,
  /** Dataset inputs per log-inputs call. */
  datasetsPerBatch: 1000,
  /** Keys of params, metrics and tags. */
  keyLength: 250,
  paramValueLength: 6000,
  runTagValueLength: 8000,
  experimentTagValueLength: 20_000,
  registryTagValueLength: 100_000,
  /** Tags given with a create (experiment, run, model, version, logged model). */
  tagsPerCreate: 100,
  /** Names of experiments, runs, registered models, aliases. */
  nameLength: 500,
} as const;

/** What a tag or param value may be at most, by what it is attached to. */
export type ValueLimit = "param" | "runTag" | "experimentTag" | "registryTag";
const VALUE_LIMITS: Record<ValueLimit, number> = {
  param: LIMITS.paramValueLength,
  runTag: LIMITS.runTagValueLength,
  experimentTag: LIMITS.experimentTagValueLength,
  registryTag: LIMITS.registryTagValueLength,
};

/**
 * A list of {key, value} pairs as the client sent it, checked: an array (or absent) of objects
 * with a non-empty string key within MLflow's length limit and a string (or number) value, or
 * none (stored as ""). `field` names it in messages ("tags", "params").
 */
export function keyValues(
  raw: unknown,
  field: string,
  limit: ValueLimit,
  max: number = LIMITS.tagsPerCreate,
): KeyValue[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalidParameter(`'${field}' must be a list of {"key", "value"} objects`);
  if (raw.length > max)
    throw invalidParameter(`'${field}' may hold at most ${max} entries, got ${raw.length}`);
  return raw.map((kv: unknown, i) => {
    if (!kv || typeof kv !== "object" || Array.isArray(kv))
      throw invalidParameter(`'${field}[${i}]' must be an object with "key" and "value"`);
    const { key, value } = kv as { key?: unknown; value?: unknown };
    return { key: keyOf(key, `${field}[${i}].key`), value: tagValue(value, `${field}[${i}].value`, limit) };
  });
}

/** A param, metric or tag key: a non-empty string of at most 250 characters. */
export function keyOf(key: unknown, field: string): string {
  if (typeof key !== "string" || key === "")
    throw invalidParameter(`Missing value for required parameter '${field}' (a non-empty string).`);
  if (key.length > LIMITS.keyLength)
    throw invalidParameter(
      `'${field}' had length ${key.length}, which exceeded length limit of ${LIMITS.keyLength}`,
    );
  return key;
}

/** A tag or param value: a string (numbers are written as text); none is "". */
export function tagValue(value: unknown, field: string, limit: ValueLimit): string {
  if (value === undefined || value === null) return "";
  if (typeof value !== "string" && !(typeof value === "number" && Number.isFinite(value)))
    throw invalidParameter(`'${field}' must be a string, got ${JSON.stringify(value)}`);
  const s = String(value);
  const max = VALUE_LIMITS[limit];
  if (s.length > max)
    throw invalidParameter(`'${field}' had length ${s.length}, which exceeded length limit of ${max}`);
  return s;
}

/** A name (experiment, run, model, alias) within MLflow's length limit. */
export function nameOf(name: string, field: string): string {
  if (name.length > LIMITS.nameLength)
    throw invalidParameter(
      `'${field}' had length ${name.length}, which exceeded length limit of ${LIMITS.nameLength}`,
    );
  return name;
}

/** A list field: absent is empty, anything but an array is refused. */
export function listOf(raw: unknown, field: string): unknown[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalidParameter(`'${field}' must be a list`);
  return raw;
}

/** A log-batch within MLflow's limits (checked before anything of it is written). */
export function checkBatch(counts: { metrics: number; params: number; tags: number }): void {
  const { metrics, params, tags } = counts;
  if (metrics > LIMITS.metricsPerBatch)
    throw invalidParameter(
      `A batch logging request can contain at most ${LIMITS.metricsPerBatch} metrics. Got ${metrics} metrics. Please split up metrics across multiple requests and try again.`,
    );
  if (params > LIMITS.paramsTagsPerBatch)
    throw invalidParameter(
      `A batch logging request can contain at most ${LIMITS.paramsTagsPerBatch} params. Got ${params} params. Please split up params across multiple requests and try again.`,
    );
  if (tags > LIMITS.paramsTagsPerBatch)
    throw invalidParameter(
      `A batch logging request can contain at most ${LIMITS.paramsTagsPerBatch} tags. Got ${tags} tags. Please split up tags across multiple requests and try again.`,
    );
  if (metrics + params + tags > LIMITS.entitiesPerBatch)
    throw invalidParameter(
      `A batch logging request can contain at most ${LIMITS.entitiesPerBatch} metrics, params and tags in total. Got ${metrics + params + tags}.`,
    );
}

/**
 * The path of the first string in `value` that holds a NUL byte, if any: NUL is refused in every
 * name, key, value and path (PostgreSQL cannot store it, file systems end names at it).
 */
export function findNul(value: unknown, path = ""): string | undefined {
  if (typeof value === "string") return value.includes("\u0000") ? path || "(value)" : undefined;
  if (!value || typeof value !== "object") return undefined;
  for (const [k, v] of Object.entries(value)) {
    const at = path ? `${path}.${k}` : k;
    if (k.includes("\u0000")) return at;
    const found = findNul(v, at);
    if (found) return found;
  }
  return undefined;
}

/** Refuses a request whose fields hold a NUL byte anywhere, naming the field. */
export function refuseNul(fields: unknown): void {
  const at = findNul(fields);
  if (at) throw invalidParameter(`'${at}' contains a NUL byte, which is not allowed`);
}

import { BadRequestError } from "./errors.js";

/** The most items one page of a list may ask for (kube-apiserver takes any; we cap the JSON). */
export const MAX_LIST_LIMIT = 10_000;

/**
 * Where a paged list goes on (Kubernetes' `continue`): the revision of its first page, which every
 * page reports so a client watches from it after the last page, and the last key it gave.
 */
export interface ContinueToken {
  rv: string;
  project: string;
  name: string;
}

/** The opaque `continue` value of a list page (base64url JSON, as kube-apiserver's is opaque). */
export function encodeContinue(t: ContinueToken): string {
  return Buffer.from(JSON.stringify([t.rv, t.project, t.name])).toString("base64url");
}

/** Reads a `continue` value back; a value this server did not give is a 400 saying what to do. */
export function decodeContinue(value: string): ContinueToken {
  try {
    const [rv, project, name] = JSON.parse(Buffer.from(value, "base64url").toString("utf8")) as unknown[];
    if (typeof rv === "string" && /^\d+$/.test(rv) && typeof project === "string" && typeof name === "string")
      return { rv, project, name };
  } catch {}
  throw new BadRequestError(
    "invalid continue token: pass the metadata.continue of the previous page unchanged, or list again without it",
  );
}

/** `?limit=N` as a list takes it: absent, or a whole number from 1 to MAX_LIST_LIMIT. */
export function parseLimit(value: string | undefined): number | undefined {
  if (value === undefined || value === "" || value === "0") return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > MAX_LIST_LIMIT)
    throw new BadRequestError(`limit must be a whole number from 1 to ${MAX_LIST_LIMIT}, got "${value}"`);
  return n;
}

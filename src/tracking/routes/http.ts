import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { LoomError } from "../../api/errors.js";
import { invalidParameter, MlflowError } from "../errors.js";
import { authorize } from "../tenancy.js";
import type { ViewType } from "../types.js";
import { refuseNul } from "../validate.js";

/**
 * What every MLflow endpoint shares: a request's fields and how to read them, the one wrapper
 * that checks the caller and the project before a handler runs, and MLflow's error format.
 */

/** A request's fields: the query of a GET, else the JSON body; path parameters on top. */
export type Fields = Record<string, unknown>;
/** One endpoint: its answer, for the project the request is under. */
export type Handler = (project: string, f: Fields) => Promise<unknown>;
export type Method = "GET" | "POST" | "PATCH" | "DELETE";
/** Adds one endpoint (its path under the API prefix, without the leading slash). */
export type AddRoute = (method: Method, path: string, handler: Handler) => void;

export const str = (f: Fields, k: string) => (f[k] === undefined || f[k] === null ? undefined : String(f[k]));

export const num = (f: Fields, k: string) => {
  const v = f[k];
  if (v === undefined || v === null || v === "") return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw invalidParameter(`'${k}' must be a number, got ${JSON.stringify(v)}`);
  return n;
};

export const need = (f: Fields, k: string) => {
  const v = str(f, k);
  if (v === undefined || v === "") throw invalidParameter(`Missing value for required parameter '${k}'.`);
  return v;
};

export const runIdOf = (f: Fields) => str(f, "run_id") ?? str(f, "run_uuid");

export const list = <T>(f: Fields, k: string) =>
  Array.isArray(f[k]) ? (f[k] as T[]) : f[k] === undefined ? [] : [f[k] as T];

export const view = (f: Fields, k: string) => (str(f, k) ?? "ACTIVE_ONLY") as ViewType;

/**
 * The endpoint as Fastify calls it: the caller may read (GET, searches) or write the project,
 * which must exist; the answer is compacted as MLflow's proto3 JSON is.
 */
export function handle(
  handler: Handler,
  method: Method,
  path: string,
  projectExists: (project: string) => Promise<boolean>,
) {
  const fromQuery = method === "GET";
  const write = !isRead(method, path);
  return async (req: FastifyRequest<{ Params: { project?: string } }>, reply: FastifyReply) => {
    const project = req.params.project ?? "default";
    authorize(req.principal, project, write);
    if (!(await projectExists(project)))
      throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `project ${project} does not exist`);
    const { project: _, ...inPath } = req.params as Record<string, string>;
    const body = fromQuery ? req.query : (req.body ?? {});
    if (typeof body !== "object" || Array.isArray(body))
      throw invalidParameter("the request body must be a JSON object");
    const fields = { ...(body as Fields), ...inPath };
    refuseNul(fields);
    return reply.send(compact(await handler(project, fields)));
  };
}

/** Errors in MLflow's JSON ({"error_code", "message"}), whatever threw them. */
export const mlflowErrors: Parameters<FastifyInstance["setErrorHandler"]>[0] = (err, req, reply) => {
  if (err instanceof MlflowError) return reply.code(err.httpStatus).send(err.toJSON());
  // Loom's own errors (a missing or wrong token) in MLflow's words.
  if (err instanceof LoomError) {
    const code =
      err.httpStatus === 401
        ? "UNAUTHENTICATED"
        : err.httpStatus === 403
          ? "PERMISSION_DENIED"
          : err.httpStatus === 404
            ? "RESOURCE_DOES_NOT_EXIST"
            : "INVALID_PARAMETER_VALUE";
    return reply.code(err.httpStatus).send({ error_code: code, message: err.message });
  }
  const status = (err as { statusCode?: number }).statusCode;
  if (typeof status === "number" && status >= 400 && status < 500)
    return reply.code(400).send({ error_code: "INVALID_PARAMETER_VALUE", message: (err as Error).message });
  req.log.error({ err }, "tracking request failed");
  return reply.code(500).send({
    error_code: "INTERNAL_ERROR",
    message: "internal server error; the server log has the details",
  });
};

/** Searches are POSTs that only read. */
function isRead(method: string, path: string): boolean {
  return method === "GET" || /(^|\/)search$|get-latest-versions$/.test(path);
}

/** Unset and empty list fields are left out, as MLflow's proto3 JSON does. */
function compact(value: unknown): unknown {
  if (!value || typeof value !== "object" || Array.isArray(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined || (Array.isArray(v) && v.length === 0)) continue;
    out[k] = v;
  }
  return out;
}

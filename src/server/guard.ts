import type { IncomingMessage } from "node:http";
import type { FastifyInstance } from "fastify";
import { BadRequestError, ForbiddenError } from "../api/errors.js";
import { canonicalUrl } from "../lib/paths.js";
import type { TokenInfo } from "../ports/store.js";
import {
  authorizeRunWrite,
  authorizeTraceWrite,
  tagsForWorkloadRun,
  tagTraceForWorkload,
} from "../tracking/tenancy.js";
import type { KeyValue } from "../tracking/types.js";
import { type DecideOptions, decide, projectOf } from "./authorize.js";

/** Where rewriteUrl leaves its refusal for the first hook to answer. */
const REFUSED = Symbol("loom.refusedPath");
type Marked = IncomingMessage & { [REFUSED]?: string };

/**
 * Fastify's rewriteUrl: the canonical path (paths.ts) is what the router matches and every
 * handler reads. A refused path is routed nowhere ("/") and answered 400 by the first hook.
 */
export function rewriteUrl(req: IncomingMessage): string {
  const canonical = canonicalUrl(req.url ?? "/");
  if ("url" in canonical) return canonical.url;
  (req as Marked)[REFUSED] = canonical.refused;
  return "/";
}

/** Headers that two parsers could read differently when repeated (the gateway's front refuses them too). */
const SINGLE = new Set(["authorization", "content-length", "host"]);

export interface GuardDeps {
  authenticate(header: string | undefined): TokenInfo | Promise<TokenInfo>;
  decide: DecideOptions;
  /** A tracking run's tags, for a workload's per-run ownership; absent where tracking is not served. */
  runTags?(project: string, runId: string): Promise<readonly KeyValue[] | undefined>;
  /** The run a logged model came from (its source_run_id), or undefined. */
  modelRun?(project: string, modelId: string): Promise<string | undefined>;
  /** An MLflow 3 trace's tags, for a workload's per-trace ownership; undefined when there is none. */
  traceTags?(project: string, traceId: string): Promise<Readonly<Record<string, string>> | undefined>;
}

/**
 * The one gate in front of every route: refuse ambiguous requests (400), authenticate, then decide
 * from the matched route's rule and its decoded parameters (authorize.ts). Once the body is read,
 * a workload's tracking writes are held to its own runs.
 */
export function installGuard(app: FastifyInstance, deps: GuardDeps): void {
  app.addHook("onRequest", async (req) => {
    const refused = (req.raw as Marked)[REFUSED];
    if (refused) throw new BadRequestError(`${refused} (${JSON.stringify(req.originalUrl.slice(0, 200))})`);
    refuseRepeatedHeaders(req.raw.rawHeaders);
    const rule = req.routeOptions.config.authz;
    if (rule?.scope === "public") return;
    const principal = await deps.authenticate(req.headers.authorization);
    req.principal = principal;
    if (!rule) {
      // An unknown path: a valid token learns it is not there (404), nothing more.
      if (req.is404) return;
      throw new ForbiddenError(`${req.method} ${req.url.split("?")[0]} has no authorization rule`);
    }
    decide(principal, rule, req.params as Record<string, string | undefined>, deps.decide);
  });
  app.addHook("preHandler", async (req) => {
    const rule = req.routeOptions.config.authz;
    const principal = req.principal;
    if (!principal?.workload || !rule?.workload) return;
    const params = req.params as Record<string, string | undefined>;
    const fields = (req.method === "GET" ? req.query : req.body) as Record<string, unknown> | undefined;
    if (rule.workload === "create-run" && fields && typeof fields === "object") {
      fields.tags = tagsForWorkloadRun(principal, fields.tags);
      return;
    }
    const project = projectOf(rule, params);
    const ownTrace = async (traceId: string) =>
      authorizeTraceWrite(principal, traceId, traceId ? await deps.traceTags?.(project, traceId) : undefined);
    if (rule.workload === "create-trace" && fields && typeof fields === "object") {
      tagTraceForWorkload(principal, fields);
      // StartTraceV3 sent again replaces the record: only its own, never another's trace id.
      const traceId = (fields.trace as { trace_info?: { trace_id?: unknown } }).trace_info?.trace_id;
      const existing =
        typeof traceId === "string" && traceId ? await deps.traceTags?.(project, traceId) : undefined;
      if (existing) authorizeTraceWrite(principal, String(traceId), existing);
      return;
    }
    if (rule.workload === "own-trace") return ownTrace(params.trace_id ?? "");
    let runId: string | undefined;
    if (rule.workload === "own-run")
      runId = stringOf(fields?.run_id) ?? stringOf(fields?.run_uuid) ?? stringOf(fields?.source_run_id);
    else if (rule.workload === "own-model") runId = await deps.modelRun?.(project, params.model_id ?? "");
    else if (rule.workload === "own-run-artifact") {
      // EXP/RUN/artifacts/… or EXP/models/MODEL/artifacts/…
      const [, second, model] = (params["*"] ?? "").split("/");
      // EXP/traces/TRACE/artifacts/traces.json: a trace's spans, uploaded by whoever started it.
      if (second === "traces") return ownTrace(model ?? "");
      runId = second === "models" && model ? await deps.modelRun?.(project, model) : second;
    } else return;
    const tags = runId && deps.runTags ? await deps.runTags(project, runId) : undefined;
    authorizeRunWrite(principal, runId ?? "(none)", tags);
  });
}

function stringOf(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** Duplicate Authorization, Content-Length or Host: 400, so no two parsers can pick different ones. */
function refuseRepeatedHeaders(raw: string[]): void {
  const seen = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (!SINGLE.has(name)) continue;
    if (seen.has(name))
      throw new BadRequestError(`the request has more than one ${name} header: send exactly one`);
    seen.add(name);
  }
}

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { Counter, type Registry } from "prom-client";
import { API_VERSION } from "../api/meta.js";
import type { AuditEntry, AuditLog, AuditObject } from "../ports/audit.js";
import { auditRoutes } from "./routes/audit.js";
import { dryRun, type Query } from "./routes/params.js";

const BASE = `/apis/${API_VERSION}`;
const READS = new Set(["GET", "HEAD", "OPTIONS"]);
const VERBS: Record<string, string> = { POST: "create", PUT: "update", PATCH: "patch", DELETE: "delete" };

declare module "fastify" {
  interface FastifyRequest {
    /** The message of the error this request was answered with (the audit entry's reason). */
    auditReason?: string;
  }
}

/**
 * Records every write (any method but GET, HEAD and OPTIONS) and every request refused with 401
 * or 403 — refused before routing included, as onResponse runs for those too — into the audit
 * log, after the answer is sent: the request never waits on it. Serves the log on
 * GET /apis/loom.dev/v1alpha1/audit and …/projects/P/audit, and counts what it wrote and dropped
 * (loom_audit_records_total). The log is flushed and closed with the app.
 *
 * No secret is recorded: of the headers only the user agent, of a body only the object's name
 * (a token's or key's name, never its value; the token a gateway asks about is never read).
 */
export function auditRequests(app: FastifyInstance, audit: AuditLog, metrics?: Registry): void {
  app.addHook("onError", async (req, _reply, err) => {
    req.auditReason = err.message;
  });
  app.addHook("onResponse", async (req, reply) => {
    let entry: AuditEntry | undefined;
    try {
      entry = auditEntry(req, reply);
    } catch (err) {
      req.log.warn({ err }, "could not describe a request for the audit log");
    }
    if (entry) audit.record(entry);
  });
  app.addHook("onClose", async () => audit.close());
  if (metrics) countAudit(audit, metrics);
  auditRoutes(app, { audit });
}

/** The entry for a request, or undefined when it is not audited (reads, platform traffic that succeeded). */
export function auditEntry(req: FastifyRequest, reply: FastifyReply): AuditEntry | undefined {
  const status = reply.statusCode;
  const denied = status === 401 || status === 403;
  if (READS.has(req.method) && !denied) return undefined;
  const path = req.url.split("?", 1)[0]!;
  // A dry run changes nothing (loom apply validates every object first): only its refusal counts.
  // Read as the routes read it (routes/params.ts), so `?dryRun=All&dryRun=x` — a real write — is audited.
  if (!denied && dryRun((req.query ?? {}) as Query)) return undefined;
  // Inference calls and the gateways' own control traffic (load reports every second, key
  // checks) are not changes to anything a tenant owns: only their refusals are audited.
  if (!denied && (path.startsWith("/v1/") || path.startsWith("/serving/") || path.startsWith("/gateway/")))
    return undefined;
  // A run's metrics, params and tags (MLflow's log-*), which workers send every few steps, are a
  // run's data rather than a change to what a tenant owns: audited only when refused, so they
  // cannot push token and object changes out of the log's row cap.
  if (!denied && status < 400 && /\/api\/2\.0\/mlflow\/runs\/log-[^/]+$/.test(path)) return undefined;
  const p = req.principal;
  const object = objectOf(path, req.body);
  if (!object.project && p?.project && !path.startsWith(`${BASE}/`)) object.project = p.project;
  const userAgent = req.headers["user-agent"];
  return {
    time: Date.now(),
    ...(p
      ? {
          principal: {
            id: p.id,
            name: p.name,
            role: p.role,
            ...(p.project ? { project: p.project } : {}),
            ...(p.apiKey ? { apiKey: true } : {}),
          },
        }
      : {}),
    verb: verbOf(req.method, path, object),
    method: req.method,
    path: path.slice(0, 1024),
    object,
    source: { address: req.ip, ...(userAgent ? { userAgent: userAgent.slice(0, 256) } : {}) },
    status,
    allowed: !denied,
    ...(status >= 400 && req.auditReason ? { reason: req.auditReason.slice(0, 512) } : {}),
  };
}

function verbOf(method: string, path: string, object: AuditObject): string {
  // MLflow's API is all POSTs named by their last segment (runs/create, runs/log-batch, …).
  if (object.kind?.startsWith("mlflow/") || object.kind === "mlflow")
    return path.slice(path.lastIndexOf("/") + 1) || method.toLowerCase();
  // Loom's objects have Kubernetes' verbs; other paths keep their method.
  return (object.kind ? VERBS[method] : undefined) ?? method.toLowerCase();
}

/** What a path names: Loom's objects by kind, project and name; MLflow's and others by area. */
export function objectOf(path: string, body: unknown): AuditObject {
  if (!path.startsWith(`${BASE}/`)) {
    // MLflow: /api/2.0/mlflow/runs/log-batch is an object of kind mlflow/runs; artifacts are
    // mlflow-artifacts; either may be under /mlflow/projects/P/.
    const m = /^(?:\/mlflow\/projects\/([^/]+))?\/(?:ajax-)?api\/2\.0\/mlflow(-artifacts)?\/(.*)$/.exec(path);
    if (!m) return {};
    const o: AuditObject = { kind: m[2] ? "mlflow-artifacts" : `mlflow/${m[3]!.replace(/\/?[^/]*$/, "")}` };
    if (m[1]) o.project = decoded(m[1]);
    if (o.kind === "mlflow/") o.kind = "mlflow";
    return o;
  }
  const parts = path
    .slice(BASE.length + 1)
    .split("/")
    .map(decoded);
  const named = (o: AuditObject, name: string | undefined): AuditObject =>
    name ? { ...o, name: name.slice(0, 253) } : o;
  if (parts[0] !== "projects") return named({ kind: parts[0] }, parts[1] ?? bodyName(body));
  // A Project belongs to itself: its admin sees changes to its quota and members.
  const project = parts[1] || bodyName(body);
  if (parts.length <= 2)
    return project ? { kind: "projects", project, name: project.slice(0, 253) } : { kind: "projects" };
  const kind = parts[2];
  const o: AuditObject = { kind, project };
  if (parts[4]) o.subresource = parts.slice(4).join("/");
  return named(o, parts[3] ?? bodyName(body));
}

function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment; // a malformed escape: kept as sent
  }
}

/** The name a create's body gives its object (metadata.name, or name for tokens and keys); nothing else of it. */
function bodyName(body: unknown): string | undefined {
  if (!body || typeof body !== "object") return undefined;
  const b = body as { metadata?: { name?: unknown }; name?: unknown };
  const name = b.metadata && typeof b.metadata === "object" ? b.metadata.name : b.name;
  return typeof name === "string" ? name : undefined;
}

/** loom_audit_records_total{outcome="written"|"dropped"}, read from the log's own counts. */
function countAudit(audit: AuditLog, metrics: Registry): void {
  const seen = { written: 0, dropped: 0 };
  new Counter({
    name: "loom_audit_records_total",
    help: "Audit log entries written to the store, or dropped (queue full or a failed write).",
    labelNames: ["outcome"],
    registers: [metrics],
    collect() {
      const now = audit.counts();
      for (const outcome of ["written", "dropped"] as const) {
        this.inc({ outcome }, now[outcome] - seen[outcome]);
        seen[outcome] = now[outcome];
      }
    },
  });
}

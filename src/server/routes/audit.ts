import type { FastifyInstance } from "fastify";
import { BadRequestError, ForbiddenError } from "../../api/errors.js";
import { type AuditLog, type AuditQuery, parseDuration } from "../../ports/audit.js";
import type { TokenInfo } from "../../ports/store.js";
import { authz, rule } from "../routetable.js";
import { BASE, type Query } from "./params.js";

export interface AuditRoutesDeps {
  audit: AuditLog;
}

/**
 * The audit log, read: an admin token that reaches every project sees everything (?project=
 * narrows it); a project's admin sees its project's entries on …/projects/P/audit. Anyone else
 * gets 403: the log names tokens, addresses and what was refused.
 */
export function auditRoutes(app: FastifyInstance, deps: AuditRoutesDeps): void {
  app.get<{ Querystring: Query }>(`${BASE}/audit`, authz(rule.admin("audit", "read")), async (req) => {
    const p = req.principal;
    if (p?.role !== "admin" || p.project || p.apiKey)
      throw new ForbiddenError(
        p?.role === "admin" && p.project
          ? `token "${p.name}" is the admin of project ${p.project} only: use loom audit -p ${p.project}`
          : "reading the audit log takes an admin token (a project's admin reads its project's with -p)",
      );
    return auditList(await deps.audit.list(auditQuery(req.query, req.query.project)));
  });
  app.get<{ Params: { project: string }; Querystring: Query }>(
    `${BASE}/projects/:project/audit`,
    authz(rule.project("audit", "read")),
    async (req) => {
      const project = req.params.project;
      if (!isAdminOf(req.principal, project))
        throw new ForbiddenError(
          `reading project ${project}'s audit log takes an admin token of the project`,
        );
      return auditList(await deps.audit.list(auditQuery(req.query, project)));
    },
  );
}

function isAdminOf(p: TokenInfo | undefined, project: string): boolean {
  return !!p && p.role === "admin" && !p.apiKey && (!p.project || p.project === project);
}

function auditList(items: unknown[]) {
  return { kind: "AuditList", apiVersion: "loom.dev/v1alpha1", items };
}

/** ?since=1h (or an RFC 3339 time) &limit=N, checked. */
export function auditQuery(q: Query, project: string | undefined, now = Date.now()): AuditQuery {
  const query: AuditQuery = {};
  if (project) query.project = project;
  if (q.since !== undefined) {
    const ago = parseDuration(q.since);
    const at = ago === undefined ? Date.parse(q.since) : now - ago;
    if (Number.isNaN(at))
      throw new BadRequestError(
        `since must be a duration (30m, 1h, 7d) or a time (2026-01-02T15:04:05Z), got "${q.since}"`,
      );
    query.since = at;
  }
  if (q.limit !== undefined) {
    const limit = Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
      throw new BadRequestError(`limit must be a whole number from 1 to 10000, got "${q.limit}"`);
    query.limit = limit;
  }
  return query;
}

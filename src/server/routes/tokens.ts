import type { FastifyInstance } from "fastify";
import { BadRequestError, ForbiddenError, NotFoundError } from "../../api/errors.js";
import type { TokenInfo, TokenStore, TokenSummary } from "../../ports/store.js";
import type { ResourceService } from "../resources.js";
import { authz, rule } from "../routetable.js";
import { BASE, type Params } from "./params.js";

export interface TokenRoutesDeps {
  tokens: TokenStore;
  resources: ResourceService;
}

const TOKEN_NAME = /^[a-z0-9][a-z0-9._@-]{0,62}$/i;
const UNITS = { s: 1, m: 60, h: 3600, d: 86_400 } as const;
/** The longest --ttl: a year; a token meant to outlive that needs no ttl. */
const MAX_TTL_SECONDS = 366 * 86_400;

/** A token's lifetime in seconds: whole seconds, or "30m", "12h", "7d". Undefined: no expiry. */
export function parseTtl(ttl: unknown): number | undefined {
  if (ttl === undefined || ttl === null) return undefined;
  const m =
    typeof ttl === "number" ? [String(ttl), String(ttl), "s"] : /^(\d+)([smhd])?$/.exec(String(ttl).trim());
  const seconds = m ? Number(m[1]) * UNITS[(m[2] ?? "s") as keyof typeof UNITS] : Number.NaN;
  if (!Number.isSafeInteger(seconds) || seconds < 1 || seconds > MAX_TTL_SECONDS)
    throw new BadRequestError(
      'ttl must be a whole number of seconds or a duration such as "30m", "12h" or "7d" (at most 366d)',
    );
  return seconds;
}

/** What a listing shows of a token: never its secret or hash. */
function shown(t: TokenSummary) {
  return {
    id: t.id,
    name: t.name,
    role: t.role,
    ...(t.project ? { project: t.project } : {}),
    ...(t.apiKey?.services ? { services: t.apiKey.services } : {}),
    ...(t.workload ? { workload: t.workload } : {}),
    createdAt: t.createdAt,
    ...(t.expiresAt ? { expiresAt: t.expiresAt } : {}),
    ...(t.lastUsedAt ? { lastUsedAt: t.lastUsedAt } : {}),
  };
}

function requireUnscopedAdmin(p: TokenInfo | undefined, what: string): void {
  if (p?.role !== "admin" || p.project || p.workload)
    throw new ForbiddenError(`only an admin token that reaches every project can ${what} tokens`);
}

/** A project's API keys are its admins' and editors' to make, list and revoke; not a workload's. */
function requireKeyManager(p: TokenInfo | undefined, what: string): void {
  if (!p || p.role === "viewer" || p.apiKey || p.workload)
    throw new ForbiddenError(`${what} API keys takes an editor or admin token of the project`);
}

/** API tokens (an unscoped admin manages them) and a project's gateway API keys (its admin or editor). */
export function tokenRoutes(app: FastifyInstance, deps: TokenRoutesDeps): void {
  const { resources } = deps;
  // API tokens: an unscoped admin makes them, for one project (or all), one role, and a lifetime.
  app.post<{ Body: { name?: unknown; role?: unknown; project?: unknown; ttl?: unknown } }>(
    `${BASE}/tokens`,
    authz(rule.admin("tokens")),
    async (req, reply) => {
      requireUnscopedAdmin(req.principal, "create");
      const { name, role, project, ttl } = req.body ?? {};
      if (typeof name !== "string" || !TOKEN_NAME.test(name))
        throw new BadRequestError("name must be 1-63 letters, digits, '.', '_', '@' or '-'");
      if (role !== "admin" && role !== "editor" && role !== "viewer")
        throw new BadRequestError("role must be admin, editor or viewer");
      const ttlSeconds = parseTtl(ttl);
      let projectUid: string | undefined;
      if (project !== undefined) {
        if (typeof project !== "string") throw new BadRequestError("project must be a project's name");
        projectUid = (await resources.get(resources.kind("projects"), undefined, project)).metadata.uid;
      }
      const created = await deps.tokens.create(name, role, {
        ...(typeof project === "string" ? { project, projectUid } : {}),
        ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
      });
      const { projectUid: _, ...info } = created.info;
      return reply.code(201).send({ token: created.token, ...info });
    },
  );

  app.get<{ Querystring: { project?: string } }>(
    `${BASE}/tokens`,
    authz(rule.admin("tokens", "read")),
    async (req) => {
      requireUnscopedAdmin(req.principal, "list");
      const project = req.query.project;
      return { items: (await deps.tokens.list(project ? { project } : {})).map(shown) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    `${BASE}/tokens/:id`,
    authz(rule.admin("tokens")),
    async (req, reply) => {
      requireUnscopedAdmin(req.principal, "revoke");
      if (!(await deps.tokens.revoke(req.params.id)))
        throw new NotFoundError(`no token has id ${req.params.id}: see 'loom token list'`);
      return reply.code(204).send();
    },
  );

  // Project API keys for the gateway: a project's admin or editor makes them.
  app.post<{
    Params: Params;
    Body: { name?: unknown; services?: unknown; ttl?: unknown; rateLimit?: unknown };
  }>(`${BASE}/projects/:project/apikeys`, authz(rule.project("apikeys", "write")), async (req, reply) => {
    requireKeyManager(req.principal, "creating");
    const project = req.params.project!;
    const projectUid = (await resources.get(resources.kind("projects"), undefined, project)).metadata.uid;
    const { name, services, ttl } = req.body ?? {};
    const rateLimit = parseRateLimit(req.body?.rateLimit);
    if (typeof name !== "string" || !TOKEN_NAME.test(name))
      throw new BadRequestError("name must be 1-63 letters, digits, '.', '_', '@' or '-'");
    if (services !== undefined && (!Array.isArray(services) || !services.every((s) => typeof s === "string")))
      throw new BadRequestError("services must be a list of InferenceService names");
    const ttlSeconds = parseTtl(ttl);
    const created = await deps.tokens.create(name, "viewer", {
      project,
      projectUid,
      apiKey: {
        ...(services ? { services: services as string[] } : {}),
        ...(rateLimit ? { rateLimit } : {}),
      },
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    });
    return reply.code(201).send({
      key: created.token,
      id: created.info.id,
      name,
      project,
      ...(services ? { services } : {}),
      ...(rateLimit ? { rateLimit } : {}),
      ...(created.info.expiresAt ? { expiresAt: created.info.expiresAt } : {}),
    });
  });

  app.get<{ Params: Params }>(
    `${BASE}/projects/:project/apikeys`,
    authz(rule.project("apikeys", "read")),
    async (req) => {
      requireKeyManager(req.principal, "listing");
      const project = req.params.project!;
      await resources.get(resources.kind("projects"), undefined, project);
      return { items: (await deps.tokens.list({ project, apiKeys: true })).map(shown) };
    },
  );

  app.delete<{ Params: Params & { id: string } }>(
    `${BASE}/projects/:project/apikeys/:id`,
    authz(rule.project("apikeys", "write")),
    async (req, reply) => {
      requireKeyManager(req.principal, "revoking");
      const project = req.params.project!;
      // Only this project's keys: an editor of A cannot revoke B's by id.
      const keys = await deps.tokens.list({ project, apiKeys: true });
      if (!keys.some((k) => k.id === req.params.id) || !(await deps.tokens.revoke(req.params.id)))
        throw new NotFoundError(
          `project ${project} has no API key with id ${req.params.id}: see 'loom apikey list -p ${project}'`,
        );
      return reply.code(204).send();
    },
  );
}

/** An API key's optional `rateLimit: {requestsPerMinute?, tokensPerMinute?}` (whole numbers ≥ 1). */
function parseRateLimit(v: unknown): { requestsPerMinute?: number; tokensPerMinute?: number } | undefined {
  if (v === undefined) return undefined;
  const fail = () =>
    new BadRequestError(
      "rateLimit must be {requestsPerMinute?: N, tokensPerMinute?: N} with whole numbers of at least 1",
    );
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw fail();
  const out: { requestsPerMinute?: number; tokensPerMinute?: number } = {};
  for (const [k, n] of Object.entries(v)) {
    if (
      (k !== "requestsPerMinute" && k !== "tokensPerMinute") ||
      !Number.isSafeInteger(n) ||
      (n as number) < 1
    )
      throw fail();
    out[k] = n as number;
  }
  return Object.keys(out).length ? out : undefined;
}

import type { FastifyInstance } from "fastify";
import { BadRequestError, ForbiddenError } from "../../api/errors.js";
import type { TokenStore } from "../../ports/store.js";
import type { ResourceService } from "../resources.js";
import { BASE, type Params } from "./params.js";

export interface TokenRoutesDeps {
  tokens: TokenStore;
  resources: ResourceService;
}

const TOKEN_NAME = /^[a-z0-9][a-z0-9._@-]{0,62}$/i;

/** API tokens (an unscoped admin makes them) and a project's gateway API keys (its admin or editor). */
export function tokenRoutes(app: FastifyInstance, deps: TokenRoutesDeps): void {
  const { resources } = deps;
  // API tokens: an unscoped admin makes them, for one project (or all) and one role.
  app.post<{ Body: { name?: unknown; role?: unknown; project?: unknown } }>(
    `${BASE}/tokens`,
    async (req, reply) => {
      const p = req.principal;
      if (p?.role !== "admin" || p.project)
        throw new ForbiddenError("only an admin token that reaches every project can create tokens");
      const { name, role, project } = req.body ?? {};
      if (typeof name !== "string" || !TOKEN_NAME.test(name))
        throw new BadRequestError("name must be 1-63 letters, digits, '.', '_', '@' or '-'");
      if (role !== "admin" && role !== "editor" && role !== "viewer")
        throw new BadRequestError("role must be admin, editor or viewer");
      if (project !== undefined) {
        if (typeof project !== "string") throw new BadRequestError("project must be a project's name");
        await resources.get(resources.kind("projects"), undefined, project);
      }
      const created = await deps.tokens.create(name, role, project as string | undefined);
      return reply.code(201).send({ token: created.token, ...created.info });
    },
  );

  // Project API keys for the gateway: a project's admin or editor makes them.
  app.post<{ Params: Params; Body: { name?: unknown; services?: unknown; rateLimit?: unknown } }>(
    `${BASE}/projects/:project/apikeys`,
    async (req, reply) => {
      const p = req.principal;
      const project = req.params.project!;
      if (!p || p.role === "viewer")
        throw new ForbiddenError("creating an API key takes an editor or admin token of the project");
      await resources.get(resources.kind("projects"), undefined, project);
      const { name, services } = req.body ?? {};
      const rateLimit = parseRateLimit(req.body?.rateLimit);
      if (typeof name !== "string" || !TOKEN_NAME.test(name))
        throw new BadRequestError("name must be 1-63 letters, digits, '.', '_', '@' or '-'");
      if (
        services !== undefined &&
        (!Array.isArray(services) || !services.every((s) => typeof s === "string"))
      )
        throw new BadRequestError("services must be a list of InferenceService names");
      const created = await deps.tokens.create(name, "viewer", project, {
        ...(services ? { services: services as string[] } : {}),
        ...(rateLimit ? { rateLimit } : {}),
      });
      return reply.code(201).send({
        key: created.token,
        name,
        project,
        ...(services ? { services } : {}),
        ...(rateLimit ? { rateLimit } : {}),
      });
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

import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  HTTPMethods,
  RouteGenericInterface,
  RouteHandlerMethod,
  RouteOptions,
} from "fastify";
import { API_VERSION } from "../api/meta.js";

/**
 * Who may reach a route, by what it serves rather than how its URL is spelled:
 * - public: anyone, no token (health only);
 * - cluster: facts about the installation any user token may read (nodes, version); writing takes an unscoped admin;
 * - global: every project's data at once (lists across projects): a token not scoped to one project;
 * - project: one project's data, the project named by `projectParam` (absent from the URL: the
 *   default project); viewers read, editors and admins write;
 * - admin: an admin token not scoped to a project (projects themselves, tokens, metrics);
 * - gateway: the inference gateway's routes (user tokens and API keys; the gateway checks the project);
 * - gateway-control: what other gateway replicas call (endpoints, key checks, load): an unscoped admin;
 * - platform: what only Loom's controllers write (status): no token over HTTP, unless the server
 *   is told of a platform principal.
 */
export type Scope =
  | "public"
  | "cluster"
  | "global"
  | "project"
  | "admin"
  | "gateway"
  | "gateway-control"
  | "platform";
export type Verb = "read" | "write";

/**
 * What a workload's own credential (TokenInfo.workload) may do on a route; absent, nothing:
 * - own-object: read it when the route's :plural/:name name the workload itself;
 * - read: read its project's data (tracking);
 * - create: create in its project (an experiment to log into);
 * - create-run: create a run, which is tagged as the workload's;
 * - own-run: write to a run of its own, named by run_id (or a logged model's source_run_id);
 * - own-model: change a logged model (:model_id) that one of its runs logged;
 * - own-run-artifact: upload under a run of its own, or a model one of its runs logged
 *   (EXP/RUN/… or EXP/models/MODEL/…).
 */
export type WorkloadAccess =
  | "own-object"
  | "read"
  | "create"
  | "create-run"
  | "own-run"
  | "own-model"
  | "own-run-artifact";

/** One route's authorization rule: what it serves, the verb, and whose it is. */
export interface Rule {
  /** What the route serves, for messages and the audit trail ("trainingjobs", "mlflow:runs/create"). */
  resource: string;
  verb: Verb;
  scope: Scope;
  /** The path parameter that names the project (scope "project"); default "project". */
  projectParam?: string;
  workload?: WorkloadAccess;
}

declare module "fastify" {
  interface FastifyContextConfig {
    /** The route's authorization rule: every route has one (checked when it is registered). */
    authz?: Rule;
  }
}

const BASE = `/apis/${API_VERSION}`;

/** Rule shorthands. */
export const rule = {
  public: (resource: string): Rule => ({ resource, verb: "read", scope: "public" }),
  cluster: (resource: string, verb: Verb = "read"): Rule => ({ resource, verb, scope: "cluster" }),
  global: (resource: string): Rule => ({ resource, verb: "read", scope: "global" }),
  admin: (resource: string, verb: Verb = "write"): Rule => ({ resource, verb, scope: "admin" }),
  project: (resource: string, verb: Verb, extra: Partial<Rule> = {}): Rule => ({
    resource,
    verb,
    scope: "project",
    ...extra,
  }),
  gateway: (resource: string, verb: Verb): Rule => ({ resource, verb, scope: "gateway" }),
  gatewayControl: (resource: string, verb: Verb): Rule => ({ resource, verb, scope: "gateway-control" }),
  platform: (resource: string): Rule => ({ resource, verb: "write", scope: "platform" }),
};

/** The verb of an HTTP method on Loom's API: anything but a read changes something. */
export const verbOf = (method: string): Verb =>
  method === "GET" || method === "HEAD" || method === "OPTIONS" ? "read" : "write";

/**
 * The rules of routes that modules outside this table's reach register with plain Fastify calls
 * (server/serving.ts, tracking/artifacts.ts, routes/tokens.ts, routes/audit.ts): keyed by method and the full URL
 * as Fastify registers it. A route found in neither its own registration nor here fails startup.
 */
export const REGISTERED_ELSEWHERE: { method: string; url: string; rule: Rule }[] = [
  // Tokens and API keys (routes/tokens.ts; the handlers check the role again).
  { method: "POST", url: `${BASE}/tokens`, rule: rule.admin("tokens") },
  { method: "GET", url: `${BASE}/tokens`, rule: rule.admin("tokens", "read") },
  { method: "DELETE", url: `${BASE}/tokens/:id`, rule: rule.admin("tokens") },
  { method: "POST", url: `${BASE}/projects/:project/apikeys`, rule: rule.project("apikeys", "write") },
  { method: "GET", url: `${BASE}/projects/:project/apikeys`, rule: rule.project("apikeys", "read") },
  { method: "DELETE", url: `${BASE}/projects/:project/apikeys/:id`, rule: rule.project("apikeys", "write") },
  // The audit log (routes/audit.ts): every project's takes an unscoped admin; a project's, the
  // handler also asks for that project's admin.
  { method: "GET", url: `${BASE}/audit`, rule: rule.admin("audit", "read") },
  { method: "GET", url: `${BASE}/projects/:project/audit`, rule: rule.project("audit", "read") },
  // The OpenAI-compatible gateway (server/serving.ts): users and API keys; the gateway checks the project.
  ...["/v1/chat/completions", "/v1/completions", "/v1/embeddings"].map((url) => ({
    method: "POST",
    url,
    rule: rule.gateway("inference", "write"),
  })),
  { method: "*", url: "/serving/*", rule: rule.gateway("inference", "write") },
  { method: "GET", url: "/v1/models", rule: rule.gateway("models", "read") },
  { method: "GET", url: "/v1/models/*", rule: rule.gateway("models", "read") },
  { method: "*", url: "/v1/*", rule: rule.gateway("unserved", "read") },
  // The control routes other gateway replicas call (server/serving.ts).
  { method: "GET", url: "/gateway/v1/endpoints", rule: rule.gatewayControl("gateway-endpoints", "read") },
  {
    method: "POST",
    url: "/gateway/v1/authenticate",
    rule: rule.gatewayControl("gateway-authenticate", "read"),
  },
  { method: "POST", url: "/gateway/v1/report", rule: rule.gatewayControl("gateway-load", "write") },
  { method: "POST", url: "/gateway/v1/activate", rule: rule.gatewayControl("gateway-activate", "write") },
  // MLflow's artifact proxy (tracking/artifacts.ts), at the root (default project) and per project.
  ...["/api/2.0/mlflow-artifacts", "/mlflow/projects/:project/api/2.0/mlflow-artifacts"].flatMap((p) => [
    {
      method: "PUT",
      url: `${p}/artifacts/*`,
      rule: rule.project("mlflow-artifacts", "write", { workload: "own-run-artifact" }),
    },
    {
      method: "GET",
      url: `${p}/artifacts`,
      rule: rule.project("mlflow-artifacts", "read", { workload: "read" }),
    },
    {
      method: "GET",
      url: `${p}/artifacts/*`,
      rule: rule.project("mlflow-artifacts", "read", { workload: "read" }),
    },
    { method: "POST", url: `${p}/mpu/*`, rule: rule.project("mlflow-artifacts", "write") },
  ]),
];

/** A route as registered: method, URL and its rule (the authorization matrix test walks these). */
export interface RegisteredRoute {
  method: string;
  url: string;
  rule: Rule;
}

/**
 * Makes a rule part of every route: from now on a route registered on `app` (or in a plugin of
 * it) carries config.authz, given at registration or found in REGISTERED_ELSEWHERE; one with
 * neither throws, so the server does not start. Returns the routes seen, in order.
 */
export function requireRules(
  app: FastifyInstance,
  elsewhere: readonly { method: string; url: string; rule: Rule }[] = REGISTERED_ELSEWHERE,
): RegisteredRoute[] {
  const seen: RegisteredRoute[] = [];
  app.addHook("onRoute", (opts: RouteOptions) => {
    const methods = Array.isArray(opts.method) ? opts.method : [opts.method];
    let found = opts.config?.authz;
    if (!found) {
      const all = methods.length > 2; // app.all(): every method
      // Fastify adds a HEAD route beside each GET: it reads what the GET reads.
      const wanted = methods.map((m) => (m === "HEAD" ? "GET" : m));
      found = elsewhere.find(
        (e) => e.url === opts.url && (e.method === "*" ? all : !all && wanted.includes(e.method)),
      )?.rule;
    }
    if (!found)
      throw new Error(
        `route ${methods.join(",")} ${opts.url} has no authorization rule: register it with route() ` +
          "(src/server/routetable.ts) saying its resource, verb and scope, or add it to REGISTERED_ELSEWHERE",
      );
    opts.config = { ...opts.config, authz: found };
    for (const method of methods) seen.push({ method, url: opts.url, rule: found });
  });
  return seen;
}

/** One route and its rule, registered together. */
export interface RouteDef<G extends RouteGenericInterface> {
  method: HTTPMethods;
  url: string;
  rule: Rule;
  handler: (req: FastifyRequest<G>, reply: FastifyReply) => unknown;
}

/** Registers a route with its authorization rule: the only way Loom's own modules add routes. */
export function route<G extends RouteGenericInterface = RouteGenericInterface>(
  app: FastifyInstance,
  def: RouteDef<G>,
): void {
  app.route<G>({
    method: def.method,
    url: def.url,
    config: { authz: def.rule },
    handler: def.handler as unknown as RouteHandlerMethod<
      FastifyInstance["server"],
      FastifyRequest["raw"],
      FastifyReply["raw"],
      G
    >,
  });
}

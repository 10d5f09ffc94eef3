import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  HTTPMethods,
  RouteGenericInterface,
  RouteHandlerMethod,
  RouteOptions,
} from "fastify";

/**
 * Who may reach a route, by what it serves rather than how its URL is spelled:
 * - public: anyone, no token (health; the web console's static files, log-in and log-out);
 * - cluster: facts about the installation any user token may read (nodes, version); writing takes an unscoped admin;
 * - global: every project's data at once (lists across projects): a token not scoped to one project;
 * - project: one project's data, the project named by `projectParam` (absent from the URL: the
 *   default project); viewers read, editors and admins write;
 * - admin: an admin token not scoped to a project (projects themselves, tokens, metrics);
 * - gateway: the inference gateway's routes (user tokens and API keys; the gateway checks the project);
 * - gateway-control: what other gateway replicas call (endpoints, key checks, load): an unscoped admin;
 * - platform: what only Loom's controllers write (status): no token over HTTP, unless the server
 *   is told of a platform principal;
 * - self: the caller's own records (their SSH keys): any user token, which reaches only its own
 *   user's (the route keys them by the caller); never API keys or workloads' credentials.
 */
export type Scope =
  | "public"
  | "cluster"
  | "global"
  | "project"
  | "admin"
  | "gateway"
  | "gateway-control"
  | "platform"
  | "self";
export type Verb = "read" | "write";

/**
 * What a workload's own credential (TokenInfo.workload) may do on a route; absent, nothing:
 * - own-object: read it when the route's :plural/:name name the workload itself;
 * - read: read its project's data (tracking);
 * - create: create in its project (an experiment to log into);
 * - create-run: create a run, which is tagged as the workload's;
 * - own-run: write to a run of its own, named by run_id (or a logged model's source_run_id);
 * - own-model: change a logged model (:model_id) that one of its runs logged;
 * - own-run-artifact: upload under a run of its own, a model one of its runs logged, or a trace
 *   of its own (EXP/RUN/…, EXP/models/MODEL/… or EXP/traces/TRACE/…);
 * - create-trace: start a trace (MLflow 3), which is tagged as the workload's;
 * - own-trace: change a trace of its own (:trace_id), e.g. its tags.
 */
export type WorkloadAccess =
  | "own-object"
  | "read"
  | "create"
  | "create-run"
  | "own-run"
  | "own-model"
  | "own-run-artifact"
  | "create-trace"
  | "own-trace";

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
  self: (resource: string, verb: Verb): Rule => ({ resource, verb, scope: "self" }),
};

/** The verb of an HTTP method on Loom's API: anything but a read changes something. */
export const verbOf = (method: string): Verb =>
  method === "GET" || method === "HEAD" || method === "OPTIONS" ? "read" : "write";

/** A route as registered: method, URL and its rule (the authorization matrix test walks these). */
export interface RegisteredRoute {
  method: string;
  url: string;
  rule: Rule;
}

/**
 * Makes a rule part of every route: from now on a route registered on `app` (or in a plugin of
 * it) must carry config.authz, given where it is registered (route(), or authz() in a Fastify
 * shorthand call); one without throws, naming the route, so the server does not start. Called
 * before any route exists: a route registered earlier would pass unchecked (and be denied, 403, at
 * request time by the guard), so that refuses to start too. Returns the routes seen, in order.
 */
export function requireRules(app: FastifyInstance): RegisteredRoute[] {
  const before = app.printRoutes();
  if (before !== "(empty tree)")
    throw new Error(
      `routes were registered before requireRules, so their authorization rules were never checked:\n${before}` +
        "register them after it (src/server/app.ts)",
    );
  const seen: RegisteredRoute[] = [];
  app.addHook("onRoute", (opts: RouteOptions) => {
    const methods = Array.isArray(opts.method) ? opts.method : [opts.method];
    const found = opts.config?.authz;
    if (!found)
      throw new Error(
        `route ${methods.join(",")} ${opts.url} has no authorization rule: register it with route(), or pass ` +
          "authz(rule) to the Fastify call (src/server/routetable.ts), saying its resource, verb and scope",
      );
    for (const method of methods) seen.push({ method, url: opts.url, rule: found });
  });
  return seen;
}

/**
 * The options that give a route registered with a Fastify shorthand (`app.get(url, authz(rule),
 * handler)`) its rule: what route() does, for handlers typed through Fastify's generics.
 */
export function authz(r: Rule): { config: { authz: Rule } } {
  return { config: { authz: r } };
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

import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from "fastify";
import type { Logger } from "pino";
import { Counter, Histogram, type Registry } from "prom-client";
import { BadRequestError, ForbiddenError, NotFoundError } from "../api/errors.js";
import { API_VERSION } from "../api/meta.js";
import { type TrainingJob, workerRange } from "../api/trainingjob.js";
import type { Snapshot } from "../core/scheduler/model.js";
import type { Gateway } from "../gateway/gateway.js";
import { interleaveLines } from "../lib/interleave.js";
import type { Runtime } from "../ports/runtime.js";
import { coreScheduler } from "../ports/scheduler.js";
import type { EventRecorder, ResourceStore, TokenInfo, TokenStore } from "../ports/store.js";
import type { LoggedModels } from "../tracking/logged.js";
import type { ModelRegistry } from "../tracking/registry.js";
import { trackingRoutes } from "../tracking/routes.js";
import type { TrackingStore } from "../tracking/store.js";
import { authorizeApi, bearerAuthenticator } from "./authz.js";
import { installErrorHandler, statusBody } from "./errors.js";
import { ModelView } from "./models.js";
import { buildOpenApi } from "./openapi.js";
import { ResourceService } from "./resources.js";
import { SchedulingView } from "./scheduling.js";
import {
  gatewayControlRoutes,
  openAIFastLane,
  type ServingDirectory,
  serverWith,
  servingRoutes,
} from "./serving.js";

export interface AppDeps {
  store: ResourceStore;
  tokens: TokenStore;
  events: EventRecorder;
  runtime: Runtime;
  metrics: Registry;
  log: Logger;
  version: string;
  /** Finalizers new objects get, by kind (embedded with controllers: TrainingJob's runtime finalizer). */
  createFinalizers?: Record<string, string[]>;
  /** Create the default project if it is missing (embedded); the operator owns that on Kubernetes. */
  ensureDefaultProject?: boolean;
  /** The inference gateway (OpenAI routes on this port). */
  serving?: { gateway: Gateway; directory: ServingDirectory };
  /** The admission loop's snapshot, where controllers run in this process (scheduling views). */
  schedulingSnapshot?: () => Promise<Snapshot>;
  /** MLflow-compatible experiment tracking (embedded: on the same database). */
  tracking?: {
    store: TrackingStore;
    registry: ModelRegistry;
    loggedModels: LoggedModels;
    artifactsDir: string;
  };
}

const BASE = `/apis/${API_VERSION}`;

declare module "fastify" {
  interface FastifyRequest {
    principal?: TokenInfo;
  }
}

type Params = { project?: string; plural?: string; name?: string };
type Query = Record<string, string | undefined>;

/** Builds the HTTP API. No socket: callers listen, tests use inject(). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const authenticate = bearerAuthenticator((token) => deps.tokens.verify(token));
  // The gateway's POST routes are served straight off the socket, before Fastify's routing,
  // hooks and reply machinery (bench:gateway); inject() and every other route go through Fastify.
  const fastLane = deps.serving ? openAIFastLane(deps.serving, authenticate) : undefined;
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.log.child({ component: "api" }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 8 * 1024 * 1024,
    ...(fastLane ? { serverFactory: serverWith(fastLane) } : {}),
  });
  const resources = new ResourceService(deps.store, deps.createFinalizers);
  installErrorHandler(app);
  app.addContentTypeParser(["application/merge-patch+json"], { parseAs: "string" }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch (err) {
      (err as { statusCode?: number }).statusCode = 400;
      done(err as Error, undefined);
    }
  });

  const requests = new Counter({
    name: "loom_http_requests_total",
    help: "HTTP requests by method, route and status code.",
    labelNames: ["method", "route", "code"],
    registers: [deps.metrics],
  });
  const latency = new Histogram({
    name: "loom_http_request_duration_seconds",
    help: "HTTP request latency by method and route.",
    labelNames: ["method", "route"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
    registers: [deps.metrics],
  });
  app.addHook("onResponse", async (req, reply) => {
    const route = req.routeOptions.url ?? "unmatched";
    requests.inc({ method: req.method, route, code: reply.statusCode });
    latency.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  app.addHook("onRequest", async (req) => {
    if (req.url === "/healthz" || req.url.startsWith("/healthz?")) return;
    const principal = await authenticate(req.headers.authorization);
    req.principal = principal;
    authorizeApi(principal, req.method, req.url);
  });

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/metrics", async (_req, reply) =>
    reply.type(deps.metrics.contentType).send(await deps.metrics.metrics()),
  );
  app.get("/openapi.json", async () => buildOpenApi(deps.version));
  app.get("/version", async () => ({ version: deps.version, apiVersion: API_VERSION }));

  const dryRun = (q: Query) => q.dryRun === "All";
  const scheduling = new SchedulingView({
    store: deps.store,
    runtime: deps.runtime,
    scheduler: coreScheduler,
    ...(deps.schedulingSnapshot ? { snapshot: deps.schedulingSnapshot } : {}),
  });

  // Scheduling views: capacity and use per node and per project (loom get nodes, loom top).
  app.get(`${BASE}/nodes`, async () => ({ kind: "NodeList", items: await scheduling.nodes() }));
  app.get(`${BASE}/usage/projects`, async () => ({
    kind: "ProjectUsageList",
    items: await scheduling.projects(),
  }));

  const listOrWatch = async (
    req: FastifyRequest<{ Params: Params; Querystring: Query }>,
    reply: FastifyReply,
    plural: string,
    project: string | undefined,
    inProject = false,
  ) => {
    const def = inProject ? resources.namespacedKind(plural) : resources.kind(plural);
    const q = req.query;
    const opts = { project, labelSelector: q.labelSelector };
    if (q.watch === "1" || q.watch === "true")
      return watch(req, reply, def.kind, { ...opts, resourceVersion: q.resourceVersion });
    const result = await resources.list(def, opts);
    return {
      apiVersion: API_VERSION,
      kind: `${def.kind}List`,
      metadata: { resourceVersion: result.resourceVersion },
      items: result.items,
    };
  };

  const watch = async (
    req: FastifyRequest,
    reply: FastifyReply,
    kind: string,
    opts: { project?: string; labelSelector?: string; resourceVersion?: string },
  ) => {
    const raw = reply.raw;
    let stop: (() => void) | undefined;
    let closed = false;
    const close = () => {
      closed = true;
      stop?.();
      if (!raw.writableEnded) raw.end();
    };
    const send = (obj: unknown) => {
      if (closed) return;
      raw.write(`${JSON.stringify(obj)}\n`);
      // A watcher that stops reading is cut off rather than allowed to grow server memory.
      if (raw.writableLength > 16 * 1024 * 1024) {
        req.log.warn({ kind }, "closing a watch whose client does not keep up");
        close();
      }
    };
    // Fails before any byte is sent when the revision expired: the client gets a plain 410.
    const buffered: unknown[] = [];
    let started = false;
    stop = await deps.store.watch(
      kind,
      opts,
      (e) => (started ? send(e) : buffered.push(e)),
      (err) => {
        send({ type: "ERROR", object: statusBody(410, "Expired", err.message) });
        close();
      },
    );
    reply.hijack();
    raw.writeHead(200, {
      "content-type": "application/json",
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
    });
    raw.flushHeaders();
    started = true;
    for (const e of buffered) send(e);
    const timeout = Number(req.query && (req.query as Query).timeoutSeconds);
    if (timeout > 0) setTimeout(close, timeout * 1000).unref();
    raw.on("close", close);
  };

  // Projects (cluster-scoped) and resources inside a project share the /projects prefix, as
  // namespaces and namespaced resources do in Kubernetes.
  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/projects`, (req, reply) =>
    listOrWatch(req, reply, "projects", undefined),
  );
  app.post<{ Params: Params; Querystring: Query }>(`${BASE}/projects`, async (req, reply) => {
    const created = await resources.create(
      resources.kind("projects"),
      undefined,
      req.body,
      dryRun(req.query),
    );
    return reply.code(201).send(created);
  });
  app.get<{ Params: Params }>(`${BASE}/projects/:name`, async (req) =>
    resources.get(resources.kind("projects"), undefined, req.params.name!),
  );
  app.put<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:name`, async (req) =>
    resources.update(resources.kind("projects"), undefined, req.params.name!, req.body, dryRun(req.query)),
  );
  app.patch<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:name`, async (req) =>
    resources.patch(resources.kind("projects"), undefined, req.params.name!, req.body, dryRun(req.query)),
  );
  app.delete<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:name`, async (req) =>
    resources.delete(resources.kind("projects"), undefined, req.params.name!, req.query.resourceVersion),
  );

  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/events`, async (req) => {
    const { kind, name } = req.query;
    if (!kind || !name) throw new BadRequestError("events need ?kind=KIND&name=NAME");
    const limit = Number(req.query.limit ?? 20);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new BadRequestError("limit must be a whole number from 1 to 1000");
    }
    const items = await deps.events.listFor({ kind, project: req.params.project!, name }, limit);
    return { kind: "EventList", items };
  });

  // Models: a view of the model registry, not stored objects (registered before the generic
  // routes; a static path segment wins over :plural).
  const models = deps.tracking
    ? new ModelView(deps.tracking.registry, deps.tracking.store, deps.store)
    : undefined;
  const modelView = () => {
    if (!models)
      throw new NotFoundError(
        "this server has no model registry: models are served by the server that serves tracking (loom up)",
      );
    return models;
  };
  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/models`, async (req) => {
    if (req.query.watch === "1" || req.query.watch === "true")
      throw new BadRequestError("models cannot be watched; list them again instead");
    const items = await modelView().list(req.params.project!);
    return { apiVersion: API_VERSION, kind: "ModelList", metadata: { resourceVersion: "0" }, items };
  });
  app.get<{ Params: Params }>(`${BASE}/projects/:project/models/:name`, async (req) =>
    modelView().get(req.params.project!, req.params.name!),
  );
  app.post<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/models`, async (req, reply) => {
    const { model, created } = await modelView().apply(req.params.project!, req.body, dryRun(req.query));
    return reply.code(created ? 201 : 200).send(model);
  });
  app.put<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/models/:name`, async (req) => {
    const name = (req.body as { metadata?: { name?: unknown } })?.metadata?.name;
    if (name !== req.params.name)
      throw new BadRequestError(
        `metadata.name (${String(name)}) must match the name in the path (${req.params.name})`,
      );
    return (await modelView().apply(req.params.project!, req.body, dryRun(req.query))).model;
  });
  app.delete<{ Params: Params }>(`${BASE}/projects/:project/models/:name`, async (req) =>
    modelView().delete(req.params.project!, req.params.name!),
  );

  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/:plural`, (req, reply) =>
    listOrWatch(req, reply, req.params.plural!, req.params.project, true),
  );
  app.post<{ Params: Params; Querystring: Query }>(
    `${BASE}/projects/:project/:plural`,
    async (req, reply) => {
      const def = resources.namespacedKind(req.params.plural!);
      const created = await resources.create(def, req.params.project, req.body, dryRun(req.query));
      // `loom apply --dry-run`: would it start now, and what would it preempt?
      if (dryRun(req.query) && req.query.preview === "admission" && def.kind === "TrainingJob") {
        const preview = await scheduling.preview(created as TrainingJob);
        return reply.code(201).send({ ...created, status: { phase: "Pending", admissionPreview: preview } });
      }
      return reply.code(201).send(created);
    },
  );
  app.get<{ Params: Params }>(`${BASE}/projects/:project/:plural/:name`, async (req) =>
    resources.get(resources.namespacedKind(req.params.plural!), req.params.project, req.params.name!),
  );
  app.put<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/:plural/:name`, async (req) =>
    resources.update(
      resources.namespacedKind(req.params.plural!),
      req.params.project,
      req.params.name!,
      req.body,
      dryRun(req.query),
    ),
  );
  app.patch<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/:plural/:name`, async (req) =>
    resources.patch(
      resources.namespacedKind(req.params.plural!),
      req.params.project,
      req.params.name!,
      req.body,
      dryRun(req.query),
    ),
  );
  app.delete<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/:plural/:name`, async (req) =>
    resources.delete(
      resources.namespacedKind(req.params.plural!),
      req.params.project,
      req.params.name!,
      req.query.resourceVersion,
    ),
  );
  app.get<{ Params: Params }>(`${BASE}/projects/:project/:plural/:name/status`, async (req) =>
    resources.get(resources.namespacedKind(req.params.plural!), req.params.project, req.params.name!),
  );
  app.put<{ Params: Params }>(`${BASE}/projects/:project/:plural/:name/status`, async (req) => {
    const def = resources.namespacedKind(req.params.plural!);
    const body = req.body as { metadata?: { resourceVersion?: string }; status?: unknown };
    const current = await resources.get(def, req.params.project!, req.params.name!);
    const st = def.status.safeParse(body?.status ?? {});
    if (!st.success)
      throw new BadRequestError(
        `invalid status: ${st.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
      );
    return deps.store.updateStatus({
      ...current,
      metadata: { ...current.metadata, resourceVersion: body?.metadata?.resourceVersion ?? "" },
      status: st.data,
    });
  });
  app.get<{ Params: Params; Querystring: Query }>(
    `${BASE}/projects/:project/:plural/:name/log`,
    async (req, reply) => {
      const def = resources.namespacedKind(req.params.plural!);
      if (def.kind !== "TrainingJob") throw new BadRequestError(`${def.plural} have no logs`);
      const job = (await resources.get(def, req.params.project!, req.params.name!)) as TrainingJob;
      // Workers of the latest attempt (an elastic job's size changes); the spec's most before any.
      const count = job.status?.workers?.length || workerRange(job.spec).max;
      const all = req.query.worker === undefined || req.query.worker === "" || req.query.worker === "all";
      const worker = all ? 0 : Number(req.query.worker);
      if (!Number.isInteger(worker) || worker < 0 || worker >= count) {
        throw new BadRequestError(`worker must be between 0 and ${count - 1} (or omit it for every worker)`);
      }
      const attempt = req.query.attempt === undefined ? undefined : Number(req.query.attempt);
      if (attempt !== undefined && (!Number.isInteger(attempt) || attempt < 1))
        throw new BadRequestError("attempt must be a positive integer");
      const ref = {
        kind: def.kind,
        project: req.params.project!,
        name: req.params.name!,
        uid: job.metadata.uid,
      };
      const follow = req.query.follow === "1" || req.query.follow === "true";
      const stream =
        all && count > 1
          ? interleaveLines(
              await Promise.all(
                Array.from({ length: count }, async (_, w) => ({
                  prefix: `[worker ${w}]`,
                  stream: await deps.runtime.logs(ref, { worker: w, attempt, follow }),
                })),
              ),
            )
          : await deps.runtime.logs(ref, { worker, attempt, follow });
      req.raw.on("close", () => stream.destroy());
      return reply.type("text/plain; charset=utf-8").send(stream);
    },
  );

  // API tokens: an unscoped admin makes them, for one project (or all) and one role.
  app.post<{ Body: { name?: unknown; role?: unknown; project?: unknown } }>(
    `${BASE}/tokens`,
    async (req, reply) => {
      const p = req.principal;
      if (p?.role !== "admin" || p.project)
        throw new ForbiddenError("only an admin token that reaches every project can create tokens");
      const { name, role, project } = req.body ?? {};
      if (typeof name !== "string" || !/^[a-z0-9][a-z0-9._@-]{0,62}$/i.test(name))
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
  app.post<{ Params: Params; Body: { name?: unknown; services?: unknown } }>(
    `${BASE}/projects/:project/apikeys`,
    async (req, reply) => {
      const p = req.principal;
      const project = req.params.project!;
      if (!p || p.role === "viewer")
        throw new ForbiddenError("creating an API key takes an editor or admin token of the project");
      await resources.get(resources.kind("projects"), undefined, project);
      const { name, services } = req.body ?? {};
      if (typeof name !== "string" || !/^[a-z0-9][a-z0-9._@-]{0,62}$/i.test(name))
        throw new BadRequestError("name must be 1-63 letters, digits, '.', '_', '@' or '-'");
      if (
        services !== undefined &&
        (!Array.isArray(services) || !services.every((s) => typeof s === "string"))
      )
        throw new BadRequestError("services must be a list of InferenceService names");
      const created = await deps.tokens.create(name, "viewer", project, {
        ...(services ? { services: services as string[] } : {}),
      });
      return reply.code(201).send({ key: created.token, name, project, ...(services ? { services } : {}) });
    },
  );

  // Listing one kind across every project (loom get tj -A).
  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/:plural`, (req, reply) =>
    listOrWatch(req, reply, req.params.plural!, undefined),
  );

  if (deps.tracking) {
    const projectDef = resources.kind("projects");
    await trackingRoutes(app, {
      store: deps.tracking.store,
      registry: deps.tracking.registry,
      loggedModels: deps.tracking.loggedModels,
      artifactsDir: deps.tracking.artifactsDir,
      projectExists: async (name) => {
        try {
          await resources.get(projectDef, undefined, name);
          return true;
        } catch {
          return false;
        }
      },
    });
  }

  if (deps.serving) {
    await servingRoutes(app, deps.serving);
    await gatewayControlRoutes(app, { ...deps.serving, verify: (t) => deps.tokens.verify(t) });
  }

  if (deps.ensureDefaultProject !== false) await resources.ensureDefaultProject();
  return app;
}

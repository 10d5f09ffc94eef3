import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { FastifyInstance, FastifyRequest, FastifyServerOptions } from "fastify";
import { BadRequestError } from "../api/errors.js";
import { type ScaleTargets, type ServingTable, seconds } from "../controllers/inferenceservice/reconciler.js";
import { badRequest, sendGatewayError, unknownModel } from "../gateway/errors.js";
import { attachFront, duplicateHeaderError, type FastLane } from "../gateway/front.js";
import type {
  ConcurrencyReport,
  EndpointDirectory,
  Gateway,
  HandleOptions,
  HandleResult,
  KeyUsage,
  Scaler,
  ScaleTarget,
  ServiceEndpoint,
} from "../gateway/gateway.js";
import { duplicateHeader, type GatewayRequest, type GatewayResponse } from "../gateway/h1.js";
import { canonicalUrl } from "../lib/paths.js";
import type { ServedObject } from "../ports/serving.js";
import type { TokenInfo } from "../ports/store.js";
import { statusBody, toGatewayError } from "./errors.js";
import type { TraceSink } from "./gatewaytraces.js";
import { authz, rule } from "./routetable.js";

/**
 * The adapters between Loom's InferenceService controller and the platform-agnostic gateway:
 * the controller publishes each service (revisions, traffic, replicas and their readiness), the
 * gateway resolves model names against that table, and its autoscaler's targets flow back to the
 * controller. All in memory: the objects in the store are the truth, this is a cache of them.
 */
export class ServingDirectory implements ServingTable, EndpointDirectory, Scaler, ScaleTargets {
  private readonly endpoints = new Map<string, ServiceEndpoint>();
  private readonly targets = new Map<string, number>();
  private readonly reasons = new Map<string, string>();
  /** Each revision's model reference ("PROJECT/SERVICE/REVISION"), for recorded traces. */
  private readonly models = new Map<string, string>();
  private gateway: Gateway | undefined;
  /** Bumped on every change of the table; other gateways long-poll it (/gateway/v1/endpoints). */
  private version = 0;
  private waiters: (() => void)[] = [];
  /** Called when the autoscaler changes a target: the service's controller looks again. */
  onScale: (serviceKey: string) => void = () => {};
  /**
   * The credential a replica in a fleet member is reached with (the project's key at that
   * member's gateway); undefined: not reachable yet, so not routed to.
   */
  memberHeaders: (cluster: string, project: string) => Record<string, string> | undefined = () => undefined;

  /**
   * `sessionAffinity`: the table of Apps (a directory of its own, so the OpenAI routes never
   * resolve an App as a model): a lease's affinity key (the browser session) always picks the
   * same replica while it is there, however loaded; apps keep per-session state in the server.
   */
  constructor(private readonly opts: { sessionAffinity?: boolean } = {}) {}

  attach(gateway: Gateway): void {
    this.gateway = gateway;
    for (const e of this.endpoints.values()) gateway.update(e);
  }

  /** The whole table and its version. */
  snapshot(): { version: number; endpoints: ServiceEndpoint[] } {
    return { version: this.version, endpoints: [...this.endpoints.values()] };
  }

  /** Resolves when the table's version is past `version`, or after `timeoutMs` regardless. */
  changedSince(version: number, timeoutMs: number): Promise<void> {
    if (version !== this.version) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      }, timeoutMs);
      timer.unref();
      this.waiters.push(done);
    });
  }

  /** Answers every long poll now (the server is closing: they must not hold it open). */
  releaseWaiters(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** A follower gateway's table: replaced whole by what the deciding one serves. */
  replaceAll(endpoints: ServiceEndpoint[]): void {
    const next = new Map(endpoints.map((e) => [`${e.project}/${e.service}`, e]));
    for (const [key, gone] of this.endpoints) {
      if (next.has(key)) continue;
      this.endpoints.delete(key);
      this.gateway?.remove(gone.project, gone.service);
    }
    for (const [key, e] of next) {
      this.endpoints.set(key, e);
      this.gateway?.update(e);
    }
    this.changed();
  }

  private changed(): void {
    this.version++;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  publish(key: string, svc: ServedObject | undefined): void {
    if (!svc) {
      const gone = this.endpoints.get(key);
      this.endpoints.delete(key);
      if (gone) {
        this.gateway?.remove(gone.project, gone.service);
        this.changed();
      }
      return;
    }
    const status = svc.status ?? {};
    const weights = new Map((status.traffic ?? []).map((t) => [t.revision, t.percent]));
    const spec = svc.spec;
    const endpoint: ServiceEndpoint = {
      project: svc.metadata.project!,
      service: svc.metadata.name,
      revisions: (status.revisions ?? [])
        .filter((r) => (weights.get(r.name) ?? 0) > 0)
        .map((r) => ({
          name: r.name,
          weight: weights.get(r.name)!,
          replicas: (r.replicas ?? []).flatMap((x) => {
            if (!x.host || !x.port) return [];
            if (!x.cluster) return [{ id: x.id, host: x.host, port: x.port, ready: x.ready }];
            const headers = this.memberHeaders(x.cluster, svc.metadata.project!);
            return headers ? [{ id: x.id, host: x.host, port: x.port, ready: x.ready, headers }] : [];
          }),
        })),
      autoscaling: {
        minReplicas: spec.replicas.min,
        maxReplicas: spec.replicas.max,
        targetConcurrency: spec.autoscaling.targetConcurrency,
        scaleDownDelayMs: seconds(spec.autoscaling.scaleDownDelay) * 1000,
        scaleToZeroAfterMs: seconds(spec.autoscaling.scaleToZeroAfter) * 1000,
      },
    };
    const affinity = spec.routing?.prefixAffinity;
    if (affinity) endpoint.affinity = { prefixChars: affinity.chars, epsilon: affinity.epsilon };
    if (this.opts.sessionAffinity) endpoint.affinity = { prefixChars: 64, epsilon: 1e9 };
    if (spec.tracing) endpoint.tracing = true;
    for (const r of status.revisions ?? []) {
      const model = (r.spec as { model?: unknown } | undefined)?.model;
      if (typeof model === "string") this.models.set(`${key}/${r.name}`, model);
    }
    this.endpoints.set(key, endpoint);
    this.gateway?.update(endpoint);
    this.changed();
  }

  /** The model reference a revision runs (its spec's), when known. */
  modelOf(project: string, service: string, revision: string): string | undefined {
    return this.models.get(`${project}/${service}/${revision}`);
  }

  /** "NAME" in the caller's project (default: "default"), or "PROJECT/NAME". */
  resolve(model: string, project?: string): ServiceEndpoint | undefined {
    const key = model.includes("/") ? model : `${project ?? "default"}/${model}`;
    return this.endpoints.get(key);
  }

  /** Every service a principal may use (GET /v1/models). */
  visibleTo(principal: TokenInfo): ServiceEndpoint[] {
    return [...this.endpoints.values()].filter((e) => mayUse(principal, e));
  }

  setDesired(target: ScaleTarget, replicas: number, reason: string): void {
    const key = `${target.project}/${target.service}/${target.revision}`;
    if (this.targets.get(key) === replicas) return;
    this.targets.set(key, replicas);
    this.reasons.set(key, reason);
    this.onScale(`${target.project}/${target.service}`);
  }

  desired(revisionKey: string): number | undefined {
    return this.targets.get(revisionKey);
  }

  reason(revisionKey: string): string | undefined {
    return this.reasons.get(revisionKey);
  }
}

/** Whether a token or API key may call a service: its project, and the key's services if listed. */
export function mayUse(principal: TokenInfo, e: Pick<ServiceEndpoint, "project" | "service">): boolean {
  if (principal.project && principal.project !== e.project) return false;
  const services = principal.apiKey?.services;
  return !services || services.includes(e.service);
}

interface ServingDeps {
  gateway: Gateway;
  directory: ServingDirectory;
  /** Records traced services' requests (gatewaytraces.ts); absent: none are recorded. */
  traces?: TraceSink;
}

/** The routes the gateway forwards (POST, OpenAI-style JSON naming a model). */
const FORWARDED = new Set(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]);

/**
 * Per-endpoint routes for runtimes that do not speak OpenAI: /serving/PROJECT/SERVICE/PATH goes
 * to PATH on a replica of that service, any method, with the same keys, balancing and scaling.
 */
export const ENDPOINT_PREFIX = "/serving/";

/** `/serving/P/S/rest?q` → the service's model name and the upstream path, or undefined. */
export function endpointRoute(url: string): { model: string; path: string } | undefined {
  if (!url.startsWith(ENDPOINT_PREFIX)) return undefined;
  const q = url.indexOf("?");
  const pathname = q < 0 ? url : url.slice(0, q);
  const [project, service, ...rest] = pathname.slice(ENDPOINT_PREFIX.length).split("/");
  if (!project || !service) return undefined;
  let model: string;
  try {
    model = `${decodeURIComponent(project)}/${decodeURIComponent(service)}`;
  } catch {
    // A malformed %-escape (`/serving/%zz/s/`): no service; the route says so. Throwing here
    // would escape the front's socket handler.
    return undefined;
  }
  return { model, path: `/${rest.join("/")}${q < 0 ? "" : url.slice(q)}` };
}

/** A claimed URL as served: /serving/ ones in their canonical spelling (the others are exact matches). */
function servedUrl(url: string): string {
  if (!url.startsWith(ENDPOINT_PREFIX)) return url;
  const canonical = canonicalUrl(url);
  return "url" in canonical ? canonical.url : url;
}

/** How the gateway takes one forwarded request, whichever way it came in (the front, Node's server, a Fastify route). */
function handleOptions(url: string, principal: TokenInfo, body?: Buffer): HandleOptions {
  const endpoint = endpointRoute(url);
  const opts: HandleOptions = {
    body,
    project: principal.project ?? "default",
    // A key of another project, or one not for this service: 403 saying which.
    authorize: (e) => mayUse(principal, e),
  };
  if (endpoint) {
    opts.model = endpoint.model;
    opts.path = endpoint.path;
  }
  return opts;
}

/**
 * Serves a request as `principal`: a key with a rate limit is admitted against it first (a 429
 * with Retry-After when spent) and its response's tokens counted after. A key without one costs
 * a property read.
 */
function serveAs(
  deps: ServingDeps,
  req: GatewayRequest,
  res: GatewayResponse,
  principal: TokenInfo,
  opts: HandleOptions,
  finished?: (r: HandleResult) => void,
): void {
  const gateway = deps.gateway;
  const done = deps.traces ? traced(deps, principal, finished) : finished;
  const limit = principal.apiKey?.rateLimit;
  if (limit === undefined) {
    gateway.serve(req, res, opts, done);
    return;
  }
  const refused = gateway.limits.admit(principal.id, limit);
  if (refused) {
    sendGatewayError(res, refused);
    done?.({ status: refused.httpStatus });
    return;
  }
  gateway.serve(req, res, opts, (r) => {
    if (r.usage) gateway.limits.addTokens(principal.id, r.usage.promptTokens + r.usage.completionTokens);
    done?.(r);
  });
}

/** `done`, after handing a traced request's capture to the recorder (which writes it later). */
function traced(
  deps: ServingDeps,
  principal: TokenInfo,
  done: ((r: HandleResult) => void) | undefined,
): (r: HandleResult) => void {
  return (r) => {
    if (r.trace && r.project && r.service && r.revision)
      deps.traces!.record({
        project: r.project,
        service: r.service,
        revision: r.revision,
        model: deps.directory.modelOf(r.project, r.service, r.revision),
        caller: principal.name,
        status: r.status,
        usage: r.usage,
        capture: r.trace,
      });
    done?.(r);
  };
}

/** serveAs for a Fastify route, which awaits the end of the exchange. */
function handleAs(
  deps: ServingDeps,
  req: GatewayRequest,
  res: GatewayResponse,
  principal: TokenInfo,
  opts: HandleOptions,
): Promise<HandleResult> {
  return new Promise((resolve) => serveAs(deps, req, res, principal, opts, resolve));
}

/**
 * The forwarded routes with nothing of Fastify's per-request work: authenticate (a cached map
 * lookup), then the gateway. The hand-rolled front (gateway/front.ts) serves them straight off
 * the socket; on a connection Node's server holds, serverWith routes them here too.
 */
export function openAIFastLane(
  deps: ServingDeps,
  authenticate: (header: string | undefined) => TokenInfo | Promise<TokenInfo>,
): FastLane {
  const fail = (res: GatewayResponse, err: unknown) => {
    sendGatewayError(res, toGatewayError(err instanceof Error ? err : new Error(String(err))));
  };
  return {
    claims(method, url) {
      // A /serving/ URL that names no service goes to Fastify's route, which says what is wrong;
      // one whose path can be read two ways (lib/paths.ts) goes there too, to be refused (400,
      // with the reason) exactly as when Node's server reads it.
      if (url.startsWith(ENDPOINT_PREFIX)) {
        const canonical = canonicalUrl(url);
        return "url" in canonical && endpointRoute(canonical.url) !== undefined;
      }
      if (method !== "POST") return false;
      const q = url.indexOf("?");
      return FORWARDED.has(q < 0 ? url : url.slice(0, q));
    },
    serve(req, res, authorization, body) {
      let principal: TokenInfo | Promise<TokenInfo>;
      try {
        principal = authenticate(authorization);
      } catch (err) {
        fail(res, err);
        return;
      }
      // Claimed, so canonical: the spelling Fastify's router would have read (rewriteUrl).
      const url = servedUrl(req.url ?? "");
      if (principal instanceof Promise) {
        principal.then(
          (p) => serveAs(deps, req, res, p, handleOptions(url, p, body)),
          (err: unknown) => fail(res, err),
        );
      } else serveAs(deps, req, res, principal, handleOptions(url, principal, body));
    },
  };
}

/**
 * A Fastify serverFactory: Node's http server with the gateway's front before it (gateway/front.ts).
 * Connections the front hands over, and so what Fastify sees, are Node's as always; a claimed
 * request on such a connection still skips Fastify.
 */
export function serverWith(
  lane: FastLane,
): (handler: (req: IncomingMessage, res: ServerResponse) => void, opts: FastifyServerOptions) => Server {
  return (handler, opts) => {
    const server = createServer((req, res) => {
      // The front refuses these too (front.ts): whichever parser reads a request, it is refused.
      const duplicate = duplicateHeader(req.rawHeaders);
      if (duplicate) {
        refuseDuplicate(req, res, duplicate, lane);
        return;
      }
      if (!lane.claims(req.method ?? "GET", req.url ?? "/")) {
        handler(req, res);
        return;
      }
      // The gateway reads the body (readBody); on an early answer, Node discards what is left.
      lane.serve(req, res, req.headers.authorization, undefined);
    });
    attachFront(server, lane, { maxBodyBytes: opts.bodyLimit });
    // What Fastify sets on the server it makes itself.
    if (opts.keepAliveTimeout !== undefined) server.keepAliveTimeout = opts.keepAliveTimeout;
    if (opts.requestTimeout !== undefined) server.requestTimeout = opts.requestTimeout;
    if (opts.connectionTimeout !== undefined) server.setTimeout(opts.connectionTimeout);
    return server;
  };
}

/**
 * Throws the 400 for a request that repeats Authorization, Content-Length or Host: for an
 * onRequest hook that must run before authentication (`loom gateway`'s), so that the decision
 * is the same whether the front or Node's server read the request.
 */
export function refuseDuplicateHeaders(req: IncomingMessage, res: ServerResponse): void {
  const duplicate = duplicateHeader(req.rawHeaders);
  if (!duplicate) return;
  // Nothing pipelined behind it is read, as on the front.
  res.shouldKeepAlive = false;
  throw duplicateHeaderError(duplicate);
}

/**
 * Throws the 400 for a path that can be read two ways (lib/paths.ts: an encoded '/' or backslash,
 * NUL, a '..' segment, …), with the reason: for the onRequest hook of a server without Loom's
 * guard (`loom gateway`'s), before authentication, as the guard does. The front leaves such a
 * request to Node's server (openAIFastLane's claims), so it gets this answer either way.
 */
export function refuseAmbiguousPath(req: FastifyRequest): void {
  // originalUrl: what came, before a rewriteUrl (guard.ts) routed a refused path to "/".
  const raw = req.originalUrl;
  const canonical = canonicalUrl(raw);
  if ("refused" in canonical) throw badRequest(`${canonical.refused} (${JSON.stringify(raw.slice(0, 200))})`);
}

/** Whether a URL is the gateway's (answered in OpenAI's error shape) rather than Loom's API's. */
function gatewayUrl(url: string): boolean {
  return url.startsWith("/v1/") || url.startsWith(ENDPOINT_PREFIX);
}

/**
 * 400 for a request that repeats Authorization, Content-Length or Host, before any route or
 * credential is looked at; the connection closes after it, as the front's does.
 */
function refuseDuplicate(req: IncomingMessage, res: ServerResponse, name: string, lane?: FastLane): void {
  res.shouldKeepAlive = false;
  const url = req.url ?? "/";
  if (gatewayUrl(url) || lane?.claims(req.method ?? "GET", url)) {
    sendGatewayError(res, duplicateHeaderError(name));
    return;
  }
  const err = duplicateHeaderError(name);
  const payload = JSON.stringify(statusBody(400, "BadRequest", err.message));
  res.writeHead(400, { "content-type": "application/json", "content-length": Buffer.byteLength(payload) });
  res.end(payload);
}

/** Inference: users and API keys; the gateway checks the project (mayUse). */
const INFERENCE = rule.gateway("inference", "write");
const MODELS = rule.gateway("models", "read");

/**
 * The OpenAI-compatible routes on Loom's port. Bodies stay raw (the gateway forwards them as
 * they came and reads only `model`), so these routes live in their own scope with their own
 * content-type parser.
 */
export async function servingRoutes(app: FastifyInstance, deps: ServingDeps): Promise<void> {
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: 8 * 1024 * 1024 }, (_req, body, done) =>
      done(null, body),
    );
    const principalOf = (req: FastifyRequest) => req.principal!;
    // inject() and a server without the front reach these routes without serverWith's check.
    scope.addHook("onRequest", async (req, reply) => {
      const duplicate = duplicateHeader(req.raw.rawHeaders);
      if (!duplicate) return;
      return reply.code(400).header("connection", "close").send(duplicateHeaderError(duplicate).body());
    });
    // Reached through inject() (tests) or a server without the fast path.
    for (const path of FORWARDED) {
      scope.post(path, authz(INFERENCE), async (req, reply) => {
        reply.hijack();
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const principal = principalOf(req);
        await handleAs(deps, req.raw, reply.raw, principal, handleOptions(req.url, principal, body));
      });
    }
    scope.all("/serving/*", authz(INFERENCE), async (req, reply) => {
      reply.hijack();
      if (!endpointRoute(req.url)) {
        sendGatewayError(
          reply.raw,
          badRequest(`${req.url.split("?")[0]} names no service: use /serving/PROJECT/SERVICE/PATH`),
        );
        return;
      }
      const body = Buffer.isBuffer(req.body) ? req.body : undefined;
      const principal = principalOf(req);
      await handleAs(deps, req.raw, reply.raw, principal, handleOptions(req.url, principal, body));
    });
    scope.get("/v1/models", authz(MODELS), async (req) => {
      const principal = principalOf(req);
      return {
        object: "list",
        data: deps.directory.visibleTo(principal).map((e) => ({
          id: principal.project ? e.service : `${e.project}/${e.service}`,
          object: "model",
          created: 0,
          owned_by: e.project,
        })),
      };
    });
    scope.get<{ Params: { model: string } }>("/v1/models/*", authz(MODELS), async (req, reply) => {
      const principal = principalOf(req);
      const model = (req.params as Record<string, string>)["*"] ?? "";
      const e = deps.directory.resolve(model, principal.project ?? "default");
      if (!e || !mayUse(principal, e)) {
        reply.hijack();
        sendGatewayError(reply.raw, unknownModel(model));
        return;
      }
      return { id: model, object: "model", created: 0, owned_by: e.project };
    });
    scope.all("/v1/*", authz(rule.gateway("unserved", "read")), async (req, reply) => {
      reply.hijack();
      sendGatewayError(
        reply.raw,
        badRequest(
          `${req.method} ${req.url.split("?")[0]} is not served: the gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models`,
        ),
      );
    });
  });
}

/**
 * The deciding gateway's side of several gateways (the `loom gateway` Deployment on Kubernetes):
 * they long-poll its endpoint table, verify keys through it, report their load each second so
 * that it scales on the sum, and wake revisions at zero. Admin tokens only (authz.ts).
 */
export async function gatewayControlRoutes(
  app: FastifyInstance,
  deps: ServingDeps & { verify: (token: string) => Promise<TokenInfo | undefined> },
): Promise<void> {
  app.addHook("preClose", (done) => {
    deps.directory.releaseWaiters();
    done();
  });
  app.get<{ Querystring: { version?: string } }>(
    "/gateway/v1/endpoints",
    authz(rule.gatewayControl("gateway-endpoints", "read")),
    async (req) => {
      const since = Number(req.query.version ?? -1);
      await deps.directory.changedSince(since, 20_000);
      return deps.directory.snapshot();
    },
  );
  app.post<{ Body: { token?: unknown } }>(
    "/gateway/v1/authenticate",
    authz(rule.gatewayControl("gateway-authenticate", "read")),
    async (req, reply) => {
      const token = req.body?.token;
      const info = typeof token === "string" ? await deps.verify(token) : undefined;
      if (!info) return reply.code(401).send({ valid: false });
      return { valid: true, principal: info };
    },
  );
  app.post<{ Body: { gateway?: unknown; reports?: unknown; usage?: unknown } }>(
    "/gateway/v1/report",
    authz(rule.gatewayControl("gateway-load", "write")),
    async (req, reply) => {
      const source = req.body?.gateway;
      const reports = req.body?.reports;
      const usage = req.body?.usage;
      if (
        typeof source !== "string" ||
        !Array.isArray(reports) ||
        (usage !== undefined && !Array.isArray(usage))
      )
        throw new BadRequestError(
          "send {gateway: ID, reports: [{project, service, revision, concurrency, held}], usage?: [{key, window, requests, tokens, prevRequests, prevTokens}]}",
        );
      for (const r of reports as ConcurrencyReport[]) {
        if (typeof r?.revision !== "string" || !Number.isFinite(r.concurrency)) continue;
        deps.gateway.recordRemote(source, { ...r, held: Number(r.held) || 0 });
      }
      // API keys' use there, for the shared rate limits; the answer is everyone else's.
      if (usage === undefined) return reply.code(204).send();
      return { usage: deps.gateway.limits.merge(source, usage as KeyUsage[]) };
    },
  );
  app.post<{ Body: Partial<ScaleTarget> }>(
    "/gateway/v1/activate",
    authz(rule.gatewayControl("gateway-activate", "write")),
    async (req, reply) => {
      const t = req.body ?? {};
      if (typeof t.project !== "string" || typeof t.service !== "string" || typeof t.revision !== "string")
        throw new BadRequestError("send {project, service, revision}");
      deps.gateway.wake({ project: t.project, service: t.service, revision: t.revision });
      return reply.code(204).send();
    },
  );
}

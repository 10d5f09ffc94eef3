import { hostname } from "node:os";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import { UnauthorizedError } from "../api/errors.js";
import { Gateway, type KeyUsage, type ScaleTarget, type ServiceEndpoint } from "../gateway/gateway.js";
import { onlyProject } from "../gateway/metrics.js";
import { KEEP_ALIVE_TIMEOUT_MS } from "../lib/httpserver.js";
import type { TokenInfo } from "../ports/store.js";
import { bearerAuthenticator } from "../server/authz.js";
import { installErrorHandler } from "../server/errors.js";
import { traceUploader } from "../server/gatewaytraces.js";
import { rewriteUrl } from "../server/guard.js";
import {
  openAIFastLane,
  refuseAmbiguousPath,
  refuseDuplicateHeaders,
  ServingDirectory,
  serverWith,
  servingRoutes,
} from "../server/serving.js";
import { processMetricsRegistry } from "./processmetrics.js";

/**
 * `loom gateway`: one more replica of the inference gateway, as its own process (on Kubernetes,
 * the loom-gateway Deployment). It holds no state of its own: it long-polls the endpoint table
 * from Loom's API (the operator, or `loom up`), verifies keys through it, and reports its load
 * every second; the API's own gateway adds that load to its own and decides replica counts for
 * all of them. A request held here for a revision at zero wakes it through the API at once.
 */
export interface GatewayNodeOptions {
  /** Loom's API (the operator's Service in a cluster). */
  apiUrl: string;
  /** An admin token for the control routes. */
  token: string;
  host?: string;
  port?: number;
  log: Logger;
  /** How this gateway names itself in its reports. Default: host name and pid. */
  id?: string;
  /**
   * How long a verified key is trusted before it is checked again with Loom's API: a revoked or
   * expired key is refused within it. Default 1 s (checked again in the background at half of it).
   */
  keyTtlMs?: number;
  reportEveryMs?: number;
}

export interface GatewayNode {
  url: string;
  close(): Promise<void>;
}

/** A small client of Loom's gateway control routes. */
class ControlClient {
  constructor(
    private readonly apiUrl: string,
    private readonly token: string,
  ) {}

  async call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T | undefined> {
    const res = await fetch(new URL(path, this.apiUrl), {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    if (res.status === 204) return undefined;
    const text = await res.text();
    if (res.status === 401 && path.endsWith("/authenticate")) return undefined;
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }
}

export async function startGatewayNode(opts: GatewayNodeOptions): Promise<GatewayNode> {
  const log = opts.log.child({ component: "gateway-node" });
  const id = opts.id ?? `${hostname()}-${process.pid}`;
  const control = new ControlClient(opts.apiUrl, opts.token);
  const metrics = processMetricsRegistry();
  const directory = new ServingDirectory();
  const gateway = new Gateway(
    {
      directory,
      // The API's gateway decides replica counts; this one only wakes a revision at zero.
      scaler: {
        setDesired: async (target: ScaleTarget) => {
          await control.call("POST", "/gateway/v1/activate", target);
        },
      },
      registry: metrics,
      log,
    },
    { autoscale: false },
  );
  directory.attach(gateway);

  // The endpoint table: long-polled, so a replica that turns ready releases held requests here
  // within a round trip.
  const stop = new AbortController();
  let version = -1;
  let first: () => void = () => {};
  const synced = new Promise<void>((resolve) => {
    first = resolve;
  });
  const poll = async () => {
    while (!stop.signal.aborted) {
      try {
        const table = await control.call<{ version: number; endpoints: ServiceEndpoint[] }>(
          "GET",
          `/gateway/v1/endpoints?version=${version}`,
          undefined,
          stop.signal,
        );
        if (table) {
          version = table.version;
          directory.replaceAll(table.endpoints);
          first();
        }
      } catch (err) {
        if (stop.signal.aborted) return;
        log.warn({ err: (err as Error).message }, "cannot read the endpoint table from Loom's API; retrying");
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  };
  void poll();

  // Load reports: what the deciding gateway adds to its own.
  // With them, API keys' use here; the answer is every other gateway's, so that a key's rate
  // limit holds across all of them.
  const reporter = setInterval(() => {
    const reports = gateway.takeReport();
    // Sent even when idle: the answer keeps this gateway's view of every key's use current, so
    // a key spent elsewhere is refused here from its first request.
    control
      .call<{ usage?: KeyUsage[] }>("POST", "/gateway/v1/report", {
        gateway: id,
        reports,
        usage: gateway.limits.takeUsage(),
      })
      .then((answer) => {
        if (answer?.usage) gateway.limits.setRemote(answer.usage);
      })
      .catch((err: unknown) => {
        log.warn({ err: (err as Error).message }, "cannot report load to Loom's API");
      });
  }, opts.reportEveryMs ?? 1000);
  reporter.unref();

  // Traced services' requests: batched and sent to the API, which records them as its own.
  const traces = traceUploader({
    gateway: id,
    send: async (report) => {
      await control.call("POST", "/gateway/v1/traces", report);
    },
    registry: metrics,
    log,
  });

  const authenticate = bearerAuthenticator(
    async (token) =>
      (await control.call<{ principal: TokenInfo }>("POST", "/gateway/v1/authenticate", { token }))
        ?.principal,
    opts.keyTtlMs !== undefined ? { maxAgeMs: opts.keyTtlMs } : {},
  );
  const app: FastifyInstance = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 8 * 1024 * 1024,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    // The one spelling of a path the router, the fast lane and the upstream see (lib/paths.ts).
    rewriteUrl,
    serverFactory: serverWith(openAIFastLane({ gateway, directory, traces }, authenticate)),
  });
  installErrorHandler(app);
  app.addHook("onRequest", async (req, reply) => {
    // Before the key is read: with two Authorization headers there is no one key to read.
    refuseDuplicateHeaders(req.raw, reply.raw);
    refuseAmbiguousPath(req);
    const path = req.url.split("?")[0];
    if (path === "/healthz") return;
    if (path !== "/metrics" && !path?.startsWith("/v1/") && !path?.startsWith("/serving/"))
      throw new UnauthorizedError(
        `this is a Loom gateway: it serves /v1/… and /serving/…; ${path} is on Loom's API (${opts.apiUrl})`,
      );
    req.principal = await authenticate(req.headers.authorization);
  });
  app.get("/healthz", async (_req, reply) =>
    version < 0 ? reply.code(503).send({ status: "waiting for the endpoint table" }) : { status: "ok" },
  );
  // Any valid token or key; one of a project sees that project's series only (the series name
  // every project's services, their traffic and their replicas).
  app.get("/metrics", async (req, reply) => {
    const text = await metrics.metrics();
    const project = req.principal?.project;
    return reply.type(metrics.contentType).send(project ? onlyProject(text, project) : text);
  });
  await servingRoutes(app, { gateway, directory, traces });

  gateway.start();
  await Promise.race([synced, new Promise((r) => setTimeout(r, 10_000).unref())]);
  if (version < 0)
    log.warn({ api: opts.apiUrl }, "no endpoint table yet: serving 404s until Loom's API answers");
  const url = await app.listen({ host: opts.host ?? "127.0.0.1", port: opts.port ?? 7480 });
  log.info({ url, api: opts.apiUrl, id }, "gateway serving");
  return {
    url,
    async close() {
      stop.abort();
      clearInterval(reporter);
      gateway.close();
      await app.close();
      // Requests answered before the close still get their traces.
      await traces.flush();
    },
  };
}

import type { FastifyInstance } from "fastify";
import { BadRequestError } from "../../api/errors.js";
import type { Gateway } from "../../gateway/gateway.js";
import type { TokenStore } from "../../ports/store.js";
import { type GatewayTraceRecorder, readTraceReport } from "../gatewaytraces.js";
import { authz, rule } from "../routetable.js";
import { gatewayControlRoutes, type ServingDirectory, servingRoutes } from "../serving.js";

/** The inference gateway (OpenAI routes on this port). */
export interface ServingMount {
  gateway: Gateway;
  directory: ServingDirectory;
  /** Records the requests of services with `spec.tracing` (absent: none are). */
  traces?: GatewayTraceRecorder;
}

export interface ServingRoutesMountDeps {
  serving: ServingMount;
  tokens: TokenStore;
}

/** Mounts the gateway's routes and the control routes other gateway replicas use. */
export async function mountServing(app: FastifyInstance, deps: ServingRoutesMountDeps): Promise<void> {
  await servingRoutes(app, deps.serving);
  await gatewayControlRoutes(app, { ...deps.serving, verify: (t) => deps.tokens.verify(t) });
  if (deps.serving.traces) gatewayTraceRoute(app, deps.serving.traces, deps.serving.directory);
}

/**
 * POST /gateway/v1/traces: the traced requests a `loom gateway` node served, in batches, queued
 * here like this gateway's own. Gateway credentials only (the rule in the route table); a
 * request of a service that does not trace is not recorded, whoever says so.
 */
function gatewayTraceRoute(
  app: FastifyInstance,
  traces: GatewayTraceRecorder,
  directory: ServingDirectory,
): void {
  app.post(
    "/gateway/v1/traces",
    // A report carries up to 8 MB of bodies (gatewaytraces.ts), in base64.
    { ...authz(rule.gatewayControl("gateway-traces", "write")), bodyLimit: 16 * 1024 * 1024 },
    async (req, reply) => {
      let requests: ReturnType<typeof readTraceReport>;
      try {
        requests = readTraceReport(req.body);
      } catch (err) {
        throw new BadRequestError((err as Error).message);
      }
      const tracing = new Set(
        directory
          .snapshot()
          .endpoints.filter((e) => e.tracing)
          .map((e) => `${e.project}/${e.service}`),
      );
      let refused = 0;
      for (const r of requests) {
        if (!tracing.has(`${r.project}/${r.service}`)) {
          refused++;
          continue;
        }
        const model = directory.modelOf(r.project, r.service, r.revision);
        traces.record(model ? { ...r, model } : r);
      }
      return reply.code(200).send({ recorded: requests.length - refused, refused });
    },
  );
}

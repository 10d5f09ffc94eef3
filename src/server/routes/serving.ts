import type { FastifyInstance } from "fastify";
import type { Gateway } from "../../gateway/gateway.js";
import type { TokenStore } from "../../ports/store.js";
import type { GatewayTraceRecorder } from "../gatewaytraces.js";
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
}

import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { findKind } from "../api/kinds.js";
import { KEEP_ALIVE_TIMEOUT_MS } from "../lib/httpserver.js";
import type { AuditLog } from "../ports/audit.js";
import type { FleetLeases, MemberCheckpoints } from "../ports/fleet.js";
import type { Runtime } from "../ports/runtime.js";
import type { Snapshot } from "../ports/scheduler.js";
import { coreScheduler } from "../ports/scheduler.js";
import type { SecretStore } from "../ports/secrets.js";
import type { SshKeyStore } from "../ports/sshkeys.js";
import type { EventRecorder, ResourceStore, TokenInfo, TokenStore } from "../ports/store.js";
import type { WorkspaceDirectory, WorkspaceSnapshots } from "../ports/workspaces.js";
import { appLoginRoutes } from "./apps/login.js";
import { auditRequests } from "./audit.js";
import { bearerAuthenticator } from "./authz.js";
import { consoleRoutes } from "./console/routes.js";
import { acceptConsoleCookie } from "./console/session.js";
import { installErrorHandler } from "./errors.js";
import { fromWorkspace } from "./fromworkspace.js";
import { installGuard, rewriteUrl } from "./guard.js";
import { installJsonParsers } from "./jsonbody.js";
import { ModelView } from "./models.js";
import { PromptView } from "./prompts.js";
import { ensureDefaultProject, ResourceService } from "./resources.js";
import { checkpointRoutes } from "./routes/checkpoints.js";
import { clusterRoutes } from "./routes/clusters.js";
import { type LogRoutesDeps, logRoutes } from "./routes/logs.js";
import { modelRoutes } from "./routes/models.js";
import { acceptUpgrades, portForwardRoutes } from "./routes/portforward.js";
import { projectRoutes } from "./routes/projects.js";
import { resourceRoutes } from "./routes/resources.js";
import { schedulingRoutes } from "./routes/scheduling.js";
import { mountServing, type ServingMount } from "./routes/serving.js";
import { servingFiguresRoutes } from "./routes/servingfigures.js";
import { sshKeyRoutes } from "./routes/sshkeys.js";
import { countRequests, systemRoutes } from "./routes/system.js";
import { tokenRoutes } from "./routes/tokens.js";
import { mountTracking, type TrackingMount } from "./routes/tracking.js";
import { listOrWatch } from "./routes/watch.js";
import { type RegisteredRoute, requireRules } from "./routetable.js";
import { SchedulingView } from "./scheduling.js";
import { openAIFastLane, serverWith } from "./serving.js";
import type { WorkspaceAccess } from "./workspaces/access.js";
import { workspaceLoginRoutes } from "./workspaces/login.js";

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
  /** Snapshots of workspace homes for spec.fromWorkspace; absent: such jobs are refused. */
  workspaceSnapshots?: WorkspaceSnapshots;
  /** Create the default project if it is missing (embedded); the operator owns that on Kubernetes. */
  ensureDefaultProject?: boolean;
  /** The inference gateway (OpenAI routes on this port). */
  serving?: ServingMount;
  /**
   * The admission loop's snapshot, where controllers run in this process (scheduling views);
   * undefined from it, or absent: the views build the same snapshot from the store.
   */
  schedulingSnapshot?: () => Promise<Snapshot> | undefined;
  /** MLflow-compatible experiment tracking (embedded: on the same database). */
  tracking?: TrackingMount;
  /** Where writes and refused requests are recorded (served on /audit); absent: none are. */
  audit?: AuditLog;
  /**
   * A principal that may write what only the platform writes (the status subresource). None by
   * default: embedded controllers write status through the store, not over HTTP.
   */
  isPlatform?: (principal: TokenInfo) => boolean;
  /** Workspace log-in (issue 19): tickets for the user-content origin listening on originPort(). */
  workspaces?: { access: WorkspaceAccess; originPort(): number };
  /** App log-in (issue 20): tickets for apps on the same user-content origin. */
  apps?: { access: WorkspaceAccess; originPort(): number };
  /** Where port-forward records a workspace's activity (idle culling). */
  workspaceActivity?: Pick<WorkspaceDirectory, "touch">;
  /** Platform secrets (member clusters' kubeconfigs); absent: only the `self` member can be registered. */
  secrets?: SecretStore;
  /** The leases control planes renew here, where this platform is a fleet member (self-fencing). */
  fleetLeases?: FleetLeases;
  /** This platform's jobs' checkpoints, read and seeded by a control plane placing jobs here. */
  memberCheckpoints?: MemberCheckpoints;
  /** Fleet members' worker logs (issue 23), for jobs placed in another member. */
  memberLogs?: LogRoutesDeps["memberLogs"];
  /** Users' SSH public keys (`loom ssh-key`); absent: those routes are not served. */
  sshKeys?: SshKeyStore;
  /** The web console (issue 21): where its built files lie (default dist/console); false: not served. */
  console?: { dir?: string } | false;
}

declare module "fastify" {
  interface FastifyRequest {
    principal?: TokenInfo;
  }
  interface FastifyInstance {
    /** Every route this app serves, with its authorization rule (the authorization matrix test walks them). */
    routeRules?: RegisteredRoute[];
  }
}

/**
 * Builds the HTTP API. No socket: callers listen, tests use inject(). Every route's module in
 * routes/ registers on this one instance (no plugin scope), so the hooks and the error handler
 * here hold for all of them. The path is made canonical before routing (paths.ts); every route
 * carries an authorization rule (routetable.ts: one without fails startup), and who may call
 * what is decided once, from the matched route's rule and parameters (guard.ts, authorize.ts).
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const authenticate = bearerAuthenticator((token) => deps.tokens.verify(token));
  // The gateway's POST routes are served straight off the socket, before Fastify's routing,
  // hooks and reply machinery (bench:gateway); inject() and every other route go through Fastify.
  const fastLane = deps.serving ? openAIFastLane(deps.serving, authenticate) : undefined;
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.log.child({ component: "api" }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 8 * 1024 * 1024,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS, // Fastify's own would be 72 s; one value for every listener
    rewriteUrl,
    ...(fastLane ? { serverFactory: serverWith(fastLane) } : {}),
  });
  const resources = new ResourceService(
    deps.store,
    deps.createFinalizers,
    fromWorkspace(deps.store, deps.workspaceSnapshots),
  );
  installErrorHandler(app);
  installJsonParsers(app); // depth-limited JSON and merge-patch bodies (jsonbody.ts)
  countRequests(app, deps.metrics);
  app.decorate("routeRules", requireRules(app));
  // After requireRules: the audit log's read routes get their rules like every other route.
  if (deps.audit) auditRequests(app, deps.audit, deps.metrics);
  const tracking = deps.tracking;
  // Before the guard: the console's cookie stands for a bearer token (CSRF-checked on writes).
  if (deps.console !== false) acceptConsoleCookie(app);
  installGuard(app, {
    authenticate,
    decide: {
      kindOf: (plural) => {
        const def = findKind(plural);
        return def?.plural === plural ? def.kind : undefined;
      },
      ...(deps.isPlatform ? { isPlatform: deps.isPlatform } : {}),
    },
    ...(tracking
      ? {
          runTags: async (project, runId) => (await tracking.store.getRun(project, runId)).data.tags,
          // A trace that is not there has no owner: refused like another's.
          traceTags: (project, traceId) =>
            tracking.traces.get(project, traceId).then(
              (t) => t.tags,
              () => undefined,
            ),
          // A model that is not there belongs to no run: refused like another's.
          modelRun: (project, modelId) =>
            tracking.loggedModels.get(project, modelId).then(
              (m) => m.info.source_run_id || undefined,
              () => undefined,
            ),
        }
      : {}),
  });

  const scheduling = new SchedulingView({
    store: deps.store,
    runtime: deps.runtime,
    scheduler: coreScheduler,
    ...(deps.schedulingSnapshot ? { snapshot: deps.schedulingSnapshot } : {}),
  });
  const list = listOrWatch({ store: deps.store, resources });
  systemRoutes(app, { metrics: deps.metrics, version: deps.version });
  if (deps.console !== false)
    consoleRoutes(app, {
      verify: (token) => deps.tokens.verify(token),
      ...(deps.console?.dir ? { dir: deps.console.dir } : {}),
    });
  schedulingRoutes(app, { scheduling });
  projectRoutes(app, { resources, listOrWatch: list });
  clusterRoutes(app, {
    resources,
    listOrWatch: list,
    ...(deps.secrets ? { secrets: deps.secrets } : {}),
    ...(deps.fleetLeases ? { leases: deps.fleetLeases } : {}),
  });
  modelRoutes(app, {
    models: deps.tracking
      ? new ModelView(deps.tracking.registry, deps.tracking.store, deps.store)
      : undefined,
    prompts: deps.tracking ? new PromptView(deps.tracking.registry) : undefined,
  });
  // Before the generic routes: …/inferenceservices/S/figures is not a subresource of theirs.
  servingFiguresRoutes(app, { metrics: deps.metrics });
  checkpointRoutes(app, {
    resources,
    ...(deps.memberCheckpoints ? { checkpoints: deps.memberCheckpoints } : {}),
  });
  resourceRoutes(app, { store: deps.store, events: deps.events, resources, listOrWatch: list, scheduling });
  logRoutes(app, {
    resources,
    runtime: deps.runtime,
    ...(deps.memberLogs ? { memberLogs: deps.memberLogs } : {}),
  });
  portForwardRoutes(app, {
    resources,
    runtime: deps.runtime,
    ...(deps.workspaceActivity ? { workspaces: deps.workspaceActivity } : {}),
  });
  acceptUpgrades(app);
  tokenRoutes(app, { tokens: deps.tokens, resources });
  if (deps.sshKeys) sshKeyRoutes(app, { sshKeys: deps.sshKeys });
  if (deps.workspaces) workspaceLoginRoutes(app, { ...deps.workspaces, resources });
  if (deps.apps) appLoginRoutes(app, { ...deps.apps, resources });
  if (deps.tracking) await mountTracking(app, { tracking: deps.tracking, resources });
  if (deps.serving) await mountServing(app, { serving: deps.serving, tokens: deps.tokens });

  if (deps.ensureDefaultProject !== false) await ensureDefaultProject(deps.store);
  return app;
}

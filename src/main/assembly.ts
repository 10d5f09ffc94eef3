import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { ModelResolver } from "../controllers/inferenceservice/reconciler.js";
import { ControllerManager, type ControllerManagerDeps } from "../controllers/manager.js";
import { Gateway } from "../gateway/gateway.js";
import { VERSION } from "../lib/version.js";
import type { OpenedDatabase } from "../platforms/embedded/db.js";
import type { AuditLog } from "../ports/audit.js";
import type { FleetLeases, MemberCheckpoints, MemberCluster } from "../ports/fleet.js";
import type { Runtime } from "../ports/runtime.js";
import type { Snapshot } from "../ports/scheduler.js";
import { coreScheduler } from "../ports/scheduler.js";
import type { SecretStore } from "../ports/secrets.js";
import type { SshKeyStore } from "../ports/sshkeys.js";
import type { EventRecorder, ResourceStore, TokenStore } from "../ports/store.js";
import type { WorkspaceSnapshots } from "../ports/workspaces.js";
import { type AppDeps, buildApp } from "../server/app.js";
import type { HostHandler } from "../server/apps/origin.js";
import { GatewayTraceRecorder } from "../server/gatewaytraces.js";
import { workloadModels } from "../server/modelaccess.js";
import { registryRegistrar, trackingTrialMetrics } from "../server/models.js";
import type { TrackingMount } from "../server/routes/tracking.js";
import { ServingDirectory } from "../server/serving.js";
import { adminToken, boundTokens, workloadCredentials } from "../server/workloadtokens.js";
import { type WorkspaceAccess, workspaceAccessOn } from "../server/workspaces/access.js";
import { type TrackingDatabase, trackingDatabase, trackingOn } from "../tracking/db.js";
import type { TrackingStore } from "../tracking/store.js";
import { LocalWorkloadTracking } from "../tracking/workloads.js";
import { appParts } from "./apps.js";

/**
 * The wiring every composition root shares (`loom up`, `loom operator`): the API with tracking,
 * the model registry and the inference gateway, and the controller manager, over whatever store,
 * events and runtime the platform brings. The roots keep only what is their platform's own.
 */

/**
 * MLflow tracking's database: on Loom's SQLite file, or on PostgreSQL when a URL is given.
 * Closes the SQLite database if that fails, so a failed start leaves nothing open.
 */
export async function openTracking(
  database: OpenedDatabase,
  postgresUrl: string | undefined,
  log: Logger,
): Promise<TrackingDatabase> {
  try {
    return await trackingDatabase(database.db as unknown as Kysely<unknown>, postgresUrl, log);
  } catch (err) {
    await database.close();
    throw err;
  }
}

/** Loom's API, with MLflow tracking, the model registry and the inference gateway on its port. */
export interface ApiOptions {
  tokens: TokenStore;
  /** Users' SSH public keys (`loom ssh-key`), given to workloads' sshd (embedded). */
  sshKeys?: SshKeyStore;
  trackingDb: TrackingDatabase;
  /** Where the admin token and the artifacts are kept. */
  dataDir: string;
  host?: string;
  /** 0 picks a free port. Default 7470. */
  port?: number;
  /** MLflow traces older than this are deleted (`loom up --trace-retention`); absent: kept. */
  traceRetentionMs?: number;
  /** The tracking URL workloads are told. Default: where the API listens. */
  trackingUrl?: string;
  /** How the serving loop finds a model's files (embedded: read them from the registry's artifacts). */
  models: (tracking: TrackingMount) => ModelResolver;
  /**
   * How this platform runs the built-in serving runtime (`runtime: loom-tinygpt`): embedded,
   * Python and the package's runtimes/ directory; on Kubernetes, the path in Loom's Python image.
   */
  builtinCommand: string[];
  /** Finalizers new objects get, by kind (see AppDeps). */
  createFinalizers?: Record<string, string[]>;
  /** Snapshots of workspace homes for spec.fromWorkspace (see AppDeps). */
  workspaceSnapshots?: WorkspaceSnapshots;
  /** Create the default project at start (false where the root did it already). */
  ensureDefaultProject?: boolean;
  /** The audit log (closed with the API). */
  audit?: AuditLog;
  /** Serve workspace log-in (issue 19) for a user-content origin on this port (known once it listens). */
  workspaceOriginPort?: () => number;
  /** Platform secrets: fleet members' kubeconfigs (issue 23). */
  secrets?: SecretStore;
}

export interface ControlPlaneOptions {
  store: ResourceStore;
  events: EventRecorder;
  runtime: Runtime;
  log: Logger;
  metrics: Registry;
  now: () => Date;
  resyncMs?: number;
  baseBackoffMs?: number;
  /** Absent: the controllers only (the operator without a data dir). */
  api?: ApiOptions;
  /** Workspaces: where running ones are published, and the workspace origin's base URL. */
  workspaces?: ControllerManagerDeps["workspaces"];
  /** The fleet (issue 23): how members are reached; absent, one platform. */
  fleet?: ControllerManagerDeps["fleet"];
  /** Where control planes renew their leases in this platform as a member (self-fencing). */
  fleetLeases?: FleetLeases;
  /** This platform's jobs' checkpoints, read and seeded by a control plane through the API (a Loom member). */
  memberCheckpoints?: MemberCheckpoints;
}

export interface ControlPlane {
  manager: ControllerManager;
  /** Present with options.api. */
  app?: FastifyInstance;
  /** The admin token (created on the first start, then read from the data dir), with options.api. */
  admin?: { token: string; file: string; created: boolean };
  /** Workspace tickets and sessions, shared by the API's log-in route and the user-content origin. */
  workspaceAccess?: WorkspaceAccess;
  /** Apps on the user-content origin (with a workspace origin port): its handler for app hosts. */
  appOrigin?: HostHandler;
  /**
   * Starts listening and returns the API's URL. First, before the controllers: the workers they
   * start are told this URL (MLFLOW_TRACKING_URI).
   */
  listen(): Promise<string>;
  /** Starts the controllers (unless told not to) and the gateway's loops. */
  start(opts?: { controllers?: boolean }): Promise<void>;
  /** Stops what the assembly built; the platform's store, runtime and databases are the root's to close. */
  close(): Promise<void>;
}

/** Wires the API, tracking, serving and the controllers over a platform's store, events and runtime. */
export async function assembleControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  let url = "";
  let controllersStarted = false;
  // Where controllers run, the scheduling views read the admission loop's own snapshot.
  const snapshot = (): Promise<Snapshot> | undefined =>
    controllersStarted ? manager.schedulingSnapshot() : undefined;
  // A job placed in another member has its workers' logs there (the manager's fleet, built below).
  const memberLogs = (cluster: string): Pick<Runtime, "logs"> | undefined => {
    const m: MemberCluster | undefined = manager.fleet?.member(cluster);
    return m?.logs ? { logs: m.logs.bind(m) } : undefined;
  };
  const api = opts.api ? await assembleApi(opts, opts.api, () => url, snapshot, memberLogs) : undefined;
  const manager = new ControllerManager({
    store: opts.store,
    runtime: opts.runtime,
    scheduler: coreScheduler,
    events: opts.events,
    log: opts.log,
    metrics: opts.metrics,
    now: opts.now,
    resyncMs: opts.resyncMs,
    baseBackoffMs: opts.baseBackoffMs,
    ...(api?.controllerDeps ?? {}),
    ...(opts.workspaces ? { workspaces: opts.workspaces } : {}),
    ...(api?.apps ? { apps: api.apps.controllerDeps } : {}),
    ...(opts.fleet ? { fleet: opts.fleet } : {}),
    ...(opts.fleetLeases ? { fleetLeases: opts.fleetLeases } : {}),
    ...(opts.memberCheckpoints ? { memberCheckpoints: opts.memberCheckpoints } : {}),
  });
  api?.serving.connect(manager);
  api?.apps?.connect(manager);
  return {
    manager,
    app: api?.app,
    admin: api?.admin,
    ...(api?.workspaceAccess ? { workspaceAccess: api.workspaceAccess } : {}),
    ...(api?.apps ? { appOrigin: api.apps.handler } : {}),
    async listen() {
      if (!api || !opts.api) throw new Error("this control plane has no API to listen with");
      url = await api.app.listen({ host: opts.api.host ?? "127.0.0.1", port: opts.api.port ?? 7470 });
      return url;
    },
    async start(startOpts = {}) {
      if (startOpts.controllers !== false) {
        await manager.start();
        controllersStarted = true;
      }
      api?.serving.gateway.start();
      api?.apps?.gateway.start();
    },
    async close() {
      api?.serving.gateway.close();
      api?.apps?.gateway.close();
      if (controllersStarted) await manager.stop();
      await api?.app.close();
      // Requests answered before the close still get their traces.
      await api?.traces.close();
    },
  };
}

/** The API server and what the controllers get from it: workload tracking, trial metrics, the registrar, serving. */
async function assembleApi(
  opts: ControlPlaneOptions,
  api: ApiOptions,
  listeningAt: () => string,
  schedulingSnapshot: () => Promise<Snapshot> | undefined,
  memberLogs: NonNullable<AppDeps["memberLogs"]>,
) {
  // Project-scoped tokens hold only for the project they were made in (its uid), workloads'
  // only while their workload runs.
  const tokens = boundTokens(api.tokens, opts.store);
  const admin = await adminToken(tokens, api.dataDir);
  const tracking = trackingOn(api.trackingDb);
  const mount: TrackingMount = {
    store: tracking.store,
    registry: tracking.registry,
    loggedModels: tracking.loggedModels,
    artifactsDir: join(api.dataDir, "artifacts"),
    traces: tracking.traces,
    ...(api.traceRetentionMs !== undefined ? { traceRetentionMs: api.traceRetentionMs } : {}),
  };
  const serving = servingParts(opts);
  const traces = new GatewayTraceRecorder({
    traces: tracking.traces,
    experiment: (project, name) => ensureExperiment(tracking.store, project, name),
    registry: opts.metrics,
    ...(opts.log ? { log: opts.log } : {}),
  });
  const originPort = api.workspaceOriginPort;
  const workspaceAccess = originPort ? workspaceAccessOn(tokens) : undefined;
  const apps = originPort
    ? appParts({ tokens, originPort, models: serving.gateway, log: opts.log })
    : undefined;
  const app = await buildApp({
    store: opts.store,
    tokens,
    events: opts.events,
    runtime: opts.runtime,
    metrics: opts.metrics,
    log: opts.log,
    version: VERSION,
    tracking: mount,
    serving: { gateway: serving.gateway, directory: serving.directory, traces },
    schedulingSnapshot,
    ...(api.createFinalizers ? { createFinalizers: api.createFinalizers } : {}),
    ...(api.workspaceSnapshots ? { workspaceSnapshots: api.workspaceSnapshots } : {}),
    ...(api.ensureDefaultProject === false ? { ensureDefaultProject: false } : {}),
    ...(api.audit ? { audit: api.audit } : {}),
    ...(workspaceAccess && originPort ? { workspaces: { access: workspaceAccess, originPort } } : {}),
    ...(apps && originPort ? { apps: { access: apps.access, originPort } } : {}),
    ...(opts.workspaces?.directory ? { workspaceActivity: opts.workspaces.directory } : {}),
    ...(api.sshKeys ? { sshKeys: api.sshKeys } : {}),
    ...(api.secrets ? { secrets: api.secrets, memberLogs } : {}),
    ...(opts.fleetLeases ? { fleetLeases: opts.fleetLeases } : {}),
    ...(opts.memberCheckpoints ? { memberCheckpoints: opts.memberCheckpoints } : {}),
  });
  const trackingUrl = () => api.trackingUrl ?? listeningAt();
  const controllerDeps: Pick<
    ControllerManagerDeps,
    "tracking" | "models" | "trialMetrics" | "registrar" | "serving" | "sshKeys"
  > = {
    ...(api.sshKeys ? { sshKeys: api.sshKeys } : {}),
    tracking: new LocalWorkloadTracking(mount.store, trackingUrl, workloadCredentials(tokens)),
    // The gateway is on the same port as tracking: workloads reach both the same way.
    models: workloadModels(tokens, trackingUrl),
    trialMetrics: trackingTrialMetrics(mount.store),
    registrar: registryRegistrar(mount.registry),
    serving: {
      models: api.models(mount),
      scale: serving.directory,
      table: serving.directory,
      builtinCommand: api.builtinCommand,
      baseUrl: listeningAt,
    },
  };
  return { app, admin, serving, controllerDeps, workspaceAccess, apps, traces };
}

/**
 * The inference gateway: OpenAI routes on the API's port, its endpoint table fed by the
 * InferenceService controller, and its autoscaler waking that controller when a service's
 * desired replica count changes.
 */
function servingParts(opts: Pick<ControlPlaneOptions, "metrics" | "log">) {
  const directory = new ServingDirectory();
  const gateway = new Gateway({ directory, scaler: directory, registry: opts.metrics, log: opts.log });
  directory.attach(gateway);
  return {
    directory,
    gateway,
    connect(manager: ControllerManager) {
      directory.onScale = (key) => manager.enqueueInferenceService(key);
      // Replicas in fleet members are reached with the project's key at that member's gateway.
      directory.memberHeaders = (cluster, project) => manager.fleetReplicas?.headers(cluster, project);
    },
  };
}

/** The experiment so named in the project, made when missing (two racing makers: the loser reads it). */
async function ensureExperiment(store: TrackingStore, project: string, name: string): Promise<string> {
  try {
    return (await store.getExperimentByName(project, name)).experiment_id;
  } catch {
    try {
      return await store.createExperiment(project, name);
    } catch {
      return (await store.getExperimentByName(project, name)).experiment_id;
    }
  }
}

import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { availableParallelism, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { TRAININGJOB } from "../api/kinds.js";
import { RUNTIME_FINALIZER } from "../controllers/trainingjob/reconciler.js";
import { VERSION } from "../lib/version.js";
import { SqliteAuditLog } from "../platforms/embedded/audit.js";
import { DirCheckpointVault } from "../platforms/embedded/checkpointvault.js";
import { type CodeServerInstall, findCodeServer } from "../platforms/embedded/codeserver.js";
import { instanceId, lockDataDir } from "../platforms/embedded/datadir.js";
import { openSqlite } from "../platforms/embedded/db.js";
import { SqliteEventRecorder } from "../platforms/embedded/events.js";
import { FileFleetLeases } from "../platforms/embedded/fleetleases.js";
import { machineGpus } from "../platforms/embedded/gpus.js";
import { registerGpuMetrics } from "../platforms/embedded/gpuusage.js";
import { DirMemberCheckpoints } from "../platforms/embedded/membercheckpoints.js";
import { GangNetworks, type NetworkCapability } from "../platforms/embedded/netns.js";
import { EmbeddedRuntime } from "../platforms/embedded/platform.js";
import { LocalRevisions } from "../platforms/embedded/replicas.js";
import { LocalRuntime } from "../platforms/embedded/runtime.js";
import { describeSandbox, detectSandbox, type SandboxSupport } from "../platforms/embedded/sandbox.js";
import { SqliteSecretStore } from "../platforms/embedded/secrets.js";
import { HomeSnapshots } from "../platforms/embedded/snapshots.js";
import { SqliteSshKeyStore } from "../platforms/embedded/sshkeys.js";
import { SqliteResourceStore } from "../platforms/embedded/store.js";
import { SqliteTokenStore } from "../platforms/embedded/tokens.js";
import { WorkloadFiles } from "../platforms/embedded/workloadfiles.js";
import { kubeMemberConnector } from "../platforms/kubernetes/cluster.js";
import { loomMemberConnector } from "../platforms/loom/member.js";
import type { MemberConnector } from "../ports/fleet.js";
import { localModelResolver } from "../server/models.js";
import { ideActivity } from "../server/workspaces/activity.js";
import { InMemoryWorkspaceDirectory } from "../server/workspaces/directory.js";
import { workspaceOrigin } from "../server/workspaces/host.js";
import { workspaceOriginServer } from "../server/workspaces/origin.js";
import type { TrackingDatabase } from "../tracking/db.js";
import { assembleControlPlane, openTracking } from "./assembly.js";
import { processMetricsRegistry } from "./processmetrics.js";

/** The package's root: runtimes/ and the examples/ they load are lent to sandboxed workloads. */
const PACKAGE_ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Loom's built-in serving runtime (runtimes/ in the package); it needs only PyTorch (Debian's python3-torch). */
const BUILTIN_RUNTIME = [
  process.env.LOOM_BUILTIN_PYTHON ?? "/usr/bin/python3",
  join(fileURLToPath(new URL("../../runtimes", import.meta.url)), "loom-tinygpt", "server.py"),
];

/**
 * What the workspace controller asks of this machine: the IDE's own activity (Jupyter's), and the
 * sshd started beside each workspace's IDE where sshd is installed (runtimes/ is lent to sandboxes).
 */
const WORKSPACE_HELPERS = {
  ideActivity,
  sshd: join(PACKAGE_ROOT, "runtimes", "loom-sshd", "loom-sshd.sh"),
};

export interface EmbeddedOptions {
  dataDir: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** The workspaces' user-content origin; default the API's port + 1 (a free one when port is 0). */
  workspacePort?: number;
  /** Declares N virtual GPUs instead of asking nvidia-smi. */
  gpus?: number;
  /** "unenforced": where CUDA MPS is unavailable, fractional GPU requests still share devices. */
  gpuSharing?: "unenforced";
  log: Logger;
  /** Periodic resync of every controller (and orphan collection). */
  resyncMs?: number;
  baseBackoffMs?: number;
  /** false serves the API and store without any controller (benchmarks of the API alone). */
  controllers?: boolean;
  /**
   * Keep MLflow tracking (experiments, runs, registry, logged models) in this PostgreSQL database
   * (postgres://…) instead of the data dir's SQLite file; tokens, objects and events stay there.
   */
  trackingDb?: string;
  /** Keep audit log entries this long (default 30 days). */
  auditRetentionMs?: number;
  /** MLflow traces older than this are deleted by a periodic sweep; absent: kept. */
  traceRetentionMs?: number;
  /** false: workloads share the machine's network instead of one namespace per gang. */
  networkIsolation?: boolean;
  /** Run workloads of several projects as the server's user where no sandbox is possible. */
  insecureSharedUser?: boolean;
  /** false runs workloads unsandboxed (measurements of the sandbox's cost); default: detected. */
  sandbox?: boolean;
}

export interface EmbeddedServer {
  url: string;
  /** The admin token (created on the first start, then read from the data dir). */
  adminToken: string;
  adminTokenFile: string;
  /** How workloads are isolated here, in one line (`loom up` prints it). */
  sandbox: string;
  /** One line: the GPUs found (or declared) and how fractions share them. */
  gpus: string;
  app: FastifyInstance;
  /** Whether each workload has a network of its own, and why not (for `loom up` to say). */
  network: NetworkCapability;
  /**
   * The user-content origin: where the workspace controller publishes running workspaces (the
   * origin's proxy reads them), its port and URL pattern.
   */
  workspaces: { directory: InMemoryWorkspaceDirectory; port: number; urlPattern: string };
  close(): Promise<void>;
}

/**
 * The composition root of `loom up`: one process with the API, the controllers, the scheduler
 * and the local runtime, all on one SQLite file in the data dir.
 */
export async function startEmbedded(opts: EmbeddedOptions): Promise<EmbeddedServer> {
  const log = opts.log;
  const unlock = lockDataDir(opts.dataDir);
  const now = () => new Date();
  const database = await openSqlite(join(opts.dataDir, "loom.db"));
  let trackingDb: TrackingDatabase;
  try {
    trackingDb = await openTracking(database, opts.trackingDb, log);
  } catch (err) {
    unlock();
    throw err;
  }
  const store = await SqliteResourceStore.open(database.db, { now });
  const sandbox = sandboxFor(opts);
  const codeServer = codeServerFor(log);
  const events = new SqliteEventRecorder(database.db, now);
  const secrets = new SqliteSecretStore(database.db, now);
  const instance = instanceId(opts.dataDir);
  const { gpus, networks, processes } = await localRuntime(opts, instance, sandbox, codeServer);
  // Model replicas: supervised processes that wait for the scheduler like any pod.
  const replicas = new LocalRevisions({
    runtime: processes,
    events,
    log: log.child({ component: "runtime/replicas" }),
    stateDir: join(opts.dataDir, "revisions"),
    node: (await processes.nodes())[0]!.name,
    address: (uid) => networks.address(uid),
  });
  const runtime = new EmbeddedRuntime(processes, replicas);
  const controllers = opts.controllers !== false;
  const metrics = processMetricsRegistry();
  if (gpus.inventory) registerGpuMetrics(metrics, () => processes.gpuStatus());
  const workspaceDirectory = new InMemoryWorkspaceDirectory();
  let workspacePort = 0;
  const plane = await assembleControlPlane({
    store,
    events,
    runtime,
    log,
    metrics,
    now,
    resyncMs: opts.resyncMs,
    baseBackoffMs: opts.baseBackoffMs,
    workspaces: {
      directory: workspaceDirectory,
      // Its own origin, never the API's: the origin listener's port (by default the API's + 1).
      workspaceOrigin: () => (workspacePort ? `http://ws.localhost:${workspacePort}` : undefined),
      ...WORKSPACE_HELPERS,
      gpuActivity: gpus.activity,
      ...(codeServer ? { codeServer: codeServer.command } : {}),
    },
    // Members of the fleet (issue 23): Kubernetes clusters with Loom, their kubeconfigs kept here.
    // Members' checkpoints are kept in each job's own checkpoint directory here: a job that fails
    // over to this platform resumes from them.
    fleet: {
      connector: memberConnector(log),
      secrets,
      version: VERSION,
      vault: new DirCheckpointVault(new WorkloadFiles(opts.dataDir)),
    },
    // This platform as another control plane's member: the copies it placed stop when its lease lapses.
    fleetLeases: new FileFleetLeases(opts.dataDir),
    // … and its copies' checkpoints, which the control plane reads and seeds through the API.
    memberCheckpoints: new DirMemberCheckpoints(new WorkloadFiles(opts.dataDir)),
    api: {
      secrets,
      tokens: new SqliteTokenStore(database.db),
      sshKeys: new SqliteSshKeyStore(database.db),
      trackingDb,
      // Gateway traces are parsed by a thread of their own and written here, on the one connection:
      // a second writer on the file made this connection's deferred transactions fail with
      // SQLITE_BUSY (a 500 on a PATCH seen in bench:gateway while traces were being written).
      ...(opts.traceRetentionMs !== undefined ? { traceRetentionMs: opts.traceRetentionMs } : {}),
      dataDir: opts.dataDir,
      host: opts.host,
      port: opts.port,
      // Embedded, a model's files are read where the registry's artifacts are.
      models: (t) => localModelResolver(t.registry, t.store, t.artifactsDir),
      builtinCommand: BUILTIN_RUNTIME,
      workspaceOriginPort: () => workspacePort,
      audit: new SqliteAuditLog(database.db, {
        maxAgeMs: opts.auditRetentionMs,
        onError: (err) => log.warn({ err }, "audit log write failed"),
      }),
      // The trainingjob loop would add it on first sight; giving it at create saves that write.
      ...(controllers ? { createFinalizers: { [TRAININGJOB]: [RUNTIME_FINALIZER] } } : {}),
      workspaceSnapshots: new HomeSnapshots(new WorkloadFiles(opts.dataDir)), // loom run --from ws/NAME
    },
  });
  const admin = plane.admin!;
  if (admin.created) log.info({ file: admin.file }, "created the admin token");
  // Listening first: workers started by the controllers are told this URL (MLFLOW_TRACKING_URI).
  const url = await plane.listen();
  // Workloads in namespaces of their own reach the API (and the gateway on its port) through it.
  const apiPort = Number(new URL(url).port);
  networks.openApi(apiPort);
  // Workspaces serve their users' own pages: never on the API's origin, on a listener of their own.
  const origin = workspaceOriginServer({
    access: plane.workspaceAccess!,
    directory: workspaceDirectory,
    log: log.child({ component: "workspace-origin" }),
    connectPort: runtime.connectPort.bind(runtime), // /proxy/P/ reaches the workspace's own 127.0.0.1
    ...(plane.appOrigin ? { apps: plane.appOrigin } : {}), // apps at NAME--PROJECT.app.localhost
  });
  try {
    workspacePort = await listenOn(
      origin,
      opts.host ?? "127.0.0.1",
      opts.workspacePort ?? (opts.port === 0 ? 0 : apiPort + 1),
    );
  } catch (err) {
    await plane.close();
    throw err;
  }
  await plane.start({ controllers });
  let closed = false;
  return {
    url,
    adminToken: admin.token,
    adminTokenFile: admin.file,
    sandbox: sandboxLine(sandbox, !!opts.insecureSharedUser),
    gpus: gpus.line,
    app: plane.app!,
    network: networks.capability,
    workspaces: {
      directory: workspaceDirectory,
      port: workspacePort,
      urlPattern: `${workspaceOrigin("PROJECT", "NAME", workspacePort)}/`,
    },
    async close() {
      if (closed) return;
      closed = true;
      origin.closeAllConnections();
      await new Promise((done) => origin.close(done));
      await plane.close();
      await runtime.close();
      networks.close();
      gpus.close();
      await store.close();
      await trackingDb.close();
      await database.close();
      unlock();
    },
  };
}

/** The sandbox this server's workloads get, said in its log at start. */
function sandboxFor(opts: EmbeddedOptions): SandboxSupport {
  const sandbox: SandboxSupport =
    opts.sandbox === false
      ? { privileged: false, unavailable: "turned off for this server" }
      : // LOOM_SANDBOX_LAUNCHER=bwrap: bubblewrap's chain even where Loom's launcher works (a comparison).
        detectSandbox(process.env.LOOM_SANDBOX_LAUNCHER === "bwrap" ? { launcher: false } : {});
  logSandbox(opts.log, sandbox, !!opts.insecureSharedUser);
  return sandbox;
}

/** The sandbox as `loom up` prints it, with what running without one means. */
function sandboxLine(sandbox: SandboxSupport, insecureSharedUser: boolean): string {
  if (sandbox.bwrap) return describeSandbox(sandbox);
  return `${describeSandbox(sandbox)}${insecureSharedUser ? " (--insecure-shared-user: every project runs as this server's user)" : "; workloads of only one project run at a time (--insecure-shared-user allows more, unisolated)"}`;
}

/** Says at start whether workloads run sandboxed, and loudly what it means when they do not. */
/** code-server for `ide: vscode`, said once at start either way (what `loom up` can serve). */
function codeServerFor(log: Logger): CodeServerInstall | undefined {
  const found = findCodeServer();
  if ("missing" in found) {
    log.info({ reason: found.missing }, "ide: vscode workspaces are refused");
    return undefined;
  }
  log.info(
    { version: found.found.version, root: found.found.root },
    "code-server serves ide: vscode workspaces",
  );
  return found.found;
}

function logSandbox(log: Logger, sandbox: SandboxSupport, insecureSharedUser: boolean): void {
  if (sandbox.bwrap) log.info({ sandbox: describeSandbox(sandbox) }, "workloads run sandboxed");
  else
    log.warn(
      { reason: sandbox.unavailable, insecureSharedUser },
      insecureSharedUser
        ? "NO SANDBOX: workloads of every project run as the server's user (--insecure-shared-user)"
        : "NO SANDBOX: only one project's workloads run at a time (--insecure-shared-user allows more)",
    );
}

/** Listens and returns the port (the one picked, for 0). */
function listenOn(server: Server, host: string, port: number): Promise<number> {
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, host, () => {
      server.off("error", fail);
      ok((server.address() as AddressInfo).port);
    });
  });
}

/** This machine's GPUs, gangs' networks and the process runtime over them (startEmbedded's). */
async function localRuntime(
  opts: EmbeddedOptions,
  instance: string,
  sandbox: SandboxSupport,
  codeServer: ReturnType<typeof codeServerFor>,
) {
  const log = opts.log;
  const gpus = await machineGpus({
    ...(opts.gpus !== undefined ? { declared: opts.gpus } : {}),
    dataDir: opts.dataDir,
    allowUnenforced: opts.gpuSharing === "unenforced",
    log: log.child({ component: "gpus" }),
  });
  const networks = new GangNetworks({
    instanceId: instance,
    enabled: opts.networkIsolation,
  });
  if (!networks.capability.isolated)
    log.warn({ reason: networks.capability.reason }, "workloads share this machine's network");
  const processes = new LocalRuntime({
    dataDir: opts.dataDir,
    instanceId: instance,
    networks,
    cpuMillis: availableParallelism() * 1000,
    memoryBytes: totalmem(),
    gpus: gpus.host.ids(),
    gpuHost: gpus.host,
    log: log.child({ component: "runtime/local" }),
    sandbox,
    insecureSharedUser: !!opts.insecureSharedUser,
    // The built-in model server (runtimes/loom-tinygpt) loads examples/pretrain's model code.
    // code-server (ide: vscode) is lent the same way where the machine has it.
    lend: [
      join(PACKAGE_ROOT, "runtimes"),
      join(PACKAGE_ROOT, "examples"),
      ...(codeServer ? [codeServer.lend] : []),
    ],
  });
  return { gpus, networks, processes };
}

/** Members by how they are spoken to: a Kubernetes API server (Loom's CRDs) or a Loom API server. */
function memberConnector(log: Logger): MemberConnector {
  const kube = kubeMemberConnector(log);
  const loom = loomMemberConnector(log);
  return {
    connect: (cluster, kubeconfig) =>
      (cluster.spec.api === "loom" ? loom : kube).connect(cluster, kubeconfig),
  };
}

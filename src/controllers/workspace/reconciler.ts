import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { NotFoundError } from "../../api/errors.js";
import { WORKSPACE } from "../../api/kinds.js";
import { type Condition, setCondition } from "../../api/meta.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import { parseDurationSeconds } from "../../api/trainingjob.js";
import { IDLE_STOPPED, type Workspace, type WorkspaceStatus } from "../../api/workspace.js";
import { type ModelAccess, type WorkloadModels, withModelAccess } from "../../ports/models.js";
import type {
  ReplicaObservation,
  RevisionRuntime,
  Runtime,
  SecretFile,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { SshKeyStore } from "../../ports/sshkeys.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { WorkloadTracking } from "../../ports/tracking.js";
import type { GpuActivity, IdeActivity, WorkspaceDirectory } from "../../ports/workspaces.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { SSHD_PORT, sshKeysFile } from "../sshkeys.js";
import { revisionAccess, revokeAccess } from "../workloadaccess.js";
import { WORKSPACE_PORT, type WorkspaceProgram, workspaceProgram } from "./command.js";

export { IDLE_STOPPED, WORKSPACE };
export const WORKSPACE_FINALIZER = "loom.dev/workspace";

export interface WorkspaceDeps {
  store: ResourceStore;
  runtime: Runtime;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
  /** Where running workspaces are published for the workspace origin's proxy. */
  directory?: WorkspaceDirectory;
  /**
   * The workspace origin's base, e.g. "http://ws.localhost:7471": a workspace's URL is
   * http://NAME--PROJECT.ws.localhost:7471/. Undefined: no status.url.
   */
  workspaceOrigin?: () => string | undefined;
  /** The IDE's own last activity (Jupyter's /api/status), asked only when the proxy saw none for long. */
  ideActivity?: IdeActivity;
  /** Whether the workspace's GPUs compute now (nvidia-smi), asked only when everything else says idle. */
  gpuActivity?: GpuActivity;
  /** The project's models for the workspace: OPENAI_BASE_URL and a key file (ports/models.ts). */
  models?: WorkloadModels;
  /**
   * The project's tracking for the workspace: MLFLOW_TRACKING_URI and ~/.mlflow/credentials
   * (ports/tracking.ts sessionCredentials), linked from its persistent home at each start.
   */
  tracking?: Pick<WorkloadTracking, "sessionCredentials" | "revokeCredentials">;
  /**
   * Users' SSH keys: the replica gets its project's editors' and admins' as a file
   * (LOOM_SSH_AUTHORIZED_KEYS_FILE) when it starts, which runtimes/loom-sshd authorizes.
   */
  sshKeys?: Pick<SshKeyStore, "authorizedKeys">;
  /**
   * Where runtimes/loom-sshd/loom-sshd.sh is on the machine the replicas run on (embedded): the
   * workspace starts it beside its server where sshd is installed, for `loom ssh ws/NAME`.
   * Undefined (Kubernetes): the image decides whether anything listens for ssh.
   */
  sshd?: string;
  /**
   * How replicas run code-server for `ide: vscode` (embedded: node and its entry script, lent to
   * sandboxes; Kubernetes: the image's `code-server`); absent, vscode workspaces are refused.
   */
  codeServer?: string[];
}

/** The revision a workspace's spec runs as: NAME-ws + a hash of what the replica runs. */
export function workspaceRevision(ws: Workspace, program: WorkspaceProgram): string {
  const { ide, command, python, image, resources, env, home } = ws.spec;
  const hash = createHash("sha256")
    .update(JSON.stringify({ ide, command, python, image, resources, env, home, program }))
    .digest("hex")
    .slice(0, 6);
  return `${ws.metadata.name}-ws${hash}`;
}

/** A workspace replica's runtime name (NAME-wsHASH-rK) → the workspace's name; undefined for others. */
export function workspaceOfReplica(name: string): string | undefined {
  return /^(.+)-ws[0-9a-f]{6}-r\d+$/.exec(name)?.[1];
}

/** The workspace's URL on the workspace origin: its own host, NAME--PROJECT.<origin's host>. */
export function workspaceUrl(origin: string, project: string, name: string): string {
  const u = new URL(origin);
  return `${u.protocol}//${name}--${project}.${u.host}/`;
}

/**
 * Runs a Workspace as ONE replica of a revision through the platform's serving capability, the
 * one path for long-running workloads (Kubernetes: a Deployment of one; embedded: a supervised
 * process on a loopback port). A replica that asks for resources waits for Loom's scheduler as
 * external work, non-preemptible unless spec.preemptible. Stopped: zero replicas; the persistent
 * home (RevisionSpec.home) stays. A changed spec is a new revision; the old one is deleted.
 */
export class WorkspaceReconciler implements Reconciler {
  readonly name = "workspace";

  constructor(private readonly deps: WorkspaceDeps) {}

  async reconcile(key: string): Promise<ReconcileResult> {
    const [project, name] = key.split("/") as [string, string];
    let ws: Workspace;
    try {
      ws = (await this.deps.store.get(WORKSPACE, project, name)) as Workspace;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      this.deps.directory?.publish(project, name, undefined);
      return {};
    }
    if (ws.metadata.deletionTimestamp) return this.finalize(ws);
    if (!ws.metadata.finalizers?.includes(WORKSPACE_FINALIZER)) {
      ws = (await this.deps.store.update({
        ...ws,
        metadata: { ...ws.metadata, finalizers: [...(ws.metadata.finalizers ?? []), WORKSPACE_FINALIZER] },
      })) as Workspace;
    }
    const now = this.deps.now();
    const before = ws.status ?? {};
    const status: WorkspaceStatus = structuredClone(before);
    const program = workspaceProgram(ws.spec, {
      sshd: this.deps.sshd !== undefined,
      ...(this.deps.codeServer ? { codeServer: this.deps.codeServer } : {}),
    });
    const origin = this.deps.workspaceOrigin?.();
    if (origin) status.url = workspaceUrl(origin, project, name);
    let requeueAfterMs = 5000;
    if ("unsupported" in program) {
      status.phase = "Failed";
      status.conditions = setCondition(
        status.conditions,
        { type: "Ready", status: "False", reason: "Unsupported", message: program.unsupported },
        now,
      );
      if (before.phase !== "Failed") {
        await this.event(ws, "Warning", "Unsupported", program.unsupported);
        await revokeAccess(this.deps, workspaceRef(ws));
      }
      await this.retire(ws, status.revision);
      status.revision = undefined;
      this.deps.directory?.publish(project, name, undefined);
    } else {
      const revision = workspaceRevision(ws, program);
      // A changed spec: the old revision's replica stops (its home stays) and the new one starts.
      if (status.revision && status.revision !== revision) await this.retire(ws, status.revision);
      status.revision = revision;
      ws = await this.cullIfIdle(ws, status, now);
      requeueAfterMs = await this.converge(ws, program, revision, status, now);
    }
    status.observedGeneration = ws.metadata.generation;
    if (!isDeepStrictEqual(before, status))
      await this.deps.store.updateStatus({ ...ws, status } as Workspace);
    return { requeueAfterMs };
  }

  /** Applies one replica (none when stopped), reads it back, and sets phase, conditions and the directory. */
  private async converge(
    ws: Workspace,
    program: Exclude<WorkspaceProgram, { unsupported: string }>,
    revision: string,
    status: WorkspaceStatus,
    now: Date,
  ): Promise<number> {
    const { project, name } = ws.metadata as { project: string; name: string };
    const serving = this.serving();
    const ref = workspaceRef(ws);
    const culled = ws.metadata.annotations?.[IDLE_STOPPED];
    const stopped = ws.spec.stopped || culled !== undefined;
    const held = await this.held(ref, revision, true);
    // Stopped and already gone: applying zero again would only make an empty record.
    if (!stopped || held) {
      const models = stopped ? undefined : await revisionAccess(this.deps, ref, revision);
      // Read for every apply, used when the replica starts: a running one keeps the keys it
      // started with (a changed file restarts nothing), keys added later count from the next start.
      const ssh = stopped ? undefined : await sshKeysFile(this.deps.sshKeys, this.deps.log, project);
      await serving.applyRevision(this.revisionSpec(ws, program, revision, stopped ? 0 : 1, models, ssh));
    }
    // Where the platform lists no revisions (Kubernetes: a Deployment of zero stays), a stopped
    // workspace is stopping while a replica remains, and stopped once none does.
    const observed =
      !stopped || !serving.listRevisions ? await serving.observeRevision(ref, revision) : undefined;
    const replicas = observed?.replicas ?? [];
    const replica: ReplicaObservation | undefined = stopped ? undefined : replicas[0];
    const stopping = stopped && (serving.listRevisions ? held : replicas.length > 0);
    const set = (phase: WorkspaceStatus["phase"], c: Omit<Condition, "type" | "lastTransitionTime">) => {
      status.phase = phase;
      status.conditions = setCondition(status.conditions, { type: "Ready", ...c }, now);
    };
    const wasRunning = status.phase === "Running";
    if (stopped) {
      status.replica = undefined;
      if (stopping)
        set(status.phase ?? "Pending", {
          status: "False",
          reason: "Stopping",
          message: "the workspace's server is stopping; its home is kept",
        });
      else {
        if (status.phase !== "Stopped") {
          await revokeAccess(this.deps, ref);
          await this.event(ws, "Normal", "Stopped", "stopped; the home is kept");
        }
        const idle = culled !== undefined && !ws.spec.stopped;
        set("Stopped", {
          status: "False",
          reason: idle ? "Idle" : "Stopped",
          message: idle
            ? `stopped after ${idleFor(status, culled)} without activity (loom start ws/NAME runs it again); the home is kept`
            : "stopped (loom start ws/NAME runs it again); the home is kept",
        });
        // Kept once stopped (a user's stop of a culled workspace still says Idle); a stop while it
        // waited after a preemption is the user's.
        if (status.stoppedReason === undefined || status.stoppedReason === "Preempted")
          status.stoppedReason = idle ? "Idle" : "User";
      }
    } else if (replica) {
      status.stoppedReason = undefined;
      status.replica = {
        id: replica.id,
        ...(replica.host ? { host: replica.host } : {}),
        port: replica.port,
        ready: replica.ready,
      };
      status.node = replica.node;
      if (replica.ready) {
        if (!wasRunning) {
          status.startTime = now.toISOString();
          await this.event(
            ws,
            "Normal",
            "Running",
            `the workspace answers${status.url ? ` at ${status.url}` : ""}`,
          );
        }
        set("Running", {
          status: "True",
          reason: "Ready",
          message: `${ws.spec.ide === "none" ? "the server" : ws.spec.ide} answers`,
        });
      } else
        set("Starting", {
          status: "False",
          reason: observed?.lastExit ? "ReplicaExited" : "Starting",
          message: `waiting for the server to answer ${program.readinessPath} on its port${observed?.lastExit ? `; the last ${observed.lastExit}` : ""}`,
        });
    } else {
      status.replica = undefined;
      status.stoppedReason = observed?.preempted ? "Preempted" : undefined;
      const waiting = this.environmentWaiting(program);
      if (observed?.preempted)
        set("Pending", {
          status: "False",
          reason: "Preempted",
          message: `${observed.preempted}; it runs again once the scheduler places it (its home is kept)`,
        });
      else if (waiting?.failed)
        set("Failed", { status: "False", reason: "EnvironmentFailed", message: waiting.failed });
      else if (waiting)
        set("Pending", { status: "False", reason: "BuildingEnvironment", message: waiting.message });
      else if (observed?.lastExit)
        // A crash loop: between starts, say why the last one ended and where its output is.
        set("Pending", {
          status: "False",
          reason: "ReplicaExited",
          message: `the last ${observed.lastExit}`,
        });
      else
        set("Pending", {
          status: "False",
          reason: "Scheduling",
          message: "waiting for the scheduler to place the workspace (loom describe ws shows events)",
        });
    }
    const running = status.phase === "Running" && status.replica && replica;
    const ports = running ? await this.otherPorts(ref, replica, status.ports) : [];
    status.ports = running ? ports.map((port) => portEntry(status.url, port)) : undefined;
    this.deps.directory?.publish(
      project,
      name,
      running
        ? {
            ref,
            host: status.replica!.host ?? "127.0.0.1",
            port: status.replica!.port!,
            ports,
            replica: replicaRef(ref, replica),
          }
        : undefined,
    );
    // Running: look for new ports (and idleness) every second; a status write only when they change.
    if (running && this.deps.runtime.listeningPorts) return 1000;
    // Where a look is an exec through the API server (Kubernetes), every 2 s only while someone
    // uses the workspace through Loom (the last minute), else at the usual 5 s.
    if (running && serving.replicaPorts && this.recentlyUsed(project, name, now)) return 2000;
    return status.phase === "Running" || status.phase === "Stopped" ? 5000 : 250;
  }

  /** Whether the origin or port-forward saw the workspace used within the last minute. */
  private recentlyUsed(project: string, name: string, now: Date): boolean {
    const last = this.deps.directory?.lastActivity?.(project, name);
    return last !== undefined && now.getTime() - last.getTime() < 60_000;
  }

  /**
   * The TCP ports the replica listens on besides the IDE's own, sorted: what /proxy/P/ may reach.
   * The runtime finds a replica's processes by its uid (embedded: the replica's own workload);
   * Kubernetes asks inside the replica's pod (RevisionRuntime.replicaPorts).
   * A failed look keeps what was seen last rather than closing the ports on a passing error.
   */
  private async otherPorts(
    ref: WorkloadRef,
    replica: ReplicaObservation,
    last: WorkspaceStatus["ports"],
  ): Promise<number[]> {
    const { runtime } = this.deps;
    const serving = runtime.serving;
    if (!runtime.listeningPorts && !serving?.replicaPorts) return [];
    const at = replicaRef(ref, replica);
    try {
      const all = runtime.listeningPorts
        ? await runtime.listeningPorts(at, 0)
        : await serving!.replicaPorts!(ref, replica.id);
      // Loom's own sshd is for `loom ssh` (a tunnel), not a page to serve at /proxy/2222/.
      const own = new Set([replica.port, ...(this.deps.sshd !== undefined ? [SSHD_PORT] : [])]);
      return [...new Set(all)].filter((p) => !own.has(p)).sort((a, b) => a - b);
    } catch (err) {
      this.deps.log.debug({ err, replica: replica.id }, "listening ports not readable");
      return (last ?? []).map((p) => p.port);
    }
  }

  /**
   * spec.idleTimeout: a Running workspace with no activity for that long is stopped by marking it
   * (IDLE_STOPPED; the spec stays the user's). Activity: the origin proxy's and port-forward's
   * (the directory), the IDE's own record (asked only once those say idle), and the start itself.
   * status.lastActivityTime keeps the latest seen, so a server restart does not reset the clock.
   */
  private async cullIfIdle(ws: Workspace, status: WorkspaceStatus, now: Date): Promise<Workspace> {
    const timeout = ws.spec.idleTimeout === undefined ? undefined : parseDurationSeconds(ws.spec.idleTimeout);
    const { project, name } = ws.metadata as { project: string; name: string };
    if (!timeout || ws.spec.stopped || ws.metadata.annotations?.[IDLE_STOPPED] || status.phase !== "Running")
      return ws;
    const latest = (...ds: (Date | string | undefined)[]) =>
      Math.max(
        ...ds.map((d) => (d === undefined ? 0 : new Date(d).getTime())).filter((t) => !Number.isNaN(t)),
      );
    let last = latest(
      status.startTime,
      status.lastActivityTime,
      this.deps.directory?.lastActivity?.(project, name),
    );
    if (now.getTime() - last >= timeout * 1000 && this.deps.ideActivity && status.replica?.port) {
      // Right after a server restart nothing is published yet: the replica's address is in the status.
      const endpoint = this.deps.directory?.lookup(project, name) ?? {
        ref: workspaceRef(ws),
        host: status.replica.host ?? "127.0.0.1",
        port: status.replica.port,
        ports: [],
      };
      last = latest(new Date(last), await this.deps.ideActivity(ws.spec.ide, endpoint));
    }
    if (now.getTime() - last >= timeout * 1000 && (await this.gpusBusy(ws))) last = now.getTime();
    // Written when it moves by a tenth of the timeout (at most a minute): not on every request.
    const recorded = status.lastActivityTime ? new Date(status.lastActivityTime).getTime() : 0;
    if (last > 0 && last - recorded >= Math.min(timeout * 100, 60_000))
      status.lastActivityTime = new Date(last).toISOString();
    if (now.getTime() - last < timeout * 1000) return ws;
    status.lastActivityTime = new Date(last).toISOString();
    await this.event(
      ws,
      "Normal",
      "Idle",
      `no activity since ${status.lastActivityTime} (idleTimeout ${ws.spec.idleTimeout}): stopping; the home is kept`,
    );
    return (await this.deps.store.update({
      ...ws,
      metadata: {
        ...ws.metadata,
        annotations: { ...ws.metadata.annotations, [IDLE_STOPPED]: now.toISOString() },
      },
    })) as Workspace;
  }

  /** Whether the GPUs the workspace's replica holds compute now; false where nobody can say. */
  private async gpusBusy(ws: Workspace): Promise<boolean> {
    const { gpuActivity } = this.deps;
    const revision = ws.status?.revision;
    if (!gpuActivity || !ws.spec.resources.gpu || !revision) return false;
    try {
      const observed = await this.serving().observeRevision(workspaceRef(ws), revision);
      const devices = observed.replicas.flatMap((r) => (r.gpus ?? []).map((g) => g.device));
      return devices.length > 0 && (await gpuActivity(devices)) === true;
    } catch (err) {
      this.deps.log.debug({ err, workspace: ws.metadata.name }, "GPU activity not readable");
      return false;
    }
  }

  /** Why the replica waits for its Python environment (embedded builds it once), if it does. */
  private environmentWaiting(
    program: Exclude<WorkspaceProgram, { unsupported: string }>,
  ): { message: string; failed?: string } | undefined {
    if (!program.python || !this.deps.runtime.prepare) return undefined;
    const prep = this.deps.runtime.prepare({ python: program.python });
    if ("failed" in prep) return { message: prep.failed, failed: prep.failed };
    return prep.ready ? undefined : { message: prep.message };
  }

  private revisionSpec(
    ws: Workspace,
    program: Exclude<WorkspaceProgram, { unsupported: string }>,
    revision: string,
    replicas: number,
    models?: ModelAccess,
    ssh?: { env: Record<string, string>; files: SecretFile[] },
  ) {
    const files = [...(models?.files ?? []), ...(ssh?.files ?? [])];
    const r = ws.spec.resources;
    const gpus = r.gpu && r.gpu >= 1 ? r.gpu : 0;
    return {
      service: workspaceRef(ws),
      revision,
      replicas,
      worker: {
        command: program.command,
        ...(ws.spec.image ? { image: ws.spec.image } : {}),
        env: withModelAccess(
          {
            PYTHONUNBUFFERED: "1",
            HOST: "127.0.0.1",
            ...ws.spec.env,
            ...ssh?.env,
            ...(this.deps.sshd !== undefined ? { LOOM_SSHD: this.deps.sshd } : {}),
            LOOM_PROJECT: ws.metadata.project!,
            LOOM_WORKLOAD: ws.metadata.name,
            LOOM_WORKLOAD_KIND: WORKSPACE,
          },
          models,
        ),
        ...(files.length > 0 ? { files } : {}),
        allocation: {
          node: "",
          cpuMillis: parseCpuMillis(r.cpu ?? 0) ?? 0,
          memoryBytes: parseMemoryBytes(r.memory ?? 0) ?? 0,
          gpus: Array.from({ length: gpus }, (_, i) => `gpu-${i}`),
        },
        terminationGracePeriodSeconds: 10,
      },
      port: WORKSPACE_PORT,
      readinessPath: program.readinessPath,
      // The first start may install nothing but still load an editor: ten minutes before a restart.
      readinessTimeoutSeconds: 600,
      ...(program.python ? { python: program.python } : {}),
      ...(r.gpu ? { gpu: r.gpu } : {}),
      // Not reclaimed by default: an interactive session must fit the project's deserved quota.
      preemptible: ws.spec.preemptible,
      home: {
        name: ws.metadata.name,
        ...(ws.spec.home ? { size: ws.spec.home.size } : {}),
        ...(ws.spec.home?.storageClassName ? { storageClassName: ws.spec.home.storageClassName } : {}),
      },
    };
  }

  /** Deletes a revision the workspace no longer runs (its replica stops gracefully). */
  private async retire(ws: Workspace, revision: string | undefined): Promise<void> {
    if (revision) await this.serving().deleteRevision(workspaceRef(ws), revision);
  }

  private serving(): RevisionRuntime {
    const serving = this.deps.runtime.serving;
    if (!serving) throw new Error("this platform's runtime cannot run workspaces (no serving capability)");
    return serving;
  }

  /**
   * Whether the platform still holds the revision (a replica stopping counts), where it says
   * (embedded); `otherwise` where it does not (Kubernetes collects by owner references).
   */
  private async held(ref: WorkloadRef, revision: string, otherwise: boolean): Promise<boolean> {
    const serving = this.serving();
    if (!serving.listRevisions) return otherwise;
    return (await serving.listRevisions()).some((r) => r.service.uid === ref.uid && r.revision === revision);
  }

  private async finalize(ws: Workspace): Promise<ReconcileResult> {
    this.deps.directory?.publish(ws.metadata.project!, ws.metadata.name, undefined);
    await revokeAccess(this.deps, workspaceRef(ws));
    const revision = ws.status?.revision;
    await this.retire(ws, revision);
    // The object goes once its process has: removed earlier, a server stopped right after would
    // leave the replica running with nothing that records it.
    if (revision && (await this.held(workspaceRef(ws), revision, false))) return { requeueAfterMs: 250 };
    await this.deps.store.update({
      ...ws,
      metadata: {
        ...ws.metadata,
        finalizers: (ws.metadata.finalizers ?? []).filter((f) => f !== WORKSPACE_FINALIZER),
      },
    });
    return {};
  }

  private async event(ws: Workspace, type: "Normal" | "Warning", reason: string, message: string) {
    await this.deps.events.record(workspaceRef(ws), type, reason, message);
  }
}

/** How long the workspace had been idle when it was culled, e.g. "3s" or "30m0s". */
function idleFor(status: WorkspaceStatus, culledAt: string): string {
  const since = status.lastActivityTime ?? status.startTime;
  const s = since ? Math.max(0, Math.round((Date.parse(culledAt) - Date.parse(since)) / 1000)) : 0;
  return s >= 60 ? `${Math.floor(s / 60)}m${s % 60}s` : `${s}s`;
}

/** status.ports' entry for port P: reachable at /proxy/P/ on the workspace's own origin. */
function portEntry(url: string | undefined, port: number): { port: number; url?: string } {
  return url ? { port, url: `${url}proxy/${port}/` } : { port };
}

/** The Workspace as the owner of what the platform makes for it. */
export function workspaceRef(ws: Workspace): WorkloadRef {
  return { kind: WORKSPACE, project: ws.metadata.project!, name: ws.metadata.name, uid: ws.metadata.uid };
}

/** The runtime's handle of a workspace's replica: its processes are found by the replica's uid. */
function replicaRef(ref: WorkloadRef, replica: ReplicaObservation): WorkloadRef {
  return { ...ref, name: replica.id, uid: replica.uid ?? replica.id };
}

import { mkdirSync, rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Duplex, Readable } from "node:stream";
import type { Logger } from "pino";
import type {
  GangObservation,
  GangSpec,
  LogOptions,
  MpiHost,
  Preparation,
  ProjectInfo,
  Runtime,
  WorkerEndpoint,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { GpuDeviceStatus, NodeCapacity } from "../../ports/scheduler.js";
import { oomKilled, processList, removeCgroup } from "./cgroups.js";
import { freeLoopbackEndpoints } from "./endpoints.js";
import { exitOf } from "./exits.js";
import { cgroupName, type GangSandboxDeps, gangSandbox, shmDir } from "./gangsandbox.js";
import { type GpuHost, virtualGpus } from "./gpuhost.js";
import { gpuStatus, workerOfPid } from "./gpuusage.js";
import { dialAddress, hasOwnNetwork, listeningPortsOf, workloadListeners } from "./listening.js";
import { exposedPorts, type GangNetworks } from "./netns.js";
import { dialHere, NamespaceDialer } from "./nsdial.js";
import { CheckpointReports, observation } from "./observation.js";
import { isSameProcessAlive, processStartTicks, signalGroup } from "./procfs.js";
import { PythonEnvironments } from "./pyenv.js";
import { recoverGangs } from "./recovery.js";
import { ProjectIds, type SandboxSupport } from "./sandbox.js";
import { Spawner, type SpawnRequest } from "./spawner.js";
import { tailFile } from "./tail.js";
import { credentialFiles, homeDir, SHIM, workerEnv, workerKey } from "./workerenv.js";
import { type GangRecord, StateWriter, type WorkerRecord, WorkloadFiles } from "./workloadfiles.js";

export interface LocalRuntimeOptions {
  dataDir: string;
  /** Identifies this installation's processes among others on the machine (tests run several). */
  instanceId: string;
  cpuMillis: number;
  memoryBytes: number;
  /** Virtual device ids (`loom up --gpus N`), used where gpuHost is not given. */
  gpus: string[];
  /** The machine's real GPUs (gpuhost.ts): health, per-worker devices, MPS. */
  gpuHost?: GpuHost;
  log: Logger;
  /** How often re-adopted processes, and live gangs' loom.json, are checked. */
  pollMs?: number;
  /** Where built Python environments are cached (default: under the data dir). */
  environmentsDir?: string;
  now?: () => Date;
  /** A network namespace per gang (netns.ts); absent: every workload shares the machine's. */
  networks?: GangNetworks;
  /**
   * What isolates workloads here (detectSandbox). Where none is available, workloads run as the
   * server's user: only one project's at a time, unless insecureSharedUser. Unset: no sandbox.
   */
  sandbox?: SandboxSupport;
  /** Lent read-only to every sandboxed workload: Loom's own runtimes and the examples they load. */
  lend?: string[];
  /** Run workloads of several projects with no sandbox (the operator's explicit choice). */
  insecureSharedUser?: boolean;
}

/**
 * The Runtime port on this machine: workers are supervised process groups. This class
 * supervises gangs (start, exits, stop, release); beside it: the files and state.json of a
 * workload (workloadfiles.ts), re-adoption after a restart (recovery.ts), how an exit is read
 * (exits.ts), a worker's environment and shim (workerenv.ts), observations and checkpoint
 * reports (observation.ts), free ports (endpoints.ts).
 */
export class LocalRuntime implements Runtime {
  private readonly gangs: Map<string, GangRecord>;
  private readonly listeners: ((ref: WorkloadRef) => void)[] = [];
  /** Workers whose exit the spawn helper reports, by worker key; cancel stops listening. */
  private readonly children = new Map<string, { cancel: () => void }>();
  private readonly spawner: Spawner;
  private readonly poll: NodeJS.Timeout;
  private readonly now: () => Date;
  private readonly nodeName = hostname();
  private readonly environments: PythonEnvironments;
  private readonly files: WorkloadFiles;
  private readonly writer: StateWriter;
  private readonly checkpoints: CheckpointReports;
  /** Network namespaces being removed, by workload uid (a next attempt waits for its own). */
  private readonly networkEnds = new Map<string, Promise<void>>();
  /** Each live worker's memory limit in bytes, for the message when the kernel kills it for memory. */
  private readonly memoryLimits = new Map<string, number>();
  /** Set where workloads run sandboxed (bwrap found and working). */
  private readonly sandbox: GangSandboxDeps | undefined;
  /** Connections into gangs' own networks (port-forward, ssh). */
  private readonly dialer = new NamespaceDialer();
  /** The devices workers are placed on and how each is lent (virtual ones without nvidia-smi). */
  private readonly gpu: GpuHost;

  /**
   * Every rank runs on this machine: the launcher starts them all itself (the hostfile names
   * 127.0.0.1 once per worker), so a host worker only holds its place in the gang until the
   * launcher is done.
   */
  readonly mpiHost: MpiHost = {
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"],
    env: {
      OMPI_MCA_btl: "self,vader,tcp",
      OMPI_MCA_btl_tcp_if_include: "lo",
      OMPI_MCA_oob_tcp_if_include: "lo",
    },
  };

  constructor(private readonly opts: LocalRuntimeOptions) {
    this.now = opts.now ?? (() => new Date());
    this.gpu = opts.gpuHost ?? virtualGpus(opts.gpus);
    this.environments = new PythonEnvironments(
      opts.environmentsDir ?? join(opts.dataDir, "environments"),
      opts.log,
    );
    this.spawner = new Spawner(opts.log);
    this.files = new WorkloadFiles(opts.dataDir);
    this.writer = new StateWriter(this.files, (uid) => this.gangs.get(uid), opts.log);
    this.checkpoints = new CheckpointReports(this.files);
    mkdirSync(this.files.root, { recursive: true });
    const environmentsDir = opts.environmentsDir ?? join(opts.dataDir, "environments");
    this.sandbox = opts.sandbox?.bwrap
      ? {
          support: opts.sandbox,
          files: this.files,
          ids: new ProjectIds(join(opts.dataDir, "project-uids.json")),
          dataDir: opts.dataDir,
          environmentsDir,
          devices: (gpus) => this.gpu.deviceFiles(gpus),
          gpuBinds: (a) => this.gpu.binds(a),
          lend: opts.lend ?? [],
        }
      : undefined;
    this.gangs = recoverGangs({
      files: this.files,
      writer: this.writer,
      instanceId: opts.instanceId,
      log: opts.log,
      now: this.now,
    });
    // Namespaces of gangs no state accounts for, or whose workers all ended meanwhile, go;
    // those of live gangs stay with them.
    const live = [...this.gangs.values()].filter((g) => g.workers.some((w) => !w.exit)).map((g) => g.ref.uid);
    for (const uid of opts.networks?.orphans(new Set(live)) ?? []) void this.endNetwork(uid);
    if (this.sandbox?.support.privileged) this.prewarmNetworks();
    this.poll = setInterval(() => this.watchGangs(), opts.pollMs ?? 500);
    this.poll.unref();
  }

  async nodes(): Promise<NodeCapacity[]> {
    return [
      {
        name: this.nodeName,
        cpuMillis: this.opts.cpuMillis,
        memoryBytes: this.opts.memoryBytes,
        gpus: this.gpu.ids(),
        ...(this.gpu.model ? { gpuModel: this.gpu.model } : {}),
        ...(this.gpu.memoryBytes ? { gpuMemoryBytes: this.gpu.memoryBytes } : {}),
        // Said only where there are devices to share (a CPU machine's node says nothing of GPUs).
        ...(this.gpu.ids().length > 0 || this.gpu.devices
          ? {
              gpuSharing: this.gpu.sharing,
              ...(this.gpu.sharingReason ? { gpuSharingReason: this.gpu.sharingReason } : {}),
            }
          : {}),
        ...(this.gpu.devices ? { gpuDevices: this.gpuStatus() } : {}),
      },
    ];
  }

  /** Each real device's health and use, with the device memory each worker's processes hold. */
  gpuStatus(): GpuDeviceStatus[] {
    const workers = new Map<string, { project: string; name: string; worker: number }>();
    for (const g of this.gangs.values())
      for (const w of g.workers)
        workers.set(workerKey(g.ref.uid, g.attempt, w.index), {
          project: g.ref.project,
          name: g.ref.name,
          worker: w.index,
        });
    return gpuStatus(this.gpu, (pid) => {
      const key = workerOfPid(pid);
      return key ? workers.get(key) : undefined;
    });
  }

  /** Loopback ports the kernel says are free now, distinct across the gang. */
  async endpoints(
    _ref: WorkloadRef,
    _attempt: number,
    workers: number,
    ports: number,
  ): Promise<WorkerEndpoint[]> {
    return freeLoopbackEndpoints(workers, ports);
  }

  prepare(spec: Pick<GangSpec, "python">): Preparation {
    return spec.python ? this.environments.prepare(spec.python) : { ready: true };
  }

  async lastActivity(ref: WorkloadRef): Promise<Date | undefined> {
    const gang = this.gangs.get(ref.uid);
    return gang ? this.files.lastActivity(gang) : undefined;
  }

  async start(spec: GangSpec, held?: Promise<unknown>): Promise<void> {
    // Processes run as soon as they exist: the caller's write comes first (Runtime.start).
    await held;
    const prev = this.gangs.get(spec.ref.uid);
    if (prev && prev.attempt >= spec.attempt) return;
    if (prev?.workers.some((w) => !w.exit)) {
      throw new Error(
        `attempt ${prev.attempt} of ${spec.ref.name} still has live workers; stop it before starting attempt ${spec.attempt}`,
      );
    }
    const venv = spec.python ? this.environments.location(spec.python) : undefined;
    // Refusals come before anything is recorded: the controller says why and tries again later.
    this.refuseUnsandboxedNeighbour(spec.ref);
    const sandbox = this.sandbox ? gangSandbox(this.sandbox, spec, venv) : undefined;
    const gang: GangRecord = {
      ref: spec.ref,
      attempt: spec.attempt,
      workers: spec.workers.map((w) => ({ index: w.index })),
    };
    this.gangs.set(spec.ref.uid, gang);
    const dir = this.files.attemptDir(spec.ref.uid, spec.attempt);
    const checkpointDir = this.files.checkpointDir(spec.ref.uid);
    const workDir = this.files.workDir(spec.ref.uid);
    // A persistent home (a Workspace's): made once, kept when the workload is released.
    const persistent = spec.home ? this.files.persistentHome(spec.ref.project, spec.home.name) : undefined;
    // Made by the API when the job was created (never here: an empty one would hide its loss).
    const snapshot = spec.snapshot ? this.files.snapshotDir(spec.ref.project, spec.ref.uid) : undefined;
    // The directories and state.json are made by the spawn helper with the first worker's request:
    // done here, with a worker started every few milliseconds, they were a tenth of the server's
    // time in bench:scheduler (synchronously), or seven event-loop round trips per start (not).
    // Persisted before spawning: a crash in between is found again by the environment marker.
    // A write of the previous attempt's state still in flight goes first.
    await this.writer.settled(spec.ref.uid);
    // The previous attempt's namespace, ending, goes first: this attempt makes its own.
    await this.networkEnds.get(spec.ref.uid);
    // Sandboxed gangs take a namespace made ahead of need (netns.ts: they cannot change it).
    const pooled = !!this.sandbox?.support.privileged;
    const network = this.opts.networks?.join(spec.ref.uid, exposedPorts(spec.workers), pooled);
    // The workload's credential files, under its private HOME (owned by its project's uid when
    // sandboxed: written after the tree is handed over, each file given to that uid).
    const secrets = credentialFiles(spec, homeDir(this.files, spec.ref.uid), sandbox?.owner);
    let prepare: Pick<SpawnRequest, "dirs" | "privateDirs" | "files" | "owned" | "network"> | undefined = {
      dirs: [
        dir,
        checkpointDir,
        // Sandboxed, a working directory the spec names is lent read-only: it must be there.
        ...new Set(spec.workers.map((w) => (sandbox ? workDir : (w.workingDir ?? persistent ?? workDir)))),
        ...(persistent ? [persistent] : []),
        ...(sandbox?.prepare.dirs ?? []),
      ],
      privateDirs: secrets.privateDirs,
      files: [{ path: this.files.stateFile(spec.ref.uid), data: JSON.stringify(gang) }, ...secrets.files],
      ...(sandbox ? { owned: sandbox.prepare.owned } : {}),
      ...(network ? { network: network.setup } : {}),
    };
    // In the gang's network namespace, where there is one: nsenter execs, so the pid is still
    // the shim's. Before the shim unsandboxed; after it, sandboxed (its shim joins cgroups as root).
    const prefix = sandbox ? [] : (network?.argvPrefix ?? []);
    for (const w of spec.workers) {
      const rec = gang.workers.find((r) => r.index === w.index)!;
      // The devices named as the host names them (UUIDs for real GPUs), with MPS for a share.
      const base = {
        ...workerEnv(spec, w, this.files, this.opts.instanceId, venv, !!sandbox),
        ...this.gpu.env(w.allocation),
      };
      const env = network ? network.env(base) : base;
      const key = workerKey(spec.ref.uid, spec.attempt, w.index);
      const exitFile = join(dir, `worker-${w.index}.exit`);
      const run: Pick<SpawnRequest, "command" | "args" | "cwd" | "dirs" | "writes" | "owned"> = sandbox
        ? sandbox.worker(w, exitFile, join(dir, `worker-${w.index}.heartbeat`), env, network?.netns)
        : {
            command: "/bin/sh",
            args: ["-c", SHIM, "loom-worker", exitFile, ...w.command],
            cwd: w.workingDir ?? snapshot ?? persistent ?? workDir,
          };
      if (w.allocation.memoryBytes > 0) this.memoryLimits.set(key, w.allocation.memoryBytes);
      const started = await this.spawner.spawn(
        {
          ...run,
          ...(prefix.length
            ? { command: prefix[0]!, args: [...prefix.slice(1), run.command, ...run.args] }
            : {}),
          env,
          logFile: join(dir, `worker-${w.index}.log`),
          ...prepare,
          dirs: [...(prepare?.dirs ?? []), ...(run.dirs ?? [])],
          owned: [...(prepare?.owned ?? []), ...(run.owned ?? [])],
        },
        (code, signal) => {
          this.children.delete(key);
          this.workerExited(gang, rec, code, signal);
        },
        // The helper died: its workers are watched by polling from now on, as re-adopted ones.
        () => this.children.delete(key),
      );
      prepare = undefined;
      if (started.pid === undefined) {
        rec.exit = {
          code: 127,
          finishTime: this.now().toISOString(),
          message: `could not start the worker: ${started.error ?? "unknown error"}`,
        };
        continue;
      }
      rec.pid = started.pid;
      rec.startTicks = processStartTicks(started.pid);
      rec.startTime = this.now().toISOString();
      this.children.set(key, started);
    }
    if (pooled) this.prewarmNetworks();
    this.writer.saveSoon(gang.ref.uid);
    this.opts.log.info(
      {
        project: spec.ref.project,
        workload: spec.ref.name,
        attempt: spec.attempt,
        pids: gang.workers.map((w) => w.pid),
      },
      "started workers",
    );
    this.notify(gang.ref);
  }

  async observe(ref: WorkloadRef): Promise<GangObservation | undefined> {
    const gang = this.gangs.get(ref.uid);
    if (!gang) return undefined;
    return observation(gang, this.checkpoints.of(ref.uid));
  }

  async stop(ref: WorkloadRef, graceSeconds: number): Promise<boolean> {
    const gang = this.gangs.get(ref.uid);
    if (!gang) return true;
    const alive = gang.workers.filter((w) => !w.exit && w.pid !== undefined);
    if (alive.length === 0) return true;
    const now = this.now();
    if (!gang.stopRequestedAt) {
      gang.stopRequestedAt = now.toISOString();
      this.writer.saveSoon(ref.uid);
      for (const w of alive) signalGroup(w.pid!, "SIGTERM");
      this.opts.log.info(
        { workload: ref.name, attempt: gang.attempt, graceSeconds },
        "sent SIGTERM to workers",
      );
      if (graceSeconds === 0) return this.stop(ref, graceSeconds);
      return false;
    }
    const elapsed = (now.getTime() - Date.parse(gang.stopRequestedAt)) / 1000;
    if (elapsed >= graceSeconds) {
      if (!gang.killSentAt) {
        gang.killSentAt = now.toISOString();
        this.writer.saveSoon(ref.uid);
      }
      for (const w of alive) signalGroup(w.pid!, "SIGKILL");
      this.opts.log.warn(
        { workload: ref.name, attempt: gang.attempt },
        "grace period over: sent SIGKILL to workers",
      );
    }
    return false;
  }

  async release(ref: WorkloadRef): Promise<void> {
    const gang = this.gangs.get(ref.uid);
    if (gang) {
      this.gangs.delete(ref.uid);
      for (const w of gang.workers) {
        const key = workerKey(ref.uid, gang.attempt, w.index);
        this.children.get(key)?.cancel();
        this.children.delete(key);
        this.memoryLimits.delete(key);
        if (!w.exit && w.pid !== undefined) signalGroup(w.pid, "SIGKILL");
        const cgroups = this.sandbox?.support.cgroups;
        if (cgroups) await removeCgroup(cgroups, cgroupName(ref.uid, gang.attempt, w.index));
      }
      if (this.sandbox) await rm(shmDir(ref.uid, gang.attempt), { recursive: true, force: true });
    }
    this.checkpoints.forget(ref.uid);
    // A state.json write in flight would race the removal (it stops, the gang being gone).
    await this.writer.settled(ref.uid);
    rmSync(join(this.files.root, ref.uid), { recursive: true, force: true });
    // A job's snapshot of a workspace's home (spec.fromWorkspace) goes with it.
    rmSync(this.files.snapshotDir(ref.project, ref.uid), { recursive: true, force: true });
    await this.endNetwork(ref.uid, gang);
  }

  async list(): Promise<WorkloadRef[]> {
    return [...this.gangs.values()].map((g) => g.ref);
  }

  async logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable> {
    const gang = this.gangs.get(ref.uid);
    const attempt = opts.attempt ?? gang?.attempt;
    const file =
      attempt === undefined
        ? undefined
        : join(this.files.attemptDir(ref.uid, attempt), `worker-${opts.worker}.log`);
    const finished = () => {
      const g = this.gangs.get(ref.uid);
      if (!g || g.attempt !== attempt) return true;
      const w = g.workers.find((x) => x.index === opts.worker);
      return !w || !!w.exit;
    };
    return tailFile(file, { follow: !!opts.follow, finished });
  }

  /** The ports the worker's processes listen on, read from /proc (listening.ts). */
  async listeningPorts(ref: WorkloadRef, worker?: number): Promise<number[]> {
    return listeningPortsOf(this.livePids(ref, worker));
  }

  /** Dials a port the worker listens on: on loopback, or inside the gang's own network. */
  async connectPort(ref: WorkloadRef, worker: number, port: number): Promise<Duplex> {
    const pids = this.livePids(ref, worker);
    if (pids.length === 0) throw new Error(`worker ${worker} of ${ref.kind} ${ref.name} is not running`);
    const at = dialAddress(workloadListeners(pids), port);
    if (!at) throw new Error(`worker ${worker} of ${ref.kind} ${ref.name} does not listen on port ${port}`);
    return hasOwnNetwork(at.pid) ? this.dialer.dial(at.pid, at.host, port) : dialHere(at.host, port);
  }

  /** Embedded, a project is only a name: nothing to create on this machine. */
  async ensureProject(_project: ProjectInfo): Promise<void> {}

  async removeProject(_name: string): Promise<void> {}

  onChange(listener: (ref: WorkloadRef) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    clearInterval(this.poll);
    // Workers keep running: the next server on this data dir re-adopts them.
    for (const child of this.children.values()) child.cancel();
    this.children.clear();
    this.dialer.close();
    // The pool's idle namespaces go (a next server does not reuse them); gangs' stay with them.
    const idle = this.opts.networks?.drain() ?? [];
    await Promise.all(idle.map((t) => this.spawner.teardown(t).catch(() => undefined)));
    this.spawner.close();
  }

  /** Keeps a few namespaces made ahead of need, in the spawn helper beside its spawns. */
  private prewarmNetworks(): void {
    for (const n of this.opts.networks?.prewarm() ?? []) {
      this.spawner
        .prewarm(n)
        .catch((err: unknown) => this.opts.log.warn({ err }, "could not make a network namespace ahead"));
    }
  }

  private workerExited(
    gang: GangRecord,
    rec: WorkerRecord,
    code: number | undefined,
    signal: string | undefined,
  ): void {
    // A released workload is gone: its late exits must not write its state back.
    if (rec.exit || this.gangs.get(gang.ref.uid) !== gang) return;
    const cgroups = this.sandbox?.support.cgroups;
    if (!cgroups) {
      this.recordExit(gang, rec, code, signal, false);
      return;
    }
    // The worker's cgroup says whether the kernel killed it for memory; it goes once read.
    const name = cgroupName(gang.ref.uid, gang.attempt, rec.index);
    oomKilled(cgroups, name).then(
      (oom) => {
        this.recordExit(gang, rec, code, signal, oom);
        return removeCgroup(cgroups, name);
      },
      () => this.recordExit(gang, rec, code, signal, false),
    );
  }

  private recordExit(
    gang: GangRecord,
    rec: WorkerRecord,
    code: number | undefined,
    signal: string | undefined,
    oom: boolean,
  ): void {
    if (rec.exit || this.gangs.get(gang.ref.uid) !== gang) return;
    const recorded = this.files.readExitFile(gang, rec.index);
    rec.exit = exitOf(recorded, code, signal, !!gang.killSentAt, this.now().toISOString());
    if (oom) {
      rec.exit.message = `killed by the kernel: out of memory at the worker's limit (resources.memory, ${mib(
        this.memoryLimitOf(gang, rec.index),
      )}); ask for more memory or use less`;
    }
    this.memoryLimits.delete(workerKey(gang.ref.uid, gang.attempt, rec.index));
    // Anything the worker left behind in its process group goes with it, as in a container.
    if (rec.pid !== undefined) signalGroup(rec.pid, "SIGKILL");
    if (this.sandbox && gang.workers.every((w) => w.exit)) {
      rm(shmDir(gang.ref.uid, gang.attempt), { recursive: true, force: true }).catch(() => undefined);
    }
    this.writer.saveSoon(gang.ref.uid);
    this.opts.log.info(
      { workload: gang.ref.name, attempt: gang.attempt, worker: rec.index, ...rec.exit },
      "worker exited",
    );
    // The gang has ended: its network goes now, not when the workload is deleted.
    if (gang.workers.every((w) => w.exit)) void this.endNetwork(gang.ref.uid, gang);
    this.notify(gang.ref);
  }

  /** The memory limit a worker ran with, for the OOM message (read back from its cgroup's plan). */
  private memoryLimitOf(gang: GangRecord, index: number): number | undefined {
    return this.memoryLimits.get(workerKey(gang.ref.uid, gang.attempt, index));
  }

  /**
   * Without a sandbox, every workload runs as the server's user and could read every other's
   * files and Loom's own: only one project's workloads run at a time unless the operator said
   * --insecure-shared-user.
   */
  private refuseUnsandboxedNeighbour(ref: WorkloadRef): void {
    // Unset (unit tests, embedding callers that isolate otherwise): no sandbox and no refusal.
    if (this.sandbox || !this.opts.sandbox || this.opts.insecureSharedUser) return;
    const other = [...this.gangs.values()].find((g) => g.ref.project !== ref.project);
    if (!other) return;
    throw new Error(
      `this machine cannot sandbox workloads (${this.opts.sandbox?.unavailable ?? "sandbox off"}), so workloads of project ${ref.project} do not run beside project ${other.ref.project}'s (${other.ref.kind} ${other.ref.name}); delete those, or restart loom up with --insecure-shared-user to run every project as one user`,
    );
  }

  /** Polls re-adopted workers (not spawned here); a live gang's new checkpoint wakes its job. */
  private watchGangs(): void {
    for (const gang of this.gangs.values()) {
      if (gang.workers.some((w) => !w.exit) && this.checkpoints.moved(gang.ref.uid)) this.notify(gang.ref);
      for (const w of gang.workers) {
        if (
          w.exit ||
          w.pid === undefined ||
          this.children.has(workerKey(gang.ref.uid, gang.attempt, w.index))
        )
          continue;
        if (w.startTicks !== undefined && isSameProcessAlive(w.pid, w.startTicks)) continue;
        this.workerExited(gang, w, undefined, undefined);
      }
    }
  }

  /**
   * Removes a gang's network namespace (in the spawn helper); one removal at a time per gang. A
   * pooled one goes back to the pool once the gang's cgroups are empty (netsetup.ts: every
   * process of its sandboxes is in them); Loom's own dialer in it ends first.
   */
  private endNetwork(uid: string, gang?: GangRecord): Promise<void> {
    const planned = this.opts.networks?.teardown(uid);
    if (!planned) return Promise.resolve();
    this.dialer.forget(planned.file);
    const cgroups = this.sandbox?.support.cgroups;
    const teardown =
      planned.recycle && cgroups && gang
        ? {
            ...planned,
            cgroups: gang.workers.map((w) => processList(cgroups, cgroupName(uid, gang.attempt, w.index))),
          }
        : planned;
    const prev = this.networkEnds.get(uid) ?? Promise.resolve();
    const done = prev
      .then(() => this.spawner.teardown(teardown))
      .then(() => this.opts.networks?.ended(teardown))
      .catch((err: unknown) =>
        this.opts.log.warn({ err, uid }, "could not remove a gang's network namespace"),
      )
      .finally(() => {
        if (this.networkEnds.get(uid) === done) this.networkEnds.delete(uid);
      });
    this.networkEnds.set(uid, done);
    return done;
  }

  /** Pids of the workload's live workers (one worker's, when given). */
  private livePids(ref: WorkloadRef, worker?: number): number[] {
    const gang = this.gangs.get(ref.uid);
    if (!gang) return [];
    return gang.workers
      .filter((w) => !w.exit && w.pid !== undefined && (worker === undefined || w.index === worker))
      .map((w) => w.pid!);
  }

  private notify(ref: WorkloadRef): void {
    for (const l of this.listeners) l(ref);
  }
}

function mib(bytes: number | undefined): string {
  return bytes === undefined ? "no limit recorded" : `${Math.round(bytes / 2 ** 20)} MiB`;
}

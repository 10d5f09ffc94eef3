import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { gpuShareEnv } from "../../api/env.js";
import type {
  GangObservation,
  GangSpec,
  LogOptions,
  MpiHost,
  Preparation,
  ProjectInfo,
  Runtime,
  WorkerEndpoint,
  WorkerObservation,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { NodeCapacity } from "../../ports/scheduler.js";
import { findProcessesByEnv, isSameProcessAlive, processStartTicks, signalGroup } from "./procfs.js";
import { PythonEnvironments } from "./pyenv.js";
import { Spawner, type SpawnRequest } from "./spawner.js";
import { tailFile } from "./tail.js";

/**
 * Runs each worker under /bin/sh as a tiny shim that records the exit code to a file. The shim
 * outlives the server (it is its own process group, writing straight to log files), so an exit
 * that happens while the server is down is still known when it comes back. `trap :` (not
 * `trap ''`) keeps SIGTERM's default action for the worker itself while the shim waits for it.
 * The code is written straight to the file with the shell's builtin printf (one write of a few
 * bytes, read only once the shim has exited): a temp file and `mv` cost a fork per worker.
 */
const SHIM = 'f=$1; shift; trap : TERM INT; "$@"; c=$?; printf "%s" "$c" > "$f"; exit $c';

const INSTANCE_ENV = "LOOM_INSTANCE";
const WORKER_KEY_ENV = "LOOM_WORKER_KEY";

interface WorkerRecord {
  index: number;
  pid?: number;
  startTicks?: number;
  startTime?: string;
  exit?: { code?: number; signal?: string; finishTime: string; message?: string };
}

/** What the runtime persists per workload (state.json), enough to re-adopt after a crash. */
interface GangRecord {
  ref: WorkloadRef;
  attempt: number;
  workers: WorkerRecord[];
  stopRequestedAt?: string;
  killSentAt?: string;
}

export interface LocalRuntimeOptions {
  dataDir: string;
  /** Identifies this installation's processes among others on the machine (tests run several). */
  instanceId: string;
  cpuMillis: number;
  memoryBytes: number;
  gpus: string[];
  log: Logger;
  /** How often processes not spawned by this server (re-adopted ones) are checked. */
  pollMs?: number;
  /** Where built Python environments are cached (default: under the data dir). */
  environmentsDir?: string;
  now?: () => Date;
}

/** The Runtime port on this machine: workers are supervised process groups. */
export class LocalRuntime implements Runtime {
  private readonly gangs = new Map<string, GangRecord>();
  private readonly listeners: ((ref: WorkloadRef) => void)[] = [];
  /** Workers whose exit the spawn helper reports, by worker key; cancel stops listening. */
  private readonly children = new Map<string, { cancel: () => void }>();
  private readonly spawner: Spawner;
  private readonly poll: NodeJS.Timeout;
  private readonly now: () => Date;
  private readonly nodeName = hostname();
  private readonly environments: PythonEnvironments;

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
    this.environments = new PythonEnvironments(
      opts.environmentsDir ?? join(opts.dataDir, "environments"),
      opts.log,
    );
    this.spawner = new Spawner(opts.log);
    mkdirSync(this.workloadsDir(), { recursive: true });
    this.recover();
    this.poll = setInterval(() => this.checkAdopted(), opts.pollMs ?? 500);
    this.poll.unref();
  }

  async nodes(): Promise<NodeCapacity[]> {
    return [
      {
        name: this.nodeName,
        cpuMillis: this.opts.cpuMillis,
        memoryBytes: this.opts.memoryBytes,
        gpus: this.opts.gpus,
      },
    ];
  }

  /** Loopback ports the kernel says are free now, distinct across the gang. */
  async endpoints(
    _ref: WorkloadRef,
    _attempt: number,
    workers: number,
    ports: number,
  ): Promise<WorkerEndpoint[]> {
    const servers: Server[] = [];
    try {
      const taken: number[] = [];
      for (let i = 0; i < workers * ports; i++) {
        const server = createServer();
        servers.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve());
        });
        taken.push((server.address() as { port: number }).port);
      }
      return Array.from({ length: workers }, (_, i) => ({
        host: "127.0.0.1",
        ports: taken.slice(i * ports, (i + 1) * ports),
      }));
    } finally {
      await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    }
  }

  prepare(spec: Pick<GangSpec, "python">): Preparation {
    return spec.python ? this.environments.prepare(spec.python) : { ready: true };
  }

  async lastActivity(ref: WorkloadRef): Promise<Date | undefined> {
    const gang = this.gangs.get(ref.uid);
    if (!gang) return undefined;
    const dir = this.attemptDir(ref.uid, gang.attempt);
    let latest = 0;
    for (const w of gang.workers) {
      for (const file of [`worker-${w.index}.log`, `worker-${w.index}.heartbeat`]) {
        try {
          latest = Math.max(latest, statSync(join(dir, file)).mtimeMs);
        } catch {
          // not written yet
        }
      }
    }
    return latest > 0 ? new Date(latest) : undefined;
  }

  async start(spec: GangSpec): Promise<void> {
    const prev = this.gangs.get(spec.ref.uid);
    if (prev && prev.attempt >= spec.attempt) return;
    if (prev?.workers.some((w) => !w.exit)) {
      throw new Error(
        `attempt ${prev.attempt} of ${spec.ref.name} still has live workers; stop it before starting attempt ${spec.attempt}`,
      );
    }
    const gang: GangRecord = {
      ref: spec.ref,
      attempt: spec.attempt,
      workers: spec.workers.map((w) => ({ index: w.index })),
    };
    this.gangs.set(spec.ref.uid, gang);
    const dir = this.attemptDir(spec.ref.uid, spec.attempt);
    const checkpointDir = this.checkpointDir(spec.ref.uid);
    const workDir = this.workDir(spec.ref.uid);
    // The directories and state.json are made by the spawn helper with the first worker's request:
    // done here, with a worker started every few milliseconds, they were a tenth of the server's
    // time in bench:scheduler (synchronously), or seven event-loop round trips per start (not).
    // Persisted before spawning: a crash in between is found again by the environment marker.
    // A write of the previous attempt's state still in flight goes first.
    await this.saves.get(spec.ref.uid)?.done.catch(() => undefined);
    let prepare: Pick<SpawnRequest, "dirs" | "files"> | undefined = {
      dirs: [dir, checkpointDir, ...new Set(spec.workers.map((w) => w.workingDir ?? workDir))],
      files: [{ path: this.stateFile(spec.ref.uid), data: JSON.stringify(gang) }],
    };
    const venv = spec.python ? this.environments.location(spec.python) : undefined;
    for (const w of spec.workers) {
      const rec = gang.workers.find((r) => r.index === w.index)!;
      const base = stringEnv(process.env);
      const env: Record<string, string> = {
        ...base,
        // The job's own environment first on PATH: `python3` is its interpreter.
        ...(venv ? { VIRTUAL_ENV: venv, PATH: `${join(venv, "bin")}:${base.PATH ?? "/usr/bin:/bin"}` } : {}),
        ...w.env,
        LOOM_WORKLOAD_DIR: workDir,
        LOOM_CHECKPOINT_DIR: checkpointDir,
        ...(spec.initCheckpoint
          ? { LOOM_INIT_CHECKPOINT_DIR: this.checkpointDir(spec.initCheckpoint.ref.uid) }
          : {}),
        LOOM_HEARTBEAT_FILE: join(dir, `worker-${w.index}.heartbeat`),
        LOOM_ATTEMPT_DIR: dir,
        // Ray keeps sockets in its temp dir, and socket paths are short (108 bytes).
        LOOM_RAY_TEMP_DIR: `/tmp/loom-ray-${spec.ref.uid.slice(0, 8)}-a${spec.attempt}-w${w.index}`,
        CUDA_VISIBLE_DEVICES: w.allocation.gpus.join(","),
        ...gpuShareEnv(w.allocation.gpuShare),
        [INSTANCE_ENV]: this.opts.instanceId,
        [WORKER_KEY_ENV]: workerKey(spec.ref.uid, spec.attempt, w.index),
      };
      const key = workerKey(spec.ref.uid, spec.attempt, w.index);
      const started = await this.spawner.spawn(
        {
          command: "/bin/sh",
          args: ["-c", SHIM, "loom-worker", join(dir, `worker-${w.index}.exit`), ...w.command],
          cwd: w.workingDir ?? workDir,
          env,
          logFile: join(dir, `worker-${w.index}.log`),
          ...prepare,
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
          message: `could not start /bin/sh: ${started.error ?? "unknown error"}`,
        };
        continue;
      }
      rec.pid = started.pid;
      rec.startTicks = processStartTicks(started.pid);
      rec.startTime = this.now().toISOString();
      this.children.set(key, started);
    }
    this.saveSoon(gang.ref.uid);
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
    const checkpoint = this.checkpointReport(ref.uid);
    const workers: WorkerObservation[] = gang.workers.map((w) => {
      const base = { index: w.index, pid: w.pid, startTime: w.startTime };
      if (!w.exit) return { ...base, state: "Running" };
      const failed = w.exit.code !== 0;
      return {
        ...base,
        state: w.exit.code === undefined && !w.exit.signal ? "Unknown" : failed ? "Failed" : "Succeeded",
        exitCode: w.exit.code,
        signal: w.exit.signal,
        finishTime: w.exit.finishTime,
        message: w.exit.message,
      };
    });
    return {
      attempt: gang.attempt,
      workers,
      stopping: !!gang.stopRequestedAt && gang.workers.some((w) => !w.exit),
      ...(checkpoint ? { checkpoint } : {}),
    };
  }

  /** What the job reported of its latest checkpoint in $LOOM_CHECKPOINT_DIR/loom.json, by mtime. */
  private readonly reports = new Map<string, { mtimeMs: number; report: { time: string; step?: number } }>();

  private checkpointReport(uid: string): { time: string; step?: number } | undefined {
    const file = join(this.checkpointDir(uid), "loom.json");
    let mtimeMs: number;
    try {
      // Most jobs never checkpoint: no exception (and its stack trace) per observation for that.
      const stat = statSync(file, { throwIfNoEntry: false });
      if (!stat) return undefined;
      mtimeMs = stat.mtimeMs;
    } catch {
      return undefined;
    }
    const known = this.reports.get(uid);
    if (known?.mtimeMs === mtimeMs) return known.report;
    const report: { time: string; step?: number } = { time: new Date(mtimeMs).toISOString() };
    try {
      const step = (JSON.parse(readFileSync(file, "utf8")) as { step?: unknown }).step;
      if (typeof step === "number" && Number.isFinite(step)) report.step = step;
    } catch {
      // Being rewritten, or not JSON: the time alone still says when it checkpointed.
    }
    this.reports.set(uid, { mtimeMs, report });
    return report;
  }

  async stop(ref: WorkloadRef, graceSeconds: number): Promise<boolean> {
    const gang = this.gangs.get(ref.uid);
    if (!gang) return true;
    const alive = gang.workers.filter((w) => !w.exit && w.pid !== undefined);
    if (alive.length === 0) return true;
    const now = this.now();
    if (!gang.stopRequestedAt) {
      gang.stopRequestedAt = now.toISOString();
      this.saveSoon(ref.uid);
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
        this.saveSoon(ref.uid);
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
        if (!w.exit && w.pid !== undefined) signalGroup(w.pid, "SIGKILL");
      }
    }
    this.reports.delete(ref.uid);
    // A state.json write in flight would race the removal (it stops, the gang being gone).
    await this.saves.get(ref.uid)?.done.catch(() => undefined);
    rmSync(join(this.workloadsDir(), ref.uid), { recursive: true, force: true });
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
        : join(this.attemptDir(ref.uid, attempt), `worker-${opts.worker}.log`);
    const finished = () => {
      const g = this.gangs.get(ref.uid);
      if (!g || g.attempt !== attempt) return true;
      const w = g.workers.find((x) => x.index === opts.worker);
      return !w || !!w.exit;
    };
    return tailFile(file, { follow: !!opts.follow, finished });
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
    this.spawner.close();
  }

  private workerExited(
    gang: GangRecord,
    rec: WorkerRecord,
    code: number | undefined,
    signal: string | undefined,
  ): void {
    // A released workload is gone: its late exits must not write its state back.
    if (rec.exit || this.gangs.get(gang.ref.uid) !== gang) return;
    const recorded = this.readExitFile(gang, rec.index);
    rec.exit = { finishTime: this.now().toISOString() };
    if (recorded !== undefined) {
      rec.exit.code = recorded;
      if (recorded > 128) rec.exit.signal = signalName(recorded - 128);
    } else if (code !== undefined || signal !== undefined) {
      rec.exit.code = code;
      rec.exit.signal = signal;
    } else if (gang.killSentAt) {
      rec.exit.signal = "SIGKILL";
      rec.exit.code = 137;
    } else {
      rec.exit.message = "the worker ended while the server was down and left no exit status";
    }
    // Anything the worker left behind in its process group goes with it, as in a container.
    if (rec.pid !== undefined) signalGroup(rec.pid, "SIGKILL");
    this.saveSoon(gang.ref.uid);
    this.opts.log.info(
      { workload: gang.ref.name, attempt: gang.attempt, worker: rec.index, ...rec.exit },
      "worker exited",
    );
    this.notify(gang.ref);
  }

  private readExitFile(gang: GangRecord, index: number): number | undefined {
    try {
      const text = readFileSync(
        join(this.attemptDir(gang.ref.uid, gang.attempt), `worker-${index}.exit`),
        "utf8",
      ).trim();
      const n = Number(text);
      return text !== "" && Number.isInteger(n) ? n : undefined;
    } catch {
      return undefined;
    }
  }

  /** Processes this server did not spawn (re-adopted after a restart) are watched by polling. */
  private checkAdopted(): void {
    for (const gang of this.gangs.values()) {
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
   * Re-reads every workload's state after a (re)start: live workers are adopted, ones that ended
   * meanwhile get their recorded exit code, and processes of this installation that no state
   * accounts for (a crash between spawn and persist, a duplicate) are killed.
   */
  private recover(): void {
    const running = findProcessesByEnv(INSTANCE_ENV, this.opts.instanceId);
    const byKey = new Map<string, number[]>();
    for (const p of running) {
      const key = p.env.get(WORKER_KEY_ENV);
      if (!key) continue;
      // Only the group leader (the shim) counts; its children share the key.
      if (processGroupOf(p.pid) !== p.pid) continue;
      byKey.set(key, [...(byKey.get(key) ?? []), p.pid]);
    }
    const claimed = new Set<number>();
    for (const uid of readdirSync(this.workloadsDir())) {
      const file = join(this.workloadsDir(), uid, "state.json");
      if (!existsSync(file)) continue;
      let gang: GangRecord;
      try {
        gang = JSON.parse(readFileSync(file, "utf8")) as GangRecord;
      } catch (err) {
        this.opts.log.error({ err, file }, "unreadable runtime state; ignoring it");
        continue;
      }
      this.gangs.set(uid, gang);
      for (const w of gang.workers) {
        if (w.exit) continue;
        if (w.pid === undefined) {
          const found = byKey.get(workerKey(uid, gang.attempt, w.index))?.[0];
          if (found !== undefined) {
            w.pid = found;
            w.startTicks = processStartTicks(found);
            w.startTime = this.now().toISOString();
          }
        }
        if (w.pid !== undefined && w.startTicks !== undefined && isSameProcessAlive(w.pid, w.startTicks)) {
          claimed.add(w.pid);
          continue;
        }
        const code = this.readExitFile(gang, w.index);
        w.exit =
          code !== undefined
            ? {
                code,
                finishTime: this.now().toISOString(),
                ...(code > 128 ? { signal: signalName(code - 128) } : {}),
              }
            : gang.killSentAt
              ? { code: 137, signal: "SIGKILL", finishTime: this.now().toISOString() }
              : {
                  finishTime: this.now().toISOString(),
                  message: "the worker ended while the server was down and left no exit status",
                };
      }
      this.persist(gang);
    }
    for (const pids of byKey.values()) {
      for (const pid of pids) {
        if (claimed.has(pid)) continue;
        this.opts.log.warn({ pid }, "killing a worker process no workload accounts for");
        signalGroup(pid, "SIGKILL");
      }
    }
    const adopted = [...this.gangs.values()].flatMap((g) =>
      g.workers.filter((w) => !w.exit).map((w) => w.pid),
    );
    if (adopted.length > 0) this.opts.log.info({ pids: adopted }, "re-adopted running workers");
  }

  /** state.json writes per workload: one at a time, each writing the latest state. */
  private readonly saves = new Map<string, { dirty: boolean; done: Promise<void> }>();

  /**
   * Writes the workload's current state to state.json (write and rename), off the event loop.
   * Resolves once a write that started after this call has finished.
   */
  private save(uid: string): Promise<void> {
    const running = this.saves.get(uid);
    if (running) {
      running.dirty = true;
      return running.done;
    }
    const entry = { dirty: true, done: Promise.resolve() };
    this.saves.set(uid, entry);
    entry.done = (async () => {
      try {
        while (entry.dirty) {
          entry.dirty = false;
          const gang = this.gangs.get(uid);
          if (!gang) return; // released: its directory goes
          const file = this.stateFile(uid);
          await writeFile(`${file}.tmp`, JSON.stringify(gang));
          await rename(`${file}.tmp`, file);
        }
      } finally {
        this.saves.delete(uid);
      }
    })();
    return entry.done;
  }

  /** save() without waiting: recovery after a crash also finds pids and exits without it. */
  private saveSoon(uid: string): void {
    this.save(uid).catch((err: unknown) =>
      this.opts.log.error({ err, uid }, "could not write the workload's state.json"),
    );
  }

  /** Synchronous, for recovery at start only. */
  private persist(gang: GangRecord): void {
    const dir = join(this.workloadsDir(), gang.ref.uid);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "state.json");
    writeFileSync(`${file}.tmp`, JSON.stringify(gang));
    renameSync(`${file}.tmp`, file);
  }

  private notify(ref: WorkloadRef): void {
    for (const l of this.listeners) l(ref);
  }

  private stateFile(uid: string): string {
    return join(this.workloadsDir(), uid, "state.json");
  }

  private workloadsDir(): string {
    return join(this.opts.dataDir, "workloads");
  }

  /** Outlives attempts (and the workers' stops): where a job checkpoints and resumes from. */
  private checkpointDir(uid: string): string {
    return join(this.workloadsDir(), uid, "checkpoint");
  }

  private workDir(uid: string): string {
    return join(this.workloadsDir(), uid, "work");
  }

  private attemptDir(uid: string, attempt: number): string {
    return join(this.workloadsDir(), uid, `attempt-${attempt}`);
  }
}

function workerKey(uid: string, attempt: number, index: number): string {
  return `${uid}/${attempt}/${index}`;
}

function processGroupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
  } catch {
    return undefined;
  }
}

function stringEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && k !== "LOOM_TOKEN") out[k] = v;
  return out;
}

const SIGNALS: Record<number, string> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  6: "SIGABRT",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  15: "SIGTERM",
};

function signalName(n: number): string {
  return SIGNALS[n] ?? `signal ${n}`;
}

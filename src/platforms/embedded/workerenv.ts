import { dirname, isAbsolute, join } from "node:path";
import { gpuShareEnv } from "../../api/env.js";
import type { GangSpec } from "../../ports/runtime.js";
import type { WorkloadFiles } from "./workloadfiles.js";

/**
 * Runs each worker under /bin/sh as a tiny shim that records the exit code to a file. The shim
 * outlives the server (it is its own process group, writing straight to log files), so an exit
 * that happens while the server is down is still known when it comes back. `trap :` (not
 * `trap ''`) keeps SIGTERM's default action for the worker itself while the shim waits for it.
 * The code is written straight to the file with the shell's builtin printf (one write of a few
 * bytes, read only once the shim has exited): a temp file and `mv` cost a fork per worker.
 */
export const SHIM = 'f=$1; shift; trap : TERM INT; "$@"; c=$?; printf "%s" "$c" > "$f"; exit $c';

/** Marks this installation's processes among others on the machine (found again after a restart). */
export const INSTANCE_ENV = "LOOM_INSTANCE";
/** Which worker of which attempt a process is (see workerKey). */
export const WORKER_KEY_ENV = "LOOM_WORKER_KEY";

/**
 * The workload's private HOME, where its credential files are (0700, beside its other files,
 * removed with them): the mlflow client reads ~/.mlflow/credentials.
 */
export function homeDir(files: WorkloadFiles, uid: string): string {
  return join(files.root, uid, "home");
}

/**
 * The workers' secret files (WorkerSpec.files; the same for every worker of a workload), for
 * the spawn helper: their directories under the private HOME, made 0700, then the files.
 */
export function credentialFiles(
  spec: GangSpec,
  home: string,
  owner?: number,
): { privateDirs: string[]; files: { path: string; data: string; mode: number; owner?: number }[] } {
  const byPath = new Map<string, { path: string; data: string; mode: number; owner?: number }>();
  for (const w of spec.workers)
    for (const f of w.files ?? []) {
      const path = join(home, f.path);
      if (isAbsolute(f.path) || !path.startsWith(`${home}/`))
        throw new Error(`secret file ${f.path} must be a relative path inside the workload's HOME`);
      byPath.set(f.path, { ...f, path, ...(owner !== undefined ? { owner } : {}) });
    }
  if (byPath.size === 0) return { privateDirs: [], files: [] };
  const files = [...byPath.values()];
  return { privateDirs: [home, ...new Set(files.map((f) => dirname(f.path)))], files };
}

/** `$(HOME)` in a worker's env values (WorkerSpec.files), as Kubernetes expands `$(VAR)`. */
function expandHome(env: Record<string, string>, home: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) out[k] = v.replaceAll("$(HOME)", home);
  return out;
}

/** A worker's identity across restarts: workload uid, attempt, index. */
export function workerKey(uid: string, attempt: number, index: number): string {
  return `${uid}/${attempt}/${index}`;
}

/**
 * A worker's environment: the server's own (less its token), the job's Python environment
 * first on PATH, the worker's env (HOME its private one when it has credential files, unless it
 * has a persistent home), and the
 * LOOM_* paths, devices and markers the runtime sets.
 */
export function workerEnv(
  spec: GangSpec,
  w: GangSpec["workers"][number],
  files: WorkloadFiles,
  instanceId: string,
  venv: string | undefined,
  sandboxed = false,
): Record<string, string> {
  const dir = files.attemptDir(spec.ref.uid, spec.attempt);
  const base = stringEnv(process.env, sandboxed);
  const home = w.files?.length ? homeDir(files, spec.ref.uid) : undefined;
  // A persistent home (a Workspace's) is HOME: editors keep their settings there across stops.
  const persistent = spec.home ? files.persistentHome(spec.ref.project, spec.home.name) : undefined;
  return {
    ...base,
    // Sandboxed, the server's HOME and TMPDIR are not there: the workload's own are.
    ...(sandboxed ? { HOME: files.workDir(spec.ref.uid), TMPDIR: "/tmp" } : {}),
    // The job's own environment first on PATH: `python3` is its interpreter.
    ...(venv ? { VIRTUAL_ENV: venv, PATH: `${join(venv, "bin")}:${base.PATH ?? "/usr/bin:/bin"}` } : {}),
    ...(home ? { ...expandHome(w.env, home), HOME: home } : w.env),
    // A Workspace given credential files (its model key) keeps its persistent HOME; $(HOME) in its
    // env still names the private directory where those files are.
    ...(persistent ? { HOME: persistent } : {}),
    LOOM_WORKLOAD_DIR: files.workDir(spec.ref.uid),
    LOOM_CHECKPOINT_DIR: files.checkpointDir(spec.ref.uid),
    ...(spec.initCheckpoint
      ? { LOOM_INIT_CHECKPOINT_DIR: files.checkpointDir(spec.initCheckpoint.ref.uid) }
      : {}),
    LOOM_HEARTBEAT_FILE: join(dir, `worker-${w.index}.heartbeat`),
    LOOM_ATTEMPT_DIR: dir,
    // Ray keeps sockets in its temp dir, and socket paths are short (108 bytes).
    LOOM_RAY_TEMP_DIR: `/tmp/loom-ray-${spec.ref.uid.slice(0, 8)}-a${spec.attempt}-w${w.index}`,
    CUDA_VISIBLE_DEVICES: w.allocation.gpus.join(","),
    ...gpuShareEnv(w.allocation.gpuShare),
    [INSTANCE_ENV]: instanceId,
    [WORKER_KEY_ENV]: workerKey(spec.ref.uid, spec.attempt, w.index),
  };
}

/**
 * The server's variables a sandboxed workload keeps: locale, search paths, proxies, GPU runtime
 * settings. The rest (the operator's credentials, Loom's own settings) are not the workload's.
 */
const SANDBOX_KEEPS =
  /^(PATH|LANG|LANGUAGE|TZ|TERM|LD_LIBRARY_PATH|PYTHONUNBUFFERED|https?_proxy|no_proxy|HTTPS?_PROXY|NO_PROXY)$|^(LC_|NVIDIA_|CUDA_|NCCL_)/;

function stringEnv(env: NodeJS.ProcessEnv, sandboxed: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || k === "LOOM_TOKEN") continue;
    if (sandboxed && !SANDBOX_KEEPS.test(k)) continue;
    out[k] = v;
  }
  return out;
}

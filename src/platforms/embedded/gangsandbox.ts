import { readFileSync, realpathSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import type { GangSpec } from "../../ports/runtime.js";
import { type CgroupPlan, cgroupPlan } from "./cgroups.js";
import {
  launcherArgv,
  type ProjectIds,
  type SandboxSpec,
  type SandboxSupport,
  sandboxedArgv,
} from "./sandbox.js";
import type { SpawnRequest } from "./spawner.js";
import { homeDir } from "./workerenv.js";
import type { WorkloadFiles } from "./workloadfiles.js";

/**
 * What a gang's workers are granted in the sandbox, and the spawn requests that start them
 * there. The runtime's side of sandbox.ts: which dirs are a workload's, which are only lent to
 * it read-only, which uid it runs as.
 */

/**
 * Where there is no launcher (sandbox.ts): joins the worker's cgroups (as root, before anything drops to the project's uid), has bwrap
 * ignore SIGTERM (`trap ''`, see sandboxedArgv), then becomes the sandbox: no fork and no shell
 * waiting beside it. bwrap itself records the workload's exit code in the exit file (fd 9,
 * `--json-status-fd`: `{ "exit-code": N }`, 128 + N for a signal, as a shell's `$?`) and exits
 * with it, so the spawn helper sees the code too.
 */
export const SANDBOX_SHIM =
  'f=$1; g=$2; shift 2; for p in $g; do echo 0 > "$p" || { printf 125 > "$f"; exit 125; }; done; trap "" TERM INT; exec "$@" 9>"$f"';

/** The fd the shim opens on the exit file, for bwrap's `--json-status-fd`. */
export const STATUS_FD = 9;

export interface GangSandboxDeps {
  support: SandboxSupport;
  files: WorkloadFiles;
  ids: ProjectIds;
  dataDir: string;
  /** Where Loom builds Python environments (lent read-only; the rest of the data dir is not). */
  environmentsDir: string;
  /** The GPUs' /dev entries a worker holding these devices is lent (its own and the driver's shared nodes only). */
  devices: (gpus: string[]) => string[];
  /** Directories a worker with this allocation must reach read-write (its GPU's MPS pipes). */
  gpuBinds?: (a: GangSpec["workers"][number]["allocation"]) => string[];
  /** Lent read-only to every workload (Loom's built-in runtimes' code). */
  lend: string[];
}

/** Whether `inner` is `outer` or inside it. */
function within(inner: string, outer: string): boolean {
  const r = relative(outer, inner);
  return r === "" || (!r.startsWith("..") && !isAbsolute(r));
}

/** The path with every link resolved where it exists (the kernel binds what the links name). */
function real(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path; // missing: nothing to follow; the workload says so itself
  }
}

/**
 * A path the spec asks to lend the workload (its working directory, its venv): refused when it
 * holds or is inside the data dir, where other workloads' files and Loom's secrets are, or is a
 * kernel file system. Checked after links are followed: `/proc/1/root` or a link to the data dir
 * is the directory it names, and the resolved path is what gets bound.
 */
function lendable(deps: GangSandboxDeps, path: string, field: string): string {
  const abs = real(resolve(path));
  const dataDir = real(deps.dataDir);
  const environmentsDir = real(deps.environmentsDir);
  // One of Loom's own built environments (under the data dir by default) is lent as it is.
  if (abs !== environmentsDir && within(abs, environmentsDir)) return abs;
  if (["/proc", "/sys", "/dev"].some((kernel) => within(abs, kernel))) {
    throw new Error(
      `${field} ${path} is in ${abs.split("/").slice(0, 2).join("/")}, the kernel's view of this machine's processes and devices; a sandboxed workload may not be lent it: use a directory of its own`,
    );
  }
  if (within(abs, dataDir) || within(dataDir, abs)) {
    throw new Error(
      `${field} ${path}${abs === resolve(path) ? "" : ` (${abs})`} is inside Loom's data dir or holds it (${deps.dataDir}); a sandboxed workload may not see it: use a directory of its own`,
    );
  }
  return abs;
}

/**
 * A lent directory must be one the project's uid can read: binding it does not change its mode
 * (a 0700 directory of root's stays closed). Its parents need not be: inside the sandbox they are
 * made afresh. Checked at start, so the job says what to do instead of failing on a missing file.
 */
function checkReadable(path: string, field: string, uid: number | undefined): void {
  if (uid === undefined) return; // unprivileged: the workload runs as Loom's own uid
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    return; // missing: the workload says so itself (and a credential file is lent only if there)
  }
  const need = st.isDirectory() ? 5 : 4; // r-x for a directory, r-- for a file
  const granted = st.uid === uid ? (st.mode >> 6) & 7 : st.gid === uid ? (st.mode >> 3) & 7 : st.mode & 7;
  if ((granted & need) !== need) {
    throw new Error(
      `${field} ${path} is not readable by the project's uid (${uid}; mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}): workloads run as their project's uid, not as Loom's; make it readable (chmod o+rX ${path})`,
    );
  }
}

/**
 * The installation a venv's interpreter comes from (pyvenv.cfg's `home`, less its bin/), where it
 * is outside the system directories every sandbox sees; undefined otherwise.
 */
export function venvBase(venv: string): string | undefined {
  let cfg: string;
  try {
    cfg = readFileSync(join(venv, "pyvenv.cfg"), "utf8");
  } catch {
    return undefined;
  }
  const home = /^home\s*=\s*(.+)$/m.exec(cfg)?.[1]?.trim();
  if (!home || !isAbsolute(home)) return undefined;
  const prefix = dirname(home);
  return /^\/(usr|bin|lib|lib64|opt)(\/|$)/.test(prefix) || prefix === "/" ? undefined : prefix;
}

/** The cgroup of one worker of one attempt. */
export function cgroupName(uid: string, attempt: number, index: number): string {
  return `${uid}-a${attempt}-w${index}`;
}

/** Shared memory of one gang, bound at /dev/shm in each of its workers (NCCL, MPI). */
export function shmDir(uid: string, attempt: number): string {
  return `/dev/shm/loom-${uid}-a${attempt}`;
}

/** Per worker: what to add to its spawn request; per gang: what the first request prepares. */
export interface GangSandbox {
  /** The uid the gang's workers run as (and own their files as). */
  owner: number;
  /** Extra fields of the first worker's request. */
  prepare: Pick<SpawnRequest, "dirs" | "owned">;
  /** The command and args that start worker w under its shim, and its extra preparation. */
  worker(
    w: GangSpec["workers"][number],
    exitFile: string,
    heartbeatFile: string,
    env: Record<string, string>,
    /** The gang's network namespace, entered after the shim (which joins cgroups as root). */
    netns?: string,
  ): Pick<SpawnRequest, "command" | "args" | "cwd" | "dirs" | "writes" | "owned">;
}

/**
 * Plans the sandbox of one gang. Throws (with what to do) where the spec asks for something a
 * sandbox may not lend: the runtime's start refuses it, and the controller shows why.
 */
export function gangSandbox(deps: GangSandboxDeps, spec: GangSpec, venv: string | undefined): GangSandbox {
  const uid = deps.support.privileged ? deps.ids.of(spec.ref.project) : undefined;
  const owner = uid ?? process.getuid?.() ?? 0;
  const workDir = deps.files.workDir(spec.ref.uid);
  const checkpointDir = deps.files.checkpointDir(spec.ref.uid);
  // The workload's private HOME, where its credential files are (workerenv.ts): its own, so
  // writable, and only there when the workload was given files.
  const home = spec.workers.some((w) => w.files?.length) ? homeDir(deps.files, spec.ref.uid) : undefined;
  const shm = shmDir(spec.ref.uid, spec.attempt);
  // A persistent home (a Workspace's) is the one place under the data dir lent writable: it is
  // the workload's own, owned by its project's uid, and its working directory.
  const persistent = spec.home ? deps.files.persistentHome(spec.ref.project, spec.home.name) : undefined;
  const snapshot = spec.snapshot ? deps.files.snapshotDir(spec.ref.project, spec.ref.uid) : undefined;
  if (snapshot) checkReadable(snapshot, "the workspace's snapshot", uid);
  const ro = [...deps.lend];
  if (venv) {
    ro.push(lendable(deps, venv, "python.venv"));
    checkReadable(venv, "python.venv", uid);
    // A venv's python is a link to the interpreter it was made from: that installation is lent
    // too (read-only) where it is not part of the system already (pyenv's, under a home dir).
    const base = venvBase(venv);
    if (base) ro.push(base);
  }
  if (spec.initCheckpoint) ro.push(deps.files.checkpointDir(spec.initCheckpoint.ref.uid));
  const own = (path: string, create?: "file") => ({
    path,
    uid: owner,
    gid: owner,
    ...(create ? { create } : {}),
  });
  const workingDirs = new Map<number, string>();
  for (const w of spec.workers) {
    if (w.workingDir) workingDirs.set(w.index, lendable(deps, w.workingDir, "workingDir"));
    if (w.workingDir) checkReadable(workingDirs.get(w.index)!, "workingDir", uid);
    if (spec.ref.kind === "InferenceService" && w.env.LOOM_MODEL_DIR)
      checkReadable(w.env.LOOM_MODEL_DIR, "the model's directory", uid);
  }
  return {
    owner,
    prepare: {
      dirs: [shm],
      owned: [
        own(workDir),
        own(checkpointDir),
        own(shm),
        ...(home ? [own(home)] : []),
        ...(persistent ? [own(persistent)] : []),
      ],
    },
    worker(w, exitFile, heartbeatFile, env, netns) {
      // A snapshot is lent read-only (below, as any working dir that is not the workload's own).
      const cwd = workingDirs.get(w.index) ?? snapshot ?? persistent ?? workDir;
      const lent = [...ro, ...(cwd !== workDir && cwd !== persistent ? [cwd] : [])];
      // A model replica is lent its model (the controller resolved it; a user's env cannot name
      // one, the controller's value comes last). A training job's env is the user's own.
      if (spec.ref.kind === "InferenceService" && env.LOOM_MODEL_DIR) lent.push(env.LOOM_MODEL_DIR);
      const cg: CgroupPlan | undefined = deps.support.cgroups
        ? cgroupPlan(deps.support.cgroups, cgroupName(spec.ref.uid, spec.attempt, w.index), w.allocation)
        : undefined;
      const box: SandboxSpec = {
        uid,
        gid: uid,
        rw: [
          workDir,
          checkpointDir,
          heartbeatFile,
          ...(home ? [home] : []),
          ...(persistent ? [persistent] : []),
          ...(deps.gpuBinds?.(w.allocation) ?? []),
        ],
        ro: lent,
        shm,
        network: netns ? { netns } : "host",
        devices: w.allocation.gpus.length > 0 ? deps.devices(w.allocation.gpus) : [],
        cwd,
      };
      const procs = cg?.procs ?? [];
      // One exec with Loom's launcher; else the shim, then nsenter, bwrap, setpriv and env.
      const [command, ...args] = deps.support.launcher
        ? launcherArgv(deps.support, box, w.command, { statusFile: exitFile, cgroupProcs: procs })
        : [
            "/bin/sh",
            "-c",
            SANDBOX_SHIM,
            "loom-worker",
            exitFile,
            procs.join(" "),
            ...sandboxedArgv(deps.support, box, w.command, STATUS_FD),
          ];
      return {
        command: command!,
        args,
        cwd: "/",
        dirs: cg?.dirs ?? [],
        writes: cg?.writes ?? [],
        owned: [own(heartbeatFile, "file")],
      };
    },
  };
}

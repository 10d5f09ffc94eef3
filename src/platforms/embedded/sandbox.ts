import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, readFileSync, readlinkSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type CgroupLayout, detectCgroups } from "./cgroups.js";

/**
 * The sandbox every embedded workload runs in (training workers, sweep trials, model replicas;
 * workspaces and apps next): bubblewrap's mount, PID, IPC and UTS namespaces, the project's own
 * uid, and a cgroup for the CPU and memory its spec asks for. Inside, the workload sees a
 * read-only system, the directories it was granted, a /proc of its own processes and a private
 * /tmp; not the data dir, not other workloads. This file only builds argument lists: the spawn
 * helper runs them, the runtime decides what each workload is granted.
 *
 * Two programs make that sandbox from the same arguments. As root, where it was built (`npm run
 * build`, native/loom-sandbox.c) and works on this kernel, Loom's own launcher does it in one
 * exec: cgroups joined, network namespace entered, namespaces and root made, uid dropped. Else
 * (unprivileged, no C compiler, a kernel before 5.12) a shell shim, nsenter, bubblewrap, setpriv
 * and env do it one after another (docs/security.md, "what the sandbox costs").
 */

/** What this machine lets Loom do, found once at start (`loom up` prints it). */
export interface SandboxSupport {
  /** bubblewrap's path; undefined where it is missing or the kernel refuses its namespaces. */
  bwrap?: string;
  /**
   * Loom runs as root: each project's workloads run as a uid of their own (setpriv inside the
   * sandbox). Unprivileged, they run as Loom's own uid in a user namespace.
   */
  privileged: boolean;
  /** Where per-workload cgroups go; undefined: CPU and memory are only accounted, not enforced. */
  cgroups?: CgroupLayout;
  /**
   * Loom's launcher (native/loom-sandbox.c), as root where it was built and its probe passed: it
   * takes bwrapArgs' options and does the shim's, nsenter's, setpriv's and env's parts itself.
   */
  launcher?: string;
  /** Why the launcher is not used (bubblewrap's chain is), for `loom up`'s line. */
  launcherUnavailable?: string;
  /** Why there is no sandbox (bwrap missing, namespaces refused), for `loom up` and errors. */
  unavailable?: string;
}

/**
 * How a workload reaches the network. "host": the machine's (today's default; network isolation
 * is built beside this), "none": a namespace of its own with loopback only, { netns }: join a
 * namespace made for it (a path under /run/netns or /proc/PID/ns/net).
 */
export type SandboxNetwork = "host" | "none" | { netns: string };

/** What one workload is granted, for {@link bwrapArgs}. Paths keep their host names inside. */
export interface SandboxSpec {
  /** Runs as this uid/gid (privileged mode only; unprivileged, Loom's own uid in a user namespace). */
  uid?: number;
  gid?: number;
  /** Read-write binds (its work and checkpoint dirs, heartbeat files). */
  rw: string[];
  /** Read-only binds (its Python environment, its code, a granted model or init checkpoint, its credential file). */
  ro: string[];
  /** Bound at /dev/shm (shared by the workers of one gang: NCCL and MPI use it); default a tmpfs. */
  shm?: string;
  network: SandboxNetwork;
  /** Devices passed through (/dev/nvidia*). */
  devices?: string[];
  cwd: string;
}

/** Directories of the host's system, bound read-only (symlinks, as on merged-/usr Debian, kept as symlinks). */
const SYSTEM = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/sys"];
/** Files under /etc no workload needs and none should read, hidden even where the uid could. */
const HIDDEN = ["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/ssh", "/etc/sudoers"];

let system: string[] | undefined;

/** The binds of the host's system, read from the file system once per process (they are the same for every workload). */
function systemBinds(): string[] {
  if (system) return system;
  const a: string[] = [];
  for (const dir of SYSTEM) {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(dir);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) a.push("--symlink", readlinkSync(dir), dir);
    else a.push("--ro-bind", dir, dir);
  }
  for (const f of HIDDEN) {
    if (!existsSync(f)) continue;
    if (lstatSync(f).isDirectory()) a.push("--tmpfs", f, "--remount-ro", f);
    else a.push("--ro-bind", "/dev/null", f);
  }
  system = a;
  return a;
}

/**
 * bubblewrap's arguments for one workload (everything between `bwrap` and `--`). Composable: the
 * network part is one field, so a caller may join a network namespace or unshare one.
 */
export function bwrapArgs(spec: SandboxSpec, privileged: boolean): string[] {
  // No --die-with-parent: bwrap is the worker's process (the shim execs it) and its parent is the
  // spawn helper, which ends with the server while workers must outlive it. A stop signals the
  // whole process group, the sandbox's PID 1 included, and the kernel then ends every process
  // of its PID namespace.
  const a: string[] = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"];
  // Unprivileged, bwrap needs a user namespace for the others; as root it must not have one
  // (the sandbox's uid would map to root outside), the uid is dropped with setpriv instead.
  if (!privileged) a.push("--unshare-user");
  if (spec.network === "none") a.push("--unshare-net");
  a.push("--hostname", "loom-workload");
  a.push(...systemBinds());
  a.push(
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--perms",
    "1777",
    "--tmpfs",
    "/tmp",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/var",
  );
  if (spec.shm) a.push("--bind", spec.shm, "/dev/shm");
  // bwrap makes a bind's missing parents with the modes of the host's (a 0700 data dir would
  // stay closed to the workload's uid): they are made 0755 first, holding nothing but the binds.
  // Devices outside /dev (a test's own nodes) get theirs too; /dev itself is bwrap's --dev.
  const devices = spec.devices ?? [];
  const outsideDev = devices.filter((d) => !d.startsWith("/dev/"));
  for (const dir of parentsToMake([...spec.ro, ...spec.rw, ...outsideDev]))
    a.push("--perms", "0755", "--dir", dir);
  for (const d of devices) a.push("--dev-bind-try", d, d);
  for (const p of spec.ro) a.push("--ro-bind-try", p, p);
  for (const p of spec.rw) a.push("--bind", p, p);
  a.push("--chdir", spec.cwd);
  return a;
}

/** Every ancestor of the paths, outermost first, that is not a system dir's (those are bound). */
function parentsToMake(paths: string[]): string[] {
  const out = new Set<string>();
  for (const p of paths) {
    let dir = dirname(p);
    const chain: string[] = [];
    while (dir !== "/" && !SYSTEM.some((s) => dir === s || dir.startsWith(`${s}/`))) {
      chain.unshift(dir);
      dir = dirname(dir);
    }
    for (const d of chain) out.add(d);
  }
  return [...out].sort((x, y) => x.split("/").length - y.split("/").length);
}

/**
 * The full argv that runs `command` in the sandbox: nsenter into the gang's network (if it has
 * one: bwrap cannot join one), bwrap, then (privileged) setpriv to the project's uid with no
 * capabilities and no way to gain any, then `env --default-signal`, so the workload gets SIGTERM's default action back (the
 * shim has bwrap ignore it: bwrap must outlive a stop's SIGTERM, or the workload's graceful exit
 * would be cut short by the SIGKILL that follows). `statusFd`: bwrap writes the workload's exit
 * code there as JSON (the shim's exit file, read after a restart).
 */
export function sandboxedArgv(
  support: SandboxSupport,
  spec: SandboxSpec,
  command: string[],
  statusFd?: number,
): string[] {
  if (!support.bwrap) throw new Error(`no sandbox on this machine: ${support.unavailable}`);
  const status = statusFd === undefined ? [] : ["--json-status-fd", String(statusFd)];
  const netns = typeof spec.network === "object" ? [`--net=${spec.network.netns}`] : [];
  const drop =
    support.privileged && spec.uid !== undefined
      ? [
          "/usr/bin/setpriv",
          `--reuid=${spec.uid}`,
          `--regid=${spec.gid ?? spec.uid}`,
          "--clear-groups",
          "--inh-caps=-all",
          "--bounding-set=-all",
          "--no-new-privs",
        ]
      : [];
  // bwrap cannot join a namespace: a given one is entered first (as root: nsenter needs
  // CAP_SYS_ADMIN), and bwrap then keeps it (no --unshare-net).
  const enter = netns.length ? ["/usr/bin/nsenter", ...netns, "--"] : [];
  return [
    ...enter,
    support.bwrap,
    ...bwrapArgs(spec, support.privileged),
    ...status,
    "--",
    ...drop,
    "/usr/bin/env",
    "--default-signal=TERM,INT",
    ...command,
  ];
}

/**
 * The argv that starts `command` in the sandbox with Loom's launcher, which also joins the
 * worker's cgroups (`cgroupProcs`, before anything forks), enters `spec.network`'s namespace,
 * drops to the spec's uid (no groups, no capabilities, no_new_privs) and records the exit code
 * in `statusFile` as bwrap's `--json-status-fd` does: one exec where the shim's chain has six.
 */
export function launcherArgv(
  support: SandboxSupport,
  spec: SandboxSpec,
  command: string[],
  start: { statusFile?: string; cgroupProcs?: string[] } = {},
): string[] {
  if (!support.launcher || !support.privileged) throw new Error("no launcher here: use sandboxedArgv");
  return [
    support.launcher,
    ...(start.statusFile ? ["--status-file", start.statusFile] : []),
    ...(start.cgroupProcs ?? []).flatMap((p) => ["--cgroup-procs", p]),
    ...(typeof spec.network === "object" ? ["--netns", spec.network.netns] : []),
    ...(spec.uid !== undefined
      ? ["--setuid", String(spec.uid), "--setgid", String(spec.gid ?? spec.uid)]
      : []),
    ...bwrapArgs(spec, true),
    "--",
    ...command,
  ];
}

/** Where `npm run build` leaves the launcher (bin/native.js): native/build/, beside src/ and dist/. */
export const LAUNCHER_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  "../../../native/build/loom-sandbox",
);

/**
 * What this machine allows, tried for real: bwrap runs `true` in the namespaces a workload gets.
 * Where that fails the reason says why (no bwrap, user namespaces disabled, a container that
 * refuses mounts), for `loom up` to print. As root, Loom's launcher is tried the same way (and
 * to a project's uid); where it is missing or fails, workloads start through bubblewrap's chain.
 * `launcher: false` keeps to that chain (LOOM_SANDBOX_LAUNCHER=bwrap).
 */
export function detectSandbox(opts: { bwrap?: string; launcher?: string | false } = {}): SandboxSupport {
  const privileged = process.getuid?.() === 0;
  const bwrap = opts.bwrap ?? "/usr/bin/bwrap";
  const cgroups = privileged ? detectCgroups() : undefined;
  if (!existsSync(bwrap)) {
    return { privileged, cgroups, unavailable: `${bwrap} is missing (apt-get install bubblewrap)` };
  }
  for (const tool of privileged ? ["/usr/bin/setpriv", "/usr/bin/env"] : ["/usr/bin/env"]) {
    if (!existsSync(tool))
      return { privileged, cgroups, unavailable: `${tool} is missing (util-linux, coreutils)` };
  }
  const probe = spawnSync(
    bwrap,
    [...bwrapArgs({ rw: [], ro: [], network: "host", cwd: "/" }, privileged), "--", "/usr/bin/env", "true"],
    { encoding: "utf8", timeout: 10_000 },
  );
  if (probe.status !== 0) {
    const why = (probe.stderr || probe.error?.message || `exit ${probe.status}`).trim().split("\n")[0];
    return { privileged, cgroups, unavailable: `the kernel refused bubblewrap's namespaces: ${why}` };
  }
  if (!privileged) return { bwrap, privileged, cgroups };
  const launcher = probeLauncher(opts.launcher ?? LAUNCHER_PATH);
  return { bwrap, privileged, cgroups, ...launcher };
}

/** The launcher where it runs `true` here as a project's uid; else why not. */
function probeLauncher(path: string | false): Pick<SandboxSupport, "launcher" | "launcherUnavailable"> {
  if (path === false) return { launcherUnavailable: "turned off (LOOM_SANDBOX_LAUNCHER=bwrap)" };
  if (!existsSync(path))
    return { launcherUnavailable: `${path} was not built (npm run build needs a C compiler: cc)` };
  const support: SandboxSupport = { privileged: true, launcher: path };
  // Dropped to the first project uid's range, never a real user's.
  const spec: SandboxSpec = {
    uid: PROJECT_UID_BASE,
    gid: PROJECT_UID_BASE,
    rw: [],
    ro: [],
    network: "host",
    cwd: "/",
  };
  const probe = spawnSync(path, launcherArgv(support, spec, ["/usr/bin/env", "true"]).slice(1), {
    encoding: "utf8",
    timeout: 10_000,
  });
  if (probe.status === 0) return { launcher: path };
  const why = (probe.stderr || probe.error?.message || `exit ${probe.status}`).trim().split("\n")[0];
  return { launcherUnavailable: `its probe failed: ${why}` };
}

/** One line for `loom up`: what a workload is isolated by here. */
export function describeSandbox(s: SandboxSupport): string {
  if (!s.bwrap) return `NONE: ${s.unavailable}`;
  const who = s.privileged ? "a uid per project" : "Loom's own uid (not root: no uid per project)";
  const limits = s.cgroups
    ? `memory limits and CPU shares (cgroup ${s.cgroups.version})`
    : "no memory limits or CPU shares (cgroups not writable)";
  const by = s.launcher
    ? "Loom's launcher"
    : `bubblewrap${s.launcherUnavailable ? ` (Loom's launcher: ${s.launcherUnavailable})` : ""}`;
  return `${by} (mount, PID, IPC, UTS namespaces), ${who}, ${limits}`;
}

/** First uid/gid handed to projects; 200000 keeps clear of system and regular users (and subuid ranges start at 100000 with 65536 each). */
export const PROJECT_UID_BASE = 200_000;

/**
 * A stable uid (and equal gid) per project, kept in the data dir: a workload's files stay its
 * project's across restarts. Allocation is rare (a project's first workload), so the file is
 * written synchronously, 0600 like every file in the data dir.
 */
export class ProjectIds {
  private readonly ids: Record<string, number>;

  constructor(private readonly file: string) {
    let ids: Record<string, number> = {};
    try {
      ids = JSON.parse(readFileSync(file, "utf8")) as Record<string, number>;
    } catch {
      // first start, or unreadable: start afresh (uids are assigned again in order)
    }
    this.ids = ids;
  }

  /** The project's uid, allocated on first use. */
  of(project: string): number {
    const known = this.ids[project];
    if (known !== undefined) return known;
    const next = Math.max(PROJECT_UID_BASE, ...Object.values(this.ids)) + 1;
    this.ids[project] = next;
    writeFileSync(`${this.file}.tmp`, JSON.stringify(this.ids), { mode: 0o600 });
    // rename keeps a crash from leaving half a file (and every project a new uid)
    renameSync(`${this.file}.tmp`, this.file);
    return next;
  }
}

import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { readFile, rmdir } from "node:fs/promises";
import { join } from "node:path";

/**
 * Per-worker cgroups: the memory a workload's spec asks for becomes a limit and its CPU a
 * guaranteed share (before, both were only accounted by the scheduler). v1 (a hierarchy per controller, as on this
 * Debian host) and v2 (one unified hierarchy) are both supported, found at start.
 */
export type CgroupLayout =
  /** cpu: the cgroup Loom itself runs in (workers' cpu cgroups are `loom-<name>` beside its processes). */
  { version: "v1"; memory: string; cpu: string } | { version: "v2"; root: string };

/** The cgroup for one worker: made and filled by the spawn helper, joined by the worker's shim. */
export interface CgroupPlan {
  /** Directories to make (mkdir -p). */
  dirs: string[];
  /** Limit files to write, after the dirs. */
  writes: { path: string; data: string }[];
  /**
   * Files the launcher (or the shim) writes "0" (itself) to before it starts the sandbox: on v1
   * each hierarchy's `tasks` (the one thread of a launcher or shell moves without the kernel's
   * global threadgroup lock, whose RCU grace period made each start wait 8-14 ms on a busy
   * machine: a pid written to cgroup.procs takes it); on v2 `cgroup.procs`.
   */
  procs: string[];
}

/** Loom's own subtree in each hierarchy. */
const SUBTREE = "loom";
const ROOT = "/sys/fs/cgroup";

/** Which cgroup hierarchy this machine has and whether Loom may write it (root, or a delegated one). */
export function detectCgroups(root = ROOT): CgroupLayout | undefined {
  const writable = (p: string) => {
    try {
      accessSync(p, constants.W_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (existsSync(join(root, "cgroup.controllers"))) {
    // v2: Loom's subtree needs the cpu and memory controllers enabled for its children.
    return writable(root) ? { version: "v2", root: join(root, SUBTREE) } : undefined;
  }
  const memory = join(root, "memory");
  const cpu = join(root, "cpu");
  if (!writable(memory) || !writable(cpu)) return undefined;
  // No pids hierarchy: nothing sets a pids limit, and a cgroup made, joined and removed per
  // worker for no limit was a third of the cgroups' cost at every start.
  return { version: "v1", memory: join(memory, SUBTREE), cpu: join(cpu, ownCgroup("cpu")) };
}

/** Loom's own cgroup in a v1 hierarchy (from /proc/self/cgroup), "/" where it cannot be read. */
function ownCgroup(controller: string): string {
  try {
    for (const line of readFileSync("/proc/self/cgroup", "utf8").split("\n")) {
      const [, controllers, path] = line.split(":");
      if (controllers?.split(",").includes(controller) && path) return path;
    }
  } catch {
    // no /proc: the hierarchy's root
  }
  return "/";
}

/**
 * The cgroup of one worker, named `name` (unique per worker and attempt). Memory is a hard
 * limit. CPU is a weight that follows the request, never below a plain process's: on v2 (one
 * hierarchy) `cpu.weight` (at least 100). On v1 `cpu.shares` (1024 per CPU, at least 1024), in a
 * cgroup beside Loom's own processes (`loom-<name>` in the cgroup Loom runs in), not under one
 * `loom` parent: v1 weighs a parent as ONE task against every process beside it, so on a busy
 * machine all of Loom's workloads together got one process's share (a 2-worker DDP job slowed
 * past its resize's grace under CI load); beside them, each worker weighs at least as one process
 * and a 4-CPU request as four. A request of 0 leaves that resource as it is: the spec asked for
 * none, so the scheduler placed it as such.
 */
export function cgroupPlan(
  layout: CgroupLayout,
  name: string,
  limits: { cpuMillis: number; memoryBytes: number },
): CgroupPlan {
  // Kubernetes' conversion: 1024 shares per CPU, and shares to a v2 weight; at least a plain
  // process's weight, so a small request is not starved by everything outside Loom's subtree.
  const shares = limits.cpuMillis > 0 ? Math.max(1024, Math.round((limits.cpuMillis * 1024) / 1000)) : 0;
  const weight = shares ? Math.max(100, Math.min(10_000, 1 + Math.floor(((shares - 2) * 9999) / 262142))) : 0;
  const memory = limits.memoryBytes > 0 ? String(Math.round(limits.memoryBytes)) : "";
  if (layout.version === "v2") {
    const dir = join(layout.root, name);
    return {
      dirs: [dir],
      writes: [
        // Enabling the controllers for Loom's subtree once is idempotent.
        { path: join(ROOT, "cgroup.subtree_control"), data: "+cpu +memory +pids" },
        { path: join(layout.root, "cgroup.subtree_control"), data: "+cpu +memory +pids" },
        ...(memory ? [{ path: join(dir, "memory.max"), data: memory }] : []),
        ...(memory ? [{ path: join(dir, "memory.swap.max"), data: "0" }] : []),
        ...(weight ? [{ path: join(dir, "cpu.weight"), data: String(weight) }] : []),
      ],
      procs: [join(dir, "cgroup.procs")],
    };
  }
  const mem = join(layout.memory, name);
  const cpu = shares ? join(layout.cpu, `loom-${name}`) : undefined;
  return {
    dirs: [mem, ...(cpu ? [cpu] : [])],
    writes: [
      ...(memory ? [{ path: join(mem, "memory.limit_in_bytes"), data: memory }] : []),
      ...(cpu ? [{ path: join(cpu, "cpu.shares"), data: String(shares) }] : []),
    ],
    procs: [join(mem, "tasks"), ...(cpu ? [join(cpu, "tasks")] : [])],
  };
}

/** The worker's cgroup dirs, whatever the plan wrote. */
function dirsOf(layout: CgroupLayout, name: string): string[] {
  if (layout.version === "v2") return [join(layout.root, name)];
  return [join(layout.memory, name), join(layout.cpu, `loom-${name}`)];
}

/** The file listing every process of the worker's cgroup (its memory one on v1: always made). */
export function processList(layout: CgroupLayout, name: string): string {
  return join(layout.version === "v2" ? layout.root : layout.memory, name, "cgroup.procs");
}

/** Whether the kernel's OOM killer killed a process of the worker's cgroup. */
export async function oomKilled(layout: CgroupLayout, name: string): Promise<boolean> {
  const file =
    layout.version === "v2"
      ? join(layout.root, name, "memory.events")
      : join(layout.memory, name, "memory.oom_control");
  try {
    const m = /^oom_kill (\d+)$/m.exec(await readFile(file, "utf8"));
    return !!m && Number(m[1]) > 0;
  } catch {
    return false;
  }
}

/**
 * Removes the worker's cgroup. A cgroup with a process left cannot go (EBUSY): the group was
 * just SIGKILLed, so it is tried again a few times, then left for the next removal of the workload.
 */
export async function removeCgroup(layout: CgroupLayout, name: string, tries = 20): Promise<void> {
  for (const dir of dirsOf(layout, name)) {
    for (let i = 0; ; i++) {
      try {
        await rmdir(dir);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || i >= tries) break;
        await new Promise((r) => setTimeout(r, 50 * (i + 1)));
      }
    }
  }
}

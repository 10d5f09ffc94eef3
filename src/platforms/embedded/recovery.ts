import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, sep } from "node:path";
import type { Logger } from "pino";
import { exitOf } from "./exits.js";
import { findProcessesByEnv, isSameProcessAlive, processStartTicks, signalGroup } from "./procfs.js";
import { INSTANCE_ENV, WORKER_KEY_ENV, workerKey } from "./workerenv.js";
import type { GangRecord, StateWriter, WorkloadFiles } from "./workloadfiles.js";

export interface RecoveryDeps {
  files: WorkloadFiles;
  writer: StateWriter;
  instanceId: string;
  log: Logger;
  now: () => Date;
}

/**
 * Re-reads every workload's state after a (re)start: live workers are adopted, ones that ended
 * meanwhile get their recorded exit code, and processes of this installation that no state
 * accounts for (a crash between spawn and persist, a duplicate) are killed. Returns the gangs
 * found, by uid.
 */
export function recoverGangs(deps: RecoveryDeps): Map<string, GangRecord> {
  const { files, log } = deps;
  const gangs = new Map<string, GangRecord>();
  const running = findProcessesByEnv(INSTANCE_ENV, deps.instanceId);
  const byKey = new Map<string, number[]>();
  for (const p of running) {
    const key = p.env.get(WORKER_KEY_ENV);
    if (!key) continue;
    // Only the group leader (the shim) counts; its children share the key.
    if (processGroupOf(p.pid) !== p.pid) continue;
    byKey.set(key, [...(byKey.get(key) ?? []), p.pid]);
  }
  const claimed = new Set<number>();
  for (const uid of readdirSync(files.root)) {
    const file = join(files.root, uid, "state.json");
    if (!existsSync(file)) continue;
    let gang: GangRecord;
    try {
      gang = JSON.parse(readFileSync(file, "utf8")) as GangRecord;
    } catch (err) {
      log.error({ err, file }, "unreadable runtime state; ignoring it");
      continue;
    }
    gangs.set(uid, gang);
    for (const w of gang.workers) {
      if (w.exit) continue;
      if (w.pid === undefined) {
        const found = byKey.get(workerKey(uid, gang.attempt, w.index))?.[0];
        if (found !== undefined) {
          w.pid = found;
          w.startTicks = processStartTicks(found);
          w.startTime = deps.now().toISOString();
        }
      }
      if (w.pid !== undefined && w.startTicks !== undefined && isSameProcessAlive(w.pid, w.startTicks)) {
        claimed.add(w.pid);
        continue;
      }
      const code = files.readExitFile(gang, w.index);
      w.exit = exitOf(code, undefined, undefined, !!gang.killSentAt, deps.now().toISOString());
    }
    deps.writer.persist(gang);
  }
  for (const pids of byKey.values()) {
    for (const pid of pids) {
      if (claimed.has(pid)) continue;
      log.warn({ pid }, "killing a worker process no workload accounts for");
      signalGroup(pid, "SIGKILL");
    }
  }
  for (const pid of formerWorkers(files.root, gangs, claimed)) {
    log.warn({ pid }, "killing a worker of an earlier installation on this data dir (its state is gone)");
    signalGroup(pid, "SIGKILL");
  }
  const adopted = [...gangs.values()].flatMap((g) => g.workers.filter((w) => !w.exit).map((w) => w.pid));
  if (adopted.length > 0) log.info({ pids: adopted }, "re-adopted running workers");
  return gangs;
}

function processGroupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
  } catch {
    return undefined;
  }
}

/**
 * Group leaders of workers started for this data dir whose workload has no state here: the data
 * dir was deleted and made anew under a server's running workers (its new instance id does not
 * name them), or a crash came between a spawn and its record. Nothing would stop them ever: they
 * are found by the exit file their command line names (the shim's, or the sandbox launcher's
 * --status-file), inside this data dir's workloads/.
 */
export function formerWorkers(root: string, gangs: Map<string, GangRecord>, claimed: Set<number>): number[] {
  const prefix = root.endsWith(sep) ? root : root + sep;
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || claimed.has(pid)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    const at = argv.indexOf("--status-file");
    const shim = argv.indexOf("loom-worker");
    const exitFile = at >= 0 ? argv[at + 1] : shim >= 0 ? argv[shim + 1] : undefined;
    if (!exitFile?.startsWith(prefix) || !exitFile.endsWith(".exit")) continue;
    const uid = exitFile.slice(prefix.length).split(sep)[0]!;
    if (gangs.has(uid) || processGroupOf(pid) !== pid) continue;
    found.push(pid);
  }
  return found;
}

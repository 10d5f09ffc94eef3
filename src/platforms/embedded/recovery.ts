import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
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

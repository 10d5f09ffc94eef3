import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { GangObservation, WorkerObservation } from "../../ports/runtime.js";
import type { GangRecord, WorkloadFiles } from "./workloadfiles.js";

type CheckpointReport = { time: string; step?: number };

/** A gang's record as the port reports it: each worker's state, stopping, the latest checkpoint. */
export function observation(gang: GangRecord, checkpoint: CheckpointReport | undefined): GangObservation {
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

/** What each job reported of its latest checkpoint in $LOOM_CHECKPOINT_DIR/loom.json, read again only when its mtime moves. */
export class CheckpointReports {
  private readonly reports = new Map<string, { mtimeMs: number; report: CheckpointReport }>();

  constructor(private readonly files: WorkloadFiles) {}

  of(uid: string): CheckpointReport | undefined {
    const file = join(this.files.checkpointDir(uid), "loom.json");
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
    const report: CheckpointReport = { time: new Date(mtimeMs).toISOString() };
    try {
      const step = (JSON.parse(readFileSync(file, "utf8")) as { step?: unknown }).step;
      if (typeof step === "number" && Number.isFinite(step)) report.step = step;
    } catch {
      // Being rewritten, or not JSON: the time alone still says when it checkpointed.
    }
    this.reports.set(uid, { mtimeMs, report });
    return report;
  }

  /** The workload is released. */
  forget(uid: string): void {
    this.reports.delete(uid);
  }
}

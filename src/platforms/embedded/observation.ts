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
  /** The newest mtime `moved` has announced per job (its job may not have read it yet). */
  private readonly announced = new Map<string, number>();

  constructor(private readonly files: WorkloadFiles) {}

  of(uid: string): CheckpointReport | undefined {
    const file = this.file(uid);
    const mtimeMs = mtimeOf(file);
    if (mtimeMs === undefined) return undefined;
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

  /**
   * Whether loom.json has moved since `of` last read it or this last said so: true once per new
   * checkpoint (a stat, no read). The runtime's poll wakes a live gang's job with it, as
   * Kubernetes' CheckpointProbe does: without, status.checkpoint lagged by up to a resync (30 s),
   * too late for what acts on it (`loom get`, initCheckpointFrom, a test interrupting a job).
   */
  moved(uid: string): boolean {
    const mtimeMs = mtimeOf(this.file(uid));
    if (mtimeMs === undefined) return false;
    if (mtimeMs === this.reports.get(uid)?.mtimeMs || mtimeMs === this.announced.get(uid)) return false;
    this.announced.set(uid, mtimeMs);
    return true;
  }

  /** The workload is released. */
  forget(uid: string): void {
    this.reports.delete(uid);
    this.announced.delete(uid);
  }

  private file(uid: string): string {
    return join(this.files.checkpointDir(uid), "loom.json");
  }
}

/** A file's modification time; undefined where it is missing or unreadable. */
function mtimeOf(file: string): number | undefined {
  try {
    // Most jobs never checkpoint: no exception (and its stack trace) per look for that.
    return statSync(file, { throwIfNoEntry: false })?.mtimeMs;
  } catch {
    return undefined;
  }
}

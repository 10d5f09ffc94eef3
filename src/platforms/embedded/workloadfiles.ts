import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { WorkloadRef } from "../../ports/runtime.js";

/**
 * A workload's files under the data dir, and its state.json: what the runtime persists per
 * workload, enough to re-adopt its workers after a crash.
 *
 *   workloads/<uid>/state.json                   the GangRecord
 *   workloads/<uid>/checkpoint/                  outlives attempts: where a job checkpoints
 *   workloads/<uid>/checkpoint-seeded            a fleet's control plane seeded the checkpoint
 *   workloads/<uid>/work/                        the default working directory
 *   workloads/<uid>/attempt-<n>/worker-<i>.log   and .heartbeat, .exit (the shim's exit code)
 */

export interface WorkerRecord {
  index: number;
  pid?: number;
  startTicks?: number;
  startTime?: string;
  exit?: { code?: number; signal?: string; finishTime: string; message?: string };
}

/** What the runtime persists per workload (state.json), enough to re-adopt after a crash. */
export interface GangRecord {
  ref: WorkloadRef;
  attempt: number;
  workers: WorkerRecord[];
  stopRequestedAt?: string;
  killSentAt?: string;
}

/** Paths of a workload's files, and reads of what its workers leave there. */
export class WorkloadFiles {
  /** Where every workload's directory is. */
  readonly root: string;

  constructor(dataDir: string) {
    this.root = join(dataDir, "workloads");
  }

  stateFile(uid: string): string {
    return join(this.root, uid, "state.json");
  }

  /** Outlives attempts (and the workers' stops): where a job checkpoints and resumes from. */
  checkpointDir(uid: string): string {
    return join(this.root, uid, "checkpoint");
  }

  /**
   * Written once a fleet's control plane has seeded the job's checkpoint (membercheckpoints.ts):
   * beside the checkpoint directory, never in it, so no worker writes it and no sync carries it.
   */
  seedMark(uid: string): string {
    return join(this.root, uid, "checkpoint-seeded");
  }

  /**
   * A persistent home (a Workspace's): under the data dir, by project and name (both DNS labels,
   * checked by the API), outside any workload's own files so it outlives them.
   */
  persistentHome(project: string, name: string): string {
    return join(this.root, "..", "homes", project, name);
  }

  /**
   * The snapshot of a workspace's home a job runs from (spec.fromWorkspace): taken by the API
   * when the job was created, outside the workload's own dir so its workers cannot write it.
   */
  snapshotDir(project: string, uid: string): string {
    return join(this.root, "..", "snapshots", project, uid);
  }

  workDir(uid: string): string {
    return join(this.root, uid, "work");
  }

  attemptDir(uid: string, attempt: number): string {
    return join(this.root, uid, `attempt-${attempt}`);
  }

  /** The exit code the worker's shim recorded, if it got that far. */
  readExitFile(gang: GangRecord, index: number): number | undefined {
    try {
      const text = readFileSync(
        join(this.attemptDir(gang.ref.uid, gang.attempt), `worker-${index}.exit`),
        "utf8",
      ).trim();
      // A sandboxed worker's is bwrap's JSON status (the last document has the exit code).
      const json = /"exit-code":\s*(-?\d+)/.exec(text);
      if (json) return Number(json[1]);
      const n = Number(text);
      return text !== "" && Number.isInteger(n) ? n : undefined;
    } catch {
      return undefined;
    }
  }

  /** The latest write to any worker's log or heartbeat of the current attempt. */
  lastActivity(gang: GangRecord): Date | undefined {
    const dir = this.attemptDir(gang.ref.uid, gang.attempt);
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
}

/** state.json writes, off the event loop and one at a time per workload, each writing the latest state. */
export class StateWriter {
  /** state.json writes per workload: one at a time, each writing the latest state. */
  private readonly saves = new Map<string, { dirty: boolean; done: Promise<void> }>();

  constructor(
    private readonly files: WorkloadFiles,
    /** The workload's current state; undefined once released (its directory goes). */
    private readonly current: (uid: string) => GangRecord | undefined,
    private readonly log: Logger,
  ) {}

  /**
   * Writes the workload's current state to state.json (write and rename), off the event loop.
   * Resolves once a write that started after this call has finished.
   */
  save(uid: string): Promise<void> {
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
          const gang = this.current(uid);
          if (!gang) return; // released: its directory goes
          const file = this.files.stateFile(uid);
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
  saveSoon(uid: string): void {
    this.save(uid).catch((err: unknown) =>
      this.log.error({ err, uid }, "could not write the workload's state.json"),
    );
  }

  /** Once a write in flight for the workload is over (failed or not). */
  async settled(uid: string): Promise<void> {
    await this.saves.get(uid)?.done.catch(() => undefined);
  }

  /** Synchronous, for recovery at start only. */
  persist(gang: GangRecord): void {
    const dir = join(this.files.root, gang.ref.uid);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "state.json");
    writeFileSync(`${file}.tmp`, JSON.stringify(gang));
    renameSync(`${file}.tmp`, file);
  }
}

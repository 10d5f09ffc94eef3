import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, normalize, sep } from "node:path";
import { BadRequestError } from "../../api/errors.js";
import type { CheckpointFiles, CheckpointVault } from "../../ports/fleet.js";
import type { WorkloadFiles } from "./workloadfiles.js";

/** The file a job's workers write after each checkpoint ({"step": N}). */
const REPORT = "loom.json";

/**
 * The control plane's copy of fleet jobs' checkpoints (issue 23), kept in each job's own
 * checkpoint directory (`<data dir>/workloads/<uid>/checkpoint`): the very LOOM_CHECKPOINT_DIR
 * an attempt on this platform gets, so a job that fails over to the `self` member resumes from
 * the last synced checkpoint with no copy at start.
 */
export class DirCheckpointVault implements CheckpointVault {
  constructor(private readonly files: WorkloadFiles) {}

  async step(uid: string): Promise<number | undefined> {
    try {
      const step = (
        JSON.parse(await readFile(join(this.files.checkpointDir(uid), REPORT), "utf8")) as {
          step?: unknown;
        }
      ).step;
      return typeof step === "number" ? step : undefined;
    } catch {
      return undefined;
    }
  }

  async put(uid: string, files: CheckpointFiles): Promise<void> {
    const dir = this.files.checkpointDir(uid);
    // The names come from a member cluster: one that leaves the directory is an attack (or a bug).
    for (const name of files.keys()) safeName(name);
    const names = [...files.keys()].sort((a, b) => Number(a === REPORT) - Number(b === REPORT));
    for (const name of names) {
      const target = join(dir, name);
      await mkdir(dirname(target), { recursive: true });
      // Each file whole or not at all: a sync cut short never leaves half a checkpoint file.
      const tmp = `${target}.loom-sync.tmp`;
      try {
        await writeFile(tmp, files.get(name)!);
        await rename(tmp, target);
      } finally {
        await rm(tmp, { force: true });
      }
    }
  }
}

/** A relative path that stays inside the directory, or an BadRequestError saying why not. */
function safeName(name: string): void {
  const n = normalize(name);
  if (!name || isAbsolute(name) || n === ".." || n.startsWith(`..${sep}`) || name.includes("\0"))
    throw new BadRequestError(`checkpoint file name ${JSON.stringify(name)} leaves the checkpoint directory`);
}

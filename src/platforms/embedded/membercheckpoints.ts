import { lstat, open } from "node:fs/promises";
import { checkpointStep } from "../../api/cluster.js";
import { BadRequestError } from "../../api/errors.js";
import {
  type CheckpointFiles,
  MAX_SYNCED_CHECKPOINT_BYTES,
  type MemberCheckpoints,
} from "../../ports/fleet.js";
import type { WorkloadRef } from "../../ports/runtime.js";
import { DirCheckpointVault } from "./checkpointvault.js";
import type { WorkloadFiles } from "./workloadfiles.js";

/**
 * This platform's jobs' checkpoints as a fleet's control plane reads and seeds them (this `loom
 * up` as a Loom member, issue 23): each job's own checkpoint directory, read and written with the
 * vault's care (regular files only, no link followed, names that stay inside). A seed is marked
 * beside the directory once its last file is written; the job's first attempt waits for the mark.
 */
export class DirMemberCheckpoints implements MemberCheckpoints {
  private readonly dirs: DirCheckpointVault;

  constructor(private readonly workloads: WorkloadFiles) {
    this.dirs = new DirCheckpointVault(workloads);
  }

  files(ref: WorkloadRef): Promise<CheckpointFiles | undefined> {
    return this.dirs.files(ref.uid, MAX_SYNCED_CHECKPOINT_BYTES);
  }

  async seed(ref: WorkloadRef, files: CheckpointFiles): Promise<number> {
    // Once seeded the workers may have gone on from it: a second seed (a retry) writes nothing.
    if (await this.seeded(ref)) return 0;
    const step = checkpointStep(files);
    if (step === undefined)
      throw new BadRequestError('a checkpoint seed needs a loom.json with {"step": N} among its files');
    await this.dirs.put(ref.uid, files);
    // After the last file: the mark never says yes to half a checkpoint. "wx": made once, and
    // never written through a link (the job's workers cannot write beside their directory).
    const mark = await open(this.workloads.seedMark(ref.uid), "wx", 0o600).catch(
      (e: NodeJS.ErrnoException) => {
        if (e.code === "EEXIST") return undefined;
        throw e;
      },
    );
    if (!mark) return 0;
    await mark.writeFile(JSON.stringify({ step })).finally(() => mark.close());
    return 0;
  }

  async seeded(ref: WorkloadRef): Promise<boolean> {
    return lstat(this.workloads.seedMark(ref.uid)).then(
      (st) => st.isFile(),
      () => false,
    );
  }
}

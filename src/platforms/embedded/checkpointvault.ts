import { constants } from "node:fs";
import { lchown, lstat, mkdir, open, readdir, readlink, realpath, rename, rm } from "node:fs/promises";
import { isAbsolute, join, normalize, relative, sep } from "node:path";
import { BadRequestError, LoomError } from "../../api/errors.js";
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
  constructor(private readonly workloads: WorkloadFiles) {}

  async step(uid: string): Promise<number | undefined> {
    try {
      // O_NOFOLLOW: the job's own workers wrote this directory; a loom.json that is a link would
      // have this (root) process read a file of the link's choosing.
      const file = await open(
        join(this.workloads.checkpointDir(uid), REPORT),
        constants.O_RDONLY | constants.O_NOFOLLOW,
      );
      const text = await file.readFile("utf8").finally(() => file.close());
      const step = (JSON.parse(text) as { step?: unknown }).step;
      return typeof step === "number" ? step : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * The job's checkpoint files, undefined without a loom.json. Past `maxBytes` (the files' sizes
   * together) it throws rather than read them all into memory.
   */
  async files(uid: string, maxBytes = Number.POSITIVE_INFINITY): Promise<CheckpointFiles | undefined> {
    const dir = await realpath(this.workloads.checkpointDir(uid)).catch(() => undefined);
    if (!dir) return undefined;
    const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
    const files: CheckpointFiles = new Map();
    let total = 0;
    for (const e of entries) {
      // Regular files only (a link is an entry of its own, never followed), read as root: each
      // is opened without following a link, and must still be inside the directory once open
      // (a directory on its path swapped for a link meanwhile would carry the read out of it).
      if (!e.isFile() || e.name.endsWith(".loom-sync.tmp")) continue;
      const path = join(e.parentPath, e.name);
      const file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
      if (!file) continue;
      try {
        const real = await readlink(`/proc/self/fd/${file.fd}`);
        if (!real.startsWith(`${dir}${sep}`)) continue;
        total += (await file.stat()).size;
        if (total > maxBytes)
          throw new LoomError(
            "CheckpointTooLarge",
            413,
            `the checkpoint is larger than ${maxBytes} bytes: it is not moved between members (give the job a claim the members share)`,
          );
        files.set(relative(dir, real).split(sep).join("/"), await file.readFile());
      } finally {
        await file.close();
      }
    }
    return files.has(REPORT) ? files : undefined;
  }

  async put(uid: string, files: CheckpointFiles): Promise<void> {
    const dir = this.workloads.checkpointDir(uid);
    // The names come from a member cluster: one that leaves the directory is an attack (or a bug).
    for (const name of files.keys()) safeName(name);
    const names = [...files.keys()].sort((a, b) => Number(a === REPORT) - Number(b === REPORT));
    await mkdir(dir, { recursive: true });
    // What is written here is the job's own: its workers (as the directory's owner, the project's
    // uid when sandboxed) read and replace it when they resume. Written as root, it is handed over.
    const st = await lstat(dir);
    if (!st.isDirectory())
      throw new BadRequestError(
        "the job's checkpoint directory is not a plain directory: refusing to write there",
      );
    const owner = process.getuid?.() === 0 ? { uid: st.uid, gid: st.gid } : undefined;
    for (const name of names) {
      const parts = normalize(name)
        .split(sep)
        .filter((p) => p !== "" && p !== ".");
      const target = join(dir, ...parts);
      await mkdirNoLinks(dir, parts.slice(0, -1), owner);
      // Each file whole or not at all: a sync cut short never leaves half a checkpoint file.
      // "wx" (O_EXCL) never follows a link left at the temporary name; rename replaces a link
      // at the target rather than writing through it.
      const tmp = `${target}.loom-sync.tmp`;
      await rm(tmp, { force: true });
      try {
        const file = await open(tmp, "wx", 0o600);
        await file
          .writeFile(files.get(name)!)
          .then(() => owner && file.chown(owner.uid, owner.gid))
          .finally(() => file.close());
        await rename(tmp, target);
      } finally {
        await rm(tmp, { force: true });
      }
    }
  }
}

/**
 * Makes each directory of a checkpoint file's path under `dir`, refusing one that is a link: the
 * directory was written by the job's own workers (as its project's uid), and this process, which
 * writes as root, must never follow a link they left (`sub -> /etc`) out of it.
 */
async function mkdirNoLinks(
  dir: string,
  parts: string[],
  owner: { uid: number; gid: number } | undefined,
): Promise<void> {
  let at = dir;
  for (const part of parts) {
    at = join(at, part);
    const st = await lstat(at).catch((e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return undefined;
      throw e;
    });
    if (!st) {
      await mkdir(at);
      if (owner) await lchown(at, owner.uid, owner.gid);
    } else if (!st.isDirectory() || st.isSymbolicLink())
      throw new BadRequestError(
        `checkpoint directory ${JSON.stringify(part)} is not a plain directory (a link the job left?): refusing to write through it`,
      );
  }
}

/** A relative path that stays inside the directory, or an BadRequestError saying why not. */
function safeName(name: string): void {
  const n = normalize(name);
  if (!name || isAbsolute(name) || n === ".." || n.startsWith(`..${sep}`) || name.includes("\0"))
    throw new BadRequestError(`checkpoint file name ${JSON.stringify(name)} leaves the checkpoint directory`);
}

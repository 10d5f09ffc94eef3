import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import {
  lchown,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  realpath,
  rename,
  rm,
  symlink,
} from "node:fs/promises";
import { isAbsolute, join, normalize, relative, sep } from "node:path";
import { BadRequestError, LoomError } from "../../api/errors.js";
import type { CheckpointFiles, CheckpointVault, SelfSeedMarks } from "../../ports/fleet.js";

/** The file a job's workers write after each checkpoint ({"step": N}). */
const REPORT = "loom.json";

/**
 * The control plane's copy of fleet jobs' checkpoints (issue 23), kept in each job's own
 * checkpoint directory (`<data dir>/workloads/<uid>/checkpoint`): the very LOOM_CHECKPOINT_DIR
 * an attempt on this platform gets, so a job that fails over to the `self` member resumes from
 * the last synced checkpoint with no copy at start.
 */
export class DirCheckpointVault implements CheckpointVault {
  /** `workloads`: where each job's checkpoint directory is (embedded: WorkloadFiles). */
  constructor(protected readonly workloads: { checkpointDir(uid: string): string }) {}

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
    await writeCheckpoint(this.workloads.checkpointDir(uid), files);
  }
}

/**
 * A vault of its own on the local disk (`loom operator --data-dir`, on its PVC): the job's pods
 * checkpoint to their own volumes in the cluster, so the vault is never their directory, and a
 * job that comes back to the control plane's own cluster is seeded from it (`self`). Each put is
 * a new generation written beside the held one and swapped in whole (a link renamed over
 * `current`): a reader sees the old checkpoint or the new one, never a mix of both, and files an
 * older checkpoint had are not carried into the next.
 *
 * ```
 * <root>/<uid>/current -> g-<id>   the held checkpoint (its loom.json written last)
 * <root>/<uid>/g-<id>/             one generation's files
 * <root>/<uid>/seeded              the step last seeded into the job's storage on `self`
 * ```
 */
export class StagedCheckpointVault extends DirCheckpointVault {
  readonly self: SelfSeedMarks;

  constructor(private readonly root: string) {
    super({ checkpointDir: (uid) => join(homeOf(root, uid), "current") });
    this.self = {
      seeded: async (uid) => {
        const text = await readFile(join(homeOf(root, uid), "seeded"), "utf8").catch(() => undefined);
        const step = text === undefined ? Number.NaN : Number(text);
        return Number.isFinite(step) ? step : undefined;
      },
      markSeeded: async (uid, step) => {
        const home = homeOf(root, uid);
        await mkdir(home, { recursive: true });
        const tmp = join(home, `seeded.${randomUUID()}.tmp`);
        const file = await open(tmp, "wx", 0o600);
        await file.writeFile(String(step)).finally(() => file.close());
        await rename(tmp, join(home, "seeded"));
      },
    };
  }

  override async put(uid: string, files: CheckpointFiles): Promise<void> {
    const home = homeOf(this.root, uid);
    for (const name of files.keys()) safeName(name);
    await mkdir(home, { recursive: true });
    const generation = `g-${randomUUID()}`;
    const link = join(home, `current.${generation}.tmp`);
    try {
      await writeCheckpoint(join(home, generation), files);
      // rename(2) over `current` is atomic: readers resolve the old generation or the new one.
      await symlink(generation, link);
      await rename(link, join(home, "current"));
    } catch (err) {
      await rm(join(home, generation), { recursive: true, force: true });
      await rm(link, { force: true });
      throw err;
    }
    // The generations before it (and what a put cut short by a crash left): nothing reads them.
    for (const name of await readdir(home))
      if ((name.startsWith("g-") && name !== generation) || name.endsWith(".tmp"))
        await rm(join(home, name), { recursive: true, force: true });
  }

  /** Removes the checkpoints of jobs that are gone. */
  async prune(live: ReadonlySet<string>): Promise<void> {
    const uids = await readdir(this.root).catch(() => [] as string[]);
    for (const uid of uids)
      if (!live.has(uid)) await rm(join(this.root, uid), { recursive: true, force: true });
  }
}

/** A job's directory in a vault: its uid as one plain path component, or an error saying why not. */
function homeOf(root: string, uid: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(uid) || uid.includes(".."))
    throw new BadRequestError(
      `job uid ${JSON.stringify(uid)} is not a plain name: no checkpoint is kept for it`,
    );
  return join(root, uid);
}

/**
 * Writes a checkpoint's files under `dir`, loom.json last (its step never runs ahead of the
 * files), each file whole: a sync cut short never leaves half a checkpoint file.
 */
async function writeCheckpoint(dir: string, files: CheckpointFiles): Promise<void> {
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

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, constants, openSync } from "node:fs";
import { chown, lstat, mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { BadRequestError } from "../../api/errors.js";
import type { WorkspaceSnapshots } from "../../ports/workspaces.js";
import type { WorkloadFiles } from "./workloadfiles.js";

/** Default cap on a snapshot: code and small data, not datasets (those belong in storage). */
export const SNAPSHOT_MAX_BYTES = 200 * 1024 * 1024;
const SNAPSHOT_MAX_ENTRIES = 50_000;

/**
 * Directories a snapshot leaves out: hidden ones (.cache, .local, .ipynb_checkpoints, .git…),
 * caches, and virtual environments (a dir with pyvenv.cfg): the job gets its environment from
 * spec.python, and these are what makes a home big.
 */
function skipped(name: string): boolean {
  return name.startsWith(".") || name === "__pycache__" || name === "node_modules";
}

interface Listing {
  paths: string[];
  bytes: number;
}

/** The home's entries to copy (relative, parents first), by lstat only: nothing is followed. */
async function list(home: string, maxBytes: number): Promise<Listing> {
  const out: Listing = { paths: [], bytes: 0 };
  const walk = async (rel: string): Promise<void> => {
    const entries = await readdir(join(home, rel), { withFileTypes: true });
    if (rel !== "." && entries.some((e) => e.name === "pyvenv.cfg")) {
      out.paths.pop(); // a venv: the dir itself was the last path listed, just before this walk
      return;
    }
    for (const e of entries) {
      const path = rel === "." ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) {
        if (skipped(e.name)) continue;
        out.paths.push(path);
        await walk(path);
      } else if (e.isFile()) {
        out.paths.push(path);
        out.bytes += (await lstat(join(home, path))).size;
      } else if (e.isSymbolicLink()) {
        out.paths.push(path); // copied as a link: it names what the sandbox lends, nothing more
      } // fifos, sockets, devices: left out (reading a fifo would block the copy)
      if (out.bytes > maxBytes) {
        throw new BadRequestError(
          `the workspace's home is over the snapshot limit of ${Math.round(maxBytes / 2 ** 20)} MiB (hidden dirs, __pycache__, node_modules and venvs are left out already): move data out of the home (into storage the job reads), or run from a smaller directory`,
        );
      }
      if (out.paths.length > SNAPSHOT_MAX_ENTRIES) {
        throw new BadRequestError(
          `the workspace's home has over ${SNAPSHOT_MAX_ENTRIES} files to snapshot: move data out of the home, or run from a smaller directory`,
        );
      }
    }
  };
  await walk(".");
  return out;
}

/**
 * Embedded snapshots of workspace homes: staged under `<data>/snapshots/.staging/`, then renamed
 * to `<data>/snapshots/PROJECT/JOB-UID` (made 0700, the project's uid's). The copy itself runs
 * as the home's owner (the project's uid, when Loom is root): a home is user content, and links
 * or races in it then reach only what that uid could read anyway.
 */
export class HomeSnapshots implements WorkspaceSnapshots {
  private readonly root: string;

  constructor(
    private readonly files: WorkloadFiles,
    private readonly maxBytes = SNAPSHOT_MAX_BYTES,
  ) {
    this.root = join(files.root, "..", "snapshots");
  }

  /** Copies the home to a staging dir; the handle is that dir's name. */
  async take(project: string, name: string): Promise<string> {
    const home = this.files.persistentHome(project, name);
    let owner: { uid: number; gid: number };
    try {
      owner = await lstat(home);
    } catch {
      throw new BadRequestError(
        `workspace ${name} has no home yet (it has not started once): start it (loom start ws/${name}) and put the code there`,
      );
    }
    const listing = await list(home, this.maxBytes);
    const handle = randomBytes(12).toString("hex");
    const stage = join(this.root, ".staging", handle);
    await mkdir(join(this.root, ".staging"), { recursive: true, mode: 0o700 });
    await mkdir(stage, { mode: 0o700 });
    const asOwner = process.getuid?.() === 0 && owner.uid !== 0;
    if (asOwner) await chown(stage, owner.uid, owner.gid);
    try {
      await copy(home, stage, listing.paths, asOwner ? owner : undefined);
    } catch (err) {
      await rm(stage, { recursive: true, force: true });
      throw err;
    }
    return handle;
  }

  async commit(handle: string, project: string, uid: string): Promise<void> {
    await mkdir(join(this.root, project), { recursive: true, mode: 0o755 });
    await rename(join(this.root, ".staging", checked(handle)), this.files.snapshotDir(project, uid));
  }

  async discard(handle: string): Promise<void> {
    await rm(join(this.root, ".staging", checked(handle)), { recursive: true, force: true });
  }
}

function checked(handle: string): string {
  if (!/^[0-9a-f]{24}$/.test(handle)) throw new Error(`not a snapshot handle: ${handle}`);
  return handle;
}

/** tar to tar, the listed entries only (NUL-separated on stdin), as `owner` when given. */
function copy(
  from: string,
  to: string,
  paths: string[],
  owner?: { uid: number; gid: number },
): Promise<void> {
  const flags = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
  const dirs = [openSync(from, flags)];
  try {
    dirs.push(openSync(to, flags));
  } catch (err) {
    closeSync(dirs[0]!);
    throw err;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(
      "/bin/bash",
      [
        "-c",
        // pipefail: a file the reading tar cannot read fails the copy, not only the writing one.
        "set -o pipefail; tar -C /proc/self/fd/3 --no-recursion --null -T - -cf - | tar -C /proc/self/fd/4 -xf -",
      ],
      {
        cwd: "/",
        // Both dirs as descriptors opened here: the project's uid may not pass through the data
        // dir (0700, Loom's) to reach them, and O_NOFOLLOW keeps the home from being a link.
        stdio: ["pipe", "ignore", "pipe", dirs[0], dirs[1]],
        ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
      },
    );
    // The child holds its own copies once spawned; ours go then (or on a failed spawn), once.
    let held = true;
    const release = () => {
      if (held) for (const fd of dirs) closeSync(fd);
      held = false;
    };
    child.on("spawn", release);
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    child.on("error", (err) => {
      release();
      reject(err);
    });
    child.on("close", (code) =>
      code === 0
        ? resolve()
        : reject(
            new BadRequestError(
              `cannot snapshot the workspace's home (tar exited ${code}): ${stderr.trim().slice(0, 500)}; make its files readable by the workspace`,
            ),
          ),
    );
    child.stdin!.on("error", () => undefined); // tar failing early closes its stdin: the exit says why
    child.stdin!.end(paths.map((p) => `${p}\0`).join(""));
  });
}

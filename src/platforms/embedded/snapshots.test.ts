import { execFileSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { HomeSnapshots } from "./snapshots.js";
import { WorkloadFiles } from "./workloadfiles.js";

describe("HomeSnapshots", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  function setup(maxBytes?: number) {
    const data = mkdtempSync(join(tmpdir(), "loom-snap-"));
    dirs.push(data);
    const files = new WorkloadFiles(data);
    const home = files.persistentHome("p", "nb");
    mkdirSync(home, { recursive: true });
    return { files, home, snaps: new HomeSnapshots(files, maxBytes) };
  }

  it("copies code, leaves out hidden dirs, caches, venvs and fifos, keeps links as links", async () => {
    const { files, home, snaps } = setup();
    writeFileSync(join(home, "train.py"), "print(1)\n");
    writeFileSync(join(home, ".env"), "A=1\n"); // a hidden file is code's config: kept
    for (const d of [
      ".cache",
      ".ipynb_checkpoints",
      "__pycache__",
      "node_modules",
      "pkg/__pycache__",
      "env",
    ]) {
      mkdirSync(join(home, d), { recursive: true });
      writeFileSync(join(home, d, "x"), "x");
    }
    writeFileSync(join(home, "env", "pyvenv.cfg"), "home = /usr/bin\n");
    writeFileSync(join(home, "pkg", "m.py"), "y = 2\n");
    symlinkSync("/etc/shadow", join(home, "leak"));
    execFileSync("mkfifo", [join(home, "pipe")]);
    const handle = await snaps.take("p", "nb");
    await snaps.commit(handle, "p", "uid-1");
    const snap = files.snapshotDir("p", "uid-1");
    expect(readFileSync(join(snap, "train.py"), "utf8")).toBe("print(1)\n");
    expect(readFileSync(join(snap, "pkg", "m.py"), "utf8")).toBe("y = 2\n");
    expect(existsSync(join(snap, ".env"))).toBe(true);
    for (const gone of [
      ".cache",
      ".ipynb_checkpoints",
      "__pycache__",
      "node_modules",
      "pkg/__pycache__",
      "env",
      "pipe",
    ])
      expect(existsSync(join(snap, gone)), gone).toBe(false);
    expect(lstatSync(join(snap, "leak")).isSymbolicLink()).toBe(true);
  });

  it("refuses a home over the cap, saying what to do, and leaves nothing staged", async () => {
    const { files, home, snaps } = setup(1000);
    writeFileSync(join(home, "data.bin"), Buffer.alloc(2000));
    await expect(snaps.take("p", "nb")).rejects.toThrow(
      /over the snapshot limit .*move data out of the home/,
    );
    expect(existsSync(join(files.root, "..", "snapshots", ".staging"))).toBe(false);
  });

  it("refuses a workspace whose home does not exist yet", async () => {
    const { snaps } = setup();
    await expect(snaps.take("p", "never")).rejects.toThrow(/has no home yet.*loom start ws\/never/);
  });

  it("discards a staged copy", async () => {
    const { files, home, snaps } = setup();
    writeFileSync(join(home, "a.py"), "");
    const handle = await snaps.take("p", "nb");
    await snaps.discard(handle);
    expect(existsSync(join(files.root, "..", "snapshots", ".staging", handle))).toBe(false);
  });
});

import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { DirCheckpointVault, StagedCheckpointVault } from "./checkpointvault.js";
import { WorkloadFiles } from "./workloadfiles.js";

/**
 * The vault writes as the server's user (root on `loom up`) into a directory the job's own workers
 * wrote: a link they left there must never carry a synced file, or the job's step read, out of it.
 */
describe("DirCheckpointVault", () => {
  const setup = () => {
    const data = mkdtempSync(join(tmpdir(), "loom-vault-"));
    const files = new WorkloadFiles(data);
    const outside = mkdtempSync(join(tmpdir(), "loom-vault-outside-"));
    return { files, vault: new DirCheckpointVault(files), outside, dir: files.checkpointDir("u") };
  };

  it("writes the files, loom.json last, and reads the step back", async () => {
    const { vault } = setup();
    await vault.put(
      "u",
      new Map([
        ["loom.json", Buffer.from('{"step": 7}')],
        ["sub/model.pt", Buffer.from("weights")],
      ]),
    );
    expect(await vault.step("u")).toBe(7);
  });

  it("refuses to write through a directory link the job left, and writes nothing outside", async () => {
    const { vault, outside, dir } = setup();
    mkdirSync(dir, { recursive: true });
    symlinkSync(outside, join(dir, "sub"));
    await expect(vault.put("u", new Map([["sub/evil", Buffer.from("x")]]))).rejects.toThrow(
      /not a plain directory/,
    );
    expect(existsSync(join(outside, "evil"))).toBe(false);
    expect(existsSync(join(outside, "evil.loom-sync.tmp"))).toBe(false);
  });

  it("replaces a file link the job left rather than writing through it", async () => {
    const { vault, outside, dir } = setup();
    mkdirSync(dir, { recursive: true });
    const victim = join(outside, "victim");
    writeFileSync(victim, "untouched");
    symlinkSync(victim, join(dir, "model.pt"));
    symlinkSync(victim, join(dir, "model.pt.loom-sync.tmp"));
    await vault.put("u", new Map([["model.pt", Buffer.from("weights")]]));
    expect(readFileSync(victim, "utf8")).toBe("untouched");
    expect(readFileSync(join(dir, "model.pt"), "utf8")).toBe("weights");
  });

  it("does not read a loom.json that is a link", async () => {
    const { vault, outside, dir } = setup();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(outside, "secret.json"), '{"step": 99}');
    symlinkSync(join(outside, "secret.json"), join(dir, "loom.json"));
    expect(await vault.step("u")).toBeUndefined();
  });

  it("hands back the job's files to seed a member with, never what a link it left points at", async () => {
    const { vault, outside, dir } = setup();
    expect(await vault.files("u")).toBeUndefined();
    await vault.put(
      "u",
      new Map([
        ["loom.json", Buffer.from('{"step": 7}')],
        ["sub/model.pt", Buffer.from("weights")],
      ]),
    );
    mkdirSync(join(outside, "keys"));
    writeFileSync(join(outside, "keys", "id_rsa"), "the server's key");
    symlinkSync(join(outside, "keys"), join(dir, "keys"));
    symlinkSync(join(outside, "keys", "id_rsa"), join(dir, "id_rsa"));
    const files = await vault.files("u");
    expect([...files!.keys()].sort()).toEqual(["loom.json", "sub/model.pt"]);
    expect(files!.get("sub/model.pt")?.toString()).toBe("weights");
  });

  // A job that ran here and moved: its directory is its project's uid's (sandboxed), and what the
  // vault (root) writes there must be readable and replaceable by its workers when it resumes here.
  it.skipIf(process.getuid?.() !== 0)("hands what it writes over to the directory's owner", async () => {
    const { vault, dir } = setup();
    mkdirSync(dir, { recursive: true });
    chownSync(dir, 54321, 54321);
    await vault.put(
      "u",
      new Map([
        ["loom.json", Buffer.from('{"step": 7}')],
        ["sub/model.pt", Buffer.from("weights")],
      ]),
    );
    for (const path of ["loom.json", "sub", "sub/model.pt"])
      expect(statSync(join(dir, path)).uid, path).toBe(54321);
  });

  it("refuses to read a checkpoint larger than asked, rather than hold it", async () => {
    const { vault } = setup();
    await vault.put(
      "u",
      new Map([
        ["loom.json", Buffer.from('{"step": 7}')],
        ["w", Buffer.alloc(4096)],
      ]),
    );
    await expect(vault.files("u", 1024)).rejects.toThrow(/larger than 1024 bytes/);
    expect((await vault.files("u", 1 << 20))?.size).toBe(2);
  });
});

/**
 * The operator's vault (`--data-dir`): a directory of its own, each put a generation swapped in
 * whole. The files come from a member cluster: untrusted names, and a sync that may fail midway.
 */
describe("StagedCheckpointVault", () => {
  const setup = () => {
    const root = join(mkdtempSync(join(tmpdir(), "loom-opvault-")), "fleet-checkpoints");
    mkdirSync(root);
    return { root, vault: new StagedCheckpointVault(root) };
  };
  const ckpt = (step: number, extra: Record<string, string> = {}) =>
    new Map<string, Buffer>([
      ...Object.entries(extra).map(([k, v]) => [k, Buffer.from(v)] as [string, Buffer]),
      ["loom.json", Buffer.from(JSON.stringify({ step }))],
    ]);
  const text = (files: Map<string, Buffer> | undefined) =>
    Object.fromEntries([...(files ?? new Map<string, Buffer>())].map(([k, v]) => [k, v.toString()]).sort());

  it("holds the files byte for byte under <root>/<uid>/current, and their step", async () => {
    const { root, vault } = setup();
    expect(await vault.step("u1")).toBeUndefined();
    expect(await vault.files("u1")).toBeUndefined();
    const bytes = Buffer.from([0, 1, 2, 255]);
    await vault.put("u1", new Map([["shards/w.pt", bytes], ...ckpt(7)]));
    expect(await vault.step("u1")).toBe(7);
    const files = await vault.files("u1");
    expect(files?.get("shards/w.pt")).toEqual(bytes);
    expect(readFileSync(join(root, "u1", "current", "shards", "w.pt"))).toEqual(bytes);
    expect(readlinkSync(join(root, "u1", "current"))).toMatch(/^g-/);
  });

  it("a new checkpoint replaces the held one whole: no file of the older one is carried into it", async () => {
    const { root, vault } = setup();
    await vault.put("u1", ckpt(5, { "ckpt-5.pt": "five", "model.pt": "old" }));
    await vault.put("u1", ckpt(10, { "ckpt-10.pt": "ten", "model.pt": "new" }));
    expect(await vault.step("u1")).toBe(10);
    expect(text(await vault.files("u1"))).toEqual({
      "ckpt-10.pt": "ten",
      "loom.json": '{"step":10}',
      "model.pt": "new",
    });
    // One generation left on disk, nothing half written.
    expect(readdirSync(join(root, "u1")).sort()).toEqual(
      ["current", readlinkSync(join(root, "u1", "current"))].sort(),
    );
  });

  it("a sync that fails midway leaves the held checkpoint as it was, and nothing of the failed one", async () => {
    const { root, vault } = setup();
    await vault.put("u1", ckpt(5, { "model.pt": "five" }));
    // "a" written as a file, then "a/b" needs it as a directory: the write fails after a file went in.
    const bad = new Map([
      ["a", Buffer.from("x")],
      ["a/b", Buffer.from("y")],
      ["model.pt", Buffer.from("half")],
      ["loom.json", Buffer.from('{"step": 9}')],
    ]);
    await expect(vault.put("u1", bad)).rejects.toThrow(/not a plain directory/);
    expect(await vault.step("u1")).toBe(5);
    expect(text(await vault.files("u1"))).toEqual({ "loom.json": '{"step":5}', "model.pt": "five" });
    expect(readdirSync(join(root, "u1")).filter((n) => n.startsWith("g-"))).toHaveLength(1);
    expect(readdirSync(join(root, "u1")).filter((n) => n.endsWith(".tmp"))).toEqual([]);
  });

  it("refuses names that leave the directory, writing nothing anywhere", async () => {
    const { root, vault } = setup();
    const outside = dirname(root);
    for (const name of ["../escape", "/etc/escape", "a/../../escape", "..", "nul\u0000byte"]) {
      await expect(vault.put("u1", new Map([...ckpt(1), [name, Buffer.from("x")]]))).rejects.toThrow(
        /leaves the checkpoint directory/,
      );
    }
    expect(existsSync(join(outside, "escape"))).toBe(false);
    expect(existsSync(join(root, "escape"))).toBe(false);
    expect(existsSync(join(root, "u1"))).toBe(false);
    expect(await vault.step("u1")).toBeUndefined();
  });

  it("refuses a uid that is not one plain path component", async () => {
    const { vault } = setup();
    for (const uid of ["../u", "a/b", "..", ""])
      await expect(vault.put(uid, ckpt(1))).rejects.toThrow(/not a plain name/);
    expect(await vault.step("../u")).toBeUndefined();
  });

  it("remembers the step last seeded on the control plane's own cluster, and forgets jobs that are gone", async () => {
    const { root, vault } = setup();
    expect(await vault.self.seeded("u1")).toBeUndefined();
    await vault.put("u1", ckpt(7));
    await vault.self.markSeeded("u1", 7);
    expect(await vault.self.seeded("u1")).toBe(7);
    // A newer sync keeps the mark (the seed is due again because 9 > 7).
    await vault.put("u1", ckpt(9));
    expect(await vault.self.seeded("u1")).toBe(7);
    await vault.put("u2", ckpt(3));
    await vault.prune(new Set(["u2"]));
    expect(readdirSync(root)).toEqual(["u2"]);
    expect(await vault.step("u1")).toBeUndefined();
    expect(await vault.self.seeded("u1")).toBeUndefined();
  });
});

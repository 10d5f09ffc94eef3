import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DirCheckpointVault } from "./checkpointvault.js";
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

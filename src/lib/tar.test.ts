import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { packTar, unpackTar } from "./tar.js";

/** A directory packed by the system's tar (GNU tar here, as in Debian images). */
function systemTar(build: (dir: string) => void, args: string[] = []): Buffer {
  const dir = mkdtempSync(join(tmpdir(), "loom-tar-"));
  build(dir);
  return execFileSync("tar", [...args, "-C", dir, "-cf", "-", "."]);
}

describe("tar", () => {
  const long = "n".repeat(120);
  const fill = (dir: string) => {
    mkdirSync(join(dir, "sub"));
    writeFileSync(join(dir, "loom.json"), '{"step":5}');
    writeFileSync(join(dir, "sub", "w.bin"), Buffer.from([0, 1, 2, 255, 254]));
    writeFileSync(join(dir, long), "long name");
  };

  it("reads what GNU tar writes (gnu and pax formats, long names), directories skipped", () => {
    for (const args of [[], ["--format=pax"]]) {
      const files = unpackTar(systemTar(fill, args));
      expect([...files.keys()].sort()).toEqual(["loom.json", long, "sub/w.bin"]);
      expect(files.get("sub/w.bin")).toEqual(Buffer.from([0, 1, 2, 255, 254]));
      expect(files.get("loom.json")?.toString()).toBe('{"step":5}');
    }
  });

  it("writes what GNU tar extracts, long names included", () => {
    const dir = mkdtempSync(join(tmpdir(), "loom-untar-"));
    const files = new Map([
      ["loom.json", Buffer.from('{"step":7}')],
      ["sub/w.bin", Buffer.from([9, 0, 9])],
      [`sub/${long}`, Buffer.from("x")],
    ]);
    mkdirSync(join(dir, "sub"));
    execFileSync("tar", ["-x", "-f", "-", "-C", dir], { input: packTar(files) });
    expect(readFileSync(join(dir, "loom.json"), "utf8")).toBe('{"step":7}');
    expect(readFileSync(join(dir, "sub", "w.bin"))).toEqual(Buffer.from([9, 0, 9]));
    expect(readFileSync(join(dir, "sub", long), "utf8")).toBe("x");
    expect(unpackTar(packTar(files))).toEqual(files);
  });

  it("refuses a symlink (a member's checkpoint pointing at the control plane's files), a bad stream and too much data", () => {
    const withLink = systemTar((dir) => {
      fill(dir);
      symlinkSync("/etc/passwd", join(dir, "passwd"));
    });
    expect(() => unpackTar(withLink)).toThrow(/"\.\/passwd" is not a regular file/);
    expect(() => unpackTar(Buffer.alloc(1024, 7))).toThrow(/not a tar stream/);
    expect(() => unpackTar(systemTar(fill), 10)).toThrow(/larger than 10 bytes/);
  });
});

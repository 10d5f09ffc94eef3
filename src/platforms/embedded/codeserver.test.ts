import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { findCodeServer } from "./codeserver.js";

/** Finding code-server as npm installs it: a bin link to out/node/entry.js inside its package. */
describe("findCodeServer", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loom-cs-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function install(name = "code-server"): { pkg: string; bin: string } {
    const pkg = join(dir, "node_modules", "code-server");
    mkdirSync(join(pkg, "out", "node"), { recursive: true });
    writeFileSync(join(pkg, "package.json"), JSON.stringify({ name, version: "4.100.3" }));
    writeFileSync(join(pkg, "out", "node", "entry.js"), "", { mode: 0o755 });
    mkdirSync(join(dir, "bin"));
    const bin = join(dir, "bin", "code-server");
    symlinkSync(join(pkg, "out", "node", "entry.js"), bin);
    return { pkg, bin };
  }

  it("from the bin link on PATH, from LOOM_CODE_SERVER's link, or from its package folder", () => {
    const { pkg, bin } = install();
    const want = {
      command: [process.execPath, join(pkg, "out", "node", "entry.js")],
      root: pkg,
      lend: join(dir, "node_modules"),
      version: "4.100.3",
    };
    expect(findCodeServer({ PATH: join(dir, "bin") })).toEqual({ found: want });
    expect(findCodeServer({ PATH: "/nonexistent", LOOM_CODE_SERVER: bin })).toEqual({ found: want });
    expect(findCodeServer({ PATH: "/nonexistent", LOOM_CODE_SERVER: pkg })).toEqual({ found: want });
  });

  it("none, a missing path, or something else: missing, saying which", () => {
    expect(findCodeServer({ PATH: "/nonexistent" })).toEqual({
      missing: expect.stringMatching(/not installed/) as string,
    });
    expect(findCodeServer({ PATH: "/nonexistent", LOOM_CODE_SERVER: join(dir, "nope") })).toEqual({
      missing: expect.stringMatching(/not found at/) as string,
    });
    const { bin } = install("something-else");
    expect(findCodeServer({ PATH: "/nonexistent", LOOM_CODE_SERVER: bin })).toEqual({
      missing: expect.stringMatching(/not code-server's npm package/) as string,
    });
  });
});

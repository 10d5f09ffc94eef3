import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { venvBase } from "./gangsandbox.js";

describe("venvBase", () => {
  const venv = (home: string | undefined) => {
    const dir = mkdtempSync(join(tmpdir(), "loom-venv-"));
    mkdirSync(join(dir, "bin"));
    if (home !== undefined)
      writeFileSync(join(dir, "pyvenv.cfg"), `home = ${home}\ninclude-system-site-packages = false\n`);
    return dir;
  };

  it("lends the installation a venv's python links to, where the system does not hold it already", () => {
    // pyenv's interpreter under a home dir the sandbox does not see: without it, python is "not found" (127).
    expect(venvBase(venv("/root/.pyenv/versions/3.11.7/bin"))).toBe("/root/.pyenv/versions/3.11.7");
    expect(venvBase(venv("/usr/bin"))).toBeUndefined();
    expect(venvBase(venv("/opt/python/bin"))).toBeUndefined();
    expect(venvBase(venv(undefined))).toBeUndefined();
    expect(venvBase(venv("relative/bin"))).toBeUndefined();
  });
});

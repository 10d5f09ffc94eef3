import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { nvidiaSmiActivity, parseUtilization } from "./gpuactivity.js";

describe("GPU activity from nvidia-smi", () => {
  it("reads utilisation per device, skipping what it cannot read", () => {
    expect([...parseUtilization("0, 87\n1, 3\n2, [N/A]\n")]).toEqual([
      ["0", 87],
      ["1", 3],
    ]);
  });

  // No GPU on this machine: a stand-in nvidia-smi prints what the real one prints.
  const fake = (out: string, code = 0) => {
    const dir = mkdtempSync(join(tmpdir(), "loom-smi-"));
    const bin = join(dir, "nvidia-smi");
    writeFileSync(bin, `#!/bin/sh\nprintf '${out}'\nexit ${code}\n`);
    chmodSync(bin, 0o755);
    return bin;
  };

  it("says busy when one of the workspace's devices computes, idle when none does", async () => {
    const smi = nvidiaSmiActivity(fake("0, 2\\n1, 95\\n"));
    expect(await smi(["1"])).toBe(true);
    expect(await smi(["0"])).toBe(false);
  });

  it("cannot say for devices it does not know, a failing or a missing nvidia-smi", async () => {
    expect(await nvidiaSmiActivity(fake("0, 95\\n"))(["7"])).toBeUndefined();
    expect(await nvidiaSmiActivity(fake("", 9))(["0"])).toBeUndefined();
    expect(await nvidiaSmiActivity("/nonexistent/nvidia-smi")(["0"])).toBeUndefined();
  });
});

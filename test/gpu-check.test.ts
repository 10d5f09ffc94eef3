import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

// `npm run gpu-check` on machines without a GPU: it must say so and stop, or, where a stand-in
// nvidia-smi answers but nothing can allocate, report every step and exit non-zero, not crash.
const SCRIPT = join(import.meta.dirname, "..", "scripts", "gpu-check.sh");
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "loom-gpucheck-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const run = (path: string) =>
  spawnSync("bash", [SCRIPT], {
    encoding: "utf8",
    env: { PATH: path, OUT: join(dir, "out"), HOME: dir },
    timeout: 120_000,
  });

describe("npm run gpu-check without a GPU", () => {
  it('says "no GPU" and exits 0 having run nothing', () => {
    const r = run("/usr/bin:/bin");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/no GPU: nvidia-smi is missing/);
    expect(readFileSync(join(dir, "out", "summary.txt"), "utf8")).toMatch(/no GPU/);
  });

  it("with an nvidia-smi but nothing to allocate or share with, reports each step and fails cleanly", () => {
    const smi = join(dir, "nvidia-smi");
    writeFileSync(
      smi,
      `#!/bin/sh
case "$1" in
  -L) echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0)" ;;
  --query-gpu=*) echo "0, GPU-1f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0, NVIDIA H100 80GB HBM3, 81559, 0, 0, 00000000:18:00.0, 550.54.15, Disabled, 0" ;;
esac
`,
    );
    chmodSync(smi, 0o755);
    // No python with torch, no nvcc, no MPS on this PATH.
    const r = run(`${dir}:/usr/bin:/bin`);
    const summary = readFileSync(join(dir, "out", "summary.txt"), "utf8");
    expect(summary).toMatch(/discovery\s+PASS\s+1 device/);
    expect(summary).toMatch(/allocator: none/);
    expect(summary).toMatch(/mps\s+FAIL\s+nvidia-cuda-mps-control missing/);
    expect(summary).toMatch(/gpu-check: FAIL/);
    expect(r.status).toBe(1);
    expect(readFileSync(join(dir, "out", "fixtures", "query-gpu.csv"), "utf8")).toMatch(/^0, GPU-/);
  });
});

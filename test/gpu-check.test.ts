import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

// `npm run gpu-check` on machines without a GPU: it must say so and stop, or, where a stand-in
// nvidia-smi answers but nothing can allocate, report every step and exit non-zero, not crash.
const SCRIPT = join(import.meta.dirname, "..", "scripts", "gpu-check.sh");
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "loom-gpucheck-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const run = (path: string, extra: Record<string, string> = {}, timeout = 120_000) =>
  spawnSync("bash", [SCRIPT], {
    encoding: "utf8",
    env: {
      PATH: path,
      OUT: join(dir, "out"),
      HOME: dir,
      LOOM_GPU_CHECK_WORK: join(dir, "work"),
      // The section goes here, not into the checkout's bench/RESULTS.md.
      LOOM_GPU_CHECK_RESULTS: join(dir, "RESULTS.md"),
      ...extra,
    },
    timeout,
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
    writeFileSync(join(dir, "RESULTS.md"), "# results\n");
    const r = run(`${dir}:/usr/bin:/bin`);
    const summary = readFileSync(join(dir, "out", "summary.txt"), "utf8");
    expect(summary).toMatch(/discovery\s+PASS\s+1 device/);
    expect(summary).toMatch(/allocator: none/);
    expect(summary).toMatch(/mps\s+FAIL\s+nvidia-cuda-mps-control missing/);
    expect(summary).toMatch(/gpu-check: FAIL/);
    // No python with CUDA here: the steps under Loom say so rather than start.
    expect(summary).toMatch(/loom\s+FAIL\s+no python with PyTorch/);
    expect(r.status).toBe(1);
    expect(readFileSync(join(dir, "work", "fixtures", "query-gpu.csv"), "utf8")).toMatch(/^0, GPU-/);
    // What comes back from the device: at most 8 files (three).
    // The dated section, with the GPU and driver nvidia-smi named, appended to the results file.
    expect(readFileSync(join(dir, "RESULTS.md"), "utf8")).toMatch(
      /^# results\n\n## \d{4}-\d\d-\d\d \d\d:\d\d UTC — gpu-check\n\nGPU: NVIDIA H100 80GB HBM3; driver 550\.54\.15;[^\n]*\*\*FAIL\*\*/,
    );
    expect(readdirSync(join(dir, "out")).sort()).toEqual([
      "gpu-check-logs.tar.gz",
      "results-section.md",
      "summary.txt",
    ]);
  });
});

// The CPU rehearsal: every step under a real `loom up --gpus 1` (built dist/, Debian's CPU PyTorch),
// gloo for NCCL, CPU tensors and a share checked by the worker for MPS. It proves the plumbing the
// GPU run depends on: jobs placed on the device's shares, the over-allocating one failing alone,
// a 2-worker DDP gang, a replica answering through the gateway, the torchrun baseline, the table.
const torchPython = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;
describe.skipIf(!torchPython)("npm run gpu-check, rehearsed on CPU (LOOM_GPU_CHECK_REHEARSE=1)", () => {
  it("runs every Loom step and reports each in the table and the RESULTS section", () => {
    const r = run(`${dirname(process.execPath)}:/usr/bin:/bin`, { LOOM_GPU_CHECK_REHEARSE: "1" }, 540_000);
    const summary = readFileSync(join(dir, "out", "summary.txt"), "utf8");
    for (const step of ["loom-up", "frac-oom", "frac-rate", "ddp", "serving", "pretrain"])
      expect(summary, `${r.stdout}\n${r.stderr}`).toMatch(new RegExp(`^${step}\\s+PASS`, "m"));
    expect(summary).toMatch(/0\.7: Failed with CUDA OOM/);
    expect(summary).toMatch(/gpu-check: PASS/);
    expect(r.status).toBe(0);
    const section = readFileSync(join(dir, "out", "results-section.md"), "utf8");
    expect(section).toMatch(/^## \d{4}-\d\d-\d\d \d\d:\d\d UTC — gpu-check \(CPU rehearsal\)$/m);
    expect(section).toMatch(/^serving +PASS +chat through the gateway: 200/m);
    // A rehearsal never writes the repository's bench/RESULTS.md.
    expect(r.stdout).not.toMatch(/appended to bench\/RESULTS.md/);
  }, 600_000);
});

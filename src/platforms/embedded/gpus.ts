import { execFileSync } from "node:child_process";

/**
 * GPUs this machine has: `--gpus N` declares N virtual devices (ids "0".."N-1", for testing on
 * machines without any); otherwise nvidia-smi is asked, and no nvidia-smi means no GPUs.
 */
export function detectGpus(declared: number | undefined): string[] {
  if (declared !== undefined) return Array.from({ length: declared }, (_, i) => String(i));
  try {
    const out = execFileSync("nvidia-smi", ["--query-gpu=index", "--format=csv,noheader"], {
      encoding: "utf8",
      timeout: 10_000,
      stdio: ["ignore", "pipe", "ignore"],
    });
    return out
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => /^\d+$/.test(l));
  } catch {
    return [];
  }
}

import { execFile } from "node:child_process";
import type { GpuActivity } from "../../ports/workspaces.js";

/** Utilisation (percent) from which a GPU counts as computing: a desktop's idle flicker stays under it. */
export const BUSY_PERCENT = 10;

/**
 * Parses `nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits`
 * ("0, 87" per line) into utilisation by device index; lines it cannot read ("[N/A]") are left out.
 */
export function parseUtilization(out: string): Map<string, number> {
  const byDevice = new Map<string, number>();
  for (const line of out.split("\n")) {
    const m = /^\s*(\d+)\s*,\s*(\d+(?:\.\d+)?)\s*$/.exec(line);
    if (m) byDevice.set(m[1]!, Number(m[2]));
  }
  return byDevice;
}

/**
 * The embedded GpuActivity: asks nvidia-smi (where it answers) whether any of the devices is at
 * BUSY_PERCENT or more. Undefined when nvidia-smi is missing, fails, or knows none of the devices
 * (virtual `--gpus N` devices): the culler then goes by the other kinds of activity only.
 */
export function nvidiaSmiActivity(command = "nvidia-smi", timeoutMs = 5000): GpuActivity {
  return (devices) =>
    new Promise((resolve) => {
      execFile(
        command,
        ["--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"],
        { timeout: timeoutMs, encoding: "utf8" },
        (err, stdout) => {
          if (err) return resolve(undefined);
          const byDevice = parseUtilization(stdout);
          const known = devices.filter((d) => byDevice.has(d));
          if (known.length === 0) return resolve(undefined);
          resolve(known.some((d) => byDevice.get(d)! >= BUSY_PERCENT));
        },
      );
    });
}

import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { processAlive } from "../../lib/pid.js";
import type { GpuDevice } from "./gpuinventory.js";

/**
 * CUDA MPS, one control daemon per GPU: workloads sharing a device (gpu: 0.5) connect to it as
 * clients, each with a pinned-memory limit (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT) and an active-thread
 * percentage from its share, so one that allocates past its share gets CUDA's out-of-memory
 * error rather than its neighbour. A daemon per device (its own pipe and log directories, the
 * device named by UUID in its CUDA_VISIBLE_DEVICES) keeps one device's clients off another's.
 * Daemons outlive `loom up` as workers do: the next server finds them by their pid files.
 */
export interface MpsOptions {
  /** Under the data dir: `<dir>/<gpu id>/pipe` and `/log`. */
  dir: string;
  /** nvidia-cuda-mps-control's path (tests put a stand-in). */
  command?: string;
  timeoutMs?: number;
  log?: Logger;
}

/** Whether fractions can be enforced here, and if not why. */
export interface MpsState {
  available: boolean;
  reason?: string;
}

export class MpsDaemons {
  private readonly command: string;
  private readonly running = new Set<string>();

  constructor(private readonly opts: MpsOptions) {
    this.command = opts.command ?? "nvidia-cuda-mps-control";
  }

  pipeDir(id: string): string {
    return join(this.opts.dir, id, "pipe");
  }

  logDir(id: string): string {
    return join(this.opts.dir, id, "log");
  }

  /** Starts (or finds running) one daemon per device; unavailable if any device's fails. */
  async start(devices: GpuDevice[]): Promise<MpsState> {
    if (devices.length === 0) return { available: false, reason: "no GPU" };
    for (const d of devices) {
      const state = await this.startOne(d);
      if (!state.available) return state;
    }
    return { available: true };
  }

  /** The device's daemon runs (it started, or was found from a previous server). */
  has(id: string): boolean {
    return this.running.has(id);
  }

  /**
   * A client's environment for `share` of the device: its daemon's pipes, the memory it may pin
   * (MiB, of device 0: the client sees its one device), and its share of the device's SMs.
   */
  clientEnv(device: GpuDevice, share: number): Record<string, string> {
    const env: Record<string, string> = {
      CUDA_MPS_PIPE_DIRECTORY: this.pipeDir(device.id),
      CUDA_MPS_LOG_DIRECTORY: this.logDir(device.id),
      CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: String(Math.max(1, Math.min(100, Math.round(share * 100)))),
    };
    if (device.memoryBytes) {
      env.CUDA_MPS_PINNED_DEVICE_MEM_LIMIT = `0=${Math.floor((device.memoryBytes * share) / 2 ** 20)}M`;
    }
    return env;
  }

  /** Stops every daemon (`echo quit | nvidia-cuda-mps-control`); for tests and tools, not `loom up`'s close. */
  async stop(): Promise<void> {
    await Promise.all(
      [...this.running].map(
        (id) =>
          new Promise<void>((resolve) => {
            const child = execFile(
              this.command,
              [],
              { timeout: this.opts.timeoutMs ?? 10_000, env: this.env(id) },
              () => resolve(),
            );
            child.stdin?.end("quit\n");
          }),
      ),
    );
    this.running.clear();
  }

  private env(id: string, uuid?: string): NodeJS.ProcessEnv {
    return {
      ...process.env,
      ...(uuid ? { CUDA_VISIBLE_DEVICES: uuid } : {}),
      CUDA_MPS_PIPE_DIRECTORY: this.pipeDir(id),
      CUDA_MPS_LOG_DIRECTORY: this.logDir(id),
    };
  }

  private async startOne(d: GpuDevice): Promise<MpsState> {
    // The server MPS starts runs as its first client's uid (a project's), and makes its own pipes
    // here: both directories are writable by any uid, sticky as /tmp. Only workloads lent the
    // directory (those sharing this device) can reach it: the data dir above is closed.
    for (const dir of [this.pipeDir(d.id), this.logDir(d.id)]) {
      mkdirSync(dir, { recursive: true });
      chmodSync(dir, 0o1777);
    }
    if (this.alive(d.id)) {
      this.running.add(d.id);
      return { available: true };
    }
    const res = await new Promise<{ ok: boolean; why: string }>((resolve) => {
      execFile(
        this.command,
        ["-d"],
        { timeout: this.opts.timeoutMs ?? 10_000, env: this.env(d.id, d.uuid) },
        (err, _out, stderr) => {
          const e = err as NodeJS.ErrnoException | null;
          if (!e) return resolve({ ok: true, why: "" });
          if (e.code === "ENOENT")
            return resolve({ ok: false, why: `${this.command} is not installed (NVIDIA's CUDA MPS)` });
          resolve({ ok: false, why: (String(stderr).trim() || e.message).split("\n")[0]! });
        },
      );
    });
    if (!res.ok) {
      this.opts.log?.warn({ gpu: d.id, reason: res.why }, "CUDA MPS unavailable");
      return { available: false, reason: `GPU ${d.id}: ${res.why}` };
    }
    this.running.add(d.id);
    return { available: true };
  }

  /** A daemon from an earlier server still runs for this device (its pid file names a live process). */
  private alive(id: string): boolean {
    const file = join(this.pipeDir(id), "nvidia-cuda-mps-control.pid");
    if (!existsSync(file)) return false;
    const pid = Number(readFileSync(file, "utf8").trim());
    return processAlive(pid);
  }
}

import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import {
  APPLICATION_XIDS,
  APPS_QUERY,
  busKey,
  type ComputeApp,
  GPU_QUERY,
  type GpuRow,
  type MigDevice,
  parseComputeApps,
  parseGpuQuery,
  parseMigList,
  parseSmiErrors,
  parseXids,
  type XidEvent,
  xidMatches,
} from "./gpusmi.js";

/** One real device as Loom knows it: its identity, its last sample, and whether new work may go there. */
export interface GpuDevice {
  /** nvidia-smi's index at discovery: the id the scheduler places by (kept while the process lives). */
  id: string;
  uuid: string;
  name: string;
  memoryBytes?: number;
  memoryUsedBytes?: number;
  utilization?: number;
  busId?: string;
  /** The N of /dev/nvidiaN (the driver's minor number; the index where /proc does not say). */
  minor: number;
  mig: MigDevice[];
  healthy: boolean;
  /** Why it is unhealthy. */
  reason?: string;
}

/** What one refresh read. */
export interface GpuSample {
  devices: GpuDevice[];
  apps: ComputeApp[];
  driver?: string;
  at: Date;
}

export interface GpuInventoryOptions {
  /** nvidia-smi's path (tests put a stand-in first). */
  command?: string;
  /** How often devices and usage are read again (default 10 s). */
  refreshMs?: number;
  timeoutMs?: number;
  /** Where the driver describes each device (`<bus>/information` has "Device Minor: N"). */
  procGpus?: string;
  /** Kernel log text with the driver's XIDs (default: none read; `loom up` passes dmesg). */
  kernelLog?: () => Promise<string>;
  log?: Logger;
}

type Run = { code: number; stdout: string; stderr: string; missing: boolean };

function run(command: string, args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, encoding: "utf8" }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
      resolve({
        code: e ? (typeof e.code === "number" ? e.code : 1) : 0,
        stdout: stdout ?? "",
        stderr: stderr ?? "",
        missing: e?.code === "ENOENT",
      });
    });
  });
}

/**
 * The machine's NVIDIA devices, read from nvidia-smi (NVML's own tool) at start and every
 * refreshMs: model, memory, MIG instances, utilisation, the processes on them, and health. A
 * device is unhealthy when it vanishes from the listing, answers a field with an error, has
 * uncorrected ECC errors, or the driver logs a non-application XID for it after Loom started;
 * unhealthy devices are left out of what the scheduler may place on (running work keeps them).
 * An unhealthy device stays so until Loom restarts, as NVIDIA's device plugin does.
 */
export class GpuInventory {
  private readonly known = new Map<string, GpuDevice>();
  private last: GpuSample | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** XIDs already in the log when Loom started are history, not news. */
  private xidsSeen: number | undefined;
  private readonly command: string;
  private readonly timeoutMs: number;
  private readonly listeners: (() => void)[] = [];

  constructor(private readonly opts: GpuInventoryOptions = {}) {
    this.command = opts.command ?? "nvidia-smi";
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /**
   * Reads the devices once. False where nvidia-smi is missing or lists no device: the machine has
   * no GPU Loom can use (and `loom up --gpus N` virtual devices are used instead).
   */
  async discover(): Promise<boolean> {
    await this.refresh();
    return this.known.size > 0;
  }

  /** Refreshes every refreshMs from now on (unref'd: it never keeps the process alive). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.refresh().catch((err: unknown) => this.opts.log?.warn({ err }, "could not read the GPUs"));
    }, this.opts.refreshMs ?? 10_000);
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Called after each refresh that changed a device's health (the runtime tells admission). */
  onHealthChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Every device seen since start, healthy or not, in index order. */
  devices(): GpuDevice[] {
    return [...this.known.values()].sort((a, b) => Number(a.id) - Number(b.id));
  }

  /** The ids new work may be placed on. */
  healthyIds(): string[] {
    return this.devices()
      .filter((d) => d.healthy)
      .map((d) => d.id);
  }

  device(id: string): GpuDevice | undefined {
    return this.known.get(id);
  }

  /** The last refresh's reading (undefined before the first). */
  sample(): GpuSample | undefined {
    return this.last;
  }

  /** Reads devices, MIG instances, processes and the XID log once; never throws for nvidia-smi's faults. */
  async refresh(): Promise<void> {
    const [query, list, apps, xids] = await Promise.all([
      run(this.command, GPU_QUERY, this.timeoutMs),
      run(this.command, ["-L"], this.timeoutMs),
      run(this.command, APPS_QUERY, this.timeoutMs),
      this.newXids(),
    ]);
    const before = new Map([...this.known].map(([id, d]) => [id, d.healthy]));
    const rows = parseGpuQuery(query.stdout);
    const unreachable = parseSmiErrors(`${query.stdout}\n${query.stderr}`);
    const mig = parseMigList(list.stdout);
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.index);
      this.known.set(row.index, this.merge(row, mig.get(row.uuid) ?? [], xids));
    }
    for (const d of this.known.values()) {
      if (seen.has(d.id)) continue;
      const why = d.busId ? unreachable.get(busKey(d.busId)) : undefined;
      // Gone from the listing (fallen off the bus, driver lost it): never placed on again.
      this.markUnhealthy(d, why ? `nvidia-smi cannot reach it: ${why}` : "gone from nvidia-smi's listing");
      d.utilization = undefined;
      d.memoryUsedBytes = undefined;
    }
    this.last = {
      devices: this.devices().map((d) => ({ ...d })),
      apps: parseComputeApps(apps.stdout),
      ...(rows[0]?.driver ? { driver: rows[0].driver } : {}),
      at: new Date(),
    };
    const changed = [...this.known].some(([id, d]) => before.get(id) !== d.healthy);
    if (changed) {
      for (const d of this.known.values())
        if (!d.healthy) this.opts.log?.warn({ gpu: d.id, uuid: d.uuid, reason: d.reason }, "GPU unhealthy");
      for (const l of this.listeners) l();
    }
  }

  private merge(row: GpuRow, mig: MigDevice[], xids: XidEvent[]): GpuDevice {
    const prev = this.known.get(row.index);
    const d: GpuDevice = {
      id: row.index,
      uuid: row.uuid,
      name: row.name,
      minor: prev?.minor ?? minorOf(row, this.opts.procGpus ?? "/proc/driver/nvidia/gpus"),
      mig,
      healthy: prev?.healthy ?? true,
      ...(prev?.reason ? { reason: prev.reason } : {}),
      ...(row.memoryTotalMiB !== undefined ? { memoryBytes: row.memoryTotalMiB * 2 ** 20 } : {}),
      ...(row.memoryUsedMiB !== undefined ? { memoryUsedBytes: row.memoryUsedMiB * 2 ** 20 } : {}),
      ...(row.utilization !== undefined ? { utilization: row.utilization } : {}),
      ...(row.busId ? { busId: row.busId } : {}),
    };
    // The same index now naming another card (a driver reload renumbered them) is not the device
    // work was placed on: treated as the old one gone.
    if (prev && prev.uuid !== row.uuid)
      this.markUnhealthy(d, `its index now names another device (${row.uuid})`);
    if (row.errors.length > 0) this.markUnhealthy(d, `nvidia-smi reports errors: ${row.errors.join("; ")}`);
    if ((row.eccUncorrected ?? 0) > 0)
      this.markUnhealthy(d, `${row.eccUncorrected} uncorrected ECC errors since the driver loaded`);
    const xid = xids.find((x) => !APPLICATION_XIDS.has(x.xid) && xidMatches(x, row.busId));
    if (xid) this.markUnhealthy(d, `the driver logged XID ${xid.xid}: ${xid.message}`);
    return d;
  }

  private markUnhealthy(d: GpuDevice, reason: string): void {
    if (!d.healthy) return;
    d.healthy = false;
    d.reason = reason;
  }

  /** XIDs logged since the first read (those before it happened before Loom was watching). */
  private async newXids(): Promise<XidEvent[]> {
    if (!this.opts.kernelLog) return [];
    let all: XidEvent[];
    try {
      all = parseXids(await this.opts.kernelLog());
    } catch {
      return [];
    }
    const from = this.xidsSeen ?? all.length;
    this.xidsSeen = all.length;
    // A log that rotated (fewer lines than before) is read afresh.
    return all.length >= from ? all.slice(from) : all;
  }
}

/** The device's minor number from the driver's description, else its index (the usual match). */
function minorOf(row: GpuRow, procGpus: string): number {
  if (row.busId) {
    try {
      const key = busKey(row.busId);
      const dir = readdirSync(procGpus).find((n) => busKey(n) === key);
      if (dir) {
        const m = /Device Minor:\s*(\d+)/.exec(readFileSync(join(procGpus, dir, "information"), "utf8"));
        if (m) return Number(m[1]);
      }
    } catch {
      // no /proc/driver/nvidia (a container without it): the index is the minor on every usual machine
    }
  }
  return Number(row.index);
}

/** The kernel log, for XIDs: dmesg where it may be read (root), else nothing. */
export function dmesgLog(timeoutMs = 5000): () => Promise<string> {
  return () => run("dmesg", [], timeoutMs).then((r) => (r.code === 0 ? r.stdout : ""));
}

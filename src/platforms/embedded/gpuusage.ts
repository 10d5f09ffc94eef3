import { readFileSync } from "node:fs";
import { Gauge, type Registry } from "prom-client";
import type { GpuDeviceStatus } from "../../ports/scheduler.js";
import type { GpuActivity } from "../../ports/workspaces.js";
import { BUSY_PERCENT } from "./gpuactivity.js";
import type { GpuHost } from "./gpuhost.js";
import type { GpuInventory } from "./gpuinventory.js";
import { WORKER_KEY_ENV } from "./workerenv.js";

/** Who a worker is, for usage attributed to it. */
export interface WorkerName {
  project: string;
  name: string;
  worker: number;
}

/**
 * The worker a process belongs to: every worker's processes carry LOOM_WORKER_KEY in their
 * environment (nvidia-smi reports host pids, whatever PID namespace the sandbox gave them).
 * Undefined for a process that is not a worker's, or whose environment cannot be read.
 */
export function workerOfPid(pid: number, proc = "/proc"): string | undefined {
  let environ: string;
  try {
    environ = readFileSync(`${proc}/${pid}/environ`, "latin1");
  } catch {
    return undefined;
  }
  const prefix = `${WORKER_KEY_ENV}=`;
  for (const kv of environ.split("\0")) if (kv.startsWith(prefix)) return kv.slice(prefix.length);
  return undefined;
}

/**
 * Each real device's health and last sample, with the device memory each worker's processes
 * use (nvidia-smi --query-compute-apps, summed per worker). Empty for virtual devices.
 */
export function gpuStatus(host: GpuHost, owner: (pid: number) => WorkerName | undefined): GpuDeviceStatus[] {
  const devices = host.devices?.() ?? [];
  const apps = host.sample?.()?.apps ?? [];
  return devices.map((d) => {
    const byWorker = new Map<string, WorkerName & { memoryUsedBytes: number }>();
    for (const app of apps) {
      if (app.gpuUuid !== d.uuid) continue;
      const w = owner(app.pid);
      if (!w) continue;
      const key = `${w.project}/${w.name}/${w.worker}`;
      const entry = byWorker.get(key) ?? { ...w, memoryUsedBytes: 0 };
      entry.memoryUsedBytes += (app.usedMiB ?? 0) * 2 ** 20;
      byWorker.set(key, entry);
    }
    return {
      id: d.id,
      uuid: d.uuid,
      model: d.name,
      healthy: d.healthy,
      ...(d.reason ? { reason: d.reason } : {}),
      ...(d.utilization !== undefined ? { utilization: d.utilization } : {}),
      ...(d.memoryBytes !== undefined ? { memoryBytes: d.memoryBytes } : {}),
      ...(d.memoryUsedBytes !== undefined ? { memoryUsedBytes: d.memoryUsedBytes } : {}),
      ...(byWorker.size > 0 ? { workloads: [...byWorker.values()] } : {}),
    };
  });
}

/**
 * GPU series for /metrics, read at scrape time from the last status: per device utilisation,
 * memory used and total, health; per worker the device memory its processes use.
 */
export function registerGpuMetrics(registry: Registry, status: () => GpuDeviceStatus[]): void {
  const labels = ["gpu", "uuid", "model"] as const;
  const of = (d: GpuDeviceStatus) => ({ gpu: d.id, uuid: d.uuid ?? "", model: d.model ?? "" });
  new Gauge({
    name: "loom_gpu_utilization_percent",
    help: "Percent of the last sample period the GPU was computing (nvidia-smi utilization.gpu)",
    labelNames: labels,
    registers: [registry],
    collect() {
      this.reset();
      for (const d of status()) if (d.utilization !== undefined) this.set(of(d), d.utilization);
    },
  });
  new Gauge({
    name: "loom_gpu_memory_used_bytes",
    help: "Device memory in use on the GPU",
    labelNames: labels,
    registers: [registry],
    collect() {
      this.reset();
      for (const d of status()) if (d.memoryUsedBytes !== undefined) this.set(of(d), d.memoryUsedBytes);
    },
  });
  new Gauge({
    name: "loom_gpu_memory_total_bytes",
    help: "Device memory of the GPU",
    labelNames: labels,
    registers: [registry],
    collect() {
      this.reset();
      for (const d of status()) if (d.memoryBytes !== undefined) this.set(of(d), d.memoryBytes);
    },
  });
  new Gauge({
    name: "loom_gpu_healthy",
    help: "1 while new work may be placed on the GPU, 0 once it vanished or reported an error",
    labelNames: labels,
    registers: [registry],
    collect() {
      this.reset();
      for (const d of status()) this.set(of(d), d.healthy ? 1 : 0);
    },
  });
  new Gauge({
    name: "loom_gpu_workload_memory_used_bytes",
    help: "Device memory a workload's worker uses on the GPU (nvidia-smi --query-compute-apps)",
    labelNames: ["gpu", "project", "workload", "worker"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const d of status())
        for (const w of d.workloads ?? [])
          this.set(
            { gpu: d.id, project: w.project, workload: w.name, worker: String(w.worker) },
            w.memoryUsedBytes,
          );
    },
  });
}

/**
 * Workspace idle culling from the inventory's last sample (no nvidia-smi run per question):
 * busy when one of the devices computes at BUSY_PERCENT or more; undefined for unknown devices.
 */
export function inventoryActivity(inventory: GpuInventory): GpuActivity {
  return async (devices) => {
    const known = devices.map((id) => inventory.device(id)).filter((d) => d?.utilization !== undefined);
    if (known.length === 0) return undefined;
    return known.some((d) => d!.utilization! >= BUSY_PERCENT);
  };
}

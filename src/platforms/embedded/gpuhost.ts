import { join } from "node:path";
import type { Allocation, GpuSharing } from "../../ports/scheduler.js";
import type { GpuDevice, GpuInventory, GpuSample } from "./gpuinventory.js";
import type { MpsDaemons, MpsState } from "./gpumps.js";

/**
 * The machine's GPUs as the local runtime uses them: which devices new work may be placed on,
 * and, for one worker's allocation, the environment that names its devices, the /dev nodes its
 * sandbox is lent and the directories it must reach (an MPS daemon's pipes). Two kinds: virtual
 * devices (`loom up --gpus N`, or none) and the machine's NVIDIA devices (gpuinventory.ts).
 */
export interface GpuHost {
  /** Devices new work may be placed on (healthy ones). */
  ids(): string[];
  /** How fractional requests share a device: see GpuSharing. */
  sharing: GpuSharing;
  /** Why fractions are not enforced (for the node's status and `loom up`). */
  sharingReason?: string;
  model?: string;
  memoryBytes?: number;
  /** The worker's environment for its devices (CUDA_VISIBLE_DEVICES, MPS client settings). */
  env(a: Pick<Allocation, "gpus" | "gpuShare">): Record<string, string>;
  /** /dev entries the worker's sandbox gets: its own devices and the driver's shared nodes, no other device. */
  deviceFiles(gpus: string[]): string[];
  /** Directories the worker's sandbox must be lent read-write (its MPS daemon's pipes and logs). */
  binds(a: Pick<Allocation, "gpus" | "gpuShare">): string[];
  /** Devices with their health and last sample (real devices only). */
  devices?(): GpuDevice[];
  /** The last reading, with the processes on the devices (real devices only). */
  sample?(): GpuSample | undefined;
}

/** The driver's nodes every CUDA process opens, whatever its device (not a device of its own). */
export const SHARED_NODES = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"];

/**
 * Virtual devices, as before there were real ones: ids "0".."N-1", CUDA_VISIBLE_DEVICES the ids,
 * fractions accounted but not enforced, and /dev/nvidia<id> lent where such a node exists.
 */
export function virtualGpus(ids: string[], devRoot = "/dev"): GpuHost {
  return {
    ids: () => ids,
    sharing: "unenforced",
    ...(ids.length > 0 ? { sharingReason: "virtual devices (loom up --gpus N)" } : {}),
    env: (a) => ({ CUDA_VISIBLE_DEVICES: a.gpus.join(",") }),
    deviceFiles: (gpus) => devicePaths(devRoot, gpus),
    binds: () => [],
  };
}

/** The driver's shared nodes and /dev/nvidia<minor> of each device. */
function devicePaths(devRoot: string, minors: (string | number)[]): string[] {
  if (minors.length === 0) return [];
  return [...SHARED_NODES.map((n) => join(devRoot, n)), ...minors.map((m) => join(devRoot, `nvidia${m}`))];
}

export interface NvidiaGpusOptions {
  inventory: GpuInventory;
  mps?: MpsDaemons;
  /** The MPS daemons' start result (mps.start). */
  mpsState: MpsState;
  /** The admin's `--gpu-sharing unenforced`: share devices without MPS, trusting workloads to keep to their share. */
  allowUnenforced?: boolean;
  devRoot?: string;
}

/**
 * The machine's NVIDIA devices: placed by index, named to CUDA by UUID (stable whatever order
 * CUDA enumerates in, and what MPS asks for), each worker lent only its own /dev/nvidiaN. A
 * fractional share runs as an MPS client of its device's daemon; without MPS, fractional requests
 * take whole devices unless the admin allowed unenforced sharing.
 */
export function nvidiaGpus(o: NvidiaGpusOptions): GpuHost {
  const inv = o.inventory;
  const devRoot = o.devRoot ?? "/dev";
  const first = inv.devices()[0];
  const sharing: GpuSharing = o.mpsState.available ? "mps" : o.allowUnenforced ? "unenforced" : "whole";
  const reason = o.mpsState.available
    ? undefined
    : `CUDA MPS unavailable (${o.mpsState.reason ?? "unknown"}): ${
        sharing === "whole"
          ? "fractional GPU requests get whole GPUs (loom up --gpu-sharing unenforced shares them unenforced)"
          : "fractional GPU requests share devices unenforced (--gpu-sharing unenforced)"
      }`;
  const known = (ids: string[]) => ids.map((id) => inv.device(id)).filter((d): d is GpuDevice => !!d);
  return {
    ids: () => inv.healthyIds(),
    sharing,
    ...(reason ? { sharingReason: reason } : {}),
    ...(first ? { model: first.name } : {}),
    ...(first?.memoryBytes ? { memoryBytes: first.memoryBytes } : {}),
    env(a) {
      const devices = known(a.gpus);
      if (devices.length === 0) return { CUDA_VISIBLE_DEVICES: "" };
      const env: Record<string, string> = { CUDA_VISIBLE_DEVICES: devices.map((d) => d.uuid).join(",") };
      const share = a.gpuShare;
      if (
        share !== undefined &&
        share < 1 &&
        sharing === "mps" &&
        devices.length === 1 &&
        o.mps?.has(devices[0]!.id)
      )
        Object.assign(env, o.mps.clientEnv(devices[0]!, share));
      return env;
    },
    deviceFiles: (gpus) =>
      devicePaths(
        devRoot,
        known(gpus).map((d) => d.minor),
      ),
    binds(a) {
      const share = a.gpuShare;
      if (share === undefined || share >= 1 || sharing !== "mps" || a.gpus.length !== 1) return [];
      if (!o.mps?.has(a.gpus[0]!)) return [];
      return [o.mps.pipeDir(a.gpus[0]!), o.mps.logDir(a.gpus[0]!)];
    },
    devices: () => inv.devices(),
    sample: () => inv.sample(),
  };
}

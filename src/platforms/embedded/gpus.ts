import { join } from "node:path";
import type { Logger } from "pino";
import type { GpuActivity } from "../../ports/workspaces.js";
import { nvidiaSmiActivity } from "./gpuactivity.js";
import { type GpuHost, nvidiaGpus, virtualGpus } from "./gpuhost.js";
import { dmesgLog, GpuInventory } from "./gpuinventory.js";
import { MpsDaemons } from "./gpumps.js";
import { inventoryActivity } from "./gpuusage.js";

export interface MachineGpusOptions {
  /** `--gpus N`: N virtual devices, nvidia-smi not asked. */
  declared?: number;
  dataDir: string;
  /** `--gpu-sharing unenforced`: without MPS, share devices anyway (accounting only). */
  allowUnenforced?: boolean;
  /** Stand-ins for tests: nvidia-smi and nvidia-cuda-mps-control. */
  nvidiaSmi?: string;
  mpsControl?: string;
  /** Where the /dev nodes are (tests: a directory of their own mknod'ed nodes). */
  devRoot?: string;
  procGpus?: string;
  kernelLog?: () => Promise<string>;
  refreshMs?: number;
  log?: Logger;
}

/** The machine's GPUs for `loom up`: what the runtime places on, and a line saying what they are. */
export interface MachineGpus {
  host: GpuHost;
  /** Set for real devices (refreshed until close). */
  inventory?: GpuInventory;
  /** For workspace idle culling. */
  activity: GpuActivity;
  /** One line for `loom up`: the devices, and how fractions are shared. */
  line: string;
  close(): void;
}

/**
 * GPUs this machine has: `--gpus N` declares N virtual devices (for machines without any, as
 * before); otherwise nvidia-smi is asked, and where it lists devices they are used for real
 * (health refreshed, one MPS daemon per device for fractions); no nvidia-smi means no GPUs.
 */
export async function machineGpus(o: MachineGpusOptions): Promise<MachineGpus> {
  if (o.declared !== undefined) {
    const ids = Array.from({ length: o.declared }, (_, i) => String(i));
    return {
      host: virtualGpus(ids, o.devRoot),
      activity: nvidiaSmiActivity(o.nvidiaSmi),
      line: o.declared > 0 ? `${o.declared} virtual (--gpus), fractions accounted, not enforced` : "none",
      close() {},
    };
  }
  const inventory = new GpuInventory({
    ...(o.nvidiaSmi ? { command: o.nvidiaSmi } : {}),
    ...(o.procGpus ? { procGpus: o.procGpus } : {}),
    ...(o.refreshMs ? { refreshMs: o.refreshMs } : {}),
    kernelLog: o.kernelLog ?? dmesgLog(),
    ...(o.log ? { log: o.log } : {}),
  });
  if (!(await inventory.discover())) {
    return { host: virtualGpus([], o.devRoot), activity: async () => undefined, line: "none", close() {} };
  }
  const mps = new MpsDaemons({
    dir: join(o.dataDir, "gpu-mps"),
    ...(o.mpsControl ? { command: o.mpsControl } : {}),
    ...(o.log ? { log: o.log } : {}),
  });
  const mpsState = await mps.start(inventory.devices().filter((d) => d.healthy));
  const host = nvidiaGpus({
    inventory,
    mps,
    mpsState,
    ...(o.allowUnenforced ? { allowUnenforced: true } : {}),
    ...(o.devRoot ? { devRoot: o.devRoot } : {}),
  });
  inventory.start();
  const devices = inventory.devices();
  const sick = devices.filter((d) => !d.healthy).length;
  const sharing =
    host.sharing === "mps" ? "fractions enforced by CUDA MPS" : (host.sharingReason ?? host.sharing);
  return {
    host,
    inventory,
    activity: inventoryActivity(inventory),
    line: `${devices.length} × ${devices[0]!.name}${sick ? ` (${sick} unhealthy)` : ""}; ${sharing}`,
    close: () => inventory.close(),
  };
}

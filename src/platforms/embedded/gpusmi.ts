/**
 * What nvidia-smi prints, read into plain records. Pure: no process is run here (gpuinventory.ts
 * runs nvidia-smi). The formats are nvidia-smi's own: `--format=csv,noheader,nounits` prints one
 * line per device, values separated by ", ", memory in MiB, and an unreadable value as a bracketed
 * word ("[N/A]", "[Not Supported]" for what a device does not report; "[Unknown Error]",
 * "[GPU requires reset]", "[GPU is lost]" for a device in trouble).
 */

/** The fields asked of every device, in this order (`nvidia-smi --help-query-gpu` names them). */
export const GPU_FIELDS = [
  "index",
  "uuid",
  "name",
  "memory.total",
  "memory.used",
  "utilization.gpu",
  "pci.bus_id",
  "driver_version",
  "mig.mode.current",
  "ecc.errors.uncorrected.volatile.total",
] as const;

/** The arguments for one device listing. */
export const GPU_QUERY = [`--query-gpu=${GPU_FIELDS.join(",")}`, "--format=csv,noheader,nounits"];
/** The arguments for the processes computing on the devices, with their memory. */
export const APPS_QUERY = ["--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"];

/** One device as nvidia-smi reports it. */
export interface GpuRow {
  index: string;
  uuid: string;
  name: string;
  memoryTotalMiB?: number;
  memoryUsedMiB?: number;
  utilization?: number;
  /** As nvidia-smi writes it ("00000000:18:00.0"). */
  busId?: string;
  driver?: string;
  /** "Enabled" where the device is split into MIG instances. */
  migMode?: string;
  /** Uncorrected ECC errors since the driver loaded: a device with any is not to be trusted. */
  eccUncorrected?: number;
  /** Fields the device answered with an error (a sign it is failing), as "field: [error]". */
  errors: string[];
}

/** Bracketed values that only mean "not reported here", not "broken". */
const NOT_REPORTED = /^\[(N\/A|Not Supported|Insufficient Permissions)\]$/i;

function num(v: string | undefined): number | undefined {
  if (v === undefined || !/^-?\d+(\.\d+)?$/.test(v)) return undefined;
  return Number(v);
}

/** Parses the GPU_QUERY listing; lines of another shape (an error line) are left to {@link parseSmiErrors}. */
export function parseGpuQuery(out: string): GpuRow[] {
  const rows: GpuRow[] = [];
  for (const line of out.split("\n")) {
    // Names have no ", " in them (nvidia-smi's own separator); an error line has no comma at all.
    const v = line.split(",").map((s) => s.trim());
    if (v.length !== GPU_FIELDS.length || !/^\d+$/.test(v[0]!)) continue;
    const errors: string[] = [];
    v.forEach((value, i) => {
      if (value.startsWith("[") && !NOT_REPORTED.test(value)) errors.push(`${GPU_FIELDS[i]}: ${value}`);
    });
    const text = (x: string) => (x.startsWith("[") ? undefined : x);
    const row: GpuRow = { index: v[0]!, uuid: v[1]!, name: v[2]!, errors };
    const set = <K extends keyof GpuRow>(k: K, x: GpuRow[K] | undefined) => {
      if (x !== undefined) row[k] = x;
    };
    set("memoryTotalMiB", num(v[3]));
    set("memoryUsedMiB", num(v[4]));
    set("utilization", num(v[5]));
    set("busId", text(v[6]!));
    set("driver", text(v[7]!));
    set("migMode", text(v[8]!));
    set("eccUncorrected", num(v[9]));
    rows.push(row);
  }
  return rows;
}

/**
 * Devices nvidia-smi could not reach at all: it prints, instead of their line,
 * "Unable to determine the device handle for GPU0000:3B:00.0: Unknown Error" (and exits non-zero,
 * while still listing the others). By bus id (lower case, as in {@link busKey}).
 */
export function parseSmiErrors(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /device handle for GPU\s*([0-9a-fA-F:.]+):\s*(.*)$/gm;
  for (const m of text.matchAll(re)) out.set(busKey(m[1]!), m[2]!.trim() || "unreachable");
  return out;
}

/** A PCI address in one spelling: the domain as 4 digits, lower case ("0000:3b:00.0"). */
export function busKey(bus: string): string {
  const m = /^([0-9a-f]+):([0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f])$/i.exec(bus.trim());
  if (!m) return bus.trim().toLowerCase();
  return `${m[1]!.slice(-4).padStart(4, "0")}:${m[2]}`.toLowerCase();
}

/** One MIG instance, from `nvidia-smi -L`. */
export interface MigDevice {
  profile: string;
  device: number;
  uuid: string;
}

/**
 * MIG instances by their GPU's uuid, from `nvidia-smi -L`:
 * "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-…)" then, indented,
 * "  MIG 1g.5gb     Device  0: (UUID: MIG-…)".
 */
export function parseMigList(out: string): Map<string, MigDevice[]> {
  const byGpu = new Map<string, MigDevice[]>();
  let gpu: string | undefined;
  for (const line of out.split("\n")) {
    const g = /^GPU\s+\d+:.*\(UUID:\s*(GPU-[^)\s]+)\)/.exec(line);
    if (g) {
      gpu = g[1]!;
      continue;
    }
    const m = /^\s+MIG\s+(\S+)\s+Device\s+(\d+):\s*\(UUID:\s*(MIG-[^)\s]+)\)/.exec(line);
    if (m && gpu) {
      const list = byGpu.get(gpu) ?? [];
      list.push({ profile: m[1]!, device: Number(m[2]), uuid: m[3]! });
      byGpu.set(gpu, list);
    }
  }
  return byGpu;
}

/** A process computing on a device, from APPS_QUERY. */
export interface ComputeApp {
  pid: number;
  gpuUuid: string;
  usedMiB?: number;
}

/** Parses APPS_QUERY's lines ("12345, GPU-…, 1024"). */
export function parseComputeApps(out: string): ComputeApp[] {
  const apps: ComputeApp[] = [];
  for (const line of out.split("\n")) {
    const v = line.split(",").map((s) => s.trim());
    if (v.length !== 3 || !/^\d+$/.test(v[0]!) || !v[1]!.startsWith("GPU-")) continue;
    const used = num(v[2]);
    apps.push({ pid: Number(v[0]), gpuUuid: v[1]!, ...(used !== undefined ? { usedMiB: used } : {}) });
  }
  return apps;
}

/**
 * XIDs the application causes (a bad kernel, an illegal address, a reset it asked for): the
 * device is fine. Any other XID (48 double-bit ECC, 62, 63/64 row remapping, 74 NVLink, 79 fallen
 * off the bus, 92, 94, 95, 119/120 GSP) makes it unhealthy, as NVIDIA's device plugin judges.
 */
export const APPLICATION_XIDS = new Set([13, 31, 43, 45, 68, 109]);

/** An XID the driver logged: "NVRM: Xid (PCI:0000:3b:00): 79, pid=…, GPU has fallen off the bus." */
export interface XidEvent {
  /** "0000:3b:00" as the driver writes it (no function number). */
  bus: string;
  xid: number;
  message: string;
}

/** The XIDs in kernel log text (dmesg, /dev/kmsg). */
export function parseXids(text: string): XidEvent[] {
  const out: XidEvent[] = [];
  for (const m of text.matchAll(/NVRM: Xid \(PCI:([0-9a-fA-F:]+)\): (\d+),?\s*(.*)$/gm)) {
    out.push({ bus: m[1]!.toLowerCase(), xid: Number(m[2]), message: m[3]!.trim() });
  }
  return out;
}

/** Whether an XID names this device (the driver omits the function: "0000:3b:00" for "0000:3b:00.0"). */
export function xidMatches(ev: XidEvent, busId: string | undefined): boolean {
  if (!busId) return false;
  return busKey(busId).startsWith(busKey(ev.bus));
}

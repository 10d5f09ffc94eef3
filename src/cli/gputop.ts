import type { NodeUsage } from "../server/scheduling.js";

const mib = (b: number | undefined) => (b === undefined ? "-" : `${Math.round(b / 2 ** 20)}Mi`);

/**
 * `loom top`'s GPU part, where nodes report real devices: each device's health, utilisation and
 * memory, then the memory each worker uses on it; and how fractions are shared where not enforced.
 * Empty where no node reports devices (virtual GPUs, Kubernetes). `table` is print.ts's (passed in: no import cycle).
 */
export function gpuTopText(nodes: NodeUsage[], table: (rows: string[][]) => string): string {
  const out: string[] = [];
  const devices = nodes.flatMap((n) => (n.gpuStatus ?? []).map((d) => ({ node: n.name, d })));
  if (devices.length > 0) {
    out.push(
      table([
        ["NODE", "GPU", "MODEL", "HEALTH", "UTIL", "MEMORY"],
        ...devices.map(({ node, d }) => [
          node,
          d.id,
          d.model ?? "-",
          d.healthy ? "ok" : `UNHEALTHY: ${d.reason ?? "unknown"}`,
          d.utilization === undefined ? "-" : `${d.utilization}%`,
          `${mib(d.memoryUsedBytes)}/${mib(d.memoryBytes)}`,
        ]),
      ]),
    );
    const workers = devices.flatMap(({ node, d }) =>
      (d.workloads ?? []).map((w) => [
        node,
        d.id,
        w.project,
        w.name,
        String(w.worker),
        mib(w.memoryUsedBytes),
      ]),
    );
    if (workers.length > 0)
      out.push(table([["NODE", "GPU", "PROJECT", "WORKLOAD", "WORKER", "GPU MEMORY"], ...workers]));
  }
  for (const n of nodes)
    if (n.gpuSharingReason && n.gpuSharing !== "mps") out.push(`${n.name}: ${n.gpuSharingReason}\n`);
  return out.join("\n");
}

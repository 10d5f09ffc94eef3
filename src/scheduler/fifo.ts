import { formatBytes, formatCpu } from "../api/quantity.js";
import type {
  Allocation,
  NodeCapacity,
  PendingReason,
  Scheduler,
  SchedulingDecisions,
  SchedulingSnapshot,
  WorkloadDemand,
} from "./port.js";

interface Free {
  node: NodeCapacity;
  cpuMillis: number;
  memoryBytes: number;
  gpus: string[];
  workers: number;
}

/**
 * First-come-first-served admission against free capacity (Kueue's BestEffortFIFO): workloads
 * are considered in submission order, each takes the first node it fits on, and one that does
 * not fit does not block smaller ones behind it. Quotas, fair share and preemption replace this
 * in the scheduler issue, behind the same port.
 */
export class FifoScheduler implements Scheduler {
  schedule(snapshot: SchedulingSnapshot): SchedulingDecisions {
    const free = freeCapacity(snapshot.nodes, snapshot.allocations);
    const decisions: SchedulingDecisions = { admit: [], pending: [] };
    const queue = [...snapshot.pending].sort(
      (a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id),
    );
    for (const w of queue) {
      const never = exceedsEveryNode(w, snapshot.nodes);
      if (never) {
        decisions.pending.push({ id: w.id, ...never });
        continue;
      }
      const slot = free.find((f) => fits(w, f));
      if (!slot) {
        decisions.pending.push({ id: w.id, ...insufficient(w, free) });
        continue;
      }
      const gpus = slot.gpus.slice(0, w.gpus);
      slot.gpus = slot.gpus.slice(w.gpus);
      slot.cpuMillis -= w.cpuMillis;
      slot.memoryBytes -= w.memoryBytes;
      slot.workers -= w.workers ?? 1;
      decisions.admit.push({
        id: w.id,
        allocation: {
          node: slot.node.name,
          cpuMillis: w.cpuMillis,
          memoryBytes: w.memoryBytes,
          gpus,
          ...(w.workers !== undefined ? { workers: w.workers } : {}),
        },
      });
    }
    return decisions;
  }
}

function freeCapacity(nodes: NodeCapacity[], allocations: Allocation[]): Free[] {
  return nodes.map((node) => {
    const mine = allocations.filter((a) => a.node === node.name);
    const usedGpus = new Set(mine.flatMap((a) => a.gpus));
    return {
      node,
      cpuMillis: node.cpuMillis - mine.reduce((s, a) => s + a.cpuMillis, 0),
      memoryBytes: node.memoryBytes - mine.reduce((s, a) => s + a.memoryBytes, 0),
      gpus: node.gpus.filter((g) => !usedGpus.has(g)),
      workers: (node.maxWorkers ?? Number.POSITIVE_INFINITY) - mine.reduce((s, a) => s + (a.workers ?? 1), 0),
    };
  });
}

function fits(w: WorkloadDemand, f: Free): boolean {
  return (
    w.cpuMillis <= f.cpuMillis &&
    w.memoryBytes <= f.memoryBytes &&
    w.gpus <= f.gpus.length &&
    (w.workers ?? 1) <= f.workers
  );
}

function exceedsEveryNode(w: WorkloadDemand, nodes: NodeCapacity[]): PendingReason | undefined {
  if (
    nodes.some((n) => w.cpuMillis <= n.cpuMillis && w.memoryBytes <= n.memoryBytes && w.gpus <= n.gpus.length)
  )
    return undefined;
  const biggest = (f: (n: NodeCapacity) => number) => Math.max(0, ...nodes.map(f));
  const parts: string[] = [];
  if (w.cpuMillis > biggest((n) => n.cpuMillis))
    parts.push(`cpu ${formatCpu(w.cpuMillis)} (largest node has ${formatCpu(biggest((n) => n.cpuMillis))})`);
  if (w.memoryBytes > biggest((n) => n.memoryBytes))
    parts.push(
      `memory ${formatBytes(w.memoryBytes)} (largest node has ${formatBytes(biggest((n) => n.memoryBytes))})`,
    );
  if (w.gpus > biggest((n) => n.gpus.length))
    parts.push(`gpu ${w.gpus} (largest node has ${biggest((n) => n.gpus.length)})`);
  if (parts.length === 0) parts.push("no single node has all of cpu, memory and gpu requested");
  return {
    reason: "ExceedsNodeCapacity",
    message: `requests more than any node can ever offer: ${parts.join(", ")}; lower spec.resources`,
  };
}

function insufficient(w: WorkloadDemand, free: Free[]): PendingReason {
  const best = (f: (x: Free) => number) => Math.max(0, ...free.map(f));
  const parts: string[] = [];
  if (w.cpuMillis > best((f) => f.cpuMillis))
    parts.push(`cpu: requested ${formatCpu(w.cpuMillis)}, free ${formatCpu(best((f) => f.cpuMillis))}`);
  if (w.memoryBytes > best((f) => f.memoryBytes))
    parts.push(
      `memory: requested ${formatBytes(w.memoryBytes)}, free ${formatBytes(best((f) => f.memoryBytes))}`,
    );
  if (w.gpus > best((f) => f.gpus.length))
    parts.push(`gpu: requested ${w.gpus}, free ${best((f) => f.gpus.length)}`);
  if ((w.workers ?? 1) > best((f) => f.workers))
    parts.push("every node already runs as many workers as it may (pod capacity)");
  if (parts.length === 0) parts.push("no single node has all of the requested resources free at once");
  return { reason: "InsufficientCapacity", message: `waiting for capacity: ${parts.join("; ")}` };
}

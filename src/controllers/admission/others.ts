import { SELF_CLUSTER } from "../../api/cluster.js";
import {
  countOf,
  type DeviceShare,
  type NodeCapacity,
  type PodRequest,
  type RunningWorkload,
} from "../../ports/scheduler.js";

/** Ids of what a member's own work holds on one of its nodes start so. */
export const OTHERS_PREFIX = "others:";

/**
 * What fleet members report held on their nodes by work this control plane did not place
 * (NodeCapacity.usedByOthers), as running workloads the scheduler counts but never preempts: one
 * per node, on its own pseudo-project (`cluster NAME`), so the one queue places no gang where a
 * member's own users already hold the GPUs. Its GPUs are the devices Loom's own placements there
 * leave free, from the top (they fill from the bottom); only when a member reports more than is
 * left do they share a device with them, and then the node has that much less free.
 */
export function heldByOthers(nodes: NodeCapacity[], running: RunningWorkload[]): RunningWorkload[] {
  const used = nodes.filter((n) => n.usedByOthers && hasUse(n.usedByOthers));
  if (used.length === 0) return [];
  const held = heldShares(running, new Set(used.map((n) => n.name)));
  return used.map((n) => {
    const use = n.usedByOthers!;
    const member = n.cluster ?? SELF_CLUSTER;
    const gpus = pickDevices(n.gpus, held.get(n.name), Math.ceil(countOf(use.gpu)));
    const pods: PodRequest[] = [
      { cpuMillis: countOf(use.cpuMillis), memoryBytes: countOf(use.memoryBytes), gpu: gpus.length },
    ];
    // Each pod the member runs takes one of the node's pod slots (where the node has a limit:
    // never more of them than it has, whatever the member said).
    const slots = Math.min(Math.floor(countOf(use.pods)), n.maxWorkers ?? 1);
    for (let i = 1; i < slots; i++) pods.push({ cpuMillis: 0, memoryBytes: 0, gpu: 0 });
    return {
      id: `${OTHERS_PREFIX}${n.name}`,
      name: `cluster ${member}'s own work on ${n.name}`,
      project: `cluster ${member}`,
      priority: 0,
      preemptible: false,
      createdAt: "",
      pods,
      placements: pods.map((_, pod) => ({ pod, node: n.name, gpus: pod === 0 ? gpus : [] })),
    };
  });
}

function hasUse(u: NodeCapacity["usedByOthers"] & object): boolean {
  return countOf(u.cpuMillis) > 0 || countOf(u.memoryBytes) > 0 || countOf(u.gpu) > 0 || countOf(u.pods) > 0;
}

/** The share of each device that running workloads hold, by node. */
function heldShares(running: RunningWorkload[], nodes: Set<string>): Map<string, Map<string, number>> {
  const out = new Map<string, Map<string, number>>();
  for (const w of running)
    for (const p of w.placements) {
      if (!nodes.has(p.node)) continue;
      let m = out.get(p.node);
      if (!m) {
        m = new Map();
        out.set(p.node, m);
      }
      for (const g of p.gpus) m.set(g.device, (m.get(g.device) ?? 0) + g.share);
    }
  return out;
}

/** `n` whole devices: the least held first, from the top; never more than the node has. */
function pickDevices(devices: string[], held: Map<string, number> | undefined, n: number): DeviceShare[] {
  const order = devices
    .map((device, i) => ({ device, i, held: held?.get(device) ?? 0 }))
    .sort((a, b) => a.held - b.held || b.i - a.i);
  return order.slice(0, Math.min(n, devices.length)).map(({ device }) => ({ device, share: 1 }));
}

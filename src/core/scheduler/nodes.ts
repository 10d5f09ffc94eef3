import { SELF_CLUSTER } from "../../api/cluster.js";
import type { PodPlacement, PodRequest, SchedNode, Vec, Workload } from "./model.js";
import { toleratesNode } from "./taints.js";

const EPS = 1e-9;
/** The pool of nodes that name none. */
export const DEFAULT_POOL = "default";

/** A node's free capacity during one cycle. */
export interface NodeState {
  node: SchedNode;
  index: number;
  pool: string;
  freeCpu: number;
  freeMemory: number;
  freePods: number;
  /** Free share of each device (1 = nothing on it), in node.gpus order. */
  deviceFree: number[];
  /** Devices with nothing on them: what whole-GPU pods can take. */
  wholeFree: number;
}

interface Undo {
  state: NodeState;
  cpu: number;
  memory: number;
  devices: { index: number; share: number }[];
}

/**
 * Free capacity per node and device, with hold/release of placements and gang placement that
 * is all-or-nothing: a gang that does not fit leaves the state as it found it.
 */
export class ClusterState {
  readonly nodes: NodeState[];
  private readonly byName = new Map<string, NodeState>();

  constructor(nodes: SchedNode[]) {
    this.nodes = [...nodes]
      // A fleet's members in a fixed order, the control plane's own first (its nodes' names are
      // unprefixed: by name alone, the host's name would decide whether self is tried first).
      .sort(
        (a, b) =>
          memberRank(a) - memberRank(b) ||
          compareText(a.cluster ?? "", b.cluster ?? "") ||
          compareText(a.name, b.name),
      )
      .map((node, index) => ({
        node,
        index,
        pool: node.pool ?? DEFAULT_POOL,
        freeCpu: node.cpuMillis,
        freeMemory: node.memoryBytes,
        freePods: node.maxPods ?? Number.POSITIVE_INFINITY,
        deviceFree: node.gpus.map(() => 1),
        wholeFree: node.gpus.length,
      }));
    for (const n of this.nodes) this.byName.set(n.node.name, n);
  }

  capacity(): Vec {
    return this.totalOf(this.nodes);
  }

  /** Capacity of each node pool. */
  capacityByPool(): Map<string, Vec> {
    const out = new Map<string, Vec>();
    for (const n of this.nodes) {
      const v = out.get(n.pool) ?? { gpu: 0, cpu: 0, memory: 0 };
      v.gpu += n.node.gpus.length;
      v.cpu += n.node.cpuMillis;
      v.memory += n.node.memoryBytes;
      out.set(n.pool, v);
    }
    return out;
  }

  totalOf(nodes: NodeState[]): Vec & { pods: number } {
    let gpu = 0;
    let cpu = 0;
    let memory = 0;
    let pods = 0;
    for (const n of nodes) {
      gpu += n.node.gpus.length;
      cpu += n.node.cpuMillis;
      memory += n.node.memoryBytes;
      pods += n.node.maxPods ?? Number.POSITIVE_INFINITY;
    }
    return { gpu, cpu, memory, pods };
  }

  freeOn(nodes: NodeState[]): Vec & { pods: number } {
    let gpu = 0;
    let cpu = 0;
    let memory = 0;
    let pods = 0;
    for (const n of nodes) {
      for (const f of n.deviceFree) gpu += f;
      cpu += n.freeCpu;
      memory += n.freeMemory;
      pods += n.freePods;
    }
    return { gpu, cpu, memory, pods };
  }

  /**
   * Nodes a workload may use: its pool (or the project's pools) and GPU model, and only nodes
   * whose NoSchedule/NoExecute taints it tolerates (`ignoreTaints`: the nodes it would have
   * without them, to say why none is left).
   */
  eligible(w: Workload, projectPools?: string[], ignoreTaints = false): NodeState[] {
    return this.nodes.filter(
      (n) =>
        (w.nodePool ? n.pool === w.nodePool : !projectPools || projectPools.includes(n.pool)) &&
        (!w.gpuModel || n.node.gpuModel === w.gpuModel) &&
        (ignoreTaints || toleratesNode(w, n.node)) &&
        (!w.clusters || (n.node.cluster !== undefined && w.clusters.includes(n.node.cluster))),
    );
  }

  /** Whether the pod fits on this node when the node is empty. */
  fitsEmpty(n: NodeState, pod: PodRequest): boolean {
    const node = n.node;
    if (pod.cpuMillis > node.cpuMillis || pod.memoryBytes > node.memoryBytes) return false;
    if ((node.maxPods ?? 1) < 1) return false;
    if (pod.gpu >= 1) return pod.gpu <= node.gpus.length;
    if (pod.gpu > 0) return node.gpus.length > 0;
    if (pod.gpuMemoryBytes) return node.gpus.some((g) => (g.memoryBytes ?? 0) >= pod.gpuMemoryBytes!);
    return true;
  }

  hold(w: Workload, placements: PodPlacement[]): void {
    this.apply(w, placements, -1);
  }

  release(w: Workload, placements: PodPlacement[]): void {
    this.apply(w, placements, 1);
  }

  private apply(w: Workload, placements: PodPlacement[], sign: 1 | -1): void {
    for (const p of placements) {
      const n = this.byName.get(p.node);
      const pod = w.pods[p.pod];
      if (!n || !pod) continue; // a node that left the cluster: nothing to account
      n.freeCpu += sign * pod.cpuMillis;
      n.freeMemory += sign * pod.memoryBytes;
      n.freePods += sign;
      for (const g of p.gpus) {
        const i = n.node.gpus.findIndex((d) => d.id === g.device);
        if (i >= 0) this.setDevice(n, i, n.deviceFree[i]! + sign * g.share);
      }
    }
  }

  private setDevice(n: NodeState, i: number, free: number): void {
    const wasWhole = n.deviceFree[i]! >= 1 - EPS;
    n.deviceFree[i] = free;
    const isWhole = free >= 1 - EPS;
    if (wasWhole !== isWhole) n.wholeFree += isWhole ? 1 : -1;
  }

  /**
   * Places every pod of the gang (largest first) by the workload's policy, or none: on failure
   * every tentative placement is undone.
   */
  place(w: Workload, eligible: NodeState[]): PodPlacement[] | undefined {
    // A fleet: the whole gang in one member, the members tried in order (the first that fits
    // is filled before the next is used, as binpack fills nodes).
    const members = byCluster(eligible);
    if (members.size > 1) {
      // Spread: the member with the most room for what the gang asks for first (a service's
      // replicas over the fleet); binpack keeps the members' order.
      const groups = [...members.values()];
      if (w.placement === "spread") {
        const room = new Map(groups.map((g) => [g, roomFor(w, g)]));
        groups.sort((a, b) => room.get(b)! - room.get(a)!);
      }
      for (const nodes of groups) {
        const placed = this.placeIn(w, nodes);
        if (placed) return placed;
      }
      return undefined;
    }
    return this.placeIn(w, eligible);
  }

  private placeIn(w: Workload, eligible: NodeState[]): PodPlacement[] | undefined {
    const order = w.pods
      .map((pod, i) => ({ pod, i }))
      .sort((a, b) => b.pod.gpu - a.pod.gpu || b.pod.cpuMillis - a.pod.cpuMillis || a.i - b.i);
    const undo: Undo[] = [];
    const out: PodPlacement[] = [];
    for (const { pod, i } of order) {
      const placed = this.placePod(pod, eligible, w.placement ?? "binpack");
      if (!placed) {
        for (const u of undo.reverse()) this.revert(u);
        return undefined;
      }
      undo.push(placed.undo);
      out.push({ pod: i, node: placed.undo.state.node.name, gpus: placed.gpus });
    }
    return out.sort((a, b) => a.pod - b.pod);
  }

  private revert(u: Undo): void {
    u.state.freeCpu += u.cpu;
    u.state.freeMemory += u.memory;
    u.state.freePods += 1;
    for (const d of u.devices) this.setDevice(u.state, d.index, u.state.deviceFree[d.index]! + d.share);
  }

  private placePod(
    pod: PodRequest,
    eligible: NodeState[],
    policy: "binpack" | "spread",
  ): { undo: Undo; gpus: { device: string; share: number }[] } | undefined {
    const spread = policy === "spread";
    const whole = pod.gpu >= 1 ? Math.round(pod.gpu) : 0;
    const fractional = whole === 0 && (pod.gpu > 0 || (pod.gpuMemoryBytes ?? 0) > 0);
    let best: NodeState | undefined;
    let bestScore = Number.POSITIVE_INFINITY;
    let bestDevice = -1;
    let bestShare = 0;
    for (const n of eligible) {
      if (n.freePods < 1 || n.freeCpu < pod.cpuMillis || n.freeMemory < pod.memoryBytes) continue;
      let score: number;
      let device = -1;
      let share = 0;
      if (whole > 0) {
        if (n.wholeFree < whole) continue;
        score = spread ? -n.wholeFree : n.wholeFree;
      } else if (fractional) {
        // The fullest device it fits on (binpack), or the emptiest (spread).
        let pick = -1;
        let pickFree = spread ? -1 : Number.POSITIVE_INFINITY;
        for (let i = 0; i < n.deviceFree.length; i++) {
          const s = n.node.wholeGpusOnly
            ? 1
            : pod.gpu > 0
              ? pod.gpu
              : pod.gpuMemoryBytes! / (n.node.gpus[i]!.memoryBytes ?? 0);
          const free = n.deviceFree[i]!;
          if (!(s > 0 && s <= 1) || free + EPS < s) continue;
          if (spread ? free > pickFree : free < pickFree) {
            pick = i;
            pickFree = free;
            share = s;
          }
        }
        if (pick < 0) continue;
        device = pick;
        score = spread ? -pickFree : pickFree - share;
      } else {
        // CPU-only pods: keep GPU nodes for GPU work, then fill (or spread over) CPU.
        const gpuPenalty = n.node.gpus.length > 0 ? 1e15 : 0;
        score = gpuPenalty + (spread ? -n.freeCpu : n.freeCpu);
      }
      if (score < bestScore) {
        best = n;
        bestScore = score;
        bestDevice = device;
        bestShare = share;
        // A perfect binpack fit cannot be beaten: stop looking.
        if (!spread && whole > 0 && n.wholeFree === whole) break;
      }
    }
    if (!best) return undefined;
    const undo: Undo = { state: best, cpu: pod.cpuMillis, memory: pod.memoryBytes, devices: [] };
    best.freeCpu -= pod.cpuMillis;
    best.freeMemory -= pod.memoryBytes;
    best.freePods -= 1;
    const gpus: { device: string; share: number }[] = [];
    if (whole > 0) {
      for (let i = 0; i < best.deviceFree.length && gpus.length < whole; i++) {
        if (best.deviceFree[i]! < 1 - EPS) continue;
        this.setDevice(best, i, 0);
        undo.devices.push({ index: i, share: 1 });
        gpus.push({ device: best.node.gpus[i]!.id, share: 1 });
      }
    } else if (bestDevice >= 0) {
      this.setDevice(best, bestDevice, best.deviceFree[bestDevice]! - bestShare);
      undo.devices.push({ index: bestDevice, share: bestShare });
      gpus.push({ device: best.node.gpus[bestDevice]!.id, share: bestShare });
    }
    return { undo, gpus };
  }
}

/** Nodes by fleet member, members in node order; one group (key "") outside a fleet. */
/** The control plane's own nodes (and those outside a fleet) before other members'. */
function memberRank(n: SchedNode): number {
  return n.cluster === undefined || n.cluster === SELF_CLUSTER ? 0 : 1;
}

/** A member's free amount of the resource the workload asks most of (GPU, then CPU, then memory). */
function roomFor(w: Workload, nodes: NodeState[]): number {
  const asks = (k: "gpu" | "cpuMillis" | "memoryBytes") => w.pods.some((p) => p[k] > 0);
  let room = 0;
  for (const n of nodes) {
    if (asks("gpu")) room += n.deviceFree.reduce((a, f) => a + f, 0);
    else if (asks("cpuMillis")) room += n.freeCpu;
    else if (asks("memoryBytes")) room += n.freeMemory;
  }
  return room;
}

export function byCluster(nodes: NodeState[]): Map<string, NodeState[]> {
  const out = new Map<string, NodeState[]>();
  for (const n of nodes) {
    const key = n.node.cluster ?? "";
    const group = out.get(key);
    if (group) group.push(n);
    else out.set(key, [n]);
  }
  return out;
}

/**
 * Plain code-unit order: deterministic and locale-free, and far cheaper than localeCompare
 * (sorting a thousand waiting jobs with it was most of a cycle).
 */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type {
  Decisions,
  PendingReasonCode,
  PlacementPolicy,
  PodPlacement,
  PodRequest,
  ProjectPolicy,
  RunningWorkload,
  SchedNode,
  Snapshot,
  Vec,
  Workload,
} from "./model.js";
import { RESOURCES } from "./model.js";
import { schedule } from "./schedule.js";

// Small random clusters: 1–8 nodes of 0–8 GPUs, 1–4 projects, running and pending gangs of 1–4
// pods, some fractional (0.25, 0.5) or memory-sized GPU requests, pools and GPU models.

const GiB = 2 ** 30;
const DEVICE_MEMORY = 80 * GiB;
const EPS = 1e-6;
const RUNS = 200;
const T0 = Date.parse("2025-01-01T00:00:00.000Z");
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

const REASONS: PendingReasonCode[] = [
  "ExceedsNodeCapacity",
  "OverLimit",
  "NonPreemptibleOverQuota",
  "OverFairShare",
  "Fragmentation",
  "InsufficientCapacity",
  "WaitingForPreemption",
  "NodePoolNotAllowed",
];

// ---------------------------------------------------------------------------------------------
// Generators (raw shapes, then a valid snapshot built from them)
// ---------------------------------------------------------------------------------------------

const GPU_KINDS = ["none", "quarter", "half", "one", "one", "one", "two", "four", "mem20", "mem40"] as const;
type GpuKind = (typeof GPU_KINDS)[number];

/** `arb` one time in `1 + none`, else undefined. */
const sometimes = <T>(arb: fc.Arbitrary<T>, none: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: none }, { arbitrary: arb, weight: 1 });

const rawNode = fc.record({
  gpus: fc.integer({ min: 0, max: 8 }),
  cpuCores: fc.integer({ min: 8, max: 64 }),
  memGi: fc.integer({ min: 32, max: 512 }),
  maxPods: sometimes(fc.integer({ min: 1, max: 12 }), 4),
  pool: fc.constantFrom<string | undefined>(undefined, undefined, undefined, "a", "b"),
  gpuModel: fc.constantFrom<string | undefined>(undefined, undefined, "H100", "A100"),
  deviceMemory: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(true), fc.constant(false)),
});

const rawProject = fc.record({
  deservedGpu: fc.integer({ min: 0, max: 8 }),
  /** Also set deserved cpu and memory (generous), else only gpu. */
  deservedAll: fc.boolean(),
  limitGpu: sometimes(fc.integer({ min: 0, max: 12 }), 2),
  limitCpuCores: sometimes(fc.integer({ min: 1, max: 64 }), 5),
  weight: fc.integer({ min: 1, max: 3 }),
  nodePools: fc.constantFrom<string[] | undefined>(
    undefined,
    undefined,
    undefined,
    undefined,
    ["a"],
    ["default", "b"],
  ),
});

const rawWorkload = fc.record({
  project: fc.nat(3),
  pods: fc.integer({ min: 1, max: 4 }),
  gpu: fc.constantFrom<GpuKind>(...GPU_KINDS),
  cpuHalfCores: fc.integer({ min: 1, max: 8 }),
  memGi: fc.integer({ min: 1, max: 16 }),
  priority: fc.integer({ min: 0, max: 2 }),
  preemptible: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(false)),
  t: fc.integer({ min: 0, max: 40 }),
  nodePool: sometimes(fc.constantFrom("default", "a", "b", "zzz"), 8),
  gpuModel: sometimes(fc.constantFrom("H100", "A100"), 6),
  placement: fc.constantFrom<PlacementPolicy | undefined>(undefined, "binpack", "spread"),
});

const rawRunning = fc.record({
  w: rawWorkload,
  stopping: fc.oneof(fc.constant(false), fc.constant(false), fc.constant(false), fc.constant(true)),
  preemptedFor: fc.nat(7),
});

const rawScenario = fc.record({
  nodes: fc.array(rawNode, { minLength: 1, maxLength: 8 }),
  projects: fc.array(rawProject, { minLength: 1, maxLength: 4 }),
  running: fc.array(rawRunning, { maxLength: 16 }),
  pending: fc.array(rawWorkload, { maxLength: 8 }),
});

/**
 * Contended clusters: no pools or models, busy nodes, mostly preemptible running work of the
 * first project (a borrower), and other projects asking: where reclaim, fair-share and priority
 * preemption happen.
 */
const contendedWorkload = rawWorkload.chain((w) =>
  fc
    .record({
      project: fc.constantFrom(0, 0, 0, 1, 2, 3),
      pods: fc.integer({ min: 1, max: 2 }),
      gpu: fc.constantFrom<GpuKind>("one", "one", "one", "half", "quarter", "two", "mem40"),
      preemptible: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(true), fc.constant(false)),
    })
    .map((c) => ({ ...w, ...c, nodePool: undefined, gpuModel: undefined })),
);

const contendedScenario = fc.record({
  nodes: fc.array(
    fc.record({
      gpus: fc.integer({ min: 2, max: 8 }),
      cpuCores: fc.integer({ min: 32, max: 64 }),
      memGi: fc.integer({ min: 256, max: 512 }),
      maxPods: fc.constant(undefined),
      pool: fc.constant(undefined),
      gpuModel: fc.constant(undefined),
      deviceMemory: fc.constant(true),
    }),
    { minLength: 1, maxLength: 4 },
  ),
  projects: fc.array(
    rawProject.map((p) => ({
      ...p,
      deservedGpu: p.deservedGpu % 5,
      nodePools: undefined,
      limitCpuCores: undefined,
    })),
    { minLength: 2, maxLength: 4 },
  ),
  running: fc.array(
    fc.record({ w: contendedWorkload, stopping: rawRunning.map((r) => r.stopping), preemptedFor: fc.nat(7) }),
    {
      minLength: 4,
      maxLength: 24,
    },
  ),
  pending: fc.array(
    contendedWorkload.chain((w) => fc.integer({ min: 1, max: 3 }).map((project) => ({ ...w, project }))),
    { minLength: 1, maxLength: 8 },
  ),
});

type RawScenario = typeof rawScenario extends fc.Arbitrary<infer T> ? T : never;
type RawWorkload = RawScenario["pending"][number];

function podOf(r: RawWorkload): PodRequest {
  const base = { cpuMillis: r.cpuHalfCores * 500, memoryBytes: r.memGi * GiB };
  switch (r.gpu) {
    case "none":
      return { ...base, gpu: 0 };
    case "quarter":
      return { ...base, gpu: 0.25 };
    case "half":
      return { ...base, gpu: 0.5 };
    case "one":
      return { ...base, gpu: 1 };
    case "two":
      return { ...base, gpu: 2 };
    case "four":
      return { ...base, gpu: 4 };
    case "mem20":
      return { ...base, gpu: 0, gpuMemoryBytes: 20 * GiB };
    case "mem40":
      return { ...base, gpu: 0, gpuMemoryBytes: 40 * GiB };
  }
}

function workloadOf(r: RawWorkload, id: string, projects: ProjectPolicy[]): Workload {
  const project = projects[r.project % projects.length]!.name;
  const pod = podOf(r);
  return {
    id,
    name: `${project}/${id}`,
    project,
    priority: r.priority,
    preemptible: r.preemptible,
    createdAt: at(r.t),
    pods: Array.from({ length: r.pods }, () => ({ ...pod })),
    ...(r.nodePool !== undefined && { nodePool: r.nodePool }),
    ...(r.gpuModel !== undefined && { gpuModel: r.gpuModel }),
    ...(r.placement !== undefined && { placement: r.placement }),
  };
}

/** A valid snapshot: running workloads are placed (first fit) within capacity and limits. */
function build(raw: RawScenario): Snapshot {
  const nodes: SchedNode[] = raw.nodes.map((n, i) => ({
    name: `n${i}`,
    ...(n.pool !== undefined && { pool: n.pool }),
    ...(n.gpuModel !== undefined && { gpuModel: n.gpuModel }),
    cpuMillis: n.cpuCores * 1000,
    memoryBytes: n.memGi * GiB,
    gpus: Array.from({ length: n.gpus }, (_, j) => ({
      id: `n${i}-g${j}`,
      ...(n.deviceMemory && { memoryBytes: DEVICE_MEMORY }),
    })),
    ...(n.maxPods !== undefined && { maxPods: n.maxPods }),
  }));
  const projects: ProjectPolicy[] = raw.projects.map((p, i) => {
    const limit: Partial<Vec> = {};
    if (p.limitGpu !== undefined) limit.gpu = p.limitGpu;
    if (p.limitCpuCores !== undefined) limit.cpu = p.limitCpuCores * 1000;
    return {
      name: `p${i}`,
      deserved: p.deservedAll
        ? { gpu: p.deservedGpu, cpu: 64_000 * (p.deservedGpu + 1), memory: 512 * GiB * (p.deservedGpu + 1) }
        : { gpu: p.deservedGpu },
      ...(Object.keys(limit).length > 0 && { limit }),
      overQuotaWeight: p.weight,
      ...(p.nodePools && { nodePools: p.nodePools }),
    };
  });
  const pending = raw.pending.map((r, i) => workloadOf(r, `w${i}`, projects));
  const s: Snapshot = { nodes, projects, running: [], pending };
  const ledger = new Ledger(nodes);
  raw.running.forEach((r, i) => {
    const w = workloadOf(r.w, `r${i}`, projects);
    const policy = projects.find((p) => p.name === w.project)!;
    const usage = add(usageOf(s.running, w.project), requestOf(w));
    if (!withinLimit(usage, policy)) return;
    const placements = ledger.place(w, eligibleNodes(nodes, w, policy));
    if (!placements) return;
    const stopping = r.stopping && w.preemptible;
    s.running.push({
      ...w,
      placements,
      ...(stopping && {
        stopping: true,
        preemptedFor: pending.length > 0 ? pending[r.preemptedFor % pending.length]!.id : "gone",
      }),
    });
  });
  return s;
}

// ---------------------------------------------------------------------------------------------
// An independent model of the cluster, for the checks
// ---------------------------------------------------------------------------------------------

function zero(): Vec {
  return { gpu: 0, cpu: 0, memory: 0 };
}

function add(a: Vec, b: Vec): Vec {
  return { gpu: a.gpu + b.gpu, cpu: a.cpu + b.cpu, memory: a.memory + b.memory };
}

/** GPU request value of a pod: the fraction or count, or the memory share of an 80 GiB device. */
function gpuOf(p: PodRequest): number {
  return p.gpu > 0 ? p.gpu : p.gpuMemoryBytes ? p.gpuMemoryBytes / DEVICE_MEMORY : 0;
}

function requestOf(w: Workload): Vec {
  let v = zero();
  for (const p of w.pods) v = add(v, { gpu: gpuOf(p), cpu: p.cpuMillis, memory: p.memoryBytes });
  return v;
}

function usageOf(ws: Workload[], project: string): Vec {
  let v = zero();
  for (const w of ws) if (w.project === project) v = add(v, requestOf(w));
  return v;
}

/** What is held once the cycle's binds are in: running work plus the workloads just bound. */
function heldAfter(s: Snapshot, d: Decisions): Workload[] {
  const pending = new Map(s.pending.map((w) => [w.id, w]));
  return [...s.running, ...d.bind.map((b) => pending.get(b.id)!).filter(Boolean)];
}

function withinLimit(usage: Vec, p: ProjectPolicy): boolean {
  return RESOURCES.every((r) => p.limit?.[r] === undefined || usage[r] <= p.limit[r]! + EPS);
}

const poolOf = (n: SchedNode) => n.pool ?? "default";

/** Nodes a workload may run on: its pool (which its project must allow) or its project's pools, and its GPU model. */
function eligibleNodes(nodes: SchedNode[], w: Workload, p: ProjectPolicy | undefined): SchedNode[] {
  return nodes.filter((n) => {
    if (w.nodePool !== undefined && poolOf(n) !== w.nodePool) return false;
    if (p?.nodePools && !p.nodePools.includes(poolOf(n))) return false;
    if (w.gpuModel !== undefined && n.gpuModel !== w.gpuModel) return false;
    return true;
  });
}

/** Whether a pod fits a node with nothing on it. */
function fitsEmpty(n: SchedNode, p: PodRequest): boolean {
  if (p.cpuMillis > n.cpuMillis || p.memoryBytes > n.memoryBytes || (n.maxPods ?? 1) < 1) return false;
  if (p.gpu >= 1) return p.gpu <= n.gpus.length;
  if (p.gpu > 0) return n.gpus.length > 0;
  if (p.gpuMemoryBytes) return n.gpus.some((g) => (g.memoryBytes ?? 0) >= p.gpuMemoryBytes!);
  return true;
}

interface NodeFree {
  cpu: number;
  memory: number;
  pods: number;
  devices: Map<string, number>;
}

/** Free capacity per node and device; a first-fit placer for building running state. */
class Ledger {
  readonly free = new Map<string, NodeFree>();

  constructor(readonly nodes: SchedNode[]) {
    for (const n of nodes)
      this.free.set(n.name, {
        cpu: n.cpuMillis,
        memory: n.memoryBytes,
        pods: n.maxPods ?? Number.POSITIVE_INFINITY,
        devices: new Map(n.gpus.map((g) => [g.id, 1])),
      });
  }

  take(w: Workload, placements: PodPlacement[]): void {
    for (const pl of placements) {
      const f = this.free.get(pl.node)!;
      const pod = w.pods[pl.pod]!;
      f.cpu -= pod.cpuMillis;
      f.memory -= pod.memoryBytes;
      f.pods -= 1;
      for (const g of pl.gpus) f.devices.set(g.device, f.devices.get(g.device)! - g.share);
    }
  }

  place(w: Workload, eligible: SchedNode[]): PodPlacement[] | undefined {
    const snapshot = new Map([...this.free].map(([k, v]) => [k, { ...v, devices: new Map(v.devices) }]));
    const out: PodPlacement[] = [];
    for (const [i, pod] of w.pods.entries()) {
      const pl = this.placePod(pod, i, eligible);
      if (!pl) {
        for (const [k, v] of snapshot) this.free.set(k, v);
        return undefined;
      }
      this.take(w, [pl]);
      out.push(pl);
    }
    return out;
  }

  private placePod(pod: PodRequest, index: number, eligible: SchedNode[]): PodPlacement | undefined {
    for (const n of eligible) {
      const f = this.free.get(n.name)!;
      if (f.cpu < pod.cpuMillis || f.memory < pod.memoryBytes || f.pods < 1) continue;
      if (pod.gpu >= 1) {
        const free = n.gpus.filter((g) => f.devices.get(g.id)! >= 1 - EPS).slice(0, pod.gpu);
        if (free.length < pod.gpu) continue;
        return { pod: index, node: n.name, gpus: free.map((g) => ({ device: g.id, share: 1 })) };
      }
      if (pod.gpu > 0 || pod.gpuMemoryBytes) {
        for (const g of n.gpus) {
          const share = pod.gpu > 0 ? pod.gpu : g.memoryBytes ? pod.gpuMemoryBytes! / g.memoryBytes : 2;
          if (share <= 1 && f.devices.get(g.id)! + EPS >= share)
            return { pod: index, node: n.name, gpus: [{ device: g.id, share }] };
        }
        continue;
      }
      return { pod: index, node: n.name, gpus: [] };
    }
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

const byId = <T extends { id: string }>(ws: T[]) => new Map(ws.map((w) => [w.id, w]));

/** (a) running + bound fit every node's cpu, memory and maxPods and every device; bound pods are well-placed. */
function checkCapacity(s: Snapshot, d: Decisions): void {
  const pending = byId(s.pending);
  const nodes = new Map(s.nodes.map((n) => [n.name, n]));
  const ledger = new Ledger(s.nodes);
  for (const r of s.running) ledger.take(r, r.placements);
  for (const b of d.bind) {
    const w = pending.get(b.id)!;
    const policy = s.projects.find((p) => p.name === w.project);
    const eligible = new Set(eligibleNodes(s.nodes, w, policy).map((n) => n.name));
    for (const pl of b.placements) {
      const n = nodes.get(pl.node);
      expect(n, `${b.id} placed on unknown node ${pl.node}`).toBeDefined();
      expect(eligible.has(pl.node), `${b.id} pod ${pl.pod} on ineligible node ${pl.node}`).toBe(true);
      const pod = w.pods[pl.pod]!;
      const devices = new Map(n!.gpus.map((g) => [g.id, g]));
      for (const g of pl.gpus)
        expect(devices.has(g.device), `${b.id}: ${g.device} not on ${pl.node}`).toBe(true);
      expect(new Set(pl.gpus.map((g) => g.device)).size, `${b.id}: a device twice`).toBe(pl.gpus.length);
      if (pod.gpu >= 1) {
        expect(
          pl.gpus.map((g) => g.share),
          `${b.id}: whole devices`,
        ).toEqual(Array(pod.gpu).fill(1));
      } else if (pod.gpu > 0) {
        expect(pl.gpus.length, `${b.id}: one device for a fraction`).toBe(1);
        expect(pl.gpus[0]!.share).toBeCloseTo(pod.gpu, 9);
      } else if (pod.gpuMemoryBytes) {
        expect(pl.gpus.length, `${b.id}: one device for a memory share`).toBe(1);
        const mem = devices.get(pl.gpus[0]!.device)?.memoryBytes;
        expect(mem, `${b.id}: memory share on a device without memory`).toBeDefined();
        expect(pl.gpus[0]!.share).toBeCloseTo(pod.gpuMemoryBytes / mem!, 9);
      } else {
        expect(pl.gpus, `${b.id}: no GPU asked, none given`).toEqual([]);
      }
    }
    ledger.take(w, b.placements);
  }
  for (const [name, f] of ledger.free) {
    expect(f.cpu, `cpu over on ${name}`).toBeGreaterThanOrEqual(-EPS);
    expect(f.memory, `memory over on ${name}`).toBeGreaterThanOrEqual(-EPS);
    expect(f.pods, `maxPods over on ${name}`).toBeGreaterThanOrEqual(0);
    for (const [dev, free] of f.devices) expect(free, `shares over 1 on ${dev}`).toBeGreaterThanOrEqual(-EPS);
  }
}

/** (b) no project's usage (running, stopping included, + bound) exceeds its limit when it binds. */
function checkLimits(s: Snapshot, d: Decisions): void {
  const pending = byId(s.pending);
  const bound = d.bind.map((b) => pending.get(b.id)!);
  for (const p of s.projects) {
    if (!bound.some((w) => w.project === p.name)) continue;
    const usage = usageOf([...s.running, ...bound], p.name);
    for (const r of RESOURCES) {
      const lim = p.limit?.[r];
      if (lim !== undefined) expect(usage[r], `${p.name} ${r} over its limit`).toBeLessThanOrEqual(lim + EPS);
    }
  }
}

/** (c) each bind is a pending workload, once, with exactly one placement per pod. */
function checkBinds(s: Snapshot, d: Decisions): void {
  const pending = byId(s.pending);
  const seen = new Set<string>();
  for (const b of d.bind) {
    const w = pending.get(b.id);
    expect(w, `bound ${b.id} was not pending`).toBeDefined();
    expect(seen.has(b.id), `${b.id} bound twice`).toBe(false);
    seen.add(b.id);
    expect(b.placements.map((p) => p.pod).sort((x, y) => x - y)).toEqual(w!.pods.map((_, i) => i));
  }
  for (const p of d.pending) expect(seen.has(p.id), `${p.id} both bound and pending`).toBe(false);
}

/** (d) victims of another project's Reclaim/FairShare come from projects over deserved; Priority stays in the project. */
function checkVictims(s: Snapshot, d: Decisions): void {
  const running = byId(s.running);
  const pending = byId(s.pending);
  const seen = new Set<string>();
  for (const p of d.preempt) {
    const v = running.get(p.id);
    const w = pending.get(p.for);
    expect(v, `victim ${p.id} is not running`).toBeDefined();
    expect(w, `preempted for ${p.for}, not pending`).toBeDefined();
    expect(seen.has(p.id), `${p.id} preempted twice`).toBe(false);
    seen.add(p.id);
    expect(v!.preemptible, `${p.id} is not preemptible`).toBe(true);
    expect(v!.stopping ?? false, `${p.id} is already stopping`).toBe(false);
    expect(p.message.trim().length).toBeGreaterThan(0);
    if (p.reason === "Priority") {
      expect(v!.project, `Priority victim ${p.id} from another project`).toBe(w!.project);
      expect(v!.priority, `Priority victim ${p.id} not lower`).toBeLessThan(w!.priority);
    } else {
      expect(v!.project, `${p.reason} victim ${p.id} from its own project`).not.toBe(w!.project);
      const policy = s.projects.find((x) => x.name === v!.project)!;
      // Usage as the cycle decided it: work bound in the same cycle counts (it is held now).
      const usage = usageOf(heldAfter(s, d), v!.project);
      const withinDeserved = RESOURCES.every((r) => usage[r] <= (policy.deserved[r] ?? 0) + EPS);
      expect(withinDeserved, `${p.reason} victim ${p.id}: project ${v!.project} is within deserved`).toBe(
        false,
      );
    }
  }
}

/** Reclaim never takes the victim's project below its deserved GPUs (for GPU-requesting preemptors). */
function checkReclaimFloor(s: Snapshot, d: Decisions): void {
  const running = byId(s.running);
  const pending = byId(s.pending);
  for (const p of s.projects) {
    const reclaimed = d.preempt.filter(
      (x) => x.reason === "Reclaim" && running.get(x.id)!.project === p.name,
    );
    if (reclaimed.length === 0) continue;
    if (!reclaimed.every((x) => requestOf(pending.get(x.for)!).gpu > 0)) continue;
    const before = usageOf(heldAfter(s, d), p.name).gpu;
    const taken = reclaimed.reduce((sum, x) => sum + requestOf(running.get(x.id)!).gpu, 0);
    expect(before - taken, `Reclaim takes ${p.name} below deserved gpu`).toBeGreaterThanOrEqual(
      Math.min(before, p.deserved.gpu ?? 0) - EPS,
    );
  }
}

/** (e) every pending workload appears exactly once, in bind or pending; pending decisions are explained. */
function checkPending(s: Snapshot, d: Decisions): void {
  const ids = [...d.bind.map((b) => b.id), ...d.pending.map((p) => p.id)].sort();
  expect(ids).toEqual(s.pending.map((w) => w.id).sort());
  expect(d.pending.map((p) => p.queuePosition).sort((x, y) => x - y)).toEqual(d.pending.map((_, i) => i + 1));
  const names = new Set(s.running.map((r) => r.name));
  for (const p of d.pending) {
    expect(REASONS).toContain(p.reason);
    expect(p.message.trim().length, `${p.id} has no message`).toBeGreaterThan(0);
    for (const h of p.holders) expect(names.has(h), `${p.id}: holder ${h} is not running`).toBe(true);
  }
}

/** Rule 8: nothing more is preempted for a workload whose victims are still stopping. */
function checkWaiting(s: Snapshot, d: Decisions): void {
  const waiting = new Set(s.running.filter((r) => r.stopping && r.preemptedFor).map((r) => r.preemptedFor!));
  for (const p of d.preempt)
    expect(waiting.has(p.for), `more preempted for ${p.for} while waiting`).toBe(false);
  for (const p of d.preempt) {
    const pd = d.pending.find((x) => x.id === p.for);
    expect(pd?.reason, `${p.for} preempts but is not WaitingForPreemption`).toBe("WaitingForPreemption");
  }
}

/** ExceedsNodeCapacity only when a pod fits no eligible node or the gang exceeds the eligible total. */
function checkExceeds(s: Snapshot, d: Decisions): void {
  const pending = byId(s.pending);
  for (const p of d.pending) {
    if (p.reason !== "ExceedsNodeCapacity") continue;
    const w = pending.get(p.id)!;
    const eligible = eligibleNodes(
      s.nodes,
      w,
      s.projects.find((x) => x.name === w.project),
    );
    const podTooBig = w.pods.some((pod) => !eligible.some((n) => fitsEmpty(n, pod)));
    const req = requestOf(w);
    const total = eligible.reduce(
      (t, n) => add(t, { gpu: n.gpus.length, cpu: n.cpuMillis, memory: n.memoryBytes }),
      zero(),
    );
    const gangTooBig = RESOURCES.some((r) => req[r] > total[r] + EPS);
    expect(podTooBig || gangTooBig, `${p.id} is ExceedsNodeCapacity but could fit`).toBe(true);
  }
}

/**
 * A workload left waiting for room does not fit what is still free after the cycle (running,
 * stopping victims and this cycle's binds hold their capacity). Free capacity only shrinks during
 * a cycle, so a gang that fits at the end fitted when it was considered.
 */
function checkNoMissedRoom(s: Snapshot, d: Decisions): void {
  const pending = byId(s.pending);
  const ledger = new Ledger(s.nodes);
  for (const r of s.running) ledger.take(r, r.placements);
  for (const b of d.bind) ledger.take(pending.get(b.id)!, b.placements);
  for (const p of d.pending) {
    if (!["InsufficientCapacity", "Fragmentation", "WaitingForPreemption"].includes(p.reason)) continue;
    const w = pending.get(p.id)!;
    const eligible = eligibleNodes(
      s.nodes,
      w,
      s.projects.find((x) => x.name === w.project),
    );
    const fit = ledger.place(w, eligible);
    expect(fit, `${p.id} is ${p.reason} but fits what is free: ${JSON.stringify(fit)}`).toBeUndefined();
  }
}

/**
 * Reclaim is for projects staying within deserved: a project's usage plus everything it reclaims
 * for in one cycle (each preemptor counted once) stays within its deserved GPUs.
 */
function checkReclaimer(s: Snapshot, d: Decisions): void {
  const pending = byId(s.pending);
  const reclaimers = new Set(d.preempt.filter((p) => p.reason === "Reclaim").map((p) => p.for));
  for (const p of s.projects) {
    const mine = [...reclaimers].map((id) => pending.get(id)!).filter((w) => w.project === p.name);
    const asked = mine.reduce((sum, w) => sum + requestOf(w).gpu, 0);
    if (asked <= 0) continue;
    const usage = usageOf(s.running, p.name).gpu;
    expect(
      usage + asked,
      `${p.name} reclaims for ${mine.map((w) => w.id).join(", ")} beyond its deserved gpu`,
    ).toBeLessThanOrEqual((p.deserved.gpu ?? 0) + EPS);
  }
}

function checkAll(s: Snapshot, d: Decisions): void {
  checkNoMissedRoom(s, d);
  checkReclaimer(s, d);
  checkCapacity(s, d);
  checkLimits(s, d);
  checkBinds(s, d);
  checkVictims(s, d);
  checkReclaimFloor(s, d);
  checkPending(s, d);
  checkWaiting(s, d);
  checkExceeds(s, d);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object" && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

const snapshots = fc.oneof(rawScenario, contendedScenario).map(build);
const prop = (check: (s: Snapshot, d: Decisions) => void) =>
  fc.assert(
    fc.property(snapshots, (s) => check(s, schedule(s))),
    { numRuns: RUNS },
  );

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

describe("schedule: properties over random small clusters", () => {
  it("(a) running + bound never exceed a node's cpu, memory, maxPods or a device's share; bound pods are placed right", () => {
    prop(checkCapacity);
  });

  it("(b) no project's usage after binds exceeds its limit", () => {
    prop(checkLimits);
  });

  it("(c) a bound workload has exactly one placement per pod, and is not also pending", () => {
    prop(checkBinds);
  });

  it("(d) Reclaim/FairShare never takes from a project within its deserved quota; Priority stays in-project", () => {
    prop(checkVictims);
  });

  it("(d') Reclaim never takes a project below its deserved GPUs", () => {
    prop(checkReclaimFloor);
  });

  it("(e) every pending workload is either bound or pending, exactly once, with a reason, message and position", () => {
    prop(checkPending);
  });

  it("(f) deterministic (same input, same output) and does not mutate its input", () => {
    fc.assert(
      fc.property(snapshots, (s) => {
        const copy = structuredClone(s);
        const first = schedule(deepFreeze(s));
        expect(s).toEqual(copy);
        expect(schedule(structuredClone(copy))).toEqual(first);
      }),
      { numRuns: RUNS },
    );
  });

  it("a workload left waiting for room does not fit what is free after the cycle", () => {
    prop(checkNoMissedRoom);
  });

  it("Reclaim in one cycle never takes a project past its deserved GPUs", () => {
    prop(checkReclaimer);
  });

  it("rule 8: no more preemption for a workload with stopping victims; preemptors wait", () => {
    prop(checkWaiting);
  });

  it("ExceedsNodeCapacity is only given to work that can never fit", () => {
    prop(checkExceeds);
  });

  it("one pod within deserved on an empty cluster binds iff some eligible node can hold it", () => {
    fc.assert(
      fc.property(
        fc.array(rawNode, { minLength: 1, maxLength: 8 }),
        rawWorkload,
        rawProject,
        (rn, rw, rp) => {
          const base = build({ nodes: rn, projects: [rp], running: [], pending: [{ ...rw, pods: 1 }] });
          const policy: ProjectPolicy = {
            ...base.projects[0]!,
            deserved: { gpu: 8, cpu: 1_000_000, memory: 1024 * GiB },
          };
          delete policy.limit;
          const s: Snapshot = { ...base, projects: [policy] };
          const w = s.pending[0]!;
          const d = schedule(s);
          const fits = eligibleNodes(s.nodes, w, policy).some((n) => fitsEmpty(n, w.pods[0]!));
          if (fits) {
            expect(d.bind.map((b) => b.id)).toEqual([w.id]);
          } else {
            expect(d.bind).toEqual([]);
            expect(["ExceedsNodeCapacity", "NodePoolNotAllowed"]).toContain(d.pending[0]?.reason);
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("every invariant holds over rounds where victims stop and bound work starts", () => {
    fc.assert(
      fc.property(snapshots, (start) => {
        let s = start;
        let stoppingNext: Set<string> = new Set();
        for (let round = 0; round < 3; round++) {
          const d = schedule(s);
          checkAll(s, d);
          const pending = byId(s.pending);
          const victims = new Map(d.preempt.map((p) => [p.id, p.for]));
          const bound = new Set(d.bind.map((b) => b.id));
          const runningNow: RunningWorkload[] = s.running
            .filter((r) => !stoppingNext.has(r.id))
            .map((r) => (victims.has(r.id) ? { ...r, stopping: true, preemptedFor: victims.get(r.id)! } : r));
          for (const b of d.bind) runningNow.push({ ...pending.get(b.id)!, placements: b.placements });
          // Victims asked to stop this round are gone the next.
          stoppingNext = new Set(victims.keys());
          s = { ...s, running: runningNow, pending: s.pending.filter((w) => !bound.has(w.id)) };
        }
      }),
      { numRuns: 100 },
    );
  });
});

describe("regressions found by the properties", () => {
  it("a project that borrows in the same cycle may lose work to reclaim, staying at or above its deserved quota", () => {
    // p1 (deserved 1) runs r1 (0.5 GPU on the only H100 node) and gets w0 (4 GPUs) bound in
    // the same cycle; p3's non-preemptible H100 work within its deserved quota reclaims r1:
    // p1 keeps 4 GPUs, above its deserved 1.
    const d = schedule({
      nodes: [
        {
          name: "n1",
          cpuMillis: 8000,
          memoryBytes: 2 ** 35,
          gpus: [0, 1, 2, 3].map((i) => ({ id: `n1-g${i}` })),
        },
        { name: "n2", gpuModel: "H100", cpuMillis: 8000, memoryBytes: 2 ** 35, gpus: [{ id: "n2-g0" }] },
        { name: "n0", cpuMillis: 8000, memoryBytes: 2 ** 35, gpus: [{ id: "n0-g0" }, { id: "n0-g1" }] },
        // Spare capacity elsewhere, so that p1's fair share covers w0.
        {
          name: "n3",
          cpuMillis: 8000,
          memoryBytes: 2 ** 35,
          gpus: [0, 1, 2, 3].map((i) => ({ id: `n3-g${i}` })),
        },
      ],
      projects: [
        { name: "p1", deserved: { gpu: 1 }, overQuotaWeight: 1 },
        { name: "p3", deserved: { gpu: 3 }, overQuotaWeight: 1 },
      ],
      running: [
        // p3 uses 2 of its 3 deserved GPUs (a larger share than p1's 0.5 of 1): p1 goes first.
        {
          id: "r0",
          name: "p3/r0",
          project: "p3",
          priority: 0,
          preemptible: false,
          createdAt: "2024-01-01T00:00:00.000Z",
          pods: [{ cpuMillis: 500, memoryBytes: 2 ** 30, gpu: 2 }],
          placements: [
            {
              pod: 0,
              node: "n0",
              gpus: [
                { device: "n0-g0", share: 1 },
                { device: "n0-g1", share: 1 },
              ],
            },
          ],
        },
        {
          id: "r1",
          name: "p1/r1",
          project: "p1",
          priority: 0,
          preemptible: true,
          createdAt: "2024-01-01T00:00:00.000Z",
          pods: [{ cpuMillis: 500, memoryBytes: 2 ** 30, gpu: 0.5 }],
          placements: [{ pod: 0, node: "n2", gpus: [{ device: "n2-g0", share: 0.5 }] }],
        },
      ],
      pending: [
        {
          id: "w0",
          name: "p1/w0",
          project: "p1",
          priority: 0,
          preemptible: true,
          createdAt: "2024-01-01T00:00:01.000Z",
          pods: [{ cpuMillis: 500, memoryBytes: 2 ** 30, gpu: 4 }],
        },
        {
          id: "w1",
          name: "p3/w1",
          project: "p3",
          priority: 0,
          preemptible: false,
          createdAt: "2024-01-01T00:00:02.000Z",
          gpuModel: "H100",
          pods: [0, 1, 2].map(() => ({ cpuMillis: 500, memoryBytes: 2 ** 30, gpu: 0.25 })),
        },
      ],
    });
    expect(d.bind.map((b) => b.id)).toEqual(["w0"]);
    expect(d.preempt.map((p) => `${p.id}:${p.reason}`)).toEqual(["r1:Reclaim"]);
  });
});

import { describe, expect, it } from "vitest";
import type {
  Decisions,
  PendingDecision,
  PlacementPolicy,
  PodPlacement,
  ProjectPolicy,
  RunningWorkload,
  SchedNode,
  Snapshot,
  Vec,
  Workload,
} from "./model.js";
import { schedule } from "./schedule.js";

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

const GiB = 2 ** 30;
const T0 = Date.parse("2025-01-01T00:00:00.000Z");
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

interface NodeOpts {
  pool?: string;
  gpuModel?: string;
  cpuMillis?: number;
  memoryBytes?: number;
  maxPods?: number;
  /** Memory of each device (for gpuMemoryBytes requests). */
  deviceMemory?: number;
}

/** A node with `gpus` devices named `${name}-g0`, `${name}-g1`, …; plenty of cpu and memory. */
function node(name: string, gpus: number, o: NodeOpts = {}): SchedNode {
  return {
    name,
    ...(o.pool !== undefined && { pool: o.pool }),
    ...(o.gpuModel !== undefined && { gpuModel: o.gpuModel }),
    cpuMillis: o.cpuMillis ?? 128_000,
    memoryBytes: o.memoryBytes ?? 1024 * GiB,
    gpus: Array.from({ length: gpus }, (_, i) => ({
      id: `${name}-g${i}`,
      ...(o.deviceMemory !== undefined && { memoryBytes: o.deviceMemory }),
    })),
    ...(o.maxPods !== undefined && { maxPods: o.maxPods }),
  };
}

interface ProjectOpts {
  weight?: number;
  limit?: Partial<Vec>;
  nodePools?: string[];
  /** Also set deserved cpu/memory (generous), so quota checks on cpu and memory never bite. */
  allResources?: boolean;
}

/** A project whose deserved quota is `gpu` GPUs (deserved gpu is always set, 0 included). */
function project(name: string, gpu: number, o: ProjectOpts = {}): ProjectPolicy {
  return {
    name,
    deserved: o.allResources ? { gpu, cpu: gpu * 16_000, memory: gpu * 128 * GiB } : { gpu },
    ...(o.limit && { limit: o.limit }),
    overQuotaWeight: o.weight ?? 1,
    ...(o.nodePools && { nodePools: o.nodePools }),
  };
}

interface JobOpts {
  /** Pods in the gang (all alike). */
  pods?: number;
  gpu?: number;
  gpuMemoryBytes?: number;
  cpuMillis?: number;
  memoryBytes?: number;
  priority?: number;
  preemptible?: boolean;
  /** createdAt, in seconds after T0; by default a fresh, later time for every job. */
  t?: number;
  nodePool?: string;
  gpuModel?: string;
  placement?: PlacementPolicy;
}

let clock = 0;

/** A workload with id `id` and name `${project}/${id}`; by default one preemptible 1-GPU pod. */
function job(projectName: string, id: string, o: JobOpts = {}): Workload {
  const pod = {
    cpuMillis: o.cpuMillis ?? 1000,
    memoryBytes: o.memoryBytes ?? GiB,
    gpu: o.gpu ?? 1,
    ...(o.gpuMemoryBytes !== undefined && { gpuMemoryBytes: o.gpuMemoryBytes }),
  };
  return {
    id,
    name: `${projectName}/${id}`,
    project: projectName,
    priority: o.priority ?? 0,
    preemptible: o.preemptible ?? true,
    createdAt: at(o.t ?? ++clock),
    pods: Array.from({ length: o.pods ?? 1 }, () => ({ ...pod })),
    ...(o.nodePool !== undefined && { nodePool: o.nodePool }),
    ...(o.gpuModel !== undefined && { gpuModel: o.gpuModel }),
    ...(o.placement !== undefined && { placement: o.placement }),
  };
}

/** `count` jobs `${prefix}1` … `${prefix}${count}`, created one second apart (oldest first). */
function jobs(projectName: string, prefix: string, count: number, o: JobOpts = {}): Workload[] {
  return Array.from({ length: count }, (_, i) => job(projectName, `${prefix}${i + 1}`, o));
}

/** Where a running pod sits: whole devices by index, or one device with a share. */
interface Where {
  node: string;
  devices?: number[];
  share?: number;
}

function running(w: Workload, where: Where[], extra: Partial<RunningWorkload> = {}): RunningWorkload {
  expect(where.length, `placements for ${w.id}`).toBe(w.pods.length);
  const placements: PodPlacement[] = where.map((p, pod) => ({
    pod,
    node: p.node,
    gpus:
      p.share !== undefined
        ? [{ device: `${p.node}-g${p.devices?.[0] ?? 0}`, share: p.share }]
        : (p.devices ?? []).map((i) => ({ device: `${p.node}-g${i}`, share: 1 })),
  }));
  return { ...w, placements, ...extra };
}

/** Single-pod 1-GPU workloads running on consecutive devices of `nodeName`, from `first`. */
function runOneEach(ws: Workload[], nodeName: string, first = 0): RunningWorkload[] {
  return ws.map((w, i) => running(w, [{ node: nodeName, devices: [first + i] }]));
}

/** Running workloads from a cycle's binds. */
function asRunning(pending: Workload[], d: Decisions): RunningWorkload[] {
  return d.bind.map((b) => {
    const w = pending.find((p) => p.id === b.id);
    if (!w) throw new Error(`bound ${b.id} was not pending`);
    return { ...w, placements: b.placements };
  });
}

/** The next snapshot: preempted victims have stopped (gone), bound workloads run. */
function apply(s: Snapshot, d: Decisions): Snapshot {
  const gone = new Set(d.preempt.map((p) => p.id));
  const bound = new Set(d.bind.map((b) => b.id));
  return {
    ...s,
    running: [...s.running.filter((r) => !gone.has(r.id)), ...asRunning(s.pending, d)],
    pending: s.pending.filter((w) => !bound.has(w.id)),
  };
}

const boundIds = (d: Decisions) => d.bind.map((b) => b.id).sort();
const preemptedIds = (d: Decisions) => d.preempt.map((p) => p.id).sort();
const placementsOf = (d: Decisions, id: string) => d.bind.find((b) => b.id === id)?.placements;
const devicesOf = (d: Decisions, id: string) =>
  (placementsOf(d, id) ?? []).flatMap((p) => p.gpus.map((g) => g.device));

function pendingOf(d: Decisions, id: string): PendingDecision {
  const p = d.pending.find((x) => x.id === id);
  if (!p) throw new Error(`${id} is not pending; bound: ${boundIds(d).join(", ")}`);
  return p;
}

const reasonsOf = (d: Decisions, ids: string[]) => ids.map((id) => pendingOf(d, id).reason);
const countBy = (rs: RunningWorkload[], projectName: string) =>
  rs.filter((r) => r.project === projectName).length;

/** The two ways a test can state deserved quotas; semantics must not depend on the choice. */
const QUOTA_FORMS = [
  { form: "deserved { gpu } only", allResources: false },
  { form: "deserved on gpu, cpu and memory", allResources: true },
];

// ---------------------------------------------------------------------------------------------
// 1. Projects, deserved quotas and usage
// ---------------------------------------------------------------------------------------------

describe("rule 1: deserved quota and usage accounting", () => {
  it.each(QUOTA_FORMS)(
    "admits work within deserved quota when the cluster has room ($form)",
    ({ allResources }) => {
      const a = jobs("a", "a", 4);
      const b = job("b", "b-np", { pods: 4, preemptible: false });
      const d = schedule({
        nodes: [node("n1", 8)],
        projects: [project("a", 4, { allResources }), project("b", 4, { allResources })],
        running: runOneEach(a, "n1"),
        pending: [b],
      });
      expect(boundIds(d)).toEqual(["b-np"]);
      expect(d.preempt).toEqual([]);
    },
  );

  it("counts a running fractional GPU at its request value (two 0.5 pods fill a limit of 1)", () => {
    const d = schedule({
      nodes: [node("n1", 4)],
      projects: [project("a", 1, { limit: { gpu: 1 } })],
      running: [
        running(job("a", "f1", { gpu: 0.5 }), [{ node: "n1", devices: [0], share: 0.5 }]),
        running(job("a", "f2", { gpu: 0.5 }), [{ node: "n1", devices: [0], share: 0.5 }]),
      ],
      pending: [job("a", "f3", { gpu: 0.5 })],
    });
    expect(d.bind).toEqual([]);
    expect(pendingOf(d, "f3").reason).toBe("OverLimit");
  });

  it("a single running 0.5 leaves room for another 0.5 under a limit of 1", () => {
    const d = schedule({
      nodes: [node("n1", 4)],
      projects: [project("a", 1, { limit: { gpu: 1 } })],
      running: [running(job("a", "f1", { gpu: 0.5 }), [{ node: "n1", devices: [0], share: 0.5 }])],
      pending: [job("a", "f3", { gpu: 0.5 })],
    });
    expect(boundIds(d)).toEqual(["f3"]);
  });

  it("counts stopping workloads in usage until they have stopped", () => {
    const d = schedule({
      nodes: [node("n1", 4)],
      projects: [project("a", 1, { limit: { gpu: 1 } }), project("z", 4)],
      running: [
        running(job("a", "f1", { gpu: 0.5 }), [{ node: "n1", devices: [0], share: 0.5 }]),
        running(job("a", "f2", { gpu: 0.5 }), [{ node: "n1", devices: [1], share: 0.5 }], {
          stopping: true,
          preemptedFor: "z1",
        }),
      ],
      pending: [job("a", "f3", { gpu: 0.5 })],
    });
    expect(boundIds(d)).toEqual([]);
    expect(pendingOf(d, "f3").reason).toBe("OverLimit");
  });
});

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

describe("limit: a hard cap, borrowing included", () => {
  it("binds up to the GPU limit on an idle cluster, the rest OverLimit", () => {
    const a = jobs("a", "a", 4);
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 0, { limit: { gpu: 2 } })],
      running: [],
      pending: a,
    });
    expect(boundIds(d)).toEqual(["a1", "a2"]);
    expect(reasonsOf(d, ["a3", "a4"])).toEqual(["OverLimit", "OverLimit"]);
    expect(pendingOf(d, "a3").message.length).toBeGreaterThan(0);
  });

  it("applies a cpu limit to cpu-only work", () => {
    const a = jobs("a", "c", 3, { gpu: 0, cpuMillis: 1000 });
    const d = schedule({
      nodes: [node("cpu1", 0)],
      projects: [project("a", 0, { limit: { cpu: 2000 } })],
      running: [],
      pending: a,
    });
    expect(boundIds(d)).toEqual(["c1", "c2"]);
    expect(pendingOf(d, "c3").reason).toBe("OverLimit");
  });

  it("a limited project's unused fair share flows to the others (2 + 6 on 8 GPUs)", () => {
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 0, { limit: { gpu: 2 } }), project("b", 0)],
      running: [],
      pending: [...jobs("a", "a", 8), ...jobs("b", "b", 8)],
    });
    const bound = boundIds(d);
    expect(bound.filter((id) => id.startsWith("a")).length).toBe(2);
    expect(bound.filter((id) => id.startsWith("b")).length).toBe(6);
    expect(pendingOf(d, "a8").reason).toBe("OverLimit");
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Over-quota borrowing with fair share
// ---------------------------------------------------------------------------------------------

describe("rule 2: over-quota borrowing by fair share", () => {
  it("a project borrows the whole idle cluster while the other project is idle", () => {
    const a = jobs("a", "a", 8);
    const d = schedule({
      nodes: [node("n1", 4), node("n2", 4)],
      projects: [project("a", 4), project("b", 4)],
      running: [],
      pending: a,
    });
    expect(boundIds(d)).toEqual(a.map((w) => w.id).sort());
    expect(d.preempt).toEqual([]);
    expect(d.pending).toEqual([]);
  });

  it("splits idle capacity 1:1:2 by overQuotaWeight: 4:4:8 of 16 GPUs from empty", () => {
    const pending = [...jobs("a", "a", 16), ...jobs("b", "b", 16), ...jobs("c", "c", 16)];
    const d = schedule({
      nodes: [node("n1", 8), node("n2", 8)],
      projects: [
        project("a", 0, { weight: 1 }),
        project("b", 0, { weight: 1 }),
        project("c", 0, { weight: 2 }),
      ],
      running: [],
      pending,
    });
    const bound = boundIds(d);
    expect([
      bound.filter((id) => id.startsWith("a")).length,
      bound.filter((id) => id.startsWith("b")).length,
      bound.filter((id) => id.startsWith("c")).length,
    ]).toEqual([4, 4, 8]);
    expect(d.preempt).toEqual([]);
    // The oldest of each project go first.
    expect(bound).toContain("a1");
    expect(bound).toContain("c8");
    // Those left wait: their project has its fair share and the cluster is full.
    for (const p of d.pending) expect(["OverFairShare", "InsufficientCapacity"], p.id).toContain(p.reason);
  });

  it("what a project does not ask for flows to the others (2 + 14 of 16 at equal weights)", () => {
    const d = schedule({
      nodes: [node("n1", 8), node("n2", 8)],
      projects: [project("a", 0), project("b", 0)],
      running: [],
      pending: [...jobs("a", "a", 2), ...jobs("b", "b", 16)],
    });
    const bound = boundIds(d);
    expect(bound.filter((id) => id.startsWith("a")).length).toBe(2);
    expect(bound.filter((id) => id.startsWith("b")).length).toBe(14);
  });

  it("converges to 4:4:8 from project a running all 16 GPUs (schedule → apply, a few rounds)", () => {
    const projects = [
      project("a", 0, { weight: 1 }),
      project("b", 0, { weight: 1 }),
      project("c", 0, { weight: 2 }),
    ];
    const nodes = [node("n1", 8), node("n2", 8)];
    const aRunning = jobs("a", "ar", 16);
    let s: Snapshot = {
      nodes,
      projects,
      running: [...runOneEach(aRunning.slice(0, 8), "n1"), ...runOneEach(aRunning.slice(8), "n2")],
      pending: [...jobs("a", "a", 16), ...jobs("b", "b", 16), ...jobs("c", "c", 16)],
    };
    const reasons = new Set<string>();
    for (let round = 0; round < 6; round++) {
      const d = schedule(s);
      for (const p of d.preempt) reasons.add(p.reason);
      s = apply(s, d);
    }
    expect([countBy(s.running, "a"), countBy(s.running, "b"), countBy(s.running, "c")]).toEqual([4, 4, 8]);
    expect([...reasons]).toEqual(["FairShare"]);
    // Stable: another cycle changes nothing.
    const last = schedule(s);
    expect(last.bind).toEqual([]);
    expect(last.preempt).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Ordering and queue positions
// ---------------------------------------------------------------------------------------------

describe("rule 2: order of consideration", () => {
  it("serves projects below deserved first, the least used (usage/deserved) first", () => {
    // One free GPU; a uses 3 of 4 deserved, b 1 of 4: b goes first although a's job is older.
    const d = schedule({
      nodes: [node("n1", 5)],
      projects: [project("a", 4), project("b", 4)],
      running: [
        ...runOneEach(jobs("a", "ar", 3, { preemptible: false }), "n1", 0),
        ...runOneEach(jobs("b", "br", 1, { preemptible: false }), "n1", 3),
      ],
      pending: [job("a", "a-late", { t: 1000 }), job("b", "b-late", { t: 2000 })],
    });
    expect(boundIds(d)).toEqual(["b-late"]);
    expect(pendingOf(d, "a-late").queuePosition).toBe(1);
  });

  it("within a project, higher priority goes first whatever the age", () => {
    const d = schedule({
      nodes: [node("n1", 1)],
      projects: [project("a", 4)],
      running: [],
      pending: [job("a", "old-low", { t: 1, priority: 0 }), job("a", "new-high", { t: 9, priority: 1 })],
    });
    expect(boundIds(d)).toEqual(["new-high"]);
  });

  it("within a project and priority, the earlier createdAt goes first", () => {
    const d = schedule({
      nodes: [node("n1", 1)],
      projects: [project("a", 4)],
      running: [],
      pending: [job("a", "aaa-new", { t: 9 }), job("a", "zzz-old", { t: 1 })],
    });
    expect(boundIds(d)).toEqual(["zzz-old"]);
  });

  it("ties of priority and createdAt are broken by id", () => {
    const d = schedule({
      nodes: [node("n1", 1)],
      projects: [project("a", 4)],
      running: [],
      pending: [job("a", "j-b", { t: 5 }), job("a", "j-a", { t: 5 })],
    });
    expect(boundIds(d)).toEqual(["j-a"]);
  });

  it("numbers pending workloads 1, 2, 3… in the order they were considered", () => {
    const d = schedule({
      nodes: [node("n1", 1)],
      projects: [project("a", 4)],
      running: [],
      pending: [
        job("a", "p0", { priority: 0 }),
        job("a", "p2", { priority: 2 }),
        job("a", "p3", { priority: 3 }),
        job("a", "p1", { priority: 1 }),
      ],
    });
    expect(boundIds(d)).toEqual(["p3"]);
    expect(["p2", "p1", "p0"].map((id) => pendingOf(d, id).queuePosition)).toEqual([1, 2, 3]);
  });
});

// ---------------------------------------------------------------------------------------------
// 3. Reclaim
// ---------------------------------------------------------------------------------------------

describe("rule 3: reclaim of deserved quota", () => {
  describe.each(QUOTA_FORMS)("A borrows all 8, then B (deserved 4) reclaims ($form)", ({ allResources }) => {
    const projects = [project("a", 4, { allResources }), project("b", 4, { allResources })];
    const nodes = [node("n1", 4), node("n2", 4)];
    const aJobs = jobs("a", "a", 8);
    const bJobs = jobs("b", "b", 4);
    const victims = ["a5", "a6", "a7", "a8"];

    it("step 1: A's eight pending 1-GPU jobs all bind while B is idle", () => {
      const d = schedule({ nodes, projects, running: [], pending: aJobs });
      expect(boundIds(d)).toEqual(aJobs.map((w) => w.id).sort());
    });

    it("step 2: B's four jobs preempt exactly A's four newest (Reclaim) and wait for them", () => {
      const aRunning = asRunning(aJobs, schedule({ nodes, projects, running: [], pending: aJobs }));
      const d = schedule({ nodes, projects, running: aRunning, pending: bJobs });
      expect(preemptedIds(d)).toEqual(victims);
      for (const p of d.preempt) expect(p.reason).toBe("Reclaim");
      expect(d.preempt.map((p) => p.for).sort()).toEqual(["b1", "b2", "b3", "b4"]);
      expect(d.bind).toEqual([]);
      for (const b of bJobs) {
        const p = pendingOf(d, b.id);
        expect(p.reason).toBe("WaitingForPreemption");
        const victim = d.preempt.find((x) => x.for === b.id)!;
        expect(p.holders).toContain(`a/${victim.id}`);
        expect(p.message.length).toBeGreaterThan(0);
      }
      for (const p of d.preempt) expect(p.message.length).toBeGreaterThan(0);
    });

    it("step 3: while the victims are stopping, they hold their GPUs and nothing more is preempted", () => {
      const aRunning = asRunning(aJobs, schedule({ nodes, projects, running: [], pending: aJobs }));
      const d2 = schedule({ nodes, projects, running: aRunning, pending: bJobs });
      const stopping = aRunning.map((r) => {
        const p = d2.preempt.find((x) => x.id === r.id);
        return p ? { ...r, stopping: true, preemptedFor: p.for } : r;
      });
      const d3 = schedule({ nodes, projects, running: stopping, pending: bJobs });
      expect(d3.bind).toEqual([]);
      expect(d3.preempt).toEqual([]);
      expect(reasonsOf(d3, ["b1", "b2", "b3", "b4"])).toEqual(Array(4).fill("WaitingForPreemption"));
    });

    it("step 4: once the victims have stopped, B's four bind", () => {
      const s1: Snapshot = { nodes, projects, running: [], pending: aJobs };
      const s2 = { ...apply(s1, schedule(s1)), pending: bJobs };
      const s3 = apply(s2, schedule(s2));
      expect(s3.running.map((r) => r.id).sort()).toEqual(["a1", "a2", "a3", "a4"]);
      const d = schedule(s3);
      expect(boundIds(d)).toEqual(["b1", "b2", "b3", "b4"]);
      expect(d.preempt).toEqual([]);
      expect(d.pending).toEqual([]);
    });
  });

  it.each(QUOTA_FORMS)(
    "never takes the victim's project below its deserved quota ($form)",
    ({ allResources }) => {
      // a (deserved 4) runs 6, b (deserved 4) runs 2 and asks for 4 more: only 2 can come back.
      const a = jobs("a", "a", 6);
      const d = schedule({
        nodes: [node("n1", 8)],
        projects: [project("a", 4, { allResources }), project("b", 4, { allResources })],
        running: [...runOneEach(a, "n1", 0), ...runOneEach(jobs("b", "br", 2), "n1", 6)],
        pending: jobs("b", "b", 4),
      });
      expect(preemptedIds(d)).toEqual(["a5", "a6"]);
      for (const p of d.preempt) expect(p.reason).toBe("Reclaim");
      expect(d.bind).toEqual([]);
    },
  );

  it("reclaims only up to the project's deserved quota, even with many jobs pending (then fair share: 6 of 8)", () => {
    // a (deserved 0) runs 8; b (deserved 4) asks for 8. b reclaims 4; the rest of the way is
    // fair share (leftover 4 split 1:1): b ends with 6, a keeps 2.
    const projects = [project("a", 0), project("b", 4)];
    const a = jobs("a", "a", 8);
    let s: Snapshot = {
      nodes: [node("n1", 8)],
      projects,
      running: runOneEach(a, "n1"),
      pending: jobs("b", "b", 8),
    };
    const first = schedule(s);
    expect(first.preempt.filter((p) => p.reason === "Reclaim").length).toBeLessThanOrEqual(4);
    expect(first.preempt.length).toBeLessThanOrEqual(6);
    expect(preemptedIds(first)).not.toContain("a1");
    expect(preemptedIds(first)).not.toContain("a2");
    for (let round = 0; round < 5; round++) s = apply(s, round === 0 ? first : schedule(s));
    expect([countBy(s.running, "a"), countBy(s.running, "b")]).toEqual([2, 6]);
  });

  it.each(QUOTA_FORMS)("takes only preemptible victims, newest first ($form)", ({ allResources }) => {
    const pre = jobs("a", "a", 6); // t older
    const nonPre = jobs("a", "np", 2, { preemptible: false }); // newest, but not preemptible
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 4, { allResources }), project("b", 4, { allResources })],
      running: [...runOneEach(pre, "n1", 0), ...runOneEach(nonPre, "n1", 6)],
      pending: jobs("b", "b", 2),
    });
    expect(preemptedIds(d)).toEqual(["a5", "a6"]);
  });

  it.each(QUOTA_FORMS)("takes the lowest priority first, then the newest ($form)", ({ allResources }) => {
    const low = jobs("a", "low", 2, { priority: 0 }); // low1 older than low2
    const high = jobs("a", "high", 6, { priority: 5 }); // newer than both
    const s: Snapshot = {
      nodes: [node("n1", 8)],
      projects: [project("a", 4, { allResources }), project("b", 4, { allResources })],
      running: [...runOneEach(low, "n1", 0), ...runOneEach(high, "n1", 2)],
      pending: [job("b", "b1")],
    };
    expect(preemptedIds(schedule(s))).toEqual(["low2"]);
    expect(preemptedIds(schedule({ ...s, pending: [job("b", "b1"), job("b", "b2")] }))).toEqual([
      "low1",
      "low2",
    ]);
  });

  it.each(QUOTA_FORMS)(
    "preempts whole gangs: one decision for a 2-pod victim ($form)",
    ({ allResources }) => {
      const gang = job("a", "gang", { pods: 2, priority: 0 });
      const rest = jobs("a", "a", 6, { priority: 5 });
      const d = schedule({
        nodes: [node("n1", 8)],
        projects: [project("a", 4, { allResources }), project("b", 4, { allResources })],
        running: [
          running(gang, [
            { node: "n1", devices: [0] },
            { node: "n1", devices: [1] },
          ]),
          ...runOneEach(rest, "n1", 2),
        ],
        pending: [job("b", "b2gpu", { gpu: 2 })],
      });
      expect(d.preempt.map((p) => p.id)).toEqual(["gang"]);
    },
  );

  it.each(QUOTA_FORMS)(
    "chooses a minimal victim set (drops a victim it turned out not to need) ($form)",
    ({ allResources }) => {
      // In victim order: v1 (1 GPU, prio 0) then v2 (2 GPUs, prio 1). A 2-GPU pod needs only v2.
      const v1 = job("a", "v1", { priority: 0 });
      const v2 = job("a", "v2", { gpu: 2, priority: 1 });
      const big = job("a", "big", { gpu: 5, priority: 9 });
      const d = schedule({
        nodes: [node("n1", 8)],
        projects: [project("a", 4, { allResources }), project("b", 4, { allResources })],
        running: [
          running(v1, [{ node: "n1", devices: [0] }]),
          running(v2, [{ node: "n1", devices: [1, 2] }]),
          running(big, [{ node: "n1", devices: [3, 4, 5, 6, 7] }]),
        ],
        pending: [job("b", "b2gpu", { gpu: 2 })],
      });
      expect(preemptedIds(d)).toEqual(["v2"]);
      expect(d.preempt[0]!.reason).toBe("Reclaim");
    },
  );

  it.each(QUOTA_FORMS)(
    "never preempts a project within its deserved quota, even its newest work ($form)",
    ({ allResources }) => {
      const cOld = jobs("c", "c", 4); // c (deserved 0) borrows: older
      const aNew = jobs("a", "a", 4); // a within deserved: newer
      const d = schedule({
        nodes: [node("n1", 4), node("n2", 4)],
        projects: [
          project("a", 4, { allResources }),
          project("b", 4, { allResources }),
          project("c", 0, { allResources }),
        ],
        running: [...runOneEach(cOld, "n1"), ...runOneEach(aNew, "n2")],
        pending: jobs("b", "b", 2),
      });
      expect(preemptedIds(d)).toEqual(["c3", "c4"]);
      for (const p of d.preempt) expect(p.reason).toBe("Reclaim");
    },
  );

  it.each(QUOTA_FORMS)("a non-preemptible gang within deserved reclaims too ($form)", ({ allResources }) => {
    const a = jobs("a", "a", 8);
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 4, { allResources }), project("b", 4, { allResources })],
      running: runOneEach(a, "n1"),
      pending: [job("b", "b-np", { pods: 4, preemptible: false })],
    });
    expect(preemptedIds(d)).toEqual(["a5", "a6", "a7", "a8"]);
    for (const p of d.preempt) {
      expect(p.reason).toBe("Reclaim");
      expect(p.for).toBe("b-np");
    }
    expect(pendingOf(d, "b-np").reason).toBe("WaitingForPreemption");
  });
});

describe("rule 3: fair-share reclaim", () => {
  it("a project below its fair share preempts down to, never below, the other's fair share", () => {
    // a and b (deserved 0, equal weights) on 8 GPUs: fair shares 4 and 4. a runs 8.
    const a = jobs("a", "a", 8);
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 0), project("b", 0)],
      running: runOneEach(a, "n1"),
      pending: jobs("b", "b", 8),
    });
    expect(preemptedIds(d)).toEqual(["a5", "a6", "a7", "a8"]);
    for (const p of d.preempt) {
      expect(p.reason).toBe("FairShare");
      expect(p.for.startsWith("b")).toBe(true);
    }
    expect(d.bind).toEqual([]);
  });

  it("projects at their fair share preempt nothing from each other", () => {
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 0), project("b", 0)],
      running: [...runOneEach(jobs("a", "ar", 4), "n1", 0), ...runOneEach(jobs("b", "br", 4), "n1", 4)],
      pending: [...jobs("a", "a", 4), ...jobs("b", "b", 4)],
    });
    expect(d.preempt).toEqual([]);
    expect(d.bind).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Priority and preemptibility
// ---------------------------------------------------------------------------------------------

describe("rule 4: priority preemption within a project", () => {
  it("a higher-priority job preempts the project's newest lower-priority job (project at its deserved quota)", () => {
    const lo = jobs("a", "lo", 2, { priority: 0 });
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 2)],
      running: runOneEach(lo, "n1"),
      pending: [job("a", "hi", { priority: 10 })],
    });
    expect(d.preempt.map((p) => [p.id, p.for, p.reason])).toEqual([["lo2", "hi", "Priority"]]);
    expect(pendingOf(d, "hi").reason).toBe("WaitingForPreemption");
  });

  it("a higher-priority job preempts a lower-priority one (deserved larger than the cluster)", () => {
    const lo = jobs("a", "lo", 2, { priority: 0 });
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 4)],
      running: runOneEach(lo, "n1"),
      pending: [job("a", "hi", { priority: 10 })],
    });
    expect(d.preempt.map((p) => [p.id, p.for, p.reason])).toEqual([["lo2", "hi", "Priority"]]);
  });

  it("does not preempt work of equal priority", () => {
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 4)],
      running: runOneEach(jobs("a", "r", 2, { priority: 10 }), "n1"),
      pending: [job("a", "p", { priority: 10 })],
    });
    expect(d.preempt).toEqual([]);
    expect(pendingOf(d, "p").reason).toBe("InsufficientCapacity");
  });

  it("does not preempt non-preemptible lower-priority work", () => {
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 4)],
      running: runOneEach(jobs("a", "r", 2, { priority: 0, preemptible: false }), "n1"),
      pending: [job("a", "p", { priority: 10 })],
    });
    expect(d.preempt).toEqual([]);
  });

  it("priority does not cross projects", () => {
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 2), project("b", 0)],
      running: runOneEach(jobs("a", "r", 2, { priority: 0 }), "n1"),
      pending: [job("b", "b-urgent", { priority: 100 })],
    });
    expect(d.preempt).toEqual([]);
    expect(d.bind).toEqual([]);
  });
});

describe("rule 4: non-preemptible work must fit within deserved quota", () => {
  it("stays pending (NonPreemptibleOverQuota) beyond deserved even with idle GPUs", () => {
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 2)],
      running: [],
      pending: [job("a", "np", { gpu: 4, preemptible: false })],
    });
    expect(d.bind).toEqual([]);
    const p = pendingOf(d, "np");
    expect(p.reason).toBe("NonPreemptibleOverQuota");
    expect(p.message.length).toBeGreaterThan(0);
  });

  it("a project with deserved 0 cannot run non-preemptible GPU work", () => {
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 0)],
      running: [],
      pending: [job("a", "np", { preemptible: false })],
    });
    expect(pendingOf(d, "np").reason).toBe("NonPreemptibleOverQuota");
  });

  it.each(QUOTA_FORMS)("binds non-preemptible work within deserved ($form)", ({ allResources }) => {
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 2, { allResources })],
      running: [],
      pending: [job("a", "np", { gpu: 2, preemptible: false })],
    });
    expect(boundIds(d)).toEqual(["np"]);
  });

  it("the same job, preemptible, borrows beyond deserved", () => {
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 2)],
      running: [],
      pending: [job("a", "p", { gpu: 4, preemptible: true })],
    });
    expect(boundIds(d)).toEqual(["p"]);
  });
});

// ---------------------------------------------------------------------------------------------
// 5. Gangs
// ---------------------------------------------------------------------------------------------

describe("rule 5: gang scheduling", () => {
  it("a 16-pod gang never starts partially on 15 free GPUs", () => {
    const d = schedule({
      nodes: [node("n1", 8), node("n2", 8)],
      projects: [project("g", 16), project("h", 1)],
      running: [running(job("h", "h1", { preemptible: false }), [{ node: "n1", devices: [0] }])],
      pending: [job("g", "gang16", { pods: 16 })],
    });
    expect(d.bind).toEqual([]);
    expect(d.preempt).toEqual([]);
    const p = pendingOf(d, "gang16");
    expect(p.reason).toBe("InsufficientCapacity");
    expect(p.holders).toContain("h/h1");
  });

  it("places every pod of a gang in one decision, each on its own devices", () => {
    const d = schedule({
      nodes: [node("n1", 4), node("n2", 4)],
      projects: [project("a", 8)],
      running: [],
      pending: [job("a", "gang", { pods: 4, gpu: 2 })],
    });
    const placements = placementsOf(d, "gang")!;
    expect(placements.map((p) => p.pod).sort()).toEqual([0, 1, 2, 3]);
    for (const p of placements) expect(p.gpus.length).toBe(2);
    const devices = devicesOf(d, "gang");
    expect(new Set(devices).size).toBe(8);
  });

  it("a pending gang holds nothing: smaller work behind it still binds", () => {
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 8), project("h", 1)],
      running: [running(job("h", "h1", { preemptible: false }), [{ node: "n1", devices: [0] }])],
      pending: [job("a", "gang8", { pods: 8, priority: 5 }), job("a", "small", { priority: 0 })],
    });
    expect(boundIds(d)).toEqual(["small"]);
    expect(pendingOf(d, "gang8").reason).not.toBe("WaitingForPreemption");
  });
});

// ---------------------------------------------------------------------------------------------
// 6. Placement
// ---------------------------------------------------------------------------------------------

describe("rule 6: placement policy and node selection", () => {
  // n1 has 1 free GPU, n2 has 3, n3 has 4.
  const busy: Snapshot = {
    nodes: [node("n1", 4), node("n2", 4), node("n3", 4)],
    projects: [project("a", 4), project("h", 8)],
    running: [
      running(job("h", "h-n1", { gpu: 3, preemptible: false }), [{ node: "n1", devices: [0, 1, 2] }]),
      running(job("h", "h-n2", { preemptible: false }), [{ node: "n2", devices: [0] }]),
    ],
    pending: [],
  };

  it("binpack: a 1-GPU pod goes to the node with the fewest free GPUs that fits", () => {
    const d = schedule({ ...busy, pending: [job("a", "p")] });
    expect(devicesOf(d, "p")).toEqual(["n1-g3"]);
  });

  it("binpack: a 2-GPU pod goes to the fullest node it fits on", () => {
    const d = schedule({ ...busy, pending: [job("a", "p", { gpu: 2 })] });
    expect(placementsOf(d, "p")![0]!.node).toBe("n2");
    expect(devicesOf(d, "p")).not.toContain("n2-g0");
  });

  it("spread: a 1-GPU pod goes to the emptiest node", () => {
    const d = schedule({ ...busy, pending: [job("a", "p", { placement: "spread" })] });
    expect(placementsOf(d, "p")![0]!.node).toBe("n3");
  });

  it("binpack keeps a 4-pod gang on one node; spread puts each pod on its own node", () => {
    const base: Snapshot = {
      nodes: [node("n1", 4), node("n2", 4), node("n3", 4), node("n4", 4)],
      projects: [project("a", 16)],
      running: [],
      pending: [],
    };
    const packed = schedule({ ...base, pending: [job("a", "g", { pods: 4 })] });
    expect(new Set(placementsOf(packed, "g")!.map((p) => p.node)).size).toBe(1);
    const spread = schedule({ ...base, pending: [job("a", "g", { pods: 4, placement: "spread" })] });
    expect(new Set(placementsOf(spread, "g")!.map((p) => p.node)).size).toBe(4);
  });

  it("a node takes pods up to exactly its cpu (two 2-core pods on a 4-core node)", () => {
    const d = schedule({
      nodes: [node("cpu1", 0, { cpuMillis: 4000 })],
      projects: [project("a", 0)],
      running: [],
      pending: jobs("a", "c", 3, { gpu: 0, cpuMillis: 2000 }),
    });
    expect(boundIds(d)).toEqual(["c1", "c2"]);
    expect(pendingOf(d, "c3").reason).toBe("InsufficientCapacity");
  });

  it("a node takes exactly maxPods pods", () => {
    const d = schedule({
      nodes: [node("cpu1", 0, { maxPods: 2 })],
      projects: [project("a", 0)],
      running: [],
      pending: jobs("a", "c", 3, { gpu: 0 }),
    });
    expect(boundIds(d)).toEqual(["c1", "c2"]);
  });

  it("binpack keeps whole nodes free: a 4-GPU pod goes to the partly used 8-GPU node", () => {
    const d = schedule({
      nodes: [node("n1", 8), node("n2", 8)],
      projects: [project("a", 8), project("h", 2)],
      running: [running(job("h", "h1", { gpu: 2, preemptible: false }), [{ node: "n2", devices: [0, 1] }])],
      pending: [job("a", "p", { gpu: 4 })],
    });
    expect(placementsOf(d, "p")![0]!.node).toBe("n2");
  });

  it("nodePool selects the pool's nodes; unset pool on a node is the 'default' pool", () => {
    const base: Snapshot = {
      nodes: [node("d1", 4), node("t1", 4, { pool: "train" })],
      projects: [project("a", 8)],
      running: [],
      pending: [],
    };
    const train = schedule({ ...base, pending: [job("a", "p", { nodePool: "train" })] });
    expect(placementsOf(train, "p")![0]!.node).toBe("t1");
    const dflt = schedule({ ...base, pending: [job("a", "p", { nodePool: "default" })] });
    expect(placementsOf(dflt, "p")![0]!.node).toBe("d1");
  });

  it("gpuModel selects nodes of that model, over a fuller node binpack would prefer", () => {
    const d = schedule({
      nodes: [node("h100", 4, { gpuModel: "H100" }), node("a100", 4, { gpuModel: "A100" })],
      projects: [project("a", 8), project("h", 3)],
      running: [
        running(job("h", "h1", { gpu: 3, preemptible: false }), [{ node: "h100", devices: [0, 1, 2] }]),
      ],
      pending: [job("a", "p", { gpuModel: "A100" })],
    });
    expect(placementsOf(d, "p")![0]!.node).toBe("a100");
  });

  it("a project's nodePools restrict where its workloads without a nodePool go", () => {
    const d = schedule({
      nodes: [node("d1", 4), node("t1", 4, { pool: "train" })],
      projects: [project("a", 8, { nodePools: ["train"] }), project("h", 3)],
      running: [
        running(job("h", "h1", { gpu: 3, preemptible: false }), [{ node: "d1", devices: [0, 1, 2] }]),
      ],
      pending: [job("a", "p")],
    });
    expect(placementsOf(d, "p")![0]!.node).toBe("t1");
  });

  it("a workload asking for a pool its project may not use is NodePoolNotAllowed", () => {
    const d = schedule({
      nodes: [node("d1", 4), node("t1", 4, { pool: "train" })],
      projects: [project("a", 8, { nodePools: ["train"] })],
      running: [],
      pending: [job("a", "p", { nodePool: "default" })],
    });
    expect(pendingOf(d, "p").reason).toBe("NodePoolNotAllowed");
  });

  it("a workload asking for a pool that does not exist is NodePoolNotAllowed", () => {
    const d = schedule({
      nodes: [node("d1", 4)],
      projects: [project("a", 8)],
      running: [],
      pending: [job("a", "p", { nodePool: "nope" })],
    });
    expect(pendingOf(d, "p").reason).toBe("NodePoolNotAllowed");
  });
});

describe("rule 6 and 9: ExceedsNodeCapacity and Fragmentation", () => {
  // A full cluster: whatever is running must not change these reasons.
  const full = (nodes: SchedNode[]): Snapshot => ({
    nodes,
    projects: [project("a", 16), project("h", 16)],
    running: nodes.map((n) =>
      running(job("h", `h-${n.name}`, { gpu: n.gpus.length, preemptible: false }), [
        { node: n.name, devices: n.gpus.map((_, i) => i) },
      ]),
    ),
    pending: [],
  });

  it("a pod larger than every node is ExceedsNodeCapacity at once, even on a full cluster", () => {
    const d = schedule({ ...full([node("n1", 8), node("n2", 8)]), pending: [job("a", "p", { gpu: 16 })] });
    expect(pendingOf(d, "p").reason).toBe("ExceedsNodeCapacity");
    expect(d.preempt).toEqual([]);
  });

  it("an 8-GPU pod on two 4-GPU nodes is ExceedsNodeCapacity, not Fragmentation", () => {
    const d = schedule({
      nodes: [node("n1", 4), node("n2", 4)],
      projects: [project("a", 8)],
      running: [],
      pending: [job("a", "p", { gpu: 8 })],
    });
    expect(pendingOf(d, "p").reason).toBe("ExceedsNodeCapacity");
  });

  it("a gang larger than its pool's total capacity is ExceedsNodeCapacity", () => {
    const d = schedule({
      ...full([node("n1", 4), node("n2", 4)]),
      pending: [job("a", "g", { pods: 3, gpu: 4 })],
    });
    expect(pendingOf(d, "g").reason).toBe("ExceedsNodeCapacity");
  });

  it("a pod asking for more cpu than any node has is ExceedsNodeCapacity", () => {
    const d = schedule({
      nodes: [node("n1", 8, { cpuMillis: 32_000 })],
      projects: [project("a", 8)],
      running: [],
      pending: [job("a", "p", { cpuMillis: 64_000 })],
    });
    expect(pendingOf(d, "p").reason).toBe("ExceedsNodeCapacity");
  });

  it("only nodes of the requested GPU model count toward capacity", () => {
    const d = schedule({
      nodes: [node("h100", 8, { gpuModel: "H100" }), node("a100", 4, { gpuModel: "A100" })],
      projects: [project("a", 8)],
      running: [],
      pending: [job("a", "p", { gpu: 8, gpuModel: "A100" })],
    });
    expect(pendingOf(d, "p").reason).toBe("ExceedsNodeCapacity");
  });

  it("an 8-GPU pod with 4 + 4 GPUs free on two 8-GPU nodes is Fragmentation, with the holders named", () => {
    const d = schedule({
      nodes: [node("n1", 8), node("n2", 8)],
      projects: [project("a", 8), project("h", 8)],
      running: [
        running(job("h", "h1", { gpu: 4, preemptible: false }), [{ node: "n1", devices: [0, 1, 2, 3] }]),
        running(job("h", "h2", { gpu: 4, preemptible: false }), [{ node: "n2", devices: [0, 1, 2, 3] }]),
      ],
      pending: [job("a", "p", { gpu: 8 })],
    });
    const p = pendingOf(d, "p");
    expect(p.reason).toBe("Fragmentation");
    expect(p.holders).toEqual(expect.arrayContaining(["h/h1", "h/h2"]));
    expect(p.message.length).toBeGreaterThan(0);
    expect(d.preempt).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// 7. Fractional GPUs
// ---------------------------------------------------------------------------------------------

describe("rule 7: fractional GPUs", () => {
  it("packs two 0.5 pods on one device, each with share 0.5", () => {
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 2)],
      running: [],
      pending: [job("a", "f1", { gpu: 0.5 }), job("a", "f2", { gpu: 0.5 })],
    });
    const g1 = placementsOf(d, "f1")![0]!.gpus;
    const g2 = placementsOf(d, "f2")![0]!.gpus;
    expect(g1).toHaveLength(1);
    expect(g2).toHaveLength(1);
    expect(g1[0]!.share).toBe(0.5);
    expect(g2[0]!.share).toBe(0.5);
    expect(g1[0]!.device).toBe(g2[0]!.device);
  });

  it("a 0.5 pod joins a half-used device rather than an empty one", () => {
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 2), project("h", 1)],
      running: [
        running(job("h", "h1", { gpu: 0.5, preemptible: false }), [{ node: "n1", devices: [1], share: 0.5 }]),
      ],
      pending: [job("a", "f", { gpu: 0.5 })],
    });
    expect(placementsOf(d, "f")![0]!.gpus).toEqual([{ device: "n1-g1", share: 0.5 }]);
  });

  it("shares on a device never sum above 1", () => {
    const d = schedule({
      nodes: [node("n1", 1)],
      projects: [project("a", 2), project("h", 1)],
      running: [running(job("h", "h1", { gpu: 0.75, preemptible: false }), [{ node: "n1", share: 0.75 }])],
      pending: [job("a", "f", { gpu: 0.5 })],
    });
    expect(d.bind).toEqual([]);
    expect(pendingOf(d, "f").reason).toBe("InsufficientCapacity");
  });

  it("a whole-GPU pod never gets a device with a fraction on it", () => {
    const oneDevice = schedule({
      nodes: [node("n1", 1)],
      projects: [project("a", 2), project("h", 1)],
      running: [running(job("h", "h1", { gpu: 0.5, preemptible: false }), [{ node: "n1", share: 0.5 }])],
      pending: [job("a", "w")],
    });
    expect(oneDevice.bind).toEqual([]);
    const twoDevices = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 2), project("h", 1)],
      running: [running(job("h", "h1", { gpu: 0.5, preemptible: false }), [{ node: "n1", share: 0.5 }])],
      pending: [job("a", "w")],
    });
    expect(devicesOf(twoDevices, "w")).toEqual(["n1-g1"]);
  });

  it("a 0.5 pod never lands on a device a whole-GPU pod holds", () => {
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 2), project("h", 1)],
      running: [running(job("h", "h1", { preemptible: false }), [{ node: "n1", devices: [0] }])],
      pending: [job("a", "f", { gpu: 0.5 })],
    });
    expect(devicesOf(d, "f")).toEqual(["n1-g1"]);
  });

  it("0.5 + 0.5 + whole in one cycle: the halves share a device, the whole GPU gets its own", () => {
    const d = schedule({
      nodes: [node("n1", 2)],
      projects: [project("a", 2)],
      running: [],
      pending: [job("a", "f1", { gpu: 0.5 }), job("a", "w", { gpu: 1 }), job("a", "f2", { gpu: 0.5 })],
    });
    expect(boundIds(d)).toEqual(["f1", "f2", "w"]);
    const [f1] = devicesOf(d, "f1");
    expect(devicesOf(d, "f2")).toEqual([f1]);
    expect(devicesOf(d, "w")).toHaveLength(1);
    expect(devicesOf(d, "w")).not.toContain(f1);
  });

  it("gpuMemoryBytes sizes the share: two 40 GiB pods share one 80 GiB device at 0.5 each", () => {
    const d = schedule({
      nodes: [node("n1", 2, { deviceMemory: 80 * GiB })],
      projects: [project("a", 2)],
      running: [],
      pending: [
        job("a", "m1", { gpu: 0, gpuMemoryBytes: 40 * GiB }),
        job("a", "m2", { gpu: 0, gpuMemoryBytes: 40 * GiB }),
      ],
    });
    const g1 = placementsOf(d, "m1")![0]!.gpus;
    const g2 = placementsOf(d, "m2")![0]!.gpus;
    expect(g1).toHaveLength(1);
    expect(g1[0]!.share).toBeCloseTo(0.5, 9);
    expect(g2[0]!.share).toBeCloseTo(0.5, 9);
    expect(g1[0]!.device).toBe(g2[0]!.device);
  });

  it("gpuMemoryBytes share is relative to the device it lands on (20 GiB of 40 GiB = 0.5)", () => {
    const d = schedule({
      nodes: [node("n1", 1, { deviceMemory: 40 * GiB })],
      projects: [project("a", 2)],
      running: [],
      pending: [
        job("a", "m1", { gpu: 0, gpuMemoryBytes: 20 * GiB }),
        job("a", "m2", { gpu: 0, gpuMemoryBytes: 20 * GiB }),
        job("a", "m3", { gpu: 0, gpuMemoryBytes: 20 * GiB }),
      ],
    });
    expect(placementsOf(d, "m1")![0]!.gpus).toEqual([{ device: "n1-g0", share: 0.5 }]);
    expect(placementsOf(d, "m2")![0]!.gpus).toEqual([{ device: "n1-g0", share: 0.5 }]);
    expect(boundIds(d)).not.toContain("m3");
  });

  it("a memory-sized share fills what a fraction left (0.5 + 40 of 80 GiB), no further", () => {
    const d = schedule({
      nodes: [node("n1", 1, { deviceMemory: 80 * GiB })],
      projects: [project("a", 2), project("h", 1)],
      running: [running(job("h", "h1", { gpu: 0.5, preemptible: false }), [{ node: "n1", share: 0.5 }])],
      pending: [
        job("a", "m40", { gpu: 0, gpuMemoryBytes: 40 * GiB, priority: 1 }),
        job("a", "m20", { gpu: 0, gpuMemoryBytes: 20 * GiB, priority: 0 }),
      ],
    });
    expect(boundIds(d)).toEqual(["m40"]);
    expect(placementsOf(d, "m40")![0]!.gpus[0]!.share).toBeCloseTo(0.5, 9);
  });

  it("gpuMemoryBytes above every device's memory is ExceedsNodeCapacity", () => {
    const d = schedule({
      nodes: [node("n1", 2, { deviceMemory: 80 * GiB })],
      projects: [project("a", 2)],
      running: [],
      pending: [job("a", "m", { gpu: 0, gpuMemoryBytes: 100 * GiB })],
    });
    expect(pendingOf(d, "m").reason).toBe("ExceedsNodeCapacity");
  });
});

// ---------------------------------------------------------------------------------------------
// 9. Pending reasons, messages, positions and holders
// ---------------------------------------------------------------------------------------------

describe("rule 9: every pending workload is explained", () => {
  it("InsufficientCapacity names the workloads holding the capacity", () => {
    const d = schedule({
      nodes: [node("n1", 1)],
      projects: [project("a", 2)],
      running: [running(job("a", "train", { preemptible: false }), [{ node: "n1", devices: [0] }])],
      pending: [job("a", "eval")],
    });
    const p = pendingOf(d, "eval");
    expect(p.reason).toBe("InsufficientCapacity");
    expect(p.holders).toEqual(["a/train"]);
    expect(p.queuePosition).toBe(1);
    expect(p.message.length).toBeGreaterThan(0);
  });

  it("a mixed cycle gives each pending workload one reason, a message and positions 1..n", () => {
    const s: Snapshot = {
      nodes: [node("n1", 4), node("n2", 4, { pool: "train" })],
      projects: [
        project("a", 2, { limit: { gpu: 3 } }),
        project("b", 0, { nodePools: ["default"] }),
        project("h", 4),
      ],
      running: [running(job("h", "h1", { gpu: 2, preemptible: false }), [{ node: "n1", devices: [0, 1] }])],
      pending: [
        job("a", "over-limit", { gpu: 4 }),
        job("h", "too-big", { gpu: 16 }),
        job("a", "np", { gpu: 3, preemptible: false }),
        job("b", "wrong-pool", { nodePool: "train" }),
        job("a", "fits", { gpu: 1 }),
      ],
    };
    const d = schedule(s);
    expect(boundIds(d)).toEqual(["fits"]);
    expect(Object.fromEntries(d.pending.map((p) => [p.id, p.reason]))).toEqual({
      "over-limit": "OverLimit",
      "too-big": "ExceedsNodeCapacity",
      np: "NonPreemptibleOverQuota",
      "wrong-pool": "NodePoolNotAllowed",
    });
    expect(d.pending.map((p) => p.queuePosition).sort()).toEqual([1, 2, 3, 4]);
    for (const p of d.pending) {
      expect(p.message.trim().length, p.id).toBeGreaterThan(0);
      expect(Array.isArray(p.holders)).toBe(true);
    }
  });
});

describe("elastic gangs (workers {min, max})", () => {
  const elastic = (projectName: string, id: string, min: number, max: number, o: JobOpts = {}): Workload => ({
    ...job(projectName, id, { ...o, pods: max }),
    elastic: { min, max },
  });

  it("start with the largest size that fits, down to min, without preempting for the extra", () => {
    const a = job("a", "a1", { pods: 3 });
    const e = elastic("b", "e1", 2, 8);
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("a", 4), project("b", 4)],
      running: [
        running(a, [
          { node: "n1", devices: [0] },
          { node: "n1", devices: [1] },
          { node: "n1", devices: [2] },
        ]),
      ],
      pending: [e],
    });
    expect(placementsOf(d, "e1")).toHaveLength(5);
    expect(d.preempt).toEqual([]);
  });

  it("wait with the reason of their smallest size when even min does not fit", () => {
    const e = elastic("b", "e1", 3, 4, { preemptible: false });
    const d = schedule({ nodes: [node("n1", 2)], projects: [project("b", 0)], running: [], pending: [e] });
    expect(pendingOf(d, "e1").reason).toBe("ExceedsNodeCapacity");
    expect(pendingOf(d, "e1").message).toMatch(/3 pod/);
  });

  it("grow into capacity nothing else waits for, never past max or the project's limit", () => {
    const e = elastic("b", "e1", 1, 4);
    const small = { ...e, pods: e.pods.slice(0, 1) };
    const d = schedule({
      nodes: [node("n1", 8)],
      projects: [project("b", 0, { limit: { gpu: 3 } })],
      running: [running(small, [{ node: "n1", devices: [0] }])],
      pending: [],
    });
    expect(d.resize).toEqual([expect.objectContaining({ id: "e1", pods: 3 })]);
  });

  it("do not grow while anything waits, or while stopping", () => {
    const e = elastic("b", "e1", 1, 2);
    const small = { ...e, pods: e.pods.slice(0, 1) };
    const waiting = job("a", "a1", { gpu: 4 });
    const d = schedule({
      nodes: [node("n1", 4)],
      projects: [project("a", 0, { limit: { gpu: 0 } }), project("b", 0)],
      running: [running(small, [{ node: "n1", devices: [0] }])],
      pending: [waiting],
    });
    expect(d.resize).toEqual([]);
    const stopping = schedule({
      nodes: [node("n1", 4)],
      projects: [project("b", 0)],
      running: [running(small, [{ node: "n1", devices: [0] }], { stopping: true })],
      pending: [],
    });
    expect(stopping.resize).toEqual([]);
  });
});

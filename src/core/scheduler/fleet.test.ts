import { describe, expect, it } from "vitest";
import type { ProjectPolicy, RunningWorkload, SchedNode, Snapshot, Workload } from "./model.js";
import { schedule } from "./schedule.js";

// One queue over a fleet (issue 23): nodes carry their member's name; a gang is placed whole in
// one member, members filled in order; spec.clusters narrows; quotas stay global.

const GiB = 2 ** 30;
const at = (s: number) => new Date(Date.parse("2025-01-01T00:00:00Z") + s * 1000).toISOString();

function node(cluster: string, name: string, gpus: number): SchedNode {
  return {
    name: `${cluster}/${name}`,
    cluster,
    cpuMillis: 64_000,
    memoryBytes: 256 * GiB,
    gpus: Array.from({ length: gpus }, (_, i) => ({ id: `${i}` })),
  };
}

function job(name: string, workers: number, gpu: number, o: Partial<Workload> = {}, t = 0): Workload {
  return {
    id: name,
    name: `p/${name}`,
    project: o.project ?? "p",
    priority: 0,
    preemptible: true,
    createdAt: at(t),
    pods: Array.from({ length: workers }, () => ({ cpuMillis: 1000, memoryBytes: GiB, gpu })),
    ...o,
  };
}

const proj = (name: string, deserved = 0, limit?: number): ProjectPolicy => ({
  name,
  deserved: { gpu: deserved },
  overQuotaWeight: 1,
  ...(limit !== undefined ? { limit: { gpu: limit } } : {}),
});

/** Two members of one 8-GPU node each. */
const fleet = () => [node("a", "n0", 8), node("b", "n0", 8)];
const membersOf = (placements: { node: string }[]) => [
  ...new Set(placements.map((p) => p.node.split("/")[0])),
];

describe("one queue over a fleet", () => {
  it("fills member a, then b; a gang is never split over members", () => {
    const s: Snapshot = {
      nodes: fleet(),
      projects: [proj("p")],
      running: [],
      pending: [
        job("j1", 1, 4, {}, 1),
        job("j2", 1, 4, {}, 2),
        job("j3", 2, 2, {}, 3),
        job("j4", 1, 4, {}, 4),
      ],
    };
    const d = schedule(s);
    const where = new Map(d.bind.map((b) => [b.id, membersOf(b.placements)]));
    expect(where.get("j1")).toEqual(["a"]);
    expect(where.get("j2")).toEqual(["a"]);
    expect(where.get("j3")).toEqual(["b"]);
    expect(where.get("j4")).toEqual(["b"]);
  });

  it("a 2×4-GPU gang with 4 free in a and 4 free in b waits rather than span the two", () => {
    const running: RunningWorkload[] = [
      {
        ...job("r1", 1, 4),
        placements: [{ pod: 0, node: "a/n0", gpus: [0, 1, 2, 3].map((d) => ({ device: `${d}`, share: 1 })) }],
      },
      {
        ...job("r2", 1, 4),
        placements: [{ pod: 0, node: "b/n0", gpus: [0, 1, 2, 3].map((d) => ({ device: `${d}`, share: 1 })) }],
      },
    ].map((r) => ({ ...r, preemptible: false }));
    const d = schedule({ nodes: fleet(), projects: [proj("p", 100)], running, pending: [job("big", 2, 4)] });
    expect(d.bind).toEqual([]);
    expect(d.pending[0]?.id).toBe("big");
  });

  it("spec.clusters sends a job to b even while a has room", () => {
    const d = schedule({
      nodes: fleet(),
      projects: [proj("p")],
      running: [],
      pending: [job("j", 1, 1, { clusters: ["b"] })],
    });
    expect(membersOf(d.bind[0]!.placements)).toEqual(["b"]);
  });

  it("a gang too big for every member waits with a reason naming each member", () => {
    const d = schedule({ nodes: fleet(), projects: [proj("p")], running: [], pending: [job("huge", 2, 8)] });
    expect(d.bind).toEqual([]);
    const p = d.pending[0]!;
    expect(p.reason).toBe("ExceedsNodeCapacity");
    expect(p.message).toMatch(/fits in no member cluster/);
    expect(p.message).toMatch(/ a: .*gpu 16.*\(gpu 8,/);
    expect(p.message).toMatch(/; b: .*gpu 16.*\(gpu 8,/);
  });

  it("a member not named by any node (spec.clusters: [c]) says so", () => {
    const d = schedule({
      nodes: fleet(),
      projects: [proj("p")],
      running: [],
      pending: [job("j", 1, 1, { clusters: ["c"] })],
    });
    expect(d.pending[0]?.message).toMatch(/in cluster\(s\) c/);
  });

  it("a project's limit is global: 8 GPUs in a count against it when b has room", () => {
    const running: RunningWorkload[] = [
      {
        ...job("r", 1, 8),
        placements: [
          { pod: 0, node: "a/n0", gpus: Array.from({ length: 8 }, (_, d) => ({ device: `${d}`, share: 1 })) },
        ],
      },
    ];
    const d = schedule({ nodes: fleet(), projects: [proj("p", 0, 8)], running, pending: [job("j", 1, 1)] });
    expect(d.bind).toEqual([]);
    expect(d.pending[0]?.reason).toBe("OverLimit");
  });

  it("tries the control plane's own member first, whatever its host's name, then the others in name order", () => {
    const host = (name: string): SchedNode => ({
      name, // the self member's nodes keep their own names
      cluster: "self",
      cpuMillis: 2000,
      memoryBytes: 8 * GiB,
      gpus: [],
    });
    for (const name of ["aaa-host", "zzz-host"]) {
      const d = schedule({
        nodes: [node("b", "n0", 8), host(name), node("a", "n0", 8)],
        projects: [proj("p")],
        running: [],
        pending: [job("cpu", 1, 0, {}, 1), job("gpu", 1, 4, {}, 2)],
      });
      const where = Object.fromEntries(d.bind.map((b) => [b.id, membersOf(b.placements)[0]]));
      expect(where).toEqual({ cpu: name, gpu: "a" });
    }
  });

  it("spread places each one-pod workload in the member with the most room for it (a service's replicas)", () => {
    const running: RunningWorkload[] = [
      {
        ...job("r1", 1, 2),
        placements: [{ pod: 0, node: "a/n0", gpus: [0, 1].map((d) => ({ device: `${d}`, share: 1 })) }],
      },
    ];
    const s: Snapshot = {
      nodes: fleet(),
      projects: [proj("p")],
      running,
      pending: [1, 2, 3, 4].map((i) => job(`s${i}`, 1, 1, { placement: "spread" }, i)),
    };
    const d = schedule(s);
    const where = d.bind.map((b) => membersOf(b.placements)[0]);
    // b has 8 free, a 6: b, b, then a and b alike (a first: members' order breaks ties), …
    expect(where).toEqual(["b", "b", "a", "b"]);
    // binpack keeps the members' order.
    const packed = schedule({
      ...s,
      pending: s.pending.map((w) => ({ ...w, placement: "binpack" as const })),
    });
    expect(packed.bind.map((b) => membersOf(b.placements)[0])).toEqual(["a", "a", "a", "a"]);
  });
});

import { describe, expect, it } from "vitest";
import type { SchedNode, Snapshot, Taint, Workload } from "./model.js";
import { schedule } from "./schedule.js";
import { toleratesNode, toleratesTaint } from "./taints.js";

const GiB = 2 ** 30;
const node = (name: string, o: { pool?: string; taints?: Taint[] } = {}): SchedNode => ({
  name,
  ...(o.pool ? { pool: o.pool } : {}),
  ...(o.taints ? { taints: o.taints } : {}),
  cpuMillis: 4000,
  memoryBytes: 8 * GiB,
  gpus: [],
});
const job = (id: string, o: Partial<Workload> = {}): Workload => ({
  id,
  name: `p/${id}`,
  project: "p",
  priority: 0,
  preemptible: true,
  createdAt: `2025-01-01T00:00:0${id.length}.000Z`,
  pods: [{ cpuMillis: 1000, memoryBytes: GiB, gpu: 0 }],
  ...o,
});
const snapshot = (nodes: SchedNode[], pending: Workload[]): Snapshot => ({
  nodes,
  projects: [{ name: "p", deserved: { cpu: 100_000, memory: 100 * GiB, gpu: 0 }, overQuotaWeight: 1 }],
  running: [],
  pending,
});
const nodesOf = (d: ReturnType<typeof schedule>, id: string) =>
  d.bind.find((b) => b.id === id)?.placements.map((p) => p.node);

const REAL: Taint = { key: "loom.dev/real-node", value: "true", effect: "NoSchedule" };
const GPU: Taint = { key: "nvidia.com/gpu", effect: "NoExecute" };

describe("tolerations, by Kubernetes' rules", () => {
  it("Equal needs key and value; Exists only the key; an empty key with Exists tolerates all; effect must match when given", () => {
    expect(toleratesTaint({ key: "loom.dev/real-node", operator: "Equal", value: "true" }, REAL)).toBe(true);
    expect(toleratesTaint({ key: "loom.dev/real-node", operator: "Equal", value: "no" }, REAL)).toBe(false);
    expect(toleratesTaint({ key: "loom.dev/real-node", value: "true" }, REAL)).toBe(true);
    expect(toleratesTaint({ key: "nvidia.com/gpu", operator: "Exists" }, GPU)).toBe(true);
    expect(toleratesTaint({ key: "other", operator: "Exists" }, GPU)).toBe(false);
    expect(toleratesTaint({ operator: "Exists" }, GPU)).toBe(true);
    expect(toleratesTaint({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }, GPU)).toBe(
      false,
    );
    expect(toleratesTaint({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoExecute" }, GPU)).toBe(
      true,
    );
  });

  it("PreferNoSchedule never keeps work off a node; NoSchedule and NoExecute do", () => {
    const soft = node("a", { taints: [{ key: "x", effect: "PreferNoSchedule" }] });
    expect(toleratesNode(job("j"), soft)).toBe(true);
    expect(toleratesNode(job("j"), node("b", { taints: [GPU] }))).toBe(false);
  });
});

describe("the scheduler and tainted nodes", () => {
  it("the attack: a job without a pool or toleration never lands on a tainted node, even when it is the only free one", () => {
    const d = schedule(
      snapshot(
        [node("real-0", { pool: "real", taints: [REAL] }), node("tainted-gpu", { taints: [GPU] })],
        [job("j")],
      ),
    );
    expect(d.bind).toEqual([]);
    const why = d.pending.find((p) => p.id === "j")!;
    expect(why.reason).toBe("ExceedsNodeCapacity");
    expect(why.message).toContain("tainted (loom.dev/real-node=true:NoSchedule, nvidia.com/gpu:NoExecute)");
    expect(why.message).toContain("spec.tolerations");
  });

  it("untainted nodes take work as before; the tainted one is left alone while they have room", () => {
    const d = schedule(
      snapshot(
        [node("a-real", { pool: "real", taints: [REAL] }), node("b"), node("c")],
        [job("j1"), job("j22"), job("j333"), job("j4444"), job("j55555")],
      ),
    );
    const used = d.bind.flatMap((b) => b.placements.map((p) => p.node));
    expect(used).not.toContain("a-real");
    expect(used.length).toBe(5);
  });

  it("naming the pool of a node with a loom.dev/ taint is enough (Loom's convention); a foreign taint still needs a toleration", () => {
    const d = schedule(
      snapshot(
        [node("real-0", { pool: "real", taints: [REAL] }), node("gpu-0", { pool: "gpu", taints: [GPU] })],
        [job("j1", { nodePool: "real" }), job("j22", { nodePool: "gpu" })],
      ),
    );
    expect(nodesOf(d, "j1")).toEqual(["real-0"]);
    expect(nodesOf(d, "j22")).toBeUndefined();
    expect(d.pending.find((p) => p.id === "j22")?.message).toContain("nvidia.com/gpu:NoExecute");
  });

  it("a job that tolerates a taint may use the node, with or without a pool", () => {
    const d = schedule(
      snapshot(
        [node("gpu-0", { pool: "gpu", taints: [GPU] })],
        [job("j1", { tolerations: [{ key: "nvidia.com/gpu", operator: "Exists" }] })],
      ),
    );
    expect(nodesOf(d, "j1")).toEqual(["gpu-0"]);
  });

  it("a look-alike that tolerates is not held back by one that does not (tolerations are part of the shape)", () => {
    const d = schedule(
      snapshot(
        [node("gpu-0", { taints: [GPU] })],
        [job("j1"), job("j22", { tolerations: [{ key: "nvidia.com/gpu", operator: "Exists" }] })],
      ),
    );
    expect(nodesOf(d, "j1")).toBeUndefined();
    expect(nodesOf(d, "j22")).toEqual(["gpu-0"]);
  });
});

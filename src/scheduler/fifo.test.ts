import { describe, expect, it } from "vitest";
import { FifoScheduler } from "./fifo.js";
import type { Allocation, NodeCapacity, WorkloadDemand } from "./port.js";

const GiB = 2 ** 30;

function node(name: string, cpu: number, memGi: number, gpus: string[] = []): NodeCapacity {
  return { name, cpuMillis: cpu * 1000, memoryBytes: memGi * GiB, gpus };
}

let seq = 0;
function demand(
  id: string,
  opts: { cpu?: number; memGi?: number; gpus?: number; createdAt?: string } = {},
): WorkloadDemand {
  seq++;
  return {
    id,
    displayName: `default/${id}`,
    createdAt: opts.createdAt ?? `2024-01-01T00:00:${String(seq % 60).padStart(2, "0")}.000Z`,
    cpuMillis: (opts.cpu ?? 1) * 1000,
    memoryBytes: (opts.memGi ?? 1) * GiB,
    gpus: opts.gpus ?? 0,
  };
}

const at = (s: number) => `2024-01-01T00:00:${String(s).padStart(2, "0")}.000Z`;

describe("FifoScheduler", () => {
  const scheduler = new FifoScheduler();

  it("admits in createdAt order, whatever the input order", () => {
    const nodes = [node("n1", 2, 16)];
    // Ids sort the other way round, so only createdAt can give this order.
    const pending = [
      demand("a-third", { createdAt: at(3) }),
      demand("c-first", { createdAt: at(1) }),
      demand("b-second", { createdAt: at(2) }),
    ];
    const d = scheduler.schedule({ nodes, allocations: [], pending });
    expect(d.admit.map((a) => a.id)).toEqual(["c-first", "b-second"]);
    expect(d.pending.map((p) => p.id)).toEqual(["a-third"]);
    expect(d.pending[0]!.reason).toBe("InsufficientCapacity");
  });

  it("breaks createdAt ties by id", () => {
    const d = scheduler.schedule({
      nodes: [node("n1", 1, 16)],
      allocations: [],
      pending: [demand("b", { createdAt: at(1) }), demand("a", { createdAt: at(1) })],
    });
    expect(d.admit.map((a) => a.id)).toEqual(["a"]);
    expect(d.pending.map((p) => p.id)).toEqual(["b"]);
  });

  it("does not let a big job that does not fit block a smaller later one", () => {
    const d = scheduler.schedule({
      nodes: [node("n1", 4, 16)],
      allocations: [{ node: "n1", cpuMillis: 2000, memoryBytes: 0, gpus: [] }],
      pending: [demand("big", { cpu: 3, createdAt: at(1) }), demand("small", { cpu: 2, createdAt: at(2) })],
    });
    expect(d.admit).toEqual([
      { id: "small", allocation: { node: "n1", cpuMillis: 2000, memoryBytes: GiB, gpus: [] } },
    ]);
    expect(d.pending).toEqual([expect.objectContaining({ id: "big", reason: "InsufficientCapacity" })]);
  });

  it("allocates distinct GPU ids that no existing allocation holds", () => {
    const allocations: Allocation[] = [{ node: "n1", cpuMillis: 0, memoryBytes: 0, gpus: ["1", "2"] }];
    const d = scheduler.schedule({
      nodes: [node("n1", 32, 256, ["0", "1", "2", "3", "4", "5"])],
      allocations,
      pending: [
        demand("a", { gpus: 2, createdAt: at(1) }),
        demand("b", { gpus: 2, createdAt: at(2) }),
        demand("c", { gpus: 1, createdAt: at(3) }),
      ],
    });
    expect(d.admit.map((a) => a.id)).toEqual(["a", "b"]);
    const given = d.admit.flatMap((a) => a.allocation.gpus);
    expect(given).toHaveLength(4);
    expect(new Set(given).size).toBe(4);
    expect(given.sort()).toEqual(["0", "3", "4", "5"]);
    expect(d.pending).toEqual([
      {
        id: "c",
        reason: "InsufficientCapacity",
        message: expect.stringContaining("gpu: requested 1, free 0"),
      },
    ]);
  });

  it("places a workload on the first node it fits, counting allocations per node", () => {
    const d = scheduler.schedule({
      nodes: [node("n1", 4, 16, ["0"]), node("n2", 4, 16, ["0", "1"])],
      allocations: [{ node: "n1", cpuMillis: 3000, memoryBytes: 0, gpus: [] }],
      pending: [
        demand("a", { cpu: 2, createdAt: at(1) }),
        demand("b", { cpu: 1, gpus: 1, createdAt: at(2) }),
      ],
    });
    expect(d.admit).toEqual([
      { id: "a", allocation: { node: "n2", cpuMillis: 2000, memoryBytes: GiB, gpus: [] } },
      { id: "b", allocation: { node: "n1", cpuMillis: 1000, memoryBytes: GiB, gpus: ["0"] } },
    ]);
  });

  it("reports ExceedsNodeCapacity, naming the resource, for a request larger than every node", () => {
    const nodes = [node("n1", 8, 64, ["0", "1"]), node("n2", 16, 32)];
    const d = scheduler.schedule({
      nodes,
      allocations: [],
      pending: [
        demand("cpu", { cpu: 64, createdAt: at(1) }),
        demand("mem", { memGi: 128, createdAt: at(2) }),
        demand("gpu", { gpus: 4, createdAt: at(3) }),
        // Each resource fits some node, but no node has all of them.
        demand("combo", { cpu: 12, gpus: 1, createdAt: at(4) }),
      ],
    });
    expect(d.admit).toEqual([]);
    const byId = Object.fromEntries(d.pending.map((p) => [p.id, p]));
    for (const id of ["cpu", "mem", "gpu", "combo"]) expect(byId[id]!.reason).toBe("ExceedsNodeCapacity");
    expect(byId.cpu!.message).toContain("cpu 64 (largest node has 16)");
    expect(byId.cpu!.message).not.toContain("memory");
    expect(byId.mem!.message).toContain("memory 128Gi (largest node has 64Gi)");
    expect(byId.gpu!.message).toContain("gpu 4 (largest node has 2)");
    expect(byId.combo!.message).toMatch(/no single node/);
  });

  it("reports InsufficientCapacity with requested and free amounts when capacity is taken", () => {
    const d = scheduler.schedule({
      nodes: [node("n1", 8, 16)],
      allocations: [{ node: "n1", cpuMillis: 6500, memoryBytes: 12 * GiB, gpus: [] }],
      pending: [demand("a", { cpu: 2, memGi: 8 })],
    });
    expect(d.admit).toEqual([]);
    expect(d.pending).toHaveLength(1);
    const p = d.pending[0]!;
    expect(p.reason).toBe("InsufficientCapacity");
    expect(p.message).toContain("cpu: requested 2, free 1.5");
    expect(p.message).toContain("memory: requested 8Gi, free 4Gi");
  });

  it("accounts for capacity taken by workloads admitted earlier in the same cycle", () => {
    const d = scheduler.schedule({
      nodes: [node("n1", 4, 16)],
      allocations: [],
      pending: [demand("a", { cpu: 3, createdAt: at(1) }), demand("b", { cpu: 2, createdAt: at(2) })],
    });
    expect(d.admit.map((a) => a.id)).toEqual(["a"]);
    expect(d.pending[0]).toMatchObject({ id: "b", reason: "InsufficientCapacity" });
    expect(d.pending[0]!.message).toContain("cpu: requested 2, free 1");
  });

  it("reports ExceedsNodeCapacity when there are no nodes", () => {
    const d = scheduler.schedule({ nodes: [], allocations: [], pending: [demand("a")] });
    expect(d.pending[0]!.reason).toBe("ExceedsNodeCapacity");
  });

  it("respects a node's worker (pod) capacity and moves on to the next node", () => {
    const d = scheduler.schedule({
      nodes: [
        { ...node("n1", 32, 256), maxWorkers: 2 },
        { ...node("n2", 32, 256), maxWorkers: 1 },
      ],
      allocations: [{ node: "n1", cpuMillis: 0, memoryBytes: 0, gpus: [], workers: 1 }],
      pending: [
        demand("a", { createdAt: at(1) }),
        demand("b", { createdAt: at(2) }),
        demand("c", { createdAt: at(3) }),
      ],
    });
    expect(d.admit.map((a) => [a.id, a.allocation.node])).toEqual([
      ["a", "n1"],
      ["b", "n2"],
    ]);
    expect(d.pending[0]).toMatchObject({ id: "c", reason: "InsufficientCapacity" });
    expect(d.pending[0]!.message).toContain("pod capacity");
  });
});

import { describe, expect, it } from "vitest";
import { describePods, describe as describeVec, exceeded, fmtGpu, holdersOf, whyItWaits } from "./explain.js";
import type { RunningWorkload, SchedNode, Workload } from "./model.js";
import { CycleState } from "./state.js";

const GiB = 2 ** 30;
const node = (name: string, gpus: number): SchedNode => ({
  name,
  cpuMillis: 8000,
  memoryBytes: 64 * GiB,
  gpus: Array.from({ length: gpus }, (_, i) => ({ id: `${name}-g${i}` })),
});
const job = (id: string, pods: number, gpu: number, project = "p"): Workload => ({
  id,
  name: `${project}/${id}`,
  project,
  priority: 0,
  preemptible: true,
  createdAt: "2025-01-01T00:00:00.000Z",
  pods: Array.from({ length: pods }, () => ({ cpuMillis: 1000, memoryBytes: GiB, gpu })),
});
const on = (w: Workload, nodeName: string, devices: number[]): RunningWorkload => ({
  ...w,
  placements: [
    { pod: 0, node: nodeName, gpus: devices.map((d) => ({ device: `${nodeName}-g${d}`, share: 1 })) },
  ],
});
function cycle(nodes: SchedNode[], run: RunningWorkload[]): CycleState {
  const s = new CycleState({ nodes, projects: [], running: run, pending: [] });
  for (const r of run) s.cluster.hold(r, r.placements);
  return s;
}

describe("whyItWaits", () => {
  it("says fragmentation when free capacity is enough in total but split across nodes", () => {
    const s = cycle(
      [node("a", 2), node("b", 2)],
      [on(job("x", 1, 1), "a", [0]), on(job("y", 1, 1), "b", [0])],
    );
    const why = whyItWaits(s, job("w", 1, 2), s.cluster.nodes);
    expect(why.reason).toBe("Fragmentation");
    expect(why.message).toContain("gpu 2, cpu 14, memory 126Gi free in total");
    expect(why.holders).toEqual(["p/x", "p/y"]);
  });

  it("says what the gang is short of otherwise", () => {
    const s = cycle([node("a", 2)], [on(job("x", 1, 2), "a", [0, 1])]);
    expect(whyItWaits(s, job("w", 2, 1), s.cluster.nodes)).toMatchObject({
      reason: "InsufficientCapacity",
      message: "waiting for capacity: gpu: requested 2, free 0 (gang of 2); nothing may be preempted for it",
      holders: ["p/x"],
    });
  });
});

describe("holdersOf", () => {
  it("names other projects' workloads first, then the biggest", () => {
    const s = cycle(
      [node("a", 4)],
      [on(job("mine", 1, 3), "a", [0, 1, 2]), on(job("theirs", 1, 1, "q"), "a", [3])],
    );
    expect(holdersOf(s, job("w", 1, 1), s.cluster.nodes, () => true)).toEqual(["q/theirs", "p/mine"]);
  });
});

describe("messages", () => {
  it("format GPUs, vectors, pods and what no node can meet", () => {
    expect(fmtGpu(0.5)).toBe("0.5");
    expect(fmtGpu(2)).toBe("2");
    expect(describeVec({ gpu: 1.25, cpu: 2000, memory: GiB }, { gpu: 1, cpu: 0, memory: 0 })).toBe(
      "gpu 1.25",
    );
    expect(describePods(job("w", 2, 1).pods)).toBe("gpu 1, cpu 1, memory 1Gi each");
    const s = cycle([node("a", 2)], []);
    expect(exceeded({ cpuMillis: 1000, memoryBytes: GiB, gpu: 4 }, s.cluster.nodes)).toBe(
      "gpu 4 (largest node has 2)",
    );
  });
});

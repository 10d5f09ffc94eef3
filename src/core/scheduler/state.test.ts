import { describe, expect, it } from "vitest";
import type { RunningWorkload, SchedNode, Snapshot, Workload } from "./model.js";
import { schedule } from "./schedule.js";
import { CycleState } from "./state.js";

const GiB = 2 ** 30;
const node = (name: string, deviceMemory: number): SchedNode => ({
  name,
  cpuMillis: 8000,
  memoryBytes: 64 * GiB,
  gpus: [{ id: `${name}-g0`, memoryBytes: deviceMemory }],
});
const job = (id: string, gpuMemoryBytes: number): Workload => ({
  id,
  name: `p/${id}`,
  project: "p",
  priority: 0,
  preemptible: true,
  createdAt: "2025-01-01T00:00:00.000Z",
  pods: [{ cpuMillis: 1000, memoryBytes: GiB, gpu: 0, gpuMemoryBytes }],
});

describe("CycleState", () => {
  it("counts a memory-sized GPU request as a share of the largest device in this snapshot", () => {
    const w = job("a", 20 * GiB);
    const s = new CycleState({
      nodes: [node("n1", 40 * GiB), node("n2", 80 * GiB)],
      projects: [],
      running: [],
      pending: [w],
    });
    expect(s.requestOf(w)).toEqual({ gpu: 0.25, cpu: 1000, memory: GiB });
    expect(s.requestOf(w)).toBe(s.requestOf(w)); // computed once per cycle
  });

  it("opens a project it has no policy for with no deserved quota and weight 1", () => {
    const s = new CycleState({ nodes: [], projects: [], running: [], pending: [] });
    expect(s.project("q").policy).toEqual({ name: "q", deserved: {}, overQuotaWeight: 1 });
    expect(s.project("q")).toBe(s.project("q"));
  });
});

describe("schedule keeps nothing between calls", () => {
  it("answers for the same workload objects in a new cluster as it does for fresh ones", () => {
    const w = job("a", 30 * GiB);
    const small: Snapshot = { nodes: [node("n1", 40 * GiB)], projects: [], running: [], pending: [w] };
    expect(schedule(small).bind).toHaveLength(1);
    // The same object, a cluster whose device memory differs: the share is recomputed.
    const big: Snapshot = {
      nodes: [node("n1", 40 * GiB), node("n2", 120 * GiB)],
      projects: [],
      running: [],
      pending: [w],
    };
    const fresh: Snapshot = { ...big, pending: [job("a", 30 * GiB)] };
    expect(schedule(big)).toEqual(schedule(fresh));
  });

  it("does not mutate the snapshot", () => {
    const running: RunningWorkload = {
      ...job("r", 10 * GiB),
      placements: [{ pod: 0, node: "n1", gpus: [{ device: "n1-g0", share: 0.25 }] }],
    };
    const snap: Snapshot = {
      nodes: [node("n1", 40 * GiB)],
      projects: [],
      running: [running],
      pending: [job("a", 40 * GiB)],
    };
    const before = structuredClone(snap);
    schedule(snap);
    expect(snap).toEqual(before);
  });
});

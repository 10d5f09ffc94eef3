import { describe, expect, it } from "vitest";
import { coreScheduler, type NodeCapacity, type RunningWorkload } from "../../ports/scheduler.js";
import { heldByOthers } from "./others.js";
import { buildSnapshot, policyOf } from "./snapshot.js";

const GiB = 2 ** 30;
const node = (name: string, cluster: string, extra: Partial<NodeCapacity> = {}): NodeCapacity => ({
  name,
  cluster,
  cpuMillis: 32_000,
  memoryBytes: 256 * GiB,
  gpus: Array.from({ length: 8 }, (_, i) => `${name}/gpu-${i}`),
  ...extra,
});
const use = (gpu: number, pods = 1) => ({ cpuMillis: 1000, memoryBytes: GiB, gpu, pods });

const loomJob = (nodeName: string, devices: number[]): RunningWorkload => ({
  id: "u1",
  name: "p/j1",
  project: "p",
  priority: 0,
  preemptible: true,
  createdAt: "2026-01-01T00:00:00Z",
  pods: [{ cpuMillis: 0, memoryBytes: 0, gpu: devices.length }],
  placements: [
    { pod: 0, node: nodeName, gpus: devices.map((i) => ({ device: `${nodeName}/gpu-${i}`, share: 1 })) },
  ],
});

describe("what members' own work holds, as the scheduler counts it", () => {
  it("is one workload per node that never yields, on the member's pseudo-project, from the top of the devices", () => {
    const [held] = heldByOthers([node("a/n0", "a", { usedByOthers: use(3, 2) }), node("b/n0", "b")], []);
    expect(held).toMatchObject({
      id: "others:a/n0",
      name: "cluster a's own work on a/n0",
      project: "cluster a",
      preemptible: false,
    });
    expect(held!.placements[0]!.gpus.map((g) => g.device)).toEqual([
      "a/n0/gpu-7",
      "a/n0/gpu-6",
      "a/n0/gpu-5",
    ]);
    expect(held!.pods[0]).toEqual({ cpuMillis: 1000, memoryBytes: GiB, gpu: 3 });
  });

  it("takes devices Loom's placements leave free before sharing one with them", () => {
    // Loom holds the top three (a member's scheduler chose them): the member's own 4 go below.
    const [held] = heldByOthers([node("a/n0", "a", { usedByOthers: use(4) })], [loomJob("a/n0", [5, 6, 7])]);
    expect(held!.placements[0]!.gpus.map((g) => g.device)).toEqual([
      "a/n0/gpu-4",
      "a/n0/gpu-3",
      "a/n0/gpu-2",
      "a/n0/gpu-1",
    ]);
    // More than is left: never more devices than the node has.
    const [over] = heldByOthers([node("a/n0", "a", { usedByOthers: use(40) })], [loomJob("a/n0", [0])]);
    expect(over!.placements[0]!.gpus).toHaveLength(8);
  });

  it("counts pod slots only up to the node's limit, and none of a member's junk", () => {
    const [slots] = heldByOthers([node("a/n0", "a", { maxWorkers: 3, usedByOthers: use(0, 1e9) })], []);
    expect(slots!.pods).toHaveLength(3);
    const junk = { cpuMillis: Number.NaN, memoryBytes: -1, gpu: "4", pods: Number.POSITIVE_INFINITY };
    expect(heldByOthers([node("a/n0", "a", { usedByOthers: junk as never })], [])).toEqual([]);
  });

  it("makes the scheduler place a gang in the member whose GPUs are free, not the one its own users hold", () => {
    const job = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: {
        name: "g",
        project: "p",
        uid: "g1",
        generation: 1,
        creationTimestamp: "2026-01-01T00:00:00Z",
      },
      spec: { command: ["x"], workers: 2, resources: { gpu: 4 } },
      status: {},
    };
    const nodes = [node("a/n0", "a", { usedByOthers: use(8) }), node("b/n0", "b")];
    const s = buildSnapshot([job as never], nodes);
    const decisions = coreScheduler.schedule({
      ...s,
      projects: [policyOf({ metadata: { name: "p" }, spec: {} } as never)],
    });
    expect(decisions.bind[0]?.placements.map((p) => p.node)).toEqual(["b/n0", "b/n0"]);
    // Without the member's own work counted, a (first by name) would have taken it.
    const blind = buildSnapshot(
      [job as never],
      nodes.map(({ usedByOthers: _u, ...n }) => n),
    );
    const wrong = coreScheduler.schedule({
      ...blind,
      projects: [policyOf({ metadata: { name: "p" }, spec: {} } as never)],
    });
    expect(wrong.bind[0]?.placements.map((p) => p.node)).toEqual(["a/n0", "a/n0"]);
  });
});

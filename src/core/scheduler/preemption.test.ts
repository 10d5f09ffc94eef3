import { describe, expect, it } from "vitest";
import type { RunningWorkload, SchedNode, Workload } from "./model.js";
import { chooseVictims, findVictims, preemptionMessage } from "./preemption.js";
import { CycleState } from "./state.js";

const GiB = 2 ** 30;
const node: SchedNode = {
  name: "n",
  cpuMillis: 64_000,
  memoryBytes: 256 * GiB,
  gpus: Array.from({ length: 4 }, (_, i) => ({ id: `n-g${i}` })),
};
const pod = { cpuMillis: 1000, memoryBytes: GiB, gpu: 1 };
const job = (id: string, gpus: number, o: Partial<Workload> = {}): Workload => ({
  id,
  name: `p/${id}`,
  project: "p",
  priority: 0,
  preemptible: true,
  createdAt: "2025-01-01T00:00:00.000Z",
  pods: [{ ...pod, gpu: gpus }],
  ...o,
});
/** A running workload on devices from..from+gpus-1 of node n. */
const running = (id: string, from: number, gpus: number, o: Partial<Workload> = {}): RunningWorkload => ({
  ...job(id, gpus, o),
  placements: [
    {
      pod: 0,
      node: "n",
      gpus: Array.from({ length: gpus }, (_, i) => ({ device: `n-g${from + i}`, share: 1 })),
    },
  ],
});
function cycle(run: RunningWorkload[]): CycleState {
  const s = new CycleState({ nodes: [node], projects: [], running: run, pending: [] });
  for (const r of run) {
    s.cluster.hold(r, r.placements);
    const ps = s.project(r.project);
    ps.usage = { gpu: ps.usage.gpu + r.pods[0]!.gpu, cpu: 0, memory: 0 };
  }
  return s;
}

describe("chooseVictims", () => {
  it("takes the fewest that suffice: drops early picks the gang turns out not to need", () => {
    const small = running("small", 0, 1);
    const big = running("big", 1, 3);
    const s = cycle([small, big]);
    const victims = chooseVictims(s, job("w", 3), [small, big], ["gpu"], s.cluster.nodes);
    expect(victims?.map((v) => v.id)).toEqual(["big"]);
  });

  it("never takes a project below its floor", () => {
    const a = running("a", 0, 4, { project: "q" });
    const s = cycle([a]);
    const floor = () => ({ gpu: 4, cpu: 0, memory: 0 });
    expect(chooseVictims(s, job("w", 1), [a], ["gpu"], s.cluster.nodes, floor)).toBeUndefined();
    expect(chooseVictims(s, job("w", 1), [a], ["gpu"], s.cluster.nodes)?.map((v) => v.id)).toEqual(["a"]);
  });

  it("leaves the cluster as it found it", () => {
    const a = running("a", 0, 4);
    const s = cycle([a]);
    const before = structuredClone(s.cluster.nodes);
    chooseVictims(s, job("w", 2), [a], ["gpu"], s.cluster.nodes);
    expect(s.cluster.nodes).toEqual(before);
  });
});

describe("findVictims", () => {
  it("preempts lower priority of its own project, never equal priority", () => {
    const low = running("low", 0, 4, { priority: 1 });
    const s = cycle([low]);
    const req = { gpu: 2, cpu: 1000, memory: GiB };
    expect(findVictims(s, job("w", 2, { priority: 2 }), req, s.cluster.nodes, false)).toMatchObject({
      reason: "Priority",
      victims: [{ id: "low" }],
    });
    expect(findVictims(s, job("w", 2, { priority: 1 }), req, s.cluster.nodes, false)).toBeUndefined();
  });

  it("reclaims from another project over its deserved quota for work within its own", () => {
    const other = running("o", 0, 4, { project: "q" });
    const s = cycle([other]);
    const found = findVictims(s, job("w", 2), { gpu: 2, cpu: 1000, memory: GiB }, s.cluster.nodes, true);
    expect(found).toMatchObject({ reason: "Reclaim", victims: [{ id: "o" }] });
    expect(preemptionMessage("Reclaim", other, job("w", 2))).toBe(
      "preempted: project p reclaims its deserved quota for p/w; project q runs over its own",
    );
  });

  it("skips victims already chosen or stopping", () => {
    const low = running("low", 0, 4, { priority: 1 });
    const s = cycle([low]);
    s.victims.add("low");
    expect(
      findVictims(s, job("w", 2, { priority: 2 }), { gpu: 2, cpu: 0, memory: 0 }, s.cluster.nodes, false),
    ).toBeUndefined();
  });
});

import { describe, expect, it } from "vitest";
import type { Runtime } from "../ports/runtime.js";
import type { RunningWorkload, Scheduler, Snapshot } from "../ports/scheduler.js";
import type { ResourceStore } from "../ports/store.js";
import { SchedulingView } from "./scheduling.js";

const pod = { cpuMillis: 500, memoryBytes: 2 ** 30, gpu: 0.5 };
const running = (name: string, gpus: { device: string; share: number }[]): RunningWorkload => ({
  id: name,
  name: `p1/${name}`,
  project: "p1",
  priority: 0,
  preemptible: true,
  createdAt: "2026-01-01T00:00:00Z",
  pods: [pod],
  placements: [{ pod: 0, node: "n1", gpus }],
});

describe("SchedulingView.nodes", () => {
  it("says what holds each GPU device, two halves of one device included, and which devices are free", async () => {
    const snapshot: Snapshot = {
      nodes: [
        {
          name: "n1",
          cpuMillis: 8000,
          memoryBytes: 2 ** 34,
          gpus: [{ id: "g0" }, { id: "g1", memoryBytes: 2 ** 34 }],
        },
      ],
      projects: [],
      running: [running("a", [{ device: "g0", share: 0.5 }]), running("b", [{ device: "g0", share: 0.5 }])],
      pending: [],
    };
    const view = new SchedulingView({
      store: {} as ResourceStore,
      runtime: {} as Runtime,
      scheduler: {} as Scheduler,
      snapshot: async () => snapshot,
    });
    const [n1] = await view.nodes();
    expect(n1!.allocated.gpus).toBe(1);
    expect(n1!.devices).toEqual([
      {
        id: "g0",
        holders: [
          { workload: "p1/a", project: "p1", worker: 0, share: 0.5 },
          { workload: "p1/b", project: "p1", worker: 0, share: 0.5 },
        ],
      },
      { id: "g1", memoryBytes: 2 ** 34, holders: [] },
    ]);
  });
});

import { describe, expect, it } from "vitest";
import type { Project } from "../../api/project.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { PendingDecision } from "../../ports/scheduler.js";
import {
  capacityRequestOf,
  capacityStatus,
  describeCapacity,
  sameCapacity,
  usageByProject,
  wantsCapacity,
  withinLimit,
} from "./capacity.js";

const job = (spec: Record<string, unknown>) =>
  ({
    metadata: { name: "big", project: "p", uid: "u1" },
    spec: { workers: 2, resources: { cpu: "4", memory: "16Gi", gpu: 8 }, ...spec },
    status: {},
  }) as unknown as TrainingJob;
const pending = (reason: string): PendingDecision =>
  ({ id: "u1", reason, message: "why", queuePosition: 1, holders: [] }) as PendingDecision;
const project = (nodePools?: string[]) =>
  ({ metadata: { name: "p" }, spec: { nodePools } }) as unknown as Project;

describe("which waiting gangs ask a node autoscaler for nodes", () => {
  it("asks when room is short, or the pool it names has no node yet", () => {
    for (const r of ["InsufficientCapacity", "Fragmentation", "ExceedsNodeCapacity"])
      expect(wantsCapacity(job({}), pending(r), project())).toBe(true);
    expect(wantsCapacity(job({ nodePool: "gpu" }), pending("NodePoolNotAllowed"), project())).toBe(true);
    expect(wantsCapacity(job({ nodePool: "gpu" }), pending("NodePoolNotAllowed"), project(["gpu"]))).toBe(
      true,
    );
  });

  it("never buys nodes the project's own rules would not let it use", () => {
    // The attack: a project at its limit (or over its fair share, or naming a pool it may not
    // use) gets the cluster to grow for work that still could not run there.
    for (const r of ["OverLimit", "NonPreemptibleOverQuota", "OverFairShare", "WaitingForPreemption"])
      expect(wantsCapacity(job({}), pending(r), project())).toBe(false);
    expect(wantsCapacity(job({ nodePool: "gpu" }), pending("NodePoolNotAllowed"), project(["cpu"]))).toBe(
      false,
    );
  });

  it("asks for the whole gang at once (an elastic gang's minimum), shaped as its workers", () => {
    expect(
      capacityRequestOf(job({ nodePool: "gpu", gpuModel: "H100" }), pending("ExceedsNodeCapacity")),
    ).toEqual({
      workers: 2,
      cpuMillis: 4000,
      memoryBytes: 16 * 2 ** 30,
      gpu: 8,
      nodePool: "gpu",
      gpuModel: "H100",
      reason: "ExceedsNodeCapacity",
      message: "why",
    });
    expect(
      capacityRequestOf(job({ workers: { min: 3, max: 8 } }), pending("InsufficientCapacity")).workers,
    ).toBe(3);
    // A gang that tolerates a tainted pool: its stand-ins must too, or no node group can help.
    const tolerations = [
      { key: "nvidia.com/gpu", operator: "Exists" as const, effect: "NoSchedule" as const },
    ];
    expect(capacityRequestOf(job({ tolerations }), pending("InsufficientCapacity")).tolerations).toEqual(
      tolerations,
    );
  });
});

describe("withinLimit", () => {
  it("counts what the project already runs: no nodes for a gang its limit would refuse once they came", () => {
    // The attack: a project with 16 GPUs of limit, 8 in use, asks for a 16-GPU gang in an empty
    // pool; nodes would come, sit idle (OverLimit), go, and be asked for again, forever.
    const req = capacityRequestOf(job({}), pending("ExceedsNodeCapacity"));
    const limited = { metadata: { name: "p" }, spec: { limit: { gpu: 16 } } } as unknown as Project;
    const used = usageByProject([
      { project: "p", pods: [{ cpuMillis: 1000, memoryBytes: 0, gpu: 8 }] },
    ] as unknown as Parameters<typeof usageByProject>[0]);
    expect(withinLimit(req, limited, undefined)).toBe(true);
    expect(withinLimit(req, limited, used.get("p"))).toBe(false);
    expect(withinLimit(req, project(), used.get("p"))).toBe(true);
  });
});

describe("describeCapacity", () => {
  const now = new Date("2026-01-01T00:01:00Z");
  it("says how many nodes of which pool, and how long ago it asked", () => {
    const c = capacityStatus({ requestedAt: "2026-01-01T00:00:20Z", nodes: 2, pool: "gpu-8" });
    expect(describeCapacity(c, now)).toBe("waiting for 2 nodes of pool gpu-8 (requested 40 s ago)");
    expect(describeCapacity({ requestedAt: "2026-01-01T00:00:59Z" }, now)).toBe(
      "asked the node autoscaler for capacity (requested 1 s ago); no answer yet",
    );
    expect(
      describeCapacity({ requestedAt: "2026-01-01T00:00:00Z", refused: "no node group fits" }, now),
    ).toBe("the node autoscaler adds no node for it (requested 60 s ago): no node group fits");
  });

  it("compares answers by what they say", () => {
    const a = capacityStatus({ requestedAt: "t", nodes: undefined, pool: undefined });
    expect(sameCapacity(a, { requestedAt: "t" })).toBe(true);
    expect(sameCapacity(a, { requestedAt: "t", nodes: 2 })).toBe(false);
  });
});

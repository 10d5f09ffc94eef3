import { describe, expect, it } from "vitest";
import { autoscalerAnswer, DEMAND_LABEL, demandPodName } from "./demand.js";
import { classifyPod, isExternalPending } from "./external-index.js";
import type { Pod } from "./pods.js";

describe("the cluster-autoscaler's answer to a capacity request", () => {
  it("reads how many nodes of which node group the newest scale-up adds", () => {
    const events = [
      {
        reason: "NotTriggerScaleUp",
        message: "pod didn't trigger scale-up: 1 max node group size reached",
        lastTimestamp: "2026-01-01T00:00:01Z",
      },
      {
        reason: "TriggeredScaleUp",
        message: "pod triggered scale-up: [{gpu-8 0->2 (max: 4)}]",
        lastTimestamp: "2026-01-01T00:00:05Z",
      },
      { reason: "Scheduled", message: "unrelated", lastTimestamp: "2026-01-01T00:00:09Z" },
    ];
    expect(autoscalerAnswer(events)).toEqual({ nodes: 2, pool: "gpu-8" });
    expect(
      autoscalerAnswer([
        {
          reason: "TriggeredScaleUp",
          message: "pod triggered scale-up: [{a 1->2 (max: 4)} {b 0->3 (max: 3)}]",
        },
      ]),
    ).toEqual({ nodes: 4, pool: "a, b" });
  });

  it("says why when no node group would help", () => {
    const msg = "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector";
    expect(
      autoscalerAnswer([
        { reason: "NotTriggerScaleUp", message: msg, lastTimestamp: "2026-01-01T00:00:01Z" },
      ]),
    ).toEqual({
      refused: msg,
    });
    expect(autoscalerAnswer([])).toEqual({});
  });
});

describe("capacity request pods", () => {
  const pod: Pod = {
    metadata: { name: demandPodName("big", 0), namespace: "loom-p", labels: { [DEMAND_LABEL]: "u1" } },
    spec: { schedulerName: "loom", containers: [] },
    status: { phase: "Pending" },
  } as unknown as Pod;

  it("are never work for Loom's scheduler to place or count", () => {
    // The attack: the gang's stand-ins are taken for pods submitted to Loom, bound to the new
    // nodes, and the gang itself then finds no room (or is counted twice).
    expect(isExternalPending(pod)).toBe(false);
    expect(classifyPod("loom-p/big-capacity-0", pod, undefined)).toBeUndefined();
  });

  it("have names within the API's 63 characters", () => {
    expect(demandPodName("x".repeat(80), 12)).toHaveLength(63);
    expect(demandPodName("x".repeat(80), 12).endsWith("-capacity-12")).toBe(true);
  });
});

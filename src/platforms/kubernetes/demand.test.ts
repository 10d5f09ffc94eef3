import pino from "pino";
import { describe, expect, it } from "vitest";
import type { ClusterCache } from "./cache.js";
import type { KubeClient } from "./client.js";
import {
  autoscalerAnswer,
  CapacityRequests,
  DEMAND_LABEL,
  demandPodName,
  nominations,
  poolTolerations,
} from "./demand.js";
import { classifyPod, isExternalPending } from "./external-index.js";
import type { KubeNode } from "./nodes.js";
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

describe("Karpenter's answer to a capacity request", () => {
  const nominated = (pod: string, target: string, at: string) => ({
    reason: "Nominated",
    message: `Pod should schedule on: ${target}`,
    involvedObject: { name: pod },
    source: { component: "karpenter" },
    lastTimestamp: at,
  });

  it("counts the NodeClaims it nominated the gang's pods for, each once", () => {
    // Karpenter names one NodeClaim per pod: a 2 x 8-GPU gang on 8-GPU nodes is two NodeClaims.
    const first = [nominated("big-capacity-0", "nodeclaim/gpu-8-abcde", "2026-01-01T00:00:05Z")];
    expect(autoscalerAnswer(first)).toEqual({ nominated: true });
    const events = [
      ...first,
      nominated("big-capacity-1", "nodeclaim/gpu-8-fghij", "2026-01-01T00:00:05Z"),
      // An older nomination of the same pod, and another gang's pod: neither counts.
      nominated("big-capacity-1", "nodeclaim/gpu-8-zzzzz", "2026-01-01T00:00:01Z"),
      nominated("other-capacity-0", "nodeclaim/gpu-8-qqqqq", "2026-01-01T00:00:06Z"),
    ];
    const gang = new Set(["big-capacity-0", "big-capacity-1"]);
    expect([...nominations(events, gang)].sort()).toEqual(["nodeclaim/gpu-8-abcde", "nodeclaim/gpu-8-fghij"]);
    // Two small workers on one node: one NodeClaim.
    const packed = [
      nominated("big-capacity-0", "nodeclaim/gpu-8-abcde, node/kwok-x", "2026-01-01T00:00:05Z"),
      nominated("big-capacity-1", "nodeclaim/gpu-8-abcde", "2026-01-01T00:00:05Z"),
    ];
    expect(nominations(packed, gang)).toEqual(new Set(["nodeclaim/gpu-8-abcde"]));
  });

  it("says why when no NodePool fits, but not for kube-scheduler's FailedScheduling", () => {
    const msg =
      'Failed to schedule pod, incompatible with nodepool "gpu-8", no instance type satisfied resources {"nvidia.com/gpu":"9"}';
    expect(
      autoscalerAnswer([{ reason: "FailedScheduling", message: msg, source: { component: "karpenter" } }]),
    ).toEqual({ refused: msg });
    // The same reason from kube-scheduler is not the autoscaler's word.
    expect(
      autoscalerAnswer([
        {
          reason: "FailedScheduling",
          message: "0/3 nodes are available",
          source: { component: "default-scheduler" },
        },
      ]),
    ).toEqual({});
    // A later nomination supersedes an earlier refusal (the NodePool became ready).
    expect(
      autoscalerAnswer([
        {
          reason: "FailedScheduling",
          message: msg,
          source: { component: "karpenter" },
          lastTimestamp: "2026-01-01T00:00:01Z",
        },
        nominated("big-capacity-0", "nodeclaim/gpu-8-abcde", "2026-01-01T00:00:02Z"),
      ]),
    ).toEqual({ nominated: true });
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

describe("capacity request pods of a gang that tolerates taints", () => {
  const poolNode = (name: string, pool: string, taints: { key: string; value?: string; effect: string }[]) =>
    ({ metadata: { name, labels: { "loom.dev/node-pool": pool } }, spec: { taints } }) as KubeNode;

  it("carry the gang's tolerations, its pool's convention taint and the Loom taints of the pool's nodes, so the autoscaler may add tainted nodes", async () => {
    const created: { spec: Record<string, unknown> }[] = [];
    const client = {
      request: async (method: string, path: string, opts: { body?: unknown } = {}) => {
        if (method === "POST" && path.endsWith("/pods")) {
          created.push(opts.body as { spec: Record<string, unknown> });
          return opts.body;
        }
        return { items: [] };
      },
    } as unknown as KubeClient;
    const nodes = [
      poolNode("gpu-a", "gpu-8", [
        { key: "loom.dev/reserved", value: "ml", effect: "NoSchedule" },
        { key: "nvidia.com/gpu", value: "present", effect: "NoSchedule" },
      ]),
      poolNode("cpu-a", "cpu", [{ key: "loom.dev/other", value: "x", effect: "NoSchedule" }]),
    ];
    const cache = {
      pod: () => undefined,
      wrote: () => undefined,
      nodes: { list: () => nodes },
    } as unknown as ClusterCache;
    const requests = new CapacityRequests(client, cache, pino({ level: "silent" }));
    const gpuToleration = {
      key: "nvidia.com/gpu",
      operator: "Exists" as const,
      effect: "NoSchedule" as const,
    };
    await requests.request(
      { kind: "TrainingJob", project: "p", name: "big", uid: "u1" },
      {
        workers: 2,
        cpuMillis: 1000,
        memoryBytes: 2 ** 30,
        gpu: 8,
        nodePool: "gpu-8",
        tolerations: [gpuToleration],
        reason: "NodePoolNotAllowed",
        message: "no node of pool gpu-8",
      },
    );
    expect(created).toHaveLength(2);
    for (const pod of created) {
      expect(pod.spec.nodeSelector).toEqual({ "loom.dev/node-pool": "gpu-8" });
      expect(pod.spec.tolerations).toEqual([
        gpuToleration,
        { key: "loom.dev/node-pool", operator: "Equal", value: "gpu-8" },
        { key: "loom.dev/reserved", operator: "Equal", value: "ml", effect: "NoSchedule" },
      ]);
    }
  });

  it("tolerate the pool's convention taint before the pool has any node", () => {
    expect(poolTolerations("gpu-8", [])).toEqual([
      { key: "loom.dev/node-pool", operator: "Equal", value: "gpu-8" },
    ]);
  });
});

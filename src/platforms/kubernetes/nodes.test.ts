import { describe, expect, it } from "vitest";
import { type KubeNode, loomTaintTolerations, markedForRemoval, nodeCapacities } from "./nodes.js";
import { podTemplate } from "./pods.js";

function node(name: string, taints?: { key: string; value?: string; effect: string }[]): KubeNode {
  return {
    metadata: { name, labels: { "loom.dev/node-pool": "gpu" } },
    spec: taints ? { taints } : {},
    status: {
      allocatable: { cpu: "32", memory: "256Gi", "nvidia.com/gpu": "8", pods: "110" },
      conditions: [{ type: "Ready", status: "True" }],
    },
  };
}

describe("nodeCapacities and the cluster-autoscaler's marks", () => {
  it("never offers a node the autoscaler is deleting or may delete", () => {
    // The attack: the autoscaler drains node b while Loom, binding past kube-scheduler, puts a
    // gang there; the gang dies with the node. Both taints keep the node out of the snapshot.
    const nodes = [
      node("a"),
      node("b", [{ key: "ToBeDeletedByClusterAutoscaler", effect: "NoSchedule" }]),
      node("c", [{ key: "DeletionCandidateOfClusterAutoscaler", effect: "PreferNoSchedule" }]),
      node("d", [{ key: "nvidia.com/gpu", effect: "NoSchedule" }]),
    ];
    expect(nodeCapacities(nodes).map((n) => n.name)).toEqual(["a", "d"]);
    expect(nodes.map(markedForRemoval)).toEqual([false, true, true, false]);
  });

  it("offers the node again once the autoscaler takes its mark back", () => {
    const n = node("b", [{ key: "ToBeDeletedByClusterAutoscaler", effect: "NoSchedule" }]);
    expect(nodeCapacities([n])).toEqual([]);
    const unmarked = node("b", []);
    expect(nodeCapacities([unmarked]).map((c) => [c.name, c.pool, c.gpus.length])).toEqual([["b", "gpu", 8]]);
  });

  it("never offers a node Karpenter is disrupting or has not registered yet", () => {
    // The attack: Karpenter consolidates an idle node (karpenter.sh/disrupted:NoSchedule, then
    // drains and deletes it) while Loom binds a new gang there; or Loom binds to a kwok node that
    // turned Ready before Karpenter lifted karpenter.sh/unregistered:NoExecute, and the taint
    // manager evicts the gang. Neither node may be offered.
    const nodes = [
      node("a"),
      node("b", [{ key: "karpenter.sh/disrupted", effect: "NoSchedule" }]),
      node("c", [{ key: "karpenter.sh/unregistered", effect: "NoExecute" }]),
    ];
    expect(nodeCapacities(nodes).map((n) => n.name)).toEqual(["a"]);
    expect(nodes.map(markedForRemoval)).toEqual([false, true, true]);
    // Once Karpenter registers it, the node is offered.
    expect(nodeCapacities([node("c", [])]).map((n) => n.name)).toEqual(["c"]);
  });
});

describe("taints reach the scheduler, and Loom's pods tolerate their node's Loom taints", () => {
  it("gives the scheduler a node's NoSchedule and NoExecute taints, not PreferNoSchedule ones", () => {
    const n = node("real-0", [
      { key: "loom.dev/real-node", value: "true", effect: "NoSchedule" },
      { key: "dedicated", value: "infer", effect: "NoExecute" },
      { key: "soft", effect: "PreferNoSchedule" },
    ]);
    expect(nodeCapacities([n])[0]?.taints).toEqual([
      { key: "loom.dev/real-node", value: "true", effect: "NoSchedule" },
      { key: "dedicated", value: "infer", effect: "NoExecute" },
    ]);
    expect(nodeCapacities([node("a")])[0]?.taints).toBeUndefined();
  });

  it("a pod placed on a node with loom.dev/ taints carries tolerations for them (and for nothing else), beside the job's own", () => {
    const n = node("real-0", [
      { key: "loom.dev/real-node", value: "true", effect: "NoSchedule" },
      { key: "dedicated", value: "infer", effect: "NoExecute" },
    ]);
    const mine = loomTaintTolerations(n);
    expect(mine).toEqual([
      { key: "loom.dev/real-node", operator: "Equal", value: "true", effect: "NoSchedule" },
    ]);
    expect(loomTaintTolerations(undefined)).toEqual([]);
    const pod = podTemplate({
      worker: {
        command: ["true"],
        env: {},
        allocation: { node: "real-0", cpuMillis: 0, memoryBytes: 0, gpus: [] },
        tolerations: [{ key: "dedicated", operator: "Exists" }],
      },
      defaultImage: "img",
      containerName: "worker",
      labels: {},
      env: {},
      resources: {},
      tolerations: mine,
    });
    expect(pod.spec.tolerations).toEqual([{ key: "dedicated", operator: "Exists" }, ...mine]);
    const plain = podTemplate({
      worker: {
        command: ["true"],
        env: {},
        allocation: { node: "a", cpuMillis: 0, memoryBytes: 0, gpus: [] },
      },
      defaultImage: "img",
      containerName: "worker",
      labels: {},
      env: {},
      resources: {},
    });
    expect("tolerations" in plain.spec).toBe(false);
  });
});

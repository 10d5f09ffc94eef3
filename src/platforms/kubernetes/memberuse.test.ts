import { describe, expect, it } from "vitest";
import { FLEET_HOLDER_ANNOTATION, FLEET_UID_LABEL } from "../../api/cluster.js";
import { type CopyMeta, usedByOthers, withUse } from "./memberuse.js";
import type { Pod } from "./pods.js";

const GiB = 2 ** 30;
const pod = (
  name: string,
  node: string | undefined,
  requests: Record<string, unknown>,
  extra: Partial<Pod> = {},
): Pod =>
  ({
    metadata: { name, namespace: "ns", ...(extra.metadata ?? {}) },
    spec: {
      ...(node ? { nodeName: node } : {}),
      containers: [{ resources: { requests } }],
      ...(extra.spec ?? {}),
    },
    status: { phase: "Running", ...(extra.status ?? {}) },
  }) as Pod;
const copy = (uid: string, holder?: string): CopyMeta => ({
  metadata: {
    uid,
    labels: { [FLEET_UID_LABEL]: `cp-${uid}` },
    ...(holder ? { annotations: { [FLEET_HOLDER_ANNOTATION]: holder } } : {}),
  },
});
const worker = (name: string, uid: string, gpu: number) =>
  pod(
    name,
    "n0",
    { "nvidia.com/gpu": String(gpu) },
    { metadata: { name, namespace: "ns", labels: { "loom.dev/workload-uid": uid } } },
  );

describe("a Kubernetes member's own work on its nodes", () => {
  it("counts bound, unfinished pods by their requests, never the pods of this control plane's copies", () => {
    const use = usedByOthers(
      [
        pod("plain", "n0", { cpu: "500m", memory: "1Gi", "nvidia.com/gpu": "2" }),
        worker("theirs-0", "own-job", 4), // the member's own Loom job (submitted there directly)
        worker("copy-0", "c1", 2), // a copy this control plane made: counted by its admission
        worker("other-cp-0", "c2", 1), // a copy another control plane made: others' work here
        worker("legacy-0", "c3", 1), // a copy made before copies named their control plane
        pod("done", "n0", { "nvidia.com/gpu": "8" }, { status: { phase: "Succeeded" } }),
        pod("unbound", undefined, { "nvidia.com/gpu": "8" }),
        pod("n1", "n1", { cpu: "1" }),
      ],
      [copy("c1", "cp"), copy("c2", "elsewhere"), copy("c3")],
      "cp",
    );
    expect(use.get("n0")).toEqual({ cpuMillis: 500, memoryBytes: GiB, gpu: 7, pods: 3 });
    expect(use.get("n1")).toEqual({ cpuMillis: 1000, memoryBytes: 0, gpu: 0, pods: 1 });
    const nodes = withUse(
      [
        { name: "n0", cpuMillis: 1, memoryBytes: 1, gpus: [] },
        { name: "n2", cpuMillis: 1, memoryBytes: 1, gpus: [] },
      ],
      use,
    );
    expect(nodes[0]!.usedByOthers?.gpu).toBe(7);
    expect(nodes[1]!.usedByOthers).toBeUndefined();
  });

  it("the largest init container counts, as the kubelet reserves it", () => {
    const p = pod(
      "init",
      "n0",
      { cpu: "1" },
      {
        spec: {
          nodeName: "n0",
          containers: [{ resources: { requests: { cpu: "1" } } }],
          initContainers: [{ resources: { requests: { cpu: "3" } } }],
        },
      },
    );
    expect(usedByOthers([p], [], "cp").get("n0")?.cpuMillis).toBe(3000);
  });

  it("a pod whose requests cannot be read counts as nothing and breaks nothing", () => {
    const bad = [
      pod("words", "n0", { cpu: "lots", memory: "much", "nvidia.com/gpu": "many" }),
      pod("huge", "n0", { cpu: "1e999", "nvidia.com/gpu": "-3" }),
      pod("object", "n0", { cpu: { nested: true }, memory: [] }),
      { metadata: { name: "nospec", namespace: "ns" } } as Pod,
      { metadata: { name: "weirdnode", namespace: "ns" }, spec: { nodeName: 42 } } as unknown as Pod,
      null as unknown as Pod,
      pod("fine", "n0", { "nvidia.com/gpu": "1" }),
    ];
    const use = usedByOthers(bad, [{ metadata: {} }, null as unknown as CopyMeta], "cp");
    expect(use.get("n0")?.gpu).toBe(1);
    for (const v of Object.values(use.get("n0")!)) expect(Number.isFinite(v)).toBe(true);
  });
});

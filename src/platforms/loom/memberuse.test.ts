import { describe, expect, it } from "vitest";
import { FLEET_HOLDER_ANNOTATION, FLEET_UID_LABEL } from "../../api/cluster.js";
import { loomUsedByOthers, readLoomUse } from "./memberuse.js";

const GiB = 2 ** 30;
const copyMeta = (holder?: string) => ({
  labels: { [FLEET_UID_LABEL]: "cp-uid" },
  ...(holder ? { annotations: { [FLEET_HOLDER_ANNOTATION]: holder } } : {}),
});
const job = (holder: string | undefined, gpus: number, phase = "Running") => ({
  metadata: copyMeta(holder),
  status: {
    phase,
    admission: {
      node: "m0",
      cpuMillis: 1000,
      memoryBytes: GiB,
      gpus: [],
      placements: [
        { pod: 0, node: "m0", gpus: Array.from({ length: gpus }, (_, i) => ({ device: `${i}`, share: 1 })) },
      ],
    },
  },
});

describe("a Loom member's own work on its nodes", () => {
  it("is what its scheduler allocated there less what this control plane's copies hold", () => {
    const nodes = [
      { name: "m0", allocated: { cpuMillis: 5000, memoryBytes: 6 * GiB, gpus: 7.5, pods: 5 } },
      { name: "m1", allocated: { cpuMillis: 0, memoryBytes: 0, gpus: 0, pods: 0 } },
    ];
    const service = {
      metadata: copyMeta("cp"),
      spec: { resources: { cpu: "500m", memory: "1Gi" } },
      status: {
        revisions: [
          {
            name: "svc-1",
            replicas: [
              { id: "svc-1-r0", node: "m0", gpus: [{ device: "3", share: 0.5 }] },
              { id: "svc-1-r1", node: "x/n", cluster: "x" }, // in the member's own member: not here
            ],
          },
        ],
      },
    };
    const use = loomUsedByOthers(
      nodes,
      [job("cp", 2), job(undefined, 1), job("elsewhere", 4), job("cp", 8, "Succeeded")],
      [service],
      "cp",
    );
    // 7.5 GPUs allocated: 2 + 1 (legacy copy) + 0.5 (a replica) are this control plane's; the rest
    // (another control plane's copy, the member's own jobs) are others'.
    expect(use.get("m0")).toEqual({
      cpuMillis: 5000 - 1000 - 1000 - 500,
      memoryBytes: 6 * GiB - 2 * GiB - GiB,
      gpu: 4,
      pods: 2,
    });
    expect(use.has("m1")).toBe(false);
  });

  it("whatever the member sends, figures stay counts: never NaN, never below zero", () => {
    const use = loomUsedByOthers(
      [
        { name: "m0", allocated: { cpuMillis: "x", memoryBytes: Number.NaN, gpus: -4, pods: null } },
        { name: "m1", allocated: { gpus: 2 } },
        { name: 7 } as never,
        null as never,
      ],
      [
        job("cp", 8),
        { metadata: copyMeta("cp"), status: { admission: { placements: "junk" } } },
        null as never,
      ],
      [
        {
          metadata: copyMeta("cp"),
          status: { revisions: [null, { replicas: [null, { node: "m1", gpus: "x" }] }] },
        },
      ],
      "cp",
    );
    expect(use.has("m0")).toBe(false);
    expect(use.get("m1")).toEqual({ cpuMillis: 0, memoryBytes: 0, gpu: 2, pods: 0 });
  });

  it("when the copies cannot be read, counts nothing and says why", async () => {
    const r = await readLoomUse(
      async () => {
        throw new Error("member http://m:7470: forbidden");
      },
      "/apis/loom.dev/v1alpha1",
      [{ name: "m0", allocated: { gpus: 8 } }],
      "cp",
    );
    expect(r.use.size).toBe(0);
    expect(r.error).toMatch(/forbidden/);
    const asked: string[] = [];
    const ok = await readLoomUse(
      async (path) => {
        asked.push(path);
        return { items: "not a list" };
      },
      "/apis/loom.dev/v1alpha1",
      [{ name: "m0", allocated: { gpus: 8, pods: 1 } }],
      "cp",
    );
    expect(ok.use.get("m0")?.gpu).toBe(8);
    expect(asked).toEqual([
      "/apis/loom.dev/v1alpha1/trainingjobs?labelSelector=loom.dev%2Ffleet-uid",
      "/apis/loom.dev/v1alpha1/inferenceservices?labelSelector=loom.dev%2Ffleet-uid",
    ]);
  });
});

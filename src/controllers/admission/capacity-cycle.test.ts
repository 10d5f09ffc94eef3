import pino from "pino";
import { describe, expect, it } from "vitest";
import type { Project } from "../../api/project.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { CapacityAnswer, CapacityRequest, Runtime, WorkloadRef } from "../../ports/runtime.js";
import { coreScheduler, type NodeCapacity } from "../../ports/scheduler.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import { AdmissionReconciler } from "./reconciler.js";

/** One admission loop over a fake runtime with a node autoscaler: what it asks for, and when. */
function harness(opts: {
  autoscaler: boolean;
  nodes: NodeCapacity[];
  projectSpec?: Record<string, unknown>;
  /** Admissions handed to the TrainingJob loop (as the manager does), not written here. */
  offers?: string[];
}) {
  const jobs = new Map<string, TrainingJob>();
  let rv = 1;
  const calls: { name: string; request: CapacityRequest | undefined }[] = [];
  const events: string[] = [];
  const store = {
    updateStatus: async (obj: TrainingJob) => {
      const next = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++rv) } };
      jobs.set(obj.metadata.name, next);
      return next;
    },
  } as unknown as ResourceStore;
  const runtime = {
    nodes: async () => opts.nodes,
    ...(opts.autoscaler
      ? {
          requestCapacity: async (ref: WorkloadRef, request: CapacityRequest | undefined) => {
            calls.push({ name: ref.name, request });
            return request
              ? ({ requestedAt: "2026-01-01T00:00:00Z", nodes: 2, pool: "gpu-8" } satisfies CapacityAnswer)
              : undefined;
          },
        }
      : {}),
  } as unknown as Runtime;
  const reconciler = new AdmissionReconciler({
    store,
    listJobs: () => [...jobs.values()],
    listProjects: () => [{ metadata: { name: "p" }, spec: opts.projectSpec ?? {} } as unknown as Project],
    runtime,
    scheduler: coreScheduler,
    events: {
      record: async (_r: unknown, _t: string, reason: string) => void events.push(reason),
    } as unknown as EventRecorder,
    log: pino({ level: "silent" }),
    now: () => new Date("2026-01-01T00:00:40Z"),
    ...(opts.offers ? { offer: (job: TrainingJob) => void opts.offers!.push(job.metadata.name) } : {}),
  });
  const add = (name: string, gpu: number, workers: number, extra: Record<string, unknown> = {}) =>
    jobs.set(name, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: {
        name,
        project: "p",
        uid: `uid-${name}`,
        resourceVersion: "1",
        creationTimestamp: "2026-01-01T00:00:00Z",
        generation: 1,
      },
      spec: { command: ["true"], workers, resources: { cpu: "1", gpu }, nodePool: "gpu-8", ...extra },
      status: {},
    } as unknown as TrainingJob);
  return { reconciler, jobs, calls, events, add };
}

const gpuNode = (name: string): NodeCapacity => ({
  name,
  cpuMillis: 32_000,
  memoryBytes: 256 * 2 ** 30,
  gpus: Array.from({ length: 8 }, (_, i) => `${name}/gpu-${i}`),
  pool: "gpu-8",
});

describe("admission and a node autoscaler", () => {
  it("asks for the whole gang when its pool is empty, and keeps looking for the answer", async () => {
    const h = harness({ autoscaler: true, nodes: [] });
    h.add("big", 8, 2);
    const result = await h.reconciler.reconcile("cycle");
    expect(h.calls).toEqual([
      { name: "big", request: expect.objectContaining({ workers: 2, gpu: 8, nodePool: "gpu-8" }) },
    ]);
    expect(h.jobs.get("big")!.status?.capacityRequest).toEqual({
      requestedAt: "2026-01-01T00:00:00Z",
      nodes: 2,
      pool: "gpu-8",
    });
    expect(result.requeueAfterMs).toBeGreaterThan(0);
  });

  it("withdraws the request when the nodes come and the gang is admitted", async () => {
    const nodes: NodeCapacity[] = [];
    const h = harness({ autoscaler: true, nodes });
    h.add("big", 8, 2);
    await h.reconciler.reconcile("cycle");
    nodes.push(gpuNode("n1"), gpuNode("n2"));
    h.calls.length = 0;
    await h.reconciler.reconcile("cycle");
    const job = h.jobs.get("big")!;
    expect(h.calls).toEqual([{ name: "big", request: undefined }]);
    expect(job.status?.admission?.workers).toBe(2);
    expect(job.status?.capacityRequest).toBeUndefined();
  });

  it("writes nothing while the nodes it asked for join one by one, and admits the gang on the last", async () => {
    const nodes: NodeCapacity[] = [];
    const h = harness({ autoscaler: true, nodes });
    h.add("big", 8, 2);
    await h.reconciler.reconcile("cycle");
    const asked = h.jobs.get("big")!;
    expect(asked.status?.capacityRequest?.nodes).toBe(2);
    h.events.length = 0;
    // One of its two nodes: the reason the core gives changes (the pool is no longer empty), but
    // the job still waits for the nodes it asked for, which its status already says.
    nodes.push(gpuNode("n1"));
    await h.reconciler.reconcile("cycle");
    expect(h.jobs.get("big")).toBe(asked);
    expect(h.events).toEqual([]);
    nodes.push(gpuNode("n2"));
    await h.reconciler.reconcile("cycle");
    expect(h.jobs.get("big")!.status?.admission?.workers).toBe(2);
  });

  it("hands an admitted gang to its start without waiting for the withdrawal: the runtime's start withdraws it", async () => {
    const nodes: NodeCapacity[] = [];
    const offers: string[] = [];
    const h = harness({ autoscaler: true, nodes, offers });
    h.add("big", 8, 2);
    await h.reconciler.reconcile("cycle");
    nodes.push(gpuNode("n1"), gpuNode("n2"));
    h.calls.length = 0;
    await h.reconciler.reconcile("cycle");
    expect(offers).toEqual(["big"]);
    expect(h.calls).toEqual([]);
  });

  it("asks nothing for a job its project's limit holds back: new nodes would not let it run", async () => {
    const h = harness({ autoscaler: true, nodes: [], projectSpec: { limit: { gpu: 8 } } });
    h.add("limited", 8, 2);
    const result = await h.reconciler.reconcile("cycle");
    // The scheduler names the empty pool first; the limit still rules the request out.
    expect(h.jobs.get("limited")!.status?.conditions?.[0]?.reason).toBe("NodePoolNotAllowed");
    expect(h.calls).toEqual([]);
    expect(result.requeueAfterMs).toBeUndefined();
  });

  it("changes nothing where no autoscaler runs", async () => {
    const plain = harness({ autoscaler: false, nodes: [] });
    plain.add("big", 8, 2);
    const result = await plain.reconciler.reconcile("cycle");
    expect(plain.jobs.get("big")!.status?.capacityRequest).toBeUndefined();
    expect(result.requeueAfterMs).toBeUndefined();
  });
});

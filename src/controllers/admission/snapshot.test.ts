import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { Workload } from "../../core/scheduler/model.js";
import { SnapshotBuilder } from "./snapshot.js";

/** A job in any state admission tells apart: waiting, deleting, admitted (elastic or not, with fewer workers), stopping, finished. */
const jobArb = (i: number): fc.Arbitrary<TrainingJob> =>
  fc
    .record({
      workers: fc.oneof(
        fc.constant(1),
        fc.constant(2),
        fc.record({ min: fc.constant(1), max: fc.constantFrom(2, 3) }),
      ),
      admitted: fc.constantFrom(undefined, 1, 2, 3),
      deleting: fc.boolean(),
      phase: fc.constantFrom(undefined, "Pending", "Running", "Succeeded", "Failed"),
      stopping: fc.constantFrom(undefined, "preemption", "resize"),
    })
    .map(
      (r) =>
        ({
          apiVersion: "loom.dev/v1alpha1",
          kind: "TrainingJob",
          metadata: {
            name: `j${i}`,
            project: "p",
            uid: `u${i}`,
            generation: 1,
            resourceVersion: "1",
            creationTimestamp: "2026-01-01T00:00:00Z",
            ...(r.deleting ? { deletionTimestamp: "2026-01-01T00:00:01Z" } : {}),
          },
          spec: { command: ["true"], workers: r.workers, resources: { cpu: "1" } },
          status: {
            ...(r.phase ? { phase: r.phase } : {}),
            ...(r.admitted
              ? {
                  admission: {
                    node: "n",
                    cpuMillis: 1000,
                    memoryBytes: 0,
                    gpus: [],
                    workers: r.admitted,
                    placements: Array.from({ length: r.admitted }, (_, pod) => ({
                      pod,
                      node: "n",
                      gpus: [],
                    })),
                    admittedAt: "2026-01-01T00:00:00Z",
                  },
                }
              : {}),
            ...(r.stopping === "preemption"
              ? { preemption: { requestedAt: "t", for: "x", forUid: "x", reason: "r", message: "m" } }
              : {}),
            ...(r.stopping === "resize" ? { resize: { workers: 3, reason: "r", requestedAt: "t" } } : {}),
          },
        }) as unknown as TrainingJob,
    );

const external = (pending: number): Workload[] =>
  Array.from({ length: pending }, (_, i) => ({
    id: `pod:ns/x${i}`,
    name: `ns/x${i}`,
    project: "namespace ns",
    priority: 0,
    preemptible: true,
    createdAt: "",
    pods: [{ cpuMillis: 1, memoryBytes: 0, gpu: 0 }],
    placement: "binpack",
  }));

describe("SnapshotBuilder.idle", () => {
  it("says a cycle has nothing to decide exactly when the built snapshot has nothing waiting and no elastic job that could grow", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.nat(), { maxLength: 8 }).chain((ids) => fc.tuple(...ids.map((_, i) => jobArb(i)))),
        fc.constantFrom(0, 1),
        async (jobs, pendingExternal) => {
          const builder = new SnapshotBuilder({
            jobs: () => jobs,
            projects: () => [],
            runtime: {
              nodes: async () => [],
              external: () => ({ pending: external(pendingExternal), running: [] }),
            },
          });
          const { pending, running } = await builder.build();
          const mayGrow = running.some((r) => r.elastic && !r.stopping && r.pods.length < r.elastic.max);
          expect(await builder.idle()).toBe(pending.length === 0 && !mayGrow);
        },
      ),
      { numRuns: 300 },
    );
  });
});

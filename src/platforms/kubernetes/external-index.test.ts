import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ExternalIndex, GANG_LABEL, GANG_SIZE_ANNOTATION, isExternalPending } from "./external-index.js";
import { LABELS as L } from "./naming.js";
import { isTerminal, type Pod, SCHEDULER_NAME } from "./pods.js";

const KEYS = ["ns-a/p0", "ns-a/p1", "ns-a/p2", "ns-b/p3", "ns-b/p4", "ns-b/p5"];

/** A pod of any shape that matters: Loom's worker or model pod, others', bound or not, in a gang or not, live or finished. */
const podArb = (key: string): fc.Arbitrary<Pod> =>
  fc
    .record({
      owner: fc.constantFrom("none", "worker", "model"),
      scheduler: fc.constantFrom(SCHEDULER_NAME, "default-scheduler"),
      node: fc.constantFrom(undefined, "n1", "n2"),
      phase: fc.constantFrom("Pending", "Running", "Succeeded", "Failed"),
      deleting: fc.boolean(),
      gang: fc.constantFrom(undefined, "g1", "g2"),
      size: fc.constantFrom(undefined, "1", "2", "3", "x"),
      cpu: fc.constantFrom("100m", "1"),
    })
    .map((r) => {
      const [namespace, name] = key.split("/") as [string, string];
      const labels: Record<string, string> = {};
      if (r.owner !== "none") {
        labels[L.uid] = "u-1";
        labels[L.component] = r.owner;
      }
      if (r.gang) labels[GANG_LABEL] = r.gang;
      return {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name,
          namespace,
          labels,
          ...(r.size ? { annotations: { [GANG_SIZE_ANNOTATION]: r.size } } : {}),
          ...(r.deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}),
          creationTimestamp: "2026-01-01T00:00:00Z",
        },
        spec: {
          schedulerName: r.scheduler,
          ...(r.node ? { nodeName: r.node } : {}),
          containers: [{ name: "c", image: "i", resources: { requests: { cpu: r.cpu } } }],
        },
        status: { phase: r.phase },
      } as unknown as Pod;
    });

/** One informer event: a pod added or changed (maybe bound by Loom meanwhile), or gone. */
const eventArb = fc
  .constantFrom(...KEYS)
  .chain((key) =>
    fc.oneof(
      fc.record({ key: fc.constant(key), pod: podArb(key), bound: fc.constantFrom(undefined, "n1", "n3") }),
      fc.record({ key: fc.constant(key), pod: fc.constant(undefined), bound: fc.constant(undefined) }),
    ),
  );

/** What the index says. */
function view(index: ExternalIndex) {
  return {
    held: [...index.heldPods()].map((h) => `${h.node} ${h.key} ${h.pod.status?.phase}`),
    pending: [...index.completeGangs()].map(
      (g) =>
        `${g.id}: ${g.pods
          .map((p) => p.metadata.name)
          .sort()
          .join(",")}`,
    ),
  };
}

/**
 * The walk over every pod that every admission cycle made before the index existed, as it was
 * (external.ts's work()): the reference the index must agree with.
 */
function fullScan(pods: Map<string, { pod: Pod; bound: string | undefined }>) {
  const held: string[] = [];
  const pending = new Map<string, { pods: Pod[]; size: number }>();
  for (const [key, { pod, bound }] of pods) {
    const loomWorker = pod.metadata.labels?.[L.uid] && pod.metadata.labels?.[L.component] !== "model";
    if (loomWorker || isTerminal(pod)) continue;
    const node = pod.spec?.nodeName ?? bound;
    if (node) {
      held.push(`${node} ${key} ${pod.status?.phase}`);
      continue;
    }
    if (!isExternalPending(pod)) continue;
    const gang = pod.metadata.labels?.[GANG_LABEL];
    const id = gang ? `gang:${pod.metadata.namespace}/${gang}` : `pod:${key}`;
    const entry = pending.get(id) ?? { pods: [], size: 1 };
    entry.pods.push(pod);
    entry.size = Math.max(entry.size, Number(pod.metadata.annotations?.[GANG_SIZE_ANNOTATION] ?? 1) || 1);
    pending.set(id, entry);
  }
  return {
    held,
    pending: [...pending]
      .filter(([, e]) => e.pods.length >= e.size)
      .map(
        ([id, e]) =>
          `${id}: ${e.pods
            .map((p) => p.metadata.name)
            .sort()
            .join(",")}`,
      ),
  };
}

describe("ExternalIndex", () => {
  it("after any sequence of add, update and delete events, equals a full rebuild and the old walk over every pod", () => {
    fc.assert(
      fc.property(fc.array(eventArb, { maxLength: 60 }), (events) => {
        const incremental = new ExternalIndex();
        // As the informer's cache: a changed pod keeps its place, a new one goes last.
        const live = new Map<string, { pod: Pod; bound: string | undefined }>();
        for (const e of events) {
          incremental.update(e.key, e.pod, e.bound);
          if (e.pod) live.set(e.key, { pod: e.pod, bound: e.bound });
          else live.delete(e.key);
        }
        const rebuilt = new ExternalIndex();
        for (const [key, { pod, bound }] of live) rebuilt.update(key, pod, bound);
        const got = view(incremental);
        expect(got).toEqual(view(rebuilt));
        // In the same order too: GPU device ids of held pods are counted in it.
        expect(got).toEqual(fullScan(live));
      }),
      { numRuns: 500 },
    );
  });

  it("a gang waits until all of its pods exist, and a bound pod counts as held at once", () => {
    const index = new ExternalIndex();
    const pod = (name: string, extra: Partial<Pod["spec"]> = {}) =>
      ({
        metadata: {
          name,
          namespace: "ns",
          labels: { [GANG_LABEL]: "g" },
          annotations: { [GANG_SIZE_ANNOTATION]: "2" },
        },
        spec: { schedulerName: SCHEDULER_NAME, containers: [], ...extra },
        status: { phase: "Pending" },
      }) as unknown as Pod;
    index.update("ns/a", pod("a"));
    expect([...index.completeGangs()]).toEqual([]);
    index.update("ns/b", pod("b"));
    expect([...index.completeGangs()].map((g) => g.id)).toEqual(["gang:ns/g"]);
    index.update("ns/a", pod("a"), "n1");
    expect([...index.completeGangs()]).toEqual([]);
    expect([...index.heldPods()].map((h) => h.key)).toEqual(["ns/a"]);
    index.update("ns/a", undefined);
    expect([...index.heldPods()]).toEqual([]);
  });
});

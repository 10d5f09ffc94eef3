import { describe, expect, it } from "vitest";
import type { Resource } from "../../api/meta.js";
import { keptAnnotations, updateVerdict } from "./apply.js";

const tj = (spec: object, labels?: Record<string, string>, status?: object): Resource =>
  ({
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: {
      name: "a",
      project: "p",
      uid: "u",
      resourceVersion: "7",
      generation: 1,
      ...(labels ? { labels } : {}),
    },
    spec,
    ...(status ? { status } : {}),
  }) as unknown as Resource;

/** The one reading of an update's answer, for apply's stored answer and a dry run's alike. */
describe("updateVerdict", () => {
  const spec = { command: ["sleep", "1"] };
  const changed = { command: ["sleep", "2"] };
  const cases: [string, Resource, Resource, string][] = [
    ["the same object, status aside", tj(spec, undefined, { phase: "Succeeded" }), tj(spec), "unchanged"],
    ["keys in another order", tj({ a: 1, b: 2 }), tj({ b: 2, a: 1 }), "unchanged"],
    ["no labels and empty labels", tj(spec), tj(spec, {}), "unchanged"],
    [
      "a label",
      tj(spec, undefined, { phase: "Running", attempts: 1 }),
      tj(spec, { team: "a" }),
      "configured (labels/annotations only: the job is not restarted)",
    ],
    [
      "a spec change of a running job",
      tj(spec, undefined, { phase: "Running", attempts: 1, admission: { node: "vm" } }),
      tj(changed),
      "configured (spec changed: the running attempt is not restarted; the new spec applies from its next attempt)",
    ],
    [
      "a spec change of a finished job",
      tj(spec, undefined, { phase: "Failed", attempts: 2 }),
      tj(changed),
      "configured (spec changed: the job has finished (Failed) and does not run again)",
    ],
    [
      "a spec change of an admitted job not yet started",
      tj(spec, undefined, { phase: "Pending", admission: { node: "vm" } }),
      tj(changed),
      "configured (spec changed: the job has not started yet and starts with it)",
    ],
    [
      "a spec change of a waiting job",
      tj(spec, undefined, { phase: "Pending" }),
      tj(changed),
      "configured (spec changed: the job waits for admission with it)",
    ],
  ];
  it.each(cases)("%s", (_what, current, updated, verb) => {
    expect(updateVerdict("TrainingJob", current, updated).verb).toBe(verb);
  });

  it("passes on a waiting job's admission preview; other kinds are plainly configured", () => {
    const answer = {
      ...tj(changed),
      status: { admissionPreview: { message: "would start now on vm" } },
    } as unknown as Resource;
    expect(updateVerdict("TrainingJob", tj(spec), answer)).toEqual({
      verb: "configured (spec changed: the job waits for admission with it)",
      preview: "would start now on vm",
    });
    expect(updateVerdict("Sweep", tj(spec), tj(changed))).toEqual({ verb: "configured" });
  });
});

/** An idle-culled workspace re-applied unchanged stays culled: the controller's mark is kept. */
describe("keptAnnotations", () => {
  const current = {
    metadata: { name: "w", annotations: { "loom.dev/idle-stopped": "2026-12-06T00:00:00Z", note: "old" } },
  } as unknown as Resource;
  it("keeps the controller's mark and the manifest's own annotations, drops the rest", () => {
    expect(
      keptAnnotations(current, { name: "w", annotations: { team: "a" } } as unknown as Resource["metadata"]),
    ).toEqual({
      annotations: { team: "a", "loom.dev/idle-stopped": "2026-12-06T00:00:00Z" },
    });
    expect(keptAnnotations(current, { name: "w" } as unknown as Resource["metadata"])).toEqual({
      annotations: { "loom.dev/idle-stopped": "2026-12-06T00:00:00Z" },
    });
  });
  it("lets a manifest that names the annotation decide", () => {
    const m = { name: "w", annotations: { "loom.dev/idle-stopped": "x" } } as unknown as Resource["metadata"];
    expect(keptAnnotations(current, m)).toEqual({});
  });
});

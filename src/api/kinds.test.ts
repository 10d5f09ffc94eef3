import { describe, expect, it } from "vitest";
import { ValidationError } from "./errors.js";
import { findKind, specJsonSchema, validateManifest } from "./kinds.js";

const API = "loom.dev/v1alpha1";

function job(spec: Record<string, unknown>, metadata: Record<string, unknown> = { name: "train" }) {
  return { apiVersion: API, kind: "TrainingJob", metadata, spec };
}

/** Runs validateManifest on input that must be rejected and returns the ValidationError. */
function invalid(input: unknown): ValidationError {
  try {
    validateManifest(input);
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return err as ValidationError;
  }
  throw new Error("validateManifest accepted an invalid manifest");
}

function paths(err: ValidationError): string[] {
  return err.issues.map((i) => i.path);
}

describe("validateManifest", () => {
  it("applies the TrainingJob defaults", () => {
    const { def, object } = validateManifest(job({ command: ["python", "train.py"] }));
    expect(def.kind).toBe("TrainingJob");
    expect(object.spec).toEqual({
      command: ["python", "train.py"],
      workers: 1,
      procsPerWorker: 1,
      framework: "none",
      env: {},
      resources: {},
      failurePolicy: { maxRestarts: 0, rules: [] },
      terminationGracePeriodSeconds: 30,
      priority: 0,
      preemptible: true,
      placement: "binpack",
    });
  });

  it("takes fractional GPUs below 1 and memory-sized shares, and refuses 1.5 GPUs or both at once", () => {
    expect(validateManifest(job({ command: ["x"], resources: { gpu: 0.5 } })).object.spec).toMatchObject({
      resources: { gpu: 0.5 },
    });
    expect(
      validateManifest(job({ command: ["x"], resources: { gpuMemory: "20Gi" } })).object.spec,
    ).toMatchObject({ resources: { gpuMemory: "20Gi" } });
    expect(invalid(job({ command: ["x"], resources: { gpu: 1.5 } })).issues[0]).toMatchObject({
      path: "spec.resources.gpu",
      message: expect.stringContaining("fraction of one GPU below 1"),
    });
    expect(
      invalid(job({ command: ["x"], resources: { gpu: 1, gpuMemory: "20Gi" } })).issues[0],
    ).toMatchObject({
      path: "spec.resources.gpuMemory",
    });
  });

  it("keeps what the user set instead of the defaults", () => {
    const { object } = validateManifest(
      job({
        command: ["x"],
        env: { A: "1" },
        failurePolicy: { maxRestarts: 3 },
        terminationGracePeriodSeconds: 5,
      }),
    );
    expect(object.spec).toMatchObject({
      env: { A: "1" },
      failurePolicy: { maxRestarts: 3 },
      terminationGracePeriodSeconds: 5,
    });
  });

  it("drops server-owned metadata and keeps project, labels and annotations", () => {
    const { object } = validateManifest(
      job(
        { command: ["x"] },
        {
          name: "train",
          project: "team-a",
          labels: { app: "llm" },
          annotations: { note: "hi" },
          uid: "u-1",
          resourceVersion: "42",
          generation: 7,
          creationTimestamp: "2020-01-01T00:00:00Z",
          finalizers: ["x"],
        },
      ),
    );
    expect(object.metadata).toEqual({
      name: "train",
      project: "team-a",
      labels: { app: "llm" },
      annotations: { note: "hi" },
    });
  });

  it("names spec.command when it is missing", () => {
    const err = invalid(job({}));
    expect(err.issues).toEqual([{ path: "spec.command", message: "required field is missing" }]);
    expect(err.message).toContain("spec.command");
    expect(err.httpStatus).toBe(422);
    expect(err.details).toEqual({ causes: err.issues });
  });

  it("rejects an empty command", () => {
    expect(paths(invalid(job({ command: [] })))).toEqual(["spec.command"]);
  });

  it("rejects workers: 0", () => {
    const err = invalid(job({ command: ["x"], workers: 0 }));
    expect(err.issues).toEqual([{ path: "spec.workers", message: "must be at least 1" }]);
  });

  it("takes a gang size or an elastic range, and says what it wants otherwise", () => {
    expect(validateManifest(job({ command: ["x"], workers: 4 })).object.spec).toMatchObject({ workers: 4 });
    expect(validateManifest(job({ command: ["x"], workers: { min: 2, max: 4 } })).object.spec).toMatchObject({
      workers: { min: 2, max: 4 },
    });
    expect(invalid(job({ command: ["x"], workers: { min: 3, max: 2 } })).issues).toEqual([
      { path: "spec.workers.min", message: "min must not exceed max" },
    ]);
    expect(invalid(job({ command: ["x"], workers: "2" })).issues[0]!.message).toMatch(/\{min, max\}/);
  });

  it("rejects framework settings that cannot work together", () => {
    expect(invalid(job({ command: ["x"], launcher: "torchrun" })).issues).toEqual([
      { path: "spec.launcher", message: "launcher torchrun needs framework: pytorch" },
    ]);
    expect(paths(invalid(job({ command: ["x"], procsPerWorker: 2 })))).toEqual(["spec.procsPerWorker"]);
    expect(paths(invalid(job({ command: ["x"], framework: "mpi", workers: { min: 1, max: 2 } })))).toEqual([
      "spec.workers",
    ]);
    expect(paths(invalid(job({ command: ["x"], failurePolicy: { rules: [{ action: "Fail" }] } })))).toEqual([
      "spec.failurePolicy.rules.0",
    ]);
    expect(paths(invalid(job({ command: ["x"], progressTimeout: "5x" })))).toEqual(["spec.progressTimeout"]);
    expect(
      invalid(job({ command: ["x"], python: { venv: "/v", requirements: ["a"] } })).issues[0]!.message,
    ).toMatch(/not both/);
  });

  it("takes an InferenceService's tolerations in Kubernetes' shape, as a TrainingJob's, and refuses a keyless Equal", () => {
    const isvc = (tolerations: unknown) => ({
      apiVersion: API,
      kind: "InferenceService",
      metadata: { name: "chat" },
      spec: { model: "models:/m/1", tolerations },
    });
    expect(
      validateManifest(isvc([{ key: "dedicated", value: "serving", effect: "NoSchedule" }])).object.spec,
    ).toMatchObject({
      tolerations: [{ key: "dedicated", operator: "Equal", value: "serving", effect: "NoSchedule" }],
    });
    expect(validateManifest(isvc([{ operator: "Exists" }])).object.spec).toMatchObject({
      tolerations: [{ operator: "Exists" }],
    });
    expect(invalid(isvc([{ value: "x" }])).issues).toEqual([
      { path: "spec.tolerations.0", message: expect.stringContaining("operator Equal needs a key") },
    ]);
    expect(paths(invalid(isvc([{ key: "k", effect: "Sometimes" }])))).toEqual(["spec.tolerations.0.effect"]);
  });

  it("reports an unknown field such as a misspelt command", () => {
    const err = invalid(job({ comand: ["x"] }));
    expect(err.issues).toContainEqual({ path: "spec", message: "unknown field(s): comand" });
    expect(err.issues).toContainEqual({ path: "spec.command", message: "required field is missing" });
  });

  it("rejects a malformed cpu quantity", () => {
    const err = invalid(job({ command: ["x"], resources: { cpu: "lots" } }));
    expect(paths(err)).toEqual(["spec.resources.cpu"]);
    expect(err.issues[0]!.message).toMatch(/CPU quantity/);
  });

  it("rejects a bad label key, naming it", () => {
    const err = invalid(job({ command: ["x"] }, { name: "train", labels: { "bad key!": "v" } }));
    expect(paths(err)).toEqual(["metadata.labels.bad key!"]);
  });

  it("explains what a label key may contain", () => {
    const err = invalid(job({ command: ["x"] }, { name: "train", labels: { "bad key!": "v" } }));
    expect(err.issues[0]!.message).toMatch(/label keys are/);
  });

  it("rejects a bad label value", () => {
    const err = invalid(job({ command: ["x"] }, { name: "train", labels: { app: "no spaces" } }));
    expect(paths(err)).toEqual(["metadata.labels.app"]);
    expect(err.issues[0]!.message).toMatch(/label values/);
  });

  it("rejects an uppercase name", () => {
    const err = invalid(job({ command: ["x"] }, { name: "Train" }));
    expect(paths(err)).toEqual(["metadata.name"]);
    expect(err.issues[0]!.message).toMatch(/lowercase/);
  });

  it("rejects a missing name", () => {
    expect(invalid(job({ command: ["x"] }, {})).issues).toEqual([
      { path: "metadata.name", message: "required field is missing" },
    ]);
  });

  it("rejects an unknown kind, listing the known ones", () => {
    const err = invalid({ apiVersion: API, kind: "Widget", metadata: { name: "w" }, spec: {} });
    expect(paths(err)).toEqual(["kind"]);
    expect(err.issues[0]!.message).toContain('"Widget"');
    expect(err.issues[0]!.message).toContain("TrainingJob");
  });

  it("rejects a missing kind", () => {
    expect(paths(invalid({ apiVersion: API, metadata: { name: "w" } }))).toEqual(["kind"]);
  });

  it("rejects a wrong apiVersion", () => {
    const err = invalid({ ...job({ command: ["x"] }), apiVersion: "v1" });
    expect(paths(err)).toEqual(["apiVersion"]);
    expect(err.issues[0]!.message).toContain(API);
    expect(err.issues[0]!.message).toContain('"v1"');
  });

  it("rejects metadata.project on a Project", () => {
    const err = invalid({ apiVersion: API, kind: "Project", metadata: { name: "p", project: "other" } });
    expect(paths(err)).toEqual(["metadata.project"]);
  });

  it("accepts a Project without a spec", () => {
    const { def, object } = validateManifest({ apiVersion: API, kind: "Project", metadata: { name: "p" } });
    expect(def.namespaced).toBe(false);
    expect(object.spec).toEqual({ members: [], overQuotaWeight: 1 });
    expect(object.metadata).toEqual({ name: "p" });
  });

  it("rejects something that is not a mapping", () => {
    for (const input of [null, "x", 3, []]) expect(invalid(input).issues[0]!.path).toBe("");
  });
});

describe("findKind", () => {
  it("resolves short names, plurals and kinds, ignoring case", () => {
    for (const name of ["tj", "trainingjobs", "TrainingJob", "trainingjob", "TJ"]) {
      expect(findKind(name)?.kind).toBe("TrainingJob");
    }
    expect(findKind("proj")?.kind).toBe("Project");
    expect(findKind("projects")?.kind).toBe("Project");
  });

  it("returns undefined for an unknown name", () => {
    expect(findKind("widgets")).toBeUndefined();
  });
});

describe("specJsonSchema", () => {
  it("describes the TrainingJob spec as a JSON Schema object", () => {
    const schema = specJsonSchema(findKind("tj")!);
    expect(schema.type).toBe("object");
    const properties = schema.properties as Record<string, Record<string, unknown>>;
    expect(properties.command).toMatchObject({ type: "array" });
    expect(properties.workers).toBeDefined();
    // Input form: fields with defaults are optional, command is required.
    expect(schema.required).toEqual(["command"]);
  });
});

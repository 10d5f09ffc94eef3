import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { allManifests } from "../src/api/crds.js";
import { validateManifest } from "../src/api/kinds.js";
import { ROOT } from "./helpers.js";
import { type TestCluster, upCluster } from "./k8s/cluster.js";

/**
 * The CRDs refuse what Loom's API refuses: every manifest here goes to the real API server
 * (`kubectl apply --dry-run=server`) and to `loom apply`'s validation, and both must agree.
 */

// biome-ignore lint/suspicious/noExplicitAny: manifests are plain JSON here
type Manifest = Record<string, any>;

const tj = (spec: Manifest): Manifest => ({
  apiVersion: "loom.dev/v1alpha1",
  kind: "TrainingJob",
  metadata: { name: "bad" },
  spec: { command: ["python3", "train.py"], ...spec },
});
const sweep = (spec: Manifest, template: Manifest = {}): Manifest => ({
  apiVersion: "loom.dev/v1alpha1",
  kind: "Sweep",
  metadata: { name: "bad" },
  spec: {
    objective: { metric: "val_loss", goal: "minimize" },
    parameters: [{ name: "lr", uniform: { min: 0.1, max: 1 } }],
    template: { command: ["python3", "train.py"], ...template },
    ...spec,
  },
});
const isvc = (spec: Manifest): Manifest => ({
  apiVersion: "loom.dev/v1alpha1",
  kind: "InferenceService",
  metadata: { name: "bad" },
  spec: { model: "models:/tinygpt@champion", ...spec },
});
const project = (spec: Manifest): Manifest => ({
  apiVersion: "loom.dev/v1alpha1",
  kind: "Project",
  metadata: { name: "bad-project" },
  spec,
});

/** [what, manifest, a piece of the API server's message]. One per rule the CRDs hold. */
const BAD: [string, Manifest, RegExp][] = [
  // The three.
  ['workers: "two"', tj({ workers: "two" }), /spec\.workers/],
  ["workers {min: 3, max: 1}", tj({ workers: { min: 3, max: 1 } }), /min must not exceed max/],
  ["memory: lots", tj({ resources: { memory: "lots" } }), /spec\.resources\.memory.*should match/],
  ["workers 0", tj({ workers: 0 }), /spec\.workers/],
  ["workers 1.5", tj({ workers: 1.5 }), /spec\.workers/],
  ["workers with an unknown field", tj({ workers: { min: 1, max: 2, x: 1 } }), /spec\.workers/],
  ["workers {min: 0, max: 2}", tj({ workers: { min: 0, max: 2 } }), /spec\.workers\.min/],
  ['cpu: "1Gi"', tj({ resources: { cpu: "1Gi" } }), /spec\.resources\.cpu.*should match/],
  ["cpu: 0.5 (a number, not a string)", tj({ resources: { cpu: 0.5 } }), /spec\.resources\.cpu/],
  ["cpu: -1", tj({ resources: { cpu: -1 } }), /spec\.resources\.cpu/],
  ["gpu: 1.5", tj({ resources: { gpu: 1.5 } }), /fraction of one GPU below 1/],
  ["gpu and gpuMemory", tj({ resources: { gpu: 1, gpuMemory: "20Gi" } }), /either gpu or gpuMemory/],
  ['gpuMemory: "lots"', tj({ resources: { gpuMemory: "lots" } }), /gpuMemory.*should match/],
  [
    "a failure rule matching nothing",
    tj({ failurePolicy: { rules: [{ action: "Fail" }] } }),
    /exitCodes, signals/,
  ],
  ["a bad exit code", tj({ failurePolicy: { rules: [{ action: "Fail", exitCodes: [300] }] } }), /exitCodes/],
  ["a bad signal name", tj({ failurePolicy: { rules: [{ action: "Fail", signals: ["kill"] }] } }), /signals/],
  ["a bad failure action", tj({ failurePolicy: { rules: [{ action: "Retry", exitCodes: [1] }] } }), /action/],
  ["torchrun without pytorch", tj({ launcher: "torchrun" }), /launcher torchrun needs framework: pytorch/],
  ["procsPerWorker 2 without a launcher", tj({ procsPerWorker: 2 }), /several processes per worker/],
  ["elastic mpi", tj({ framework: "mpi", workers: { min: 1, max: 2 } }), /elastic workers/],
  ['progressTimeout: "soon"', tj({ progressTimeout: "soon" }), /progressTimeout.*should match/],
  ["progressTimeout: 0", tj({ progressTimeout: 0 }), /progressTimeout/],
  ["an env name with a digit first", tj({ env: { "1X": "a" } }), /environment variable names/],
  ["framework: jax", tj({ framework: "jax" }), /Unsupported value: "jax"/],
  ["placement: random", tj({ placement: "random" }), /Unsupported value: "random"/],
  ["priority 5000", tj({ priority: 5000 }), /spec\.priority/],
  ["procsPerWorker 0", tj({ procsPerWorker: 0 }), /spec\.procsPerWorker/],
  [
    "terminationGracePeriodSeconds -1",
    tj({ terminationGracePeriodSeconds: -1 }),
    /terminationGracePeriodSeconds/,
  ],
  ["python: venv and interpreter", tj({ python: { venv: "/v", interpreter: "python3" } }), /either venv/],
  ["an empty command", tj({ command: [] }), /spec\.command/],
  ["no command", { ...tj({}), spec: { workers: 1 } }, /spec\.command/],
  ['checkpoint size "big"', tj({ checkpoint: { size: "big" } }), /checkpoint\.size.*should match/],
  ["initCheckpointFrom a/b", tj({ initCheckpointFrom: "a/b" }), /initCheckpointFrom.*should match/],
  [
    "two search spaces",
    sweep({ parameters: [{ name: "lr", uniform: { min: 0, max: 1 }, int: { min: 1, max: 2 } }] }),
    /exactly one search space/,
  ],
  [
    "uniform min above max",
    sweep({ parameters: [{ name: "lr", uniform: { min: 2, max: 1 } }] }),
    /min must be below max/,
  ],
  [
    "logUniform from 0",
    sweep({ parameters: [{ name: "lr", logUniform: { min: 0, max: 1 } }] }),
    /must be above 0/,
  ],
  [
    "int min above max",
    sweep({ parameters: [{ name: "n", int: { min: 3, max: 1 } }] }),
    /min must not exceed max/,
  ],
  [
    "a parameter twice",
    sweep({
      parameters: [
        { name: "lr", uniform: { min: 0, max: 1 } },
        { name: "lr", uniform: { min: 0, max: 1 } },
      ],
    }),
    /Duplicate value/,
  ],
  ["no parameters", sweep({ parameters: [] }), /spec\.parameters/],
  ["early stopping rule foo", sweep({ earlyStopping: { rule: "foo" } }), /Unsupported value: "foo"/],
  ["asha without minSteps", sweep({ earlyStopping: { rule: "asha" } }), /rule asha needs minSteps/],
  [
    "median with reductionFactor",
    sweep({ earlyStopping: { rule: "median", reductionFactor: 3 } }),
    /rule median has no reductionFactor/,
  ],
  [
    "asha with minSteps 0",
    sweep({ earlyStopping: { rule: "asha", minSteps: 0 } }),
    /minSteps must be at least 1/,
  ],
  ["goal: lowest", sweep({ objective: { metric: "m", goal: "lowest" } }), /Unsupported value: "lowest"/],
  ['template workers "two"', sweep({}, { workers: "two" }), /spec\.template\.workers/],
  [
    "template workers {min: 3, max: 1}",
    sweep({}, { workers: { min: 3, max: 1 } }),
    /spec\.template\.workers\.min: min must not exceed max/,
  ],
  ["template memory lots", sweep({}, { resources: { memory: "lots" } }), /template\.resources\.memory/],
  [
    "template torchrun without pytorch",
    sweep({}, { launcher: "torchrun" }),
    /launcher torchrun needs framework/,
  ],
  ["model ../x", isvc({ model: "../x" }), /'\.\.' segments/],
  ["runtime 5", isvc({ runtime: 5 }), /spec\.runtime/],
  ['runtime "other"', isvc({ runtime: "other" }), /spec\.runtime/],
  ["runtime without command", isvc({ runtime: { image: "x" } }), /spec\.runtime/],
  ["replicas min 3 max 1", isvc({ replicas: { min: 3, max: 1 } }), /min must not exceed max/],
  ["traffic at 50%", isvc({ traffic: [{ revision: "latest", percent: 50 }] }), /percents must add up to 100/],
  ["traffic percent 150", isvc({ traffic: [{ revision: "latest", percent: 150 }] }), /percent/],
  ["isvc memory lots", isvc({ resources: { memory: "lots" } }), /resources\.memory.*should match/],
  [
    'scaleDownDelay "soon"',
    isvc({ autoscaling: { scaleDownDelay: "soon" } }),
    /scaleDownDelay.*should match/,
  ],
  ["targetConcurrency 0", isvc({ autoscaling: { targetConcurrency: 0 } }), /targetConcurrency/],
  ["readiness path without /", isvc({ readiness: { path: "health" } }), /readiness\.path/],
  ["project quota memory lots", project({ quota: { memory: "lots" } }), /quota\.memory.*should match/],
  ["project limit cpu 1Gi", project({ limit: { cpu: "1Gi" } }), /limit\.cpu.*should match/],
  [
    "a member with no user or group",
    project({ members: [{ role: "admin" }] }),
    /exactly one of user or group/,
  ],
  ["a member role owner", project({ members: [{ user: "a", role: "owner" }] }), /Unsupported value: "owner"/],
  ["overQuotaWeight -1", project({ overQuotaWeight: -1 }), /overQuotaWeight/],
];

const GOOD: [string, Manifest][] = [
  ["workers {min: 1, max: 4}", tj({ framework: "pytorch", workers: { min: 1, max: 4 } })],
  ["fractional CPU and GPU", tj({ resources: { cpu: "500m", memory: 1073741824, gpu: 0.5 } })],
  ["gpuMemory alone", tj({ resources: { gpuMemory: "20Gi" } })],
  ["torchrun", tj({ framework: "pytorch", launcher: "torchrun", procsPerWorker: 2 })],
  ["mpi with several processes", tj({ framework: "mpi", procsPerWorker: 4, workers: 2 })],
  ["a venv", tj({ python: { venv: "/opt/venv" }, progressTimeout: "10m" })],
  [
    "a failure rule",
    tj({ failurePolicy: { maxRestarts: 2, rules: [{ action: "Fail", signals: ["SIGKILL"] }] } }),
  ],
  ["asha", sweep({ earlyStopping: { rule: "asha", minSteps: 5, reductionFactor: 2 } })],
  [
    "every search space",
    sweep({
      parameters: [
        { name: "a", categorical: { values: ["x", 1, true] } },
        { name: "b", int: { min: 1, max: 1 } },
        { name: "c", logUniform: { min: 1e-5, max: 1e-2 } },
      ],
    }),
  ],
  [
    "a service",
    isvc({
      replicas: { min: 0, max: 3 },
      traffic: [{ revision: "latest", percent: 100 }],
      autoscaling: { scaleDownDelay: 30 },
    }),
  ],
  ["a command runtime", isvc({ runtime: { command: ["vllm", "serve"], image: "vllm/vllm-openai" } })],
  [
    "a project",
    project({ quota: { cpu: 16, memory: "64Gi", gpu: 2 }, members: [{ group: "ml", role: "editor" }] }),
  ],
];

/** The examples' manifests, as a user applies them (every one must still be accepted). */
function examples(): [string, Manifest][] {
  const out: [string, Manifest][] = [];
  const dir = join(ROOT, "examples");
  for (const sub of readdirSync(dir))
    for (const f of readdirSync(join(dir, sub)).filter((n) => /\.ya?ml$/.test(n)))
      for (const doc of parseAllDocuments(readFileSync(join(dir, sub, f), "utf8"))) {
        const m = doc.toJS() as Manifest | null;
        if (m?.apiVersion === "loom.dev/v1alpha1") out.push([`examples/${sub}/${f} ${m.metadata.name}`, m]);
      }
  return out;
}

/** Loom manifests name a project; on Kubernetes that is the namespace. */
function forKubernetes(m: Manifest): Manifest {
  const { project: _p, ...metadata } = m.metadata;
  return { ...m, metadata: m.kind === "Project" ? metadata : { ...metadata, namespace: "default" } };
}

describe("CRDs on the real API server (kubectl apply --dry-run=server)", () => {
  let cluster: TestCluster;
  const dryRun = (m: Manifest) =>
    cluster.kubectl(["apply", "--dry-run=server", "-f", "-"], { input: JSON.stringify(forKubernetes(m)) });

  beforeAll(async () => {
    cluster = upCluster();
    const applied = cluster.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], {
      input: JSON.stringify({ apiVersion: "v1", kind: "List", items: allManifests() }),
    });
    expect(applied.stderr).toBe("");
    expect(applied.code).toBe(0);
    for (const crd of ["projects", "trainingjobs", "sweeps", "inferenceservices"])
      expect(
        cluster.kubectl(["wait", "--for=condition=Established", "--timeout=60s", `crd/${crd}.loom.dev`]).code,
      ).toBe(0);
    // The admission policy takes effect once the API server's policy informer has it: wait until it
    // answers (a readiness wait, not a timing assertion).
    for (let i = 0; i < 240; i++) {
      if (/min must not exceed max/.test(dryRun(tj({ workers: { min: 3, max: 1 } })).stderr)) break;
      await sleep(500);
    }
  }, 300_000);

  it.each(BAD)("refuses %s, as loom apply does", (_what, manifest, message) => {
    expect(() => validateManifest(manifest)).toThrow();
    const r = dryRun(manifest);
    expect(r.code, r.stdout).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });

  it.each(GOOD)("accepts %s, as loom apply does", (_what, manifest) => {
    validateManifest(manifest);
    const r = dryRun(manifest);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("accepts every example", () => {
    const all = examples();
    expect(all.length).toBeGreaterThanOrEqual(4);
    for (const [what, manifest] of all) {
      validateManifest(manifest);
      const r = dryRun(manifest);
      expect(`${what}: ${r.stderr}`).toBe(`${what}: `);
    }
  });
});

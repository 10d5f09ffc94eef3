import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";

/**
 * Each framework's wiring with real processes on the embedded platform: torchrun, TF_CONFIG,
 * an mpi4py allreduce under mpirun, a Ray head and worker running a task on each node.
 */
describe("framework wiring with real processes (embedded)", () => {
  const loom = new LoomProcess();
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());

  const job = (name: string, spec: string) =>
    `apiVersion: loom.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: ${name}}\nspec:\n  workingDir: .\n${spec}`;

  async function succeeds(name: string, spec: string, timeoutMs = 120_000): Promise<string> {
    const applied = await loom.cli(["apply", "-f", "-"], { input: job(name, spec) });
    expect(applied.code, applied.stderr).toBe(0);
    const done = await loom.waitFor(
      name,
      (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
      timeoutMs,
    );
    const logs = (await loom.cli(["logs", `tj/${name}`])).stdout;
    expect(done.status?.phase, `${JSON.stringify(done.status?.conditions)}\n${logs}`).toBe("Succeeded");
    return logs;
  }

  it("pytorch with launcher torchrun: static rendezvous across 2 workers, a gloo allreduce", async () => {
    const logs = await succeeds(
      "torchrun",
      `  workers: 2
  framework: pytorch
  launcher: torchrun
  python: {interpreter: /usr/bin/python3, systemSitePackages: true}
  command: [python3, test/fixtures/wiring/torch_allreduce.py]
`,
    );
    expect(logs).toMatch(/\[worker 0\] rank 0 local 0 world 2 sum 3\.0/);
    expect(logs).toMatch(/\[worker 1\] rank 1 local 0 world 2 sum 3\.0/);
  }, 180_000);

  it("tensorflow: TF_CONFIG lets each worker reach every other one", async () => {
    const logs = await succeeds(
      "tfconfig",
      `  workers: 3
  framework: tensorflow
  command: [python3, test/fixtures/wiring/tf_config_check.py]
`,
    );
    for (const i of [0, 1, 2]) expect(logs).toMatch(new RegExp(`\\[worker ${i}\\] .*worker:${i}`));
    expect(logs).not.toMatch(/missing|bad TF_CONFIG/);
  }, 120_000);

  it("mpi: worker 0 runs mpirun over the hostfile; an mpi4py allreduce over 2 ranks", async () => {
    const logs = await succeeds(
      "mpi",
      `  workers: 2
  framework: mpi
  command: [/usr/bin/python3, test/fixtures/wiring/mpi_allreduce.py]
  terminationGracePeriodSeconds: 2
`,
    );
    expect(logs).toMatch(/rank 0\/2 .* sum=1 ok=True/);
    expect(logs).toMatch(/rank 1\/2 .* sum=1 ok=True/);
    const done = await loom.job("mpi");
    // The launcher decided: it exited 0, and the host worker was stopped after it.
    expect(done.status?.workers?.[0]).toMatchObject({ state: "Succeeded", exitCode: 0 });
  }, 120_000);

  it("ray: a head and a worker node (ray from PyPI in a built environment) run a task on each node", async () => {
    const logs = await succeeds(
      "ray",
      `  workers: 2
  framework: ray
  python: {requirements: ["ray==2.60.0"]}
  env: {LOOM_RAY_OBJECT_STORE_BYTES: "100000000", RAY_EXPECTED_NODES: "2"}
  command: [python3, test/fixtures/wiring/ray_task.py]
  terminationGracePeriodSeconds: 10
`,
      600_000,
    );
    expect(logs).toMatch(/\[worker 0\] alive nodes: 2 \(expected 2\)/);
    expect(logs.match(/\[worker 0\] task ran on node/g)).toHaveLength(2);
    expect(logs).toMatch(/\[worker 0\] OK in/);
  }, 700_000);
});

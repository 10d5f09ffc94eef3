import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { schedulerScenarios } from "./scenarios.js";

/** The scheduler's scenarios on the embedded platform: `loom up --gpus 8`, real processes. */
describe("scheduler scenarios on the embedded platform (8 virtual GPUs)", () => {
  const loom = new LoomProcess(["--gpus", "8"]);
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());
  schedulerScenarios(() => ({
    name: "embedded",
    loom: (args, input) => loom.cli(args, { input }),
    workersGone: async () => true,
    logs: async (project, job) => (await loom.cli(["logs", `tj/${job}`, "-p", project])).stdout,
  }));
});

describe("loom get nodes, loom top and apply --dry-run (embedded, 4 virtual GPUs)", () => {
  const loom = new LoomProcess(["--gpus", "4"]);
  beforeAll(() => loom.start());
  afterAll(async () => {
    for (const p of ["p1", "p2"])
      await loom.cli(["delete", "tj", "--all", "-p", p, "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });
  const job = (name: string, project: string, resources: string, extra = "") =>
    `apiVersion: loom.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: ${name}, project: ${project}}\nspec:\n  command: [sleep, "120"]\n  resources: ${resources}\n  terminationGracePeriodSeconds: 1\n${extra}`;

  it("shows capacity and use, and previews admission without changing anything", async () => {
    const projects =
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: p1}\nspec: {quota: {gpu: 2}}\n---\n" +
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: p2}\nspec: {quota: {gpu: 2}, limit: {gpu: 3}}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: projects })).code).toBe(0);
    const four = [1, 2, 3, 4].map((i) => job(`x${i}`, "p1", "{gpu: 1}")).join("---\n");
    expect((await loom.cli(["apply", "-f", "-"], { input: four })).code).toBe(0);
    for (let i = 1; i <= 4; i++)
      await loom.waitFor(`x${i}`, (j) => j.status?.workers?.[0]?.state === "Running", 30_000, "p1");

    const nodes = await loom.cli(["get", "nodes"]);
    expect(nodes.code, nodes.stderr).toBe(0);
    expect(nodes.stdout).toMatch(/GPUS \(ALLOC\/TOTAL\)/);
    expect(nodes.stdout).toMatch(/\s4\/4\s/);
    const top = await loom.cli(["top"]);
    expect(top.stdout).toMatch(/p1\s+4\s+2\s+-\s+1/); // 4 GPUs held, 2 deserved, no limit, weight 1
    expect(top.stdout).toMatch(/p2\s+0\s+2\s+3/);

    // p2 is within its deserved 2: it would reclaim from p1's newest; 3 more than its limit never.
    const dry = await loom.cli(["apply", "--dry-run", "-f", "-"], {
      input: `${job("y1", "p2", "{gpu: 2}")}---\n${job("y2", "p2", "{gpu: 4}")}`,
    });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(
      "trainingjob.loom.dev/y1 created (dry run): would preempt 2 workload(s) (Reclaim): p1/x4, p1/x3",
    );
    expect(dry.stdout).toMatch(/y2 created \(dry run\): would wait \(OverLimit/);
    // Nothing changed: no y1, and p1 still runs all four.
    expect((await loom.cli(["get", "tj", "y1", "-p", "p2"])).code).toBe(1);
    const x4 = await loom.waitFor("x4", () => true, 5_000, "p1");
    expect(x4.status?.preemption).toBeUndefined();
  }, 120_000);
});

describe("fractional GPUs (embedded, 1 virtual GPU)", () => {
  const loom = new LoomProcess(["--gpus", "1"]);
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());

  it("runs examples/fractional-gpu: two half-GPU workers share the one device, each told its share", async () => {
    const applied = await loom.cli(["apply", "-f", "examples/fractional-gpu/"]);
    expect(applied.code, applied.stderr).toBe(0);
    for (const name of ["half-a", "half-b"]) {
      const done = await loom.waitFor(name, (j) => j.status?.phase === "Succeeded", 30_000);
      expect(done.status?.workers?.[0]?.exitCode).toBe(0);
      const logs = await loom.cli(["logs", `tj/${name}`]);
      expect(logs.stdout).toContain("device=0 share=0.5");
    }
  }, 60_000);
});

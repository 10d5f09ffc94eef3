import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobYaml, LoomProcess } from "./helpers.js";

/** `loom up --gpus 2` declares two virtual devices; admission hands them out and says why others wait. */
describe("GPU accounting and why-pending (embedded, virtual GPUs)", () => {
  const loom = new LoomProcess(["--gpus", "2"]);
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());

  const gpuJob = (name: string, gpus: number) =>
    jobYaml(
      name,
      ["sh", "-c", 'echo "devices=$CUDA_VISIBLE_DEVICES"; sleep 30'],
      `  resources:\n    gpu: ${gpus}\n  terminationGracePeriodSeconds: 1\n`,
    );

  it("gives each job its own devices, queues the one that does not fit, and admits it when capacity frees", async () => {
    await loom.cli(["apply", "-f", "-"], { input: gpuJob("g1", 1) });
    await loom.waitFor("g1", (j) => j.status?.workers?.[0]?.state === "Running");
    await loom.cli(["apply", "-f", "-"], { input: gpuJob("g2", 1) });
    await loom.waitFor("g2", (j) => j.status?.workers?.[0]?.state === "Running");
    await loom.cli(["apply", "-f", "-"], { input: gpuJob("g3", 1) });
    const waiting = await loom.waitFor(
      "g3",
      (j) => j.status?.phase === "Pending" && !!j.status.conditions?.length,
    );
    const cond = waiting.status?.conditions?.find((c) => c.type === "Admitted");
    expect(cond?.reason).toBe("InsufficientCapacity");
    expect(cond?.message).toContain("gpu: requested 1, free 0");
    const described = await loom.cli(["describe", "tj", "g3"]);
    expect(described.stdout).toContain("InsufficientCapacity");

    const devices = async (name: string) => {
      for (let i = 0; i < 50; i++) {
        const out = (await loom.cli(["logs", `tj/${name}`])).stdout;
        if (out.includes("devices=")) return out.trim();
        await new Promise((r) => setTimeout(r, 100));
      }
      return "";
    };
    const d1 = await devices("g1");
    const d2 = await devices("g2");
    expect([d1, d2].sort()).toEqual(["[worker 0] devices=0", "[worker 0] devices=1"]);

    expect((await loom.cli(["delete", "tj", "g1"])).code).toBe(0);
    await loom.waitFor("g3", (j) => j.status?.workers?.[0]?.state === "Running", 15_000);
    expect(await devices("g3")).toBe(d1);
  });

  it("rejects at once a request no node can ever satisfy", async () => {
    await loom.cli(["apply", "-f", "-"], { input: gpuJob("g-huge", 8) });
    const job = await loom.waitFor(
      "g-huge",
      (j) => j.status?.phase === "Pending" && !!j.status.conditions?.length,
    );
    const cond = job.status?.conditions?.find((c) => c.type === "Admitted");
    expect(cond?.reason).toBe("ExceedsNodeCapacity");
    expect(cond?.message).toContain("gpu 8 (largest node has 2)");
  });

  it("follows a worker's log until it exits", async () => {
    const yaml = jobYaml("ticker", ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"]);
    await loom.cli(["apply", "-f", "-"], { input: yaml });
    await loom.waitFor("ticker", (j) => j.status?.workers?.[0]?.state === "Running");
    const followed = await loom.cli(["logs", "tj/ticker", "-f"]);
    expect(followed.code).toBe(0);
    expect(followed.stdout).toBe("[worker 0] tick 1\n[worker 0] tick 2\n[worker 0] tick 3\n");
  });

  it("get -w prints each change of a job as it happens", async () => {
    const watcher = loom.cliBackground(["get", "tj", "watched", "-w"]);
    await sleep(1000);
    await loom.cli(["apply", "-f", "-"], { input: jobYaml("watched", ["sh", "-c", "sleep 0.5"]) });
    await loom.waitFor("watched", (j) => j.status?.phase === "Succeeded");
    for (let i = 0; i < 50 && !/watched\s+Succeeded/.test(watcher.output()); i++) await sleep(100);
    watcher.proc.kill("SIGINT");
    const out = watcher.output();
    expect(out).toMatch(/watched\s+Pending|watched\s+<none>/);
    expect(out).toMatch(/watched\s+Running/);
    expect(out).toMatch(/watched\s+Succeeded/);
  });
});

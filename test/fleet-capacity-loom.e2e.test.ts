import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, until as waitUntil } from "./helpers.js";
import { type Obj, registerLoomMember, trainingJob } from "./loommembers.js";

/**
 * A Loom member's own work counts (issue 23): two `loom up --gpus 4` servers registered as
 * members (`spec.api: loom`) of a third, the control plane, which has no GPU. A job submitted to
 * m1 directly holds its 4 GPUs; the control plane, which placed nothing in m1, must see m1 as full
 * and place a new job in m2; what it placed in m2 counts once (by its own admission), never again
 * as m2's own work.
 */
describe("fleet: a Loom member's own work is subtracted from its free capacity", () => {
  const cp = new LoomProcess();
  const m1 = new LoomProcess(["--gpus", "4"]);
  const m2 = new LoomProcess(["--gpus", "4"]);
  const dir = mkdtempSync(join(tmpdir(), "loom-fleet-own-loom-"));

  const until = <T>(what: string, probe: () => Promise<T | undefined>) =>
    waitUntil(what, probe, {
      ms: 120_000,
      every: 300,
      context: () => `control plane:\n${cp.log.slice(-3000)}\nm1:\n${m1.log.slice(-1500)}`,
    });
  const jobYaml = (name: string, gpu: number, extra = "") =>
    `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ${name}}
spec:
  command: [sleep, "3600"]
  resources: {gpu: ${gpu}, cpu: 100m, memory: 64Mi}
${extra}`;
  /** `loom get clusters -o json`: each member's status.freeText. */
  const free = async (): Promise<Record<string, string | undefined>> => {
    const r = await cp.cli(["get", "clusters", "-o", "json"]);
    if (r.code !== 0) return {};
    const items = (JSON.parse(r.stdout) as Obj).items as Obj[];
    return Object.fromEntries(items.map((c) => [c.metadata.name, c.status?.freeText]));
  };
  beforeAll(async () => {
    await Promise.all([cp.start(), m1.start(), m2.start()]);
    for (const [name, m] of [
      ["m1", m1],
      ["m2", m2],
    ] as const)
      await registerLoomMember(cp, dir, { name, server: m.url, token: m.token, clusterLostTimeout: "30s" });
    await until("both members Ready with 4 GPUs free", async () => {
      const f = await free();
      return f.m1?.startsWith("4 GPU") && f.m2?.startsWith("4 GPU") ? true : undefined;
    });
  }, 180_000);

  afterAll(async () => {
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await m1.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    await m1.stop();
    await m2.stop();
  }, 240_000);

  it("m1's GPUs, held by a job submitted to m1 directly, are not free: the control plane places in m2, and counts that once", {
    timeout: 300_000,
  }, async () => {
    const own = await m1.cli(["apply", "-f", "-"], { input: jobYaml("theirs", 4) });
    expect(own.code, own.stderr).toBe(0);
    await until("m1's own job running", async () =>
      (await trainingJob(m1, "theirs"))?.status?.phase === "Running" ? true : undefined,
    );
    await until("m1 shows no GPU free", async () =>
      (await free()).m1?.startsWith("0 GPU") ? true : undefined,
    );
    const r = await cp.cli(["apply", "-f", "-"], { input: jobYaml("placed", 2) });
    expect(r.code, r.stderr).toBe(0);
    const admission = await until(
      "placed admitted",
      async () => (await trainingJob(cp, "placed"))?.status?.admission,
    );
    expect(admission.cluster).toBe("m2");
    // m2 runs the copy (its own scheduler admits it); the control plane counts it by its own
    // admission alone: 2 of m2's 4 GPUs are free, not 0.
    await until("the copy running in m2", async () =>
      (await trainingJob(m2, "placed"))?.status?.phase === "Running" ? true : undefined,
    );
    await until("m2 shows 2 GPUs free once the copy runs there", async () =>
      (await free()).m2?.startsWith("2 GPU") ? true : undefined,
    );
    // Steady: a probe later, still 2 (the copy never counts as m2's own work).
    const settled = await until("a probe later", async () => {
      await new Promise((ok) => setTimeout(ok, 5000));
      return free();
    });
    expect(settled.m2).toMatch(/^2 GPU/);
    expect(settled.m1).toMatch(/^0 GPU/);
    // A second job of 2 fits m2's free 2, not m1.
    const second = await cp.cli(["apply", "-f", "-"], { input: jobYaml("second", 2) });
    expect(second.code, second.stderr).toBe(0);
    expect(
      (await until("second admitted", async () => (await trainingJob(cp, "second"))?.status?.admission))
        .cluster,
    ).toBe("m2");
  });
});

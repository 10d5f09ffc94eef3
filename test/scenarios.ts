import { setTimeout as sleep } from "node:timers/promises";
import { expect, it } from "vitest";
import type { CliResult, Job } from "./helpers.js";

/**
 * What a platform must offer the shared scenarios: the real CLI pointed at it, and a way to
 * tell whether a job's workers are gone (processes embedded, pods on Kubernetes).
 */
export interface Platform {
  name: string;
  loom(args: string[], input?: string): Promise<CliResult>;
  workersGone(job: Job): Promise<boolean>;
}

/**
 * The foundation's scenarios, unchanged on every platform. Each manifest runs for real
 * embedded; on Kubernetes the kwok annotations tell the fake nodes when and how a pod ends.
 */
export function foundationScenarios(platform: () => Platform): void {
  const manifest = (name: string, command: string[], annotations: Record<string, string>, extra = "") =>
    `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata:
  name: ${name}
  annotations: ${JSON.stringify(annotations)}
spec:
  command: ${JSON.stringify(command)}
${extra}`;

  async function waitFor(name: string, pred: (j: Job) => boolean, timeoutMs = 90_000): Promise<Job> {
    const deadline = Date.now() + timeoutMs;
    let last: Job | undefined;
    while (Date.now() < deadline) {
      const r = await platform().loom(["get", "tj", name, "-o", "json"]);
      if (r.code === 0) {
        last = JSON.parse(r.stdout) as Job;
        if (pred(last)) return last;
      }
      await sleep(300);
    }
    throw new Error(`timed out waiting for ${name} on ${platform().name}: ${JSON.stringify(last?.status)}`);
  }

  it("hello: Succeeded on the first attempt", async () => {
    const yaml = manifest("shared-hello", ["sh", "-c", "echo hello"], {
      "loom.dev/kwok-complete-after": "2s",
    });
    const applied = await platform().loom(["apply", "-f", "-"], yaml);
    expect(applied.stderr).toBe("");
    expect(applied.stdout).toContain("trainingjob.loom.dev/shared-hello created");
    const done = await waitFor("shared-hello", (j) => j.status?.phase === "Succeeded");
    expect(done.status?.attempts).toBe(1);
    expect(done.status?.workers?.[0]).toMatchObject({ state: "Succeeded", exitCode: 0 });
    expect(done.status?.conditions?.find((c) => c.type === "Succeeded")?.status).toBe("True");
  }, 180_000);

  it("a job exiting 3 with maxRestarts 2 runs 3 attempts, then Failed naming code and attempts", async () => {
    const yaml = manifest(
      "shared-exit3",
      ["sh", "-c", "sleep 1; exit 3"],
      { "loom.dev/kwok-complete-after": "1s", "loom.dev/kwok-exit-code": "3" },
      "  failurePolicy: {maxRestarts: 2}\n",
    );
    expect((await platform().loom(["apply", "-f", "-"], yaml)).code).toBe(0);
    const failed = await waitFor("shared-exit3", (j) => j.status?.phase === "Failed", 120_000);
    expect(failed.status?.attempts).toBe(3);
    expect(failed.status?.workers?.[0]).toMatchObject({ state: "Failed", exitCode: 3 });
    const cond = failed.status?.conditions?.find((c) => c.type === "Failed");
    expect(cond?.reason).toBe("BackoffLimitExceeded");
    expect(cond?.message).toContain("worker 0 exited with code 3 on attempt 3 of 3");
  }, 180_000);

  it("delete of a running job stops its workers and removes it", async () => {
    const yaml = manifest(
      "shared-delete",
      ["sh", "-c", "sleep 300"],
      { "loom.dev/kwok-complete-after": "24h" },
      "  terminationGracePeriodSeconds: 2\n",
    );
    await platform().loom(["apply", "-f", "-"], yaml);
    const running = await waitFor(
      "shared-delete",
      (j) => j.status?.workers?.[0]?.state === "Running" && !!j.status.workers[0].startTime,
    );
    expect(await platform().workersGone(running)).toBe(false);
    const del = await platform().loom(["delete", "tj", "shared-delete", "--timeout", "60"]);
    expect(del.code, del.stderr).toBe(0);
    expect(await platform().workersGone(running)).toBe(true);
    expect((await platform().loom(["get", "tj", "shared-delete"])).code).toBe(1);
  }, 180_000);
}

export interface SchedulerPlatform extends Platform {
  /** A node pool with exactly 8 GPUs that only these scenarios use. */
  pool?: string;
  /** The log of a job's worker (embedded: its output; kwok pods have none). */
  logs?: (project: string, job: string) => Promise<string>;
}

/**
 * The scheduler issue's scenarios, the same on every platform: two projects with deserved
 * 4 GPUs each on 8 GPUs. A borrows all 8 while B is idle; B submits 4 → exactly A's 4 newest
 * preemptible jobs are reclaimed, gracefully (SIGTERM and the grace period), go back to the
 * queue with their attempt count, and B's 4 run.
 */
export function schedulerScenarios(platform: () => SchedulerPlatform): void {
  const projectYaml = (name: string) => {
    const pools = platform().pool ? `\n  nodePools: [${platform().pool}]` : "";
    return `apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: ${name}}\nspec:\n  quota: {gpu: 4}${pools}\n`;
  };
  const gpuJob = (project: string, name: string) =>
    `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata:
  name: ${name}
  project: ${project}
  annotations: {"loom.dev/kwok-complete-after": "24h"}
spec:
  command: ["sh", "-c", "trap 'echo got SIGTERM, checkpointing; exit 0' TERM; echo started; sleep 300 & wait"]
  resources: {gpu: 1}
  terminationGracePeriodSeconds: 5
${platform().pool ? `  nodePool: ${platform().pool}\n` : ""}`;

  async function list(project: string): Promise<Job[]> {
    const r = await platform().loom(["get", "tj", "-p", project, "-o", "json"]);
    expect(r.code, r.stderr).toBe(0);
    const parsed = JSON.parse(r.stdout) as Job | { items: Job[] };
    return "items" in parsed ? parsed.items : [parsed];
  }

  async function until<T>(
    what: string,
    probe: () => Promise<T | undefined>,
    timeoutMs = 120_000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const v = await probe();
      if (v !== undefined) return v;
      await sleep(500);
    }
    throw new Error(`timed out on ${platform().name}: ${what}`);
  }

  const running = (jobs: Job[]) => jobs.filter((j) => j.status?.workers?.[0]?.state === "Running");

  it("reclaim: B takes back exactly its 4 deserved GPUs from A's 4 newest jobs, gracefully", async () => {
    try {
      for (const p of ["sched-a", "sched-b"]) {
        const r = await platform().loom(["apply", "-f", "-"], projectYaml(p));
        expect(r.code, r.stderr).toBe(0);
      }
      // a1–a4, then a5–a8 a second later: creation timestamps have second precision on Kubernetes.
      const batch = (from: number) =>
        Array.from({ length: 4 }, (_, i) => gpuJob("sched-a", `a${from + i}`)).join("---\n");
      expect((await platform().loom(["apply", "-f", "-"], batch(1))).code).toBe(0);
      await sleep(1100);
      expect((await platform().loom(["apply", "-f", "-"], batch(5))).code).toBe(0);
      await until("A borrows all 8 GPUs", async () => {
        const r = running(await list("sched-a"));
        return r.length === 8 ? r : undefined;
      });

      const bJobs = Array.from({ length: 4 }, (_, i) => gpuJob("sched-b", `b${i + 1}`)).join("---\n");
      expect((await platform().loom(["apply", "-f", "-"], bJobs)).code).toBe(0);
      await until("B runs its 4 jobs", async () => {
        const r = running(await list("sched-b"));
        return r.length === 4 ? r : undefined;
      });

      const a = await list("sched-a");
      const preempted = a.filter((j) => (j.status?.preemptions ?? 0) > 0).map((j) => j.metadata.name);
      expect(preempted.sort()).toEqual(["a5", "a6", "a7", "a8"]);
      expect(
        running(a)
          .map((j) => j.metadata.name)
          .sort(),
      ).toEqual(["a1", "a2", "a3", "a4"]);
      for (const j of a.filter((x) => preempted.includes(x.metadata.name))) {
        expect(j.status?.phase).toBe("Pending");
        expect(j.status?.attempts).toBe(1); // kept: the next admission starts attempt 2
        const admitted = j.status?.conditions?.find((c) => c.type === "Admitted");
        expect(admitted?.status).toBe("False");
      }
      const described = await platform().loom(["describe", "tj", "a8", "-p", "sched-a"]);
      expect(described.stdout).toMatch(/Preempted|Reclaim/);
      const logs = platform().logs;
      if (logs) expect(await logs("sched-a", "a8")).toContain("got SIGTERM, checkpointing");
    } finally {
      for (const p of ["sched-a", "sched-b"])
        await platform().loom(["delete", "tj", "--all", "-p", p, "--timeout", "60"]);
    }
  }, 300_000);

  it("fair share: three projects with no quota and weights 1:1:2 split 8 GPUs 2:2:4", async () => {
    const weights: Record<string, number> = { "fair-a": 1, "fair-b": 1, "fair-c": 2 };
    try {
      for (const [p, w] of Object.entries(weights)) {
        const pools = platform().pool ? `\n  nodePools: [${platform().pool}]` : "";
        const yaml = `apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: ${p}}\nspec:\n  overQuotaWeight: ${w}${pools}\n`;
        expect((await platform().loom(["apply", "-f", "-"], yaml)).code).toBe(0);
      }
      // All 24 jobs arrive together: 8 per project, 8 GPUs in all.
      const all = Object.keys(weights)
        .flatMap((p) => Array.from({ length: 8 }, (_, i) => gpuJob(p, `${p}-${i + 1}`)))
        .join("---\n");
      const applied = await platform().loom(["apply", "-f", "-"], all);
      expect(applied.code, applied.stderr).toBe(0);
      // Jobs of the first project may take all 8 before the others arrive (nothing is left idle);
      // fair-share preemption then converges to the weighted split.
      let last: number[] = [];
      const split = await until("the 2:2:4 split", async () => {
        last = await Promise.all(Object.keys(weights).map(async (p) => running(await list(p)).length));
        return last.join(":") === "2:2:4" ? last : undefined;
      }).catch((err: Error) => {
        throw new Error(`${err.message}; last running counts ${last.join(":")}`);
      });
      expect(split).toEqual([2, 2, 4]);
      const waiting = (await list("fair-a")).find((j) => j.status?.phase === "Pending");
      const reason = waiting?.status?.conditions?.find((c) => c.type === "Admitted")?.reason;
      expect(["OverFairShare", "InsufficientCapacity"]).toContain(reason);
    } finally {
      for (const p of Object.keys(weights))
        await platform().loom(["delete", "tj", "--all", "-p", p, "--timeout", "60"]);
    }
  }, 300_000);
}

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

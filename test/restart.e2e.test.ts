import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { findProcessesByEnv } from "../src/platforms/embedded/procfs.js";
import { alive, jobYaml, LoomProcess } from "./helpers.js";

/** The server may die at any moment; workloads and acknowledged writes must not. */
describe("server crash and restart (embedded)", () => {
  const servers: LoomProcess[] = [];
  const first = new LoomProcess();
  servers.push(first);
  afterAll(async () => {
    for (const s of servers.slice(1)) await s.kill("SIGKILL");
    const last = servers[servers.length - 1]!;
    await last.stop();
    rmSync(first.home, { recursive: true, force: true });
  });

  async function restart(): Promise<LoomProcess> {
    const next = new LoomProcess([], first.home);
    servers.push(next);
    await next.start();
    return next;
  }

  it("re-adopts a running job after kill -9: same pid, then Succeeded, one worker process ever", async () => {
    await first.start();
    // Written where the sandboxed job may write: its own checkpoint dir.
    const yaml = jobYaml("long", [
      "sh",
      "-c",
      `echo $$ >> "$LOOM_CHECKPOINT_DIR/starts"; sleep 20; echo finished`,
    ]);
    expect((await first.cli(["apply", "-f", "-"], { input: yaml })).code).toBe(0);
    const running = await first.waitFor(
      "long",
      (j) => j.status?.workers?.[0]?.state === "Running" && !!j.status.workers[0].pid,
    );
    const pid = running.status!.workers![0]!.pid!;
    const starts = join(first.dataDir, "workloads", running.metadata.uid, "checkpoint", "starts");

    expect(await first.kill("SIGKILL")).toBe(null);
    expect(alive(pid)).toBe(true); // the workload outlives the server

    const second = await restart();
    const adopted = await second.job("long");
    expect(adopted.status?.phase).toBe("Running");
    expect(adopted.status?.workers?.[0]?.pid).toBe(pid);
    const done = await second.waitFor("long", (j) => j.status?.phase === "Succeeded", 40_000);
    expect(done.status?.workers?.[0]?.pid).toBe(pid);
    expect(done.status?.attempts).toBe(1);
    expect(readFileSync(starts, "utf8").trim().split("\n")).toHaveLength(1);
    expect((await second.cli(["logs", "tj/long"])).stdout).toBe("[worker 0] finished\n");
    const instance = readFileSync(join(second.dataDir, "instance-id"), "utf8").trim();
    expect(findProcessesByEnv("LOOM_INSTANCE", instance)).toEqual([]);
    await second.kill("SIGTERM");
  }, 90_000);

  it("keeps a write acknowledged just before kill -9, and records an exit that happened while down", async () => {
    const s = await restart();
    const yaml = jobYaml("exit-while-down", ["sh", "-c", "sleep 2; exit 7"]);
    expect((await s.cli(["apply", "-f", "-"], { input: yaml })).stdout).toContain("created");
    await s.waitFor("exit-while-down", (j) => j.status?.workers?.[0]?.state === "Running");
    const ack = await s.api("POST", "/apis/loom.dev/v1alpha1/projects/default/trainingjobs", {
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "acked", labels: { durable: "yes" } },
      spec: { command: ["true"], resources: { cpu: 100000 } },
    });
    expect(ack.status).toBe(201);
    await s.kill("SIGKILL");
    await sleep(3000); // the worker exits 7 while no server runs

    const again = await restart();
    const acked = await again.job("acked");
    expect(acked.metadata.uid).toBe((ack.body as { metadata: { uid: string } }).metadata.uid);
    const failed = await again.waitFor("exit-while-down", (j) => j.status?.phase === "Failed", 20_000);
    expect(failed.status?.workers?.[0]?.exitCode).toBe(7);
    expect(failed.status?.conditions?.find((c) => c.type === "Failed")?.message).toContain(
      "exited with code 7",
    );
    // The impossible request stays Pending and says why.
    const pending = await again.waitFor("acked", (j) => j.status?.phase === "Pending");
    expect(pending.status?.conditions?.find((c) => c.type === "Admitted")?.reason).toBe(
      "ExceedsNodeCapacity",
    );
  }, 90_000);

  it("refuses a second server on a data dir that is in use", async () => {
    const third = new LoomProcess([], first.home);
    await expect(third.start()).rejects.toThrow(/in use by another loom server/);
    expect(existsSync(join(first.home, "data", "loom.db"))).toBe(true);
  });
});

describe("loom up in the foreground", () => {
  it("stops cleanly on Ctrl-C (SIGINT) and releases the data dir", async () => {
    const loom = new LoomProcess();
    await loom.start();
    expect((await loom.cli(["version"])).stdout).toMatch(/Server: \d+\.\d+\.\d+/);
    expect(existsSync(join(loom.dataDir, "loom.lock"))).toBe(true);
    expect(await loom.kill("SIGINT")).toBe(0);
    expect(existsSync(join(loom.dataDir, "loom.lock"))).toBe(false);
    const down = await loom.cli(["get", "tj"]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach Loom at .* is 'loom up' running\?/);
    await loom.stop();
  });
});

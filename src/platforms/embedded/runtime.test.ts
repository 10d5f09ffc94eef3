import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { GangObservation, GangSpec, WorkloadRef } from "../../ports/runtime.js";
import { findProcessesByEnv, processStartTicks } from "./procfs.js";
import { LocalRuntime } from "./runtime.js";

const log = pino({ level: "silent" });

async function until<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function readAll(stream: Readable): Promise<string> {
  let out = "";
  for await (const chunk of stream) out += chunk.toString();
  return out;
}

function alive(pid: number): boolean {
  return processStartTicks(pid) !== undefined;
}

describe("LocalRuntime", () => {
  let dataDir: string;
  let instanceId: string;
  let runtimes: LocalRuntime[];
  let refs: WorkloadRef[];
  let strays: ChildProcess[];
  let closed: Set<LocalRuntime>;

  function newRuntime(): LocalRuntime {
    const rt = new LocalRuntime({
      dataDir,
      instanceId,
      cpuMillis: 4000,
      memoryBytes: 8 * 2 ** 30,
      gpus: ["0", "1", "2", "3"],
      log,
      pollMs: 50,
    });
    runtimes.push(rt);
    return rt;
  }

  function gang(
    command: string[],
    opts: { attempt?: number; gpus?: string[]; env?: Record<string, string>; ref?: WorkloadRef } = {},
  ): GangSpec {
    const ref = opts.ref ?? {
      kind: "TrainingJob",
      project: "default",
      name: `job-${refs.length}`,
      uid: randomUUID(),
    };
    if (!refs.includes(ref)) refs.push(ref);
    return {
      ref,
      attempt: opts.attempt ?? 1,
      workers: [
        {
          index: 0,
          command,
          env: opts.env ?? {},
          allocation: { node: "local", cpuMillis: 0, memoryBytes: 0, gpus: opts.gpus ?? [] },
        },
      ],
    };
  }

  async function finished(rt: LocalRuntime, ref: WorkloadRef): Promise<GangObservation> {
    return until(async () => {
      const o = await rt.observe(ref);
      return o?.workers.every((w) => w.state !== "Running") ? o : undefined;
    });
  }

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), "loom-runtime-"));
    instanceId = `test-${randomUUID()}`;
    runtimes = [];
    refs = [];
    strays = [];
    closed = new Set();
  });

  afterEach(async () => {
    // A closed runtime's view is stale (its pids may be gone and reused): release through live ones.
    for (const rt of runtimes) if (!closed.has(rt)) for (const ref of refs) await rt.release(ref);
    for (const rt of runtimes) await rt.close();
    for (const c of strays) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    // Anything still carrying this instance's marker is a leak.
    for (const p of findProcessesByEnv("LOOM_INSTANCE", instanceId)) process.kill(p.pid, "SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("reports one node with the configured capacity", async () => {
    const rt = newRuntime();
    const [n] = await rt.nodes();
    expect(n).toMatchObject({ cpuMillis: 4000, memoryBytes: 8 * 2 ** 30, gpus: ["0", "1", "2", "3"] });
  });

  it("reports a failing worker as Failed with its exit code", async () => {
    const rt = newRuntime();
    const changes: string[] = [];
    rt.onChange((ref) => changes.push(ref.uid));
    const spec = gang(["sh", "-c", "exit 3"]);
    await rt.start(spec);
    const o = await finished(rt, spec.ref);
    expect(o.attempt).toBe(1);
    expect(o.stopping).toBe(false);
    expect(o.workers).toEqual([expect.objectContaining({ index: 0, state: "Failed", exitCode: 3 })]);
    expect(o.workers[0]!.finishTime).toBeDefined();
    // Start and exit are both announced.
    expect(changes.filter((u) => u === spec.ref.uid).length).toBeGreaterThanOrEqual(2);
  });

  it("reports a successful worker as Succeeded and serves its log", async () => {
    const rt = newRuntime();
    const spec = gang(["sh", "-c", "echo hi"]);
    await rt.start(spec);
    const o = await finished(rt, spec.ref);
    expect(o.workers[0]).toMatchObject({ state: "Succeeded", exitCode: 0 });
    expect(await readAll(await rt.logs(spec.ref, { worker: 0 }))).toBe("hi\n");
    expect(await readAll(await rt.logs(spec.ref, { worker: 0, attempt: 1, follow: true }))).toBe("hi\n");
    expect(await readAll(await rt.logs(spec.ref, { worker: 1 }))).toBe("");
  });

  it("runs the command without a shell, passing arguments verbatim", async () => {
    const rt = newRuntime();
    const spec = gang(["printf", "%s|", "a b", "$HOME", "*"]);
    await rt.start(spec);
    await finished(rt, spec.ref);
    expect(await readAll(await rt.logs(spec.ref, { worker: 0 }))).toBe("a b|$HOME|*|");
  });

  it("sets LOOM_WORKLOAD_DIR, CUDA_VISIBLE_DEVICES and the job's env", async () => {
    const rt = newRuntime();
    const spec = gang(
      ["sh", "-c", 'echo "$LOOM_WORKLOAD_DIR"; echo "$CUDA_VISIBLE_DEVICES"; echo "$FOO"; pwd'],
      {
        gpus: ["1", "3"],
        env: { FOO: "bar" },
      },
    );
    await rt.start(spec);
    const o = await finished(rt, spec.ref);
    expect(o.workers[0]!.state).toBe("Succeeded");
    const [dir, cuda, foo, cwd] = (await readAll(await rt.logs(spec.ref, { worker: 0 }))).split("\n");
    expect(dir).toBe(join(dataDir, "workloads", spec.ref.uid, "work"));
    expect(existsSync(dir!)).toBe(true);
    expect(cuda).toBe("1,3");
    expect(foo).toBe("bar");
    expect(cwd).toBe(dir);
  });

  it("sets CUDA_VISIBLE_DEVICES empty when no GPU is allocated", async () => {
    const rt = newRuntime();
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
    const spec = gang(["sh", "-c", 'echo "[${CUDA_VISIBLE_DEVICES-unset}]"']);
    await rt.start(spec);
    await finished(rt, spec.ref);
    expect(await readAll(await rt.logs(spec.ref, { worker: 0 }))).toBe("[]\n");
  });

  it("wakes the job for each new checkpoint (loom.json) of a running worker", async () => {
    const rt = newRuntime();
    // The step each change announced, as the job's loop would observe it then.
    const seen: (number | undefined)[] = [];
    rt.onChange((ref) => void rt.observe(ref).then((o) => seen.push(o?.checkpoint?.step)));
    // At each go from the test it checkpoints (step 5, then 10), and keeps running: only a wake-up
    // for the checkpoint itself can tell the job (no exit comes).
    const at = (go: string, step: number) =>
      `until [ -e "$LOOM_CHECKPOINT_DIR/${go}" ]; do sleep 0.05; done; echo '{"step": ${step}}' > "$LOOM_CHECKPOINT_DIR/t" && mv "$LOOM_CHECKPOINT_DIR/t" "$LOOM_CHECKPOINT_DIR/loom.json"`;
    const spec = gang(["sh", "-c", `${at("go1", 5)}; ${at("go2", 10)}; exec sleep 30`]);
    const go = (name: string) =>
      writeFileSync(join(dataDir, "workloads", spec.ref.uid, "checkpoint", name), "");
    await rt.start(spec);
    go("go1");
    await until(() => seen.includes(5));
    go("go2");
    await until(() => seen.includes(10));
    expect((await rt.observe(spec.ref))?.workers[0]?.state).toBe("Running");
  });

  it("stop() sends SIGTERM and returns true once the worker is gone", async () => {
    const rt = newRuntime();
    const spec = gang(["sh", "-c", "echo ready; exec sleep 30"]);
    await rt.start(spec);
    // Signal only once the worker runs (a SIGTERM before the shim's trap leaves no exit code).
    await until(async () => (await readAll(await rt.logs(spec.ref, { worker: 0 }))) === "ready\n");
    const pid = (await rt.observe(spec.ref))!.workers[0]!.pid!;
    expect(alive(pid)).toBe(true);
    expect(await rt.stop(spec.ref, 1)).toBe(false);
    expect((await rt.observe(spec.ref))!.stopping).toBe(true);
    const started = Date.now();
    await until(() => rt.stop(spec.ref, 1));
    // SIGTERM was enough: no need to wait for the grace period.
    expect(Date.now() - started).toBeLessThan(900);
    const o = (await rt.observe(spec.ref))!;
    expect(o.stopping).toBe(false);
    expect(o.workers[0]).toMatchObject({ state: "Failed", exitCode: 143, signal: "SIGTERM" });
    expect(alive(pid)).toBe(false);
  });

  it("stop() SIGKILLs a worker that ignores SIGTERM once the grace period is over", async () => {
    const rt = newRuntime();
    const spec = gang(["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"]);
    await rt.start(spec);
    // Signal only once the trap is in place.
    await until(async () => (await readAll(await rt.logs(spec.ref, { worker: 0 }))) === "ready\n");
    const pid = (await rt.observe(spec.ref))!.workers[0]!.pid!;
    const started = Date.now();
    expect(await rt.stop(spec.ref, 1)).toBe(false);
    await new Promise((r) => setTimeout(r, 300));
    // Still alive during the grace period.
    expect(await rt.stop(spec.ref, 1)).toBe(false);
    expect(alive(pid)).toBe(true);
    await until(() => rt.stop(spec.ref, 1), 5000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(alive(pid)).toBe(false);
    const o = (await rt.observe(spec.ref))!;
    expect(o.workers[0]).toMatchObject({ state: "Failed", signal: "SIGKILL" });
  });

  it("stop() of an unknown or finished workload returns true", async () => {
    const rt = newRuntime();
    expect(await rt.stop({ kind: "TrainingJob", project: "default", name: "x", uid: randomUUID() }, 1)).toBe(
      true,
    );
    const spec = gang(["true"]);
    await rt.start(spec);
    await finished(rt, spec.ref);
    expect(await rt.stop(spec.ref, 1)).toBe(true);
  });

  it("re-adopts running workers after a restart and records their exit", async () => {
    const rt1 = newRuntime();
    const spec = gang(["sleep", "1.5"]);
    await rt1.start(spec);
    const pid = (await rt1.observe(spec.ref))!.workers[0]!.pid!;
    await rt1.close();
    closed.add(rt1);
    expect(alive(pid)).toBe(true);

    const rt2 = newRuntime();
    expect(await rt2.list()).toEqual([spec.ref]);
    const o = (await rt2.observe(spec.ref))!;
    expect(o.workers[0]).toMatchObject({ state: "Running", pid });
    expect(alive(pid)).toBe(true);
    const done = await until(async () => {
      const x = await rt2.observe(spec.ref);
      return x && x.workers[0]?.state !== "Running" ? x : undefined;
    }, 5000);
    expect(done.workers[0]).toMatchObject({ state: "Succeeded", exitCode: 0, pid });
  });

  it("after a restart, knows the exit code of a worker that ended while it was down", async () => {
    const rt1 = newRuntime();
    const spec = gang(["sh", "-c", "sleep 0.3; exit 7"]);
    await rt1.start(spec);
    await rt1.close();
    closed.add(rt1);
    await new Promise((r) => setTimeout(r, 700));
    const rt2 = newRuntime();
    const o = (await rt2.observe(spec.ref))!;
    expect(o.workers[0]).toMatchObject({ state: "Failed", exitCode: 7 });
  });

  it("kills a process of this instance that no state accounts for", async () => {
    const stray = spawn("sleep", ["30"], {
      detached: true,
      stdio: "ignore",
      env: { ...process.env, LOOM_INSTANCE: instanceId, LOOM_WORKER_KEY: "x/1/0" },
    });
    strays.push(stray);
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      stray.on("exit", (_code, signal) => resolve(signal)),
    );
    // Another installation's process must be left alone.
    const other = spawn("sleep", ["30"], {
      detached: true,
      stdio: "ignore",
      env: { ...process.env, LOOM_INSTANCE: `${instanceId}-other`, LOOM_WORKER_KEY: "x/1/0" },
    });
    strays.push(other);
    await until(() => findProcessesByEnv("LOOM_INSTANCE", instanceId).length === 1);
    newRuntime();
    expect(await exited).toBe("SIGKILL");
    expect(other.pid !== undefined && alive(other.pid)).toBe(true);
  });

  it("kills the workers of an earlier installation on this data dir, whose state was deleted", async () => {
    const rt1 = newRuntime();
    const spec = gang(["sleep", "30"]);
    await rt1.start(spec);
    const pid = (await rt1.observe(spec.ref))!.workers[0]!.pid!;
    await rt1.close();
    closed.add(rt1);
    // The data dir deleted under the running worker and made anew: a new installation there.
    // (Moved aside, not removed: a write of the closed runtime may still land in it.)
    const gone = `${dataDir}-gone`;
    renameSync(dataDir, gone);
    mkdirSync(dataDir);
    const first = instanceId;
    instanceId = `test-${randomUUID()}`;
    try {
      const rt2 = newRuntime();
      expect(await rt2.list()).toEqual([]);
      await until(() => !alive(pid));
    } finally {
      for (const p of findProcessesByEnv("LOOM_INSTANCE", first)) process.kill(p.pid, "SIGKILL");
      rmSync(gone, { recursive: true, force: true, maxRetries: 10 });
    }
  });

  it("treats a second start() of the same attempt as a no-op", async () => {
    const rt = newRuntime();
    const spec = gang(["sh", "-c", "echo started; sleep 30"]);
    await rt.start(spec);
    const pid = (await rt.observe(spec.ref))!.workers[0]!.pid;
    await rt.start(spec);
    await rt.start({ ...spec, attempt: 0 });
    expect((await rt.observe(spec.ref))!.workers[0]!.pid).toBe(pid);
    const leaders = findProcessesByEnv("LOOM_INSTANCE", instanceId).filter((p) => pgidOf(p.pid) === p.pid);
    expect(leaders.map((p) => p.pid)).toEqual([pid]);
    await until(async () => (await readAll(await rt.logs(spec.ref, { worker: 0 }))) !== "");
    expect(await readAll(await rt.logs(spec.ref, { worker: 0 }))).toBe("started\n");
  });

  it("refuses a new attempt while the previous one has live workers, and starts it once stopped", async () => {
    const rt = newRuntime();
    const spec = gang(["sleep", "30"]);
    await rt.start(spec);
    const next = { ...gang(["sh", "-c", "echo two"], { ref: spec.ref, attempt: 2 }) };
    await expect(rt.start(next)).rejects.toThrow(/still has live workers/);
    await until(() => rt.stop(spec.ref, 0));
    await rt.start(next);
    const o = await finished(rt, spec.ref);
    expect(o.attempt).toBe(2);
    expect(o.workers[0]!.state).toBe("Succeeded");
    expect(await readAll(await rt.logs(spec.ref, { worker: 0 }))).toBe("two\n");
    expect(await readAll(await rt.logs(spec.ref, { worker: 0, attempt: 1 }))).not.toContain("two");
  });

  it("release() kills live workers and removes the workload directory", async () => {
    const rt = newRuntime();
    const spec = gang(["sleep", "30"]);
    await rt.start(spec);
    const pid = (await rt.observe(spec.ref))!.workers[0]!.pid!;
    const dir = join(dataDir, "workloads", spec.ref.uid);
    expect(existsSync(join(dir, "state.json"))).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, "state.json"), "utf8")).attempt).toBe(1);
    await rt.release(spec.ref);
    expect(existsSync(dir)).toBe(false);
    expect(await rt.observe(spec.ref)).toBeUndefined();
    expect(await rt.list()).toEqual([]);
    await until(() => !alive(pid));
  });

  it("release() of a live workload leaves nothing behind once the worker has exited", async () => {
    const rt = newRuntime();
    const spec = gang(["sleep", "30"]);
    await rt.start(spec);
    const pid = (await rt.observe(spec.ref))!.workers[0]!.pid!;
    await rt.release(spec.ref);
    await until(() => !alive(pid));
    await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(join(dataDir, "workloads", spec.ref.uid))).toBe(false);
    expect(await newRuntime().list()).toEqual([]);
  });
});

function pgidOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
  } catch {
    return undefined;
  }
}

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findProcessesByEnv } from "../src/platforms/embedded/procfs.js";
import { type Job, LoomProcess, ROOT } from "./helpers.js";

/**
 * Distributed training on the embedded platform with real PyTorch (Debian's python3-torch, CPU):
 * examples/pretrain on 2 DDP workers, a killed worker, a reclaim, a hung gang.
 */

const MANIFEST = readFileSync(join(ROOT, "examples/pretrain/pretrain.yaml"), "utf8");

/**
 * A job a test interrupts waits before its last step until the test lets it finish (`release`):
 * it cannot end before the test is done with it, however slow the machine. A fixed length could
 * (CI, loaded: the elastic job ran its 400 steps out before the test's reclaim came).
 */
const HELD = ["--hold-file", "go"];

/** Lets a job started with HELD take its last step. */
function release(loom: LoomProcess, job: Job): void {
  writeFileSync(join(loom.dataDir, "workloads", job.metadata.uid, "checkpoint", "go"), "");
}

/**
 * The example's arguments with a pause per step, so the test interrupts it mid-run (kill a worker,
 * preempt it) however fast the machine computes (with OpenBLAS a step takes ~0.04 s of CPU; 140
 * steps were then gone in 6 s), and HELD. Neither changes a result: the final loss is the
 * uninterrupted run's.
 */
const INTERRUPTIBLE = ["--steps", "200", "--checkpoint-every", "20", "--step-sleep", "0.05", ...HELD];

/** The example's manifest under another name, with other training arguments. */
function pretrain(name: string, args?: string[], project = "default"): string {
  let m = MANIFEST.replace(/^ {2}name: pretrain$/m, `  name: ${name}\n  project: ${project}`);
  if (args)
    m = m.replace(
      /^ {2}command: .*$/m,
      `  command: ${JSON.stringify(["python3", "examples/pretrain/train.py", ...args])}`,
    );
  return m;
}

function finalLoss(log: string): number {
  const m = /FINAL step=\d+ loss=([\d.]+)/.exec(log);
  if (!m) throw new Error(`no FINAL line in:\n${log.slice(-2000)}`);
  return Number(m[1]);
}

/**
 * Every process of a workload, by attempt, as seen from /proc every 20 ms: when each attempt's
 * first process appeared and its last one was last seen alive.
 */
class AttemptWatcher {
  readonly seen = new Map<number, { first: number; last: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly uid: string) {}

  start(): void {
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const p of findProcessesByEnv("LOOM_WORKLOAD_UID", this.uid)) {
        const attempt = Number(p.env.get("LOOM_ATTEMPT"));
        const s = this.seen.get(attempt) ?? { first: now, last: now };
        s.last = now;
        this.seen.set(attempt, s);
      }
    }, 20);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Pairs of attempts whose processes were alive at the same time. */
  overlaps(): string[] {
    const out: string[] = [];
    const attempts = [...this.seen.keys()].sort((a, b) => a - b);
    for (let i = 1; i < attempts.length; i++) {
      const prev = this.seen.get(attempts[i - 1]!)!;
      const next = this.seen.get(attempts[i]!)!;
      if (next.first <= prev.last) out.push(`attempt ${attempts[i]} started while ${attempts[i - 1]} ran`);
    }
    return out;
  }
}

describe("examples/pretrain: PyTorch DDP on 2 workers (embedded)", () => {
  const loom = new LoomProcess(["--gpus", "2"]);
  let uninterrupted = 0;
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());

  it("runs the example as written to Succeeded, reporting checkpoints and READY 2/2", async () => {
    const apply = await loom.cli(["apply", "-f", "examples/pretrain/pretrain.yaml"]);
    expect(apply.code, apply.stderr).toBe(0);
    const running = await loom.waitFor("pretrain", (j) => j.status?.ready === "2/2", 120_000);
    const list = await loom.cli(["get", "tj", "pretrain"]);
    expect(list.stdout).toMatch(/NAME\s+PHASE\s+READY\s+ATTEMPT\s+REASON\s+AGE/);
    expect(list.stdout).toMatch(/pretrain\s+Running\s+2\/2\s+1\s+Started\s+\d+s/);
    expect(running.status?.workers?.map((w) => w.state)).toEqual(["Running", "Running"]);
    const done = await loom.waitFor(
      "pretrain",
      (j) => j.status?.phase !== "Running" && j.status?.phase !== "Pending",
      400_000,
    );
    expect(done.status?.phase, JSON.stringify(done.status)).toBe("Succeeded");
    expect(done.status?.attempts).toBe(1);
    expect(done.status?.checkpoint?.step).toBe(200);
    // Every worker's lines, prefixed; rank 0 prints the progress, both ranks exit 0.
    const logs = (await loom.cli(["logs", "tj/pretrain"])).stdout;
    expect(logs).toMatch(/^\[worker 0\] world 2, /m);
    uninterrupted = finalLoss(logs);
    const first = Number(/\[worker 0\] step 5 loss ([\d.]+)/.exec(logs)?.[1]);
    expect(uninterrupted).toBeLessThan(first * 0.5); // it learns: 3.4 → about 1.1
  }, 500_000);

  it("a killed worker restarts the gang from the last checkpoint, never overlapping, to the same loss", async () => {
    expect(uninterrupted).toBeGreaterThan(0);
    expect((await loom.cli(["apply", "-f", "-"], { input: pretrain("fault", INTERRUPTIBLE) })).code).toBe(0);
    const started = await loom.waitFor("fault", (j) => j.status?.ready === "2/2", 120_000);
    const watcher = new AttemptWatcher(started.metadata.uid);
    watcher.start();
    try {
      // Kill worker 1 (its whole process group, as the OOM killer or a lost node would) mid-run.
      const at = await loom.waitFor("fault", (j) => (j.status?.checkpoint?.step ?? 0) >= 60, 300_000);
      const pid = at.status!.workers![1]!.pid!;
      process.kill(-pid, "SIGKILL");
      release(loom, await loom.waitFor("fault", (j) => (j.status?.attempts ?? 0) >= 2, 120_000));
      const done = await loom.waitFor(
        "fault",
        (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
        400_000,
      );
      expect(done.status?.phase, JSON.stringify(done.status)).toBe("Succeeded");
      expect(done.status?.attempts).toBe(2);
      expect(done.status?.restarts).toBe(1);
      const second = (await loom.cli(["logs", "tj/fault", "--worker", "0"])).stdout;
      const resumed = Number(/resumed from step (\d+)/.exec(second)?.[1]);
      expect(resumed).toBeGreaterThanOrEqual(60);
      const loss = finalLoss(second);
      console.log(
        `fault injection: uninterrupted FINAL loss ${uninterrupted}, killed at checkpoint ${at.status?.checkpoint?.step} and resumed from step ${resumed}: FINAL loss ${loss}`,
      );
      expect(Math.abs(loss - uninterrupted) / uninterrupted).toBeLessThan(0.01);
      const events = (await loom.cli(["describe", "tj", "fault"])).stdout;
      expect(events).toMatch(/worker 1 was killed by SIGKILL .* restarting the gang/);
    } finally {
      watcher.stop();
    }
    expect([...watcher.seen.keys()].sort()).toEqual([1, 2]);
    expect(watcher.overlaps()).toEqual([]);
    const [a1, a2] = [watcher.seen.get(1)!, watcher.seen.get(2)!];
    console.log(`attempt 1 last seen alive ${a2.first - a1.last} ms before attempt 2's first process`);
  }, 800_000);

  it("a job preempted by reclaim checkpoints on SIGTERM and resumes from that very step", async () => {
    const projects =
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: borrower}\n---\n" +
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: owner}\nspec: {quota: {gpu: 2}}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: projects })).code).toBe(0);
    // The borrower has no quota: it runs on the owner's idle GPUs until the owner wants them.
    const job = pretrain("borrowed", INTERRUPTIBLE, "borrower").replace(
      "resources: {cpu: 1, memory: 1Gi}",
      "resources: {cpu: 1, memory: 1Gi, gpu: 1}",
    );
    expect((await loom.cli(["apply", "-f", "-"], { input: job })).code).toBe(0);
    await loom.waitFor("borrowed", (j) => (j.status?.checkpoint?.step ?? 0) >= 40, 300_000, "borrower");
    const owner =
      "apiVersion: loom.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: mine, project: owner}\n" +
      'spec: {command: [sleep, "2"], resources: {gpu: 2}}\n';
    expect((await loom.cli(["apply", "-f", "-"], { input: owner })).code).toBe(0);
    await loom.waitFor("mine", (j) => j.status?.phase === "Succeeded", 120_000, "owner");
    release(loom, await loom.job("borrowed", "borrower"));
    const done = await loom.waitFor(
      "borrowed",
      (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
      400_000,
      "borrower",
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.preemptions).toBe(1);
    expect(done.status?.restarts ?? 0).toBe(0);
    const before = (
      await loom.cli(["logs", "tj/borrowed", "-p", "borrower", "--worker", "0", "--attempt", "1"])
    ).stdout;
    const after = (
      await loom.cli(["logs", "tj/borrowed", "-p", "borrower", "--worker", "0", "--attempt", "2"])
    ).stdout;
    const stoppedAt = Number(/checkpointed at step (\d+) on SIGTERM/.exec(before)?.[1]);
    const lastLogged = Math.max(...[...before.matchAll(/^step (\d+) loss/gm)].map((m) => Number(m[1])));
    const resumedAt = Number(/resumed from step (\d+)/.exec(after)?.[1]);
    // The attempt's own words when it did not checkpoint on SIGTERM (seen once in CI, not reproduced).
    expect(
      stoppedAt,
      `attempt 1 log tail:\n${before.slice(-2000)}\nattempt 2 log head:\n${after.slice(0, 500)}`,
    ).toBeGreaterThanOrEqual(40);
    console.log(
      `reclaim: attempt 1 logged step ${lastLogged}, checkpointed at step ${stoppedAt} on SIGTERM; attempt 2 resumed from step ${resumedAt}`,
    );
    expect(resumedAt).toBe(stoppedAt);
    // Lost work: steps done before the stop that the next attempt must do again. At most one
    // checkpoint interval (20); with the SIGTERM checkpoint it is none.
    expect(lastLogged - resumedAt).toBeLessThanOrEqual(0);
    expect(Math.abs(finalLoss(after) - uninterrupted) / uninterrupted).toBeLessThan(0.01);
  }, 800_000);
});

describe("self-healing without PyTorch (embedded)", () => {
  const loom = new LoomProcess();
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());

  it("a hung worker (sleeps forever, silent) is caught by progressTimeout and the gang restarts", async () => {
    const job = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: hung}
spec:
  workers: 2
  command: ["sh", "-c", "echo up $LOOM_WORKER_INDEX; if [ $LOOM_ATTEMPT = 1 ] && [ $LOOM_WORKER_INDEX = 1 ]; then exec sleep 3600; fi; sleep 1; echo done"]
  progressTimeout: 3s
  terminationGracePeriodSeconds: 1
  failurePolicy: {maxRestarts: 1}
`;
    expect((await loom.cli(["apply", "-f", "-"], { input: job })).code).toBe(0);
    const done = await loom.waitFor(
      "hung",
      (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
      60_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.attempts).toBe(2);
    const describe = (await loom.cli(["describe", "tj", "hung"])).stdout;
    expect(describe).toMatch(
      /no worker wrote a log line or heartbeat for \ds \(spec.progressTimeout is 3s\)/,
    );
  }, 90_000);

  it("failurePolicy.rules: exit 2 fails at once; SIGKILL restarts without using a restart", async () => {
    const usage = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: usage}
spec:
  workers: 2
  command: ["sh", "-c", "if [ $LOOM_WORKER_INDEX = 1 ]; then exit 2; fi; sleep 30"]
  terminationGracePeriodSeconds: 1
  failurePolicy: {maxRestarts: 5, rules: [{exitCodes: [2], action: Fail}]}
`;
    expect((await loom.cli(["apply", "-f", "-"], { input: usage })).code).toBe(0);
    const failed = await loom.waitFor("usage", (j) => j.status?.phase === "Failed", 30_000);
    expect(failed.status?.attempts).toBe(1);
    const cond = failed.status?.conditions?.find((c) => c.type === "Failed");
    expect(cond?.reason).toBe("FailurePolicyRule");
    expect(cond?.message).toMatch(/worker 1 exited with code 2 on attempt 1; a failurePolicy rule says Fail/);
    // The other worker is stopped too: nothing of the job keeps running.
    await loom.waitFor(
      "usage",
      (j) => j.status?.workers?.every((w) => w.state !== "Running") ?? false,
      30_000,
    );

    const oom = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: oom}
spec:
  command: ["sh", "-c", "if [ $LOOM_ATTEMPT -lt 3 ]; then kill -KILL $$; fi; echo fine"]
  failurePolicy: {maxRestarts: 0, rules: [{signals: [SIGKILL], action: RestartWithoutCounting}]}
`;
    expect((await loom.cli(["apply", "-f", "-"], { input: oom })).code).toBe(0);
    const ok = await loom.waitFor(
      "oom",
      (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
      30_000,
    );
    expect(ok.status?.phase).toBe("Succeeded");
    expect(ok.status?.attempts).toBe(3);
    expect(ok.status?.restarts ?? 0).toBe(0);
  }, 90_000);
});

describe("elastic workers {min: 1, max: 2} (embedded, 2 virtual GPUs)", () => {
  const loom = new LoomProcess(["--gpus", "2"]);
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());

  it("starts with what fits, grows when a GPU frees, shrinks on reclaim, resuming from checkpoints", async () => {
    const projects =
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: borrower}\n---\n" +
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: owner}\nspec: {quota: {gpu: 2}}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: projects })).code).toBe(0);
    const gpuJob = (name: string, seconds: number) =>
      `apiVersion: loom.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: ${name}, project: owner}\nspec: {command: [sleep, "${seconds}"], resources: {gpu: 1}}\n`;
    // One of the two GPUs is taken until the test deletes the blocker: a timed blocker could end
    // before the elastic job is admitted on a slow machine, and the job would start with 2.
    expect((await loom.cli(["apply", "-f", "-"], { input: gpuJob("blocker", 3600) })).code).toBe(0);
    await loom.waitFor("blocker", (j) => j.status?.ready === "1/1", 30_000, "owner");

    const elastic = pretrain(
      "elastic",
      ["--steps", "400", "--checkpoint-every", "10", "--step-sleep", "0.05", ...HELD],
      "borrower",
    )
      .replace("workers: 2", "workers: {min: 1, max: 2}")
      .replace("resources: {cpu: 1, memory: 1Gi}", "resources: {cpu: 500m, memory: 1Gi, gpu: 1}")
      .replace("terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 20");
    expect((await loom.cli(["apply", "-f", "-"], { input: elastic })).code).toBe(0);
    const one = await loom.waitFor("elastic", (j) => j.status?.ready === "1/1", 120_000, "borrower");
    expect(one.status?.attempts).toBe(1);

    // Once attempt 1 has a checkpoint, the blocker ends: the job grows to 2 workers, from it.
    await loom.waitFor("elastic", (j) => (j.status?.checkpoint?.step ?? 0) > 0, 120_000, "borrower");
    expect((await loom.cli(["delete", "tj", "blocker", "-p", "owner"])).code).toBe(0);
    const two = await loom.waitFor(
      "elastic",
      (j) => (j.status?.attempts ?? 0) >= 2 && j.status?.ready === "2/2",
      120_000,
      "borrower",
    );
    const grown = two.status!.attempts!;
    // Let the 2-worker attempt resume before the owner comes back (its SIGTERM then checkpoints):
    // its log, not a new checkpoint, since a held job may have no step left before its last.
    await loom.waitForLog("elastic", /^resumed from step \d+/m, {
      project: "borrower",
      worker: 0,
      attempt: grown,
    });
    // The owner takes one GPU back (within its quota): the job comes back with one worker.
    expect((await loom.cli(["apply", "-f", "-"], { input: gpuJob("mine", 10) })).code).toBe(0);
    await loom.waitFor("mine", (j) => j.status?.ready === "1/1", 120_000, "owner");
    const shrunk = await loom.waitFor(
      "elastic",
      (j) => (j.status?.attempts ?? 0) > grown && j.status?.ready === "1/1",
      120_000,
      "borrower",
    );
    expect(shrunk.status?.preemptions).toBe(1);
    release(loom, shrunk);
    const done = await loom.waitFor(
      "elastic",
      (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
      600_000,
      "borrower",
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.restarts ?? 0).toBe(0); // resizes and preemptions are not failures
    // Each attempt's world size, and each later attempt resumed from a checkpoint.
    const worlds: number[] = [];
    for (let a = 1; a <= done.status!.attempts!; a++) {
      const log = (
        await loom.cli(["logs", "tj/elastic", "-p", "borrower", "--worker", "0", "--attempt", String(a)])
      ).stdout;
      worlds.push(Number(/^world (\d+),/m.exec(log)?.[1]));
      if (a > 1) expect(log, `attempt ${a}`).toMatch(/resumed from step \d+/);
    }
    console.log(`elastic: world size per attempt ${worlds.join(", ")}`);
    expect(worlds.slice(0, 3)).toEqual([1, 2, 1]);
    const events = (await loom.cli(["describe", "tj", "elastic", "-p", "borrower"])).stdout;
    expect(events).toMatch(/growing to 2 workers/);
  }, 900_000);
});

import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, until as waitUntil } from "./helpers.js";
import { operatorCluster, ownState, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * Failover across fleet members for real (issue 23). An embedded control plane (`loom up`, the
 * `self` member, real worker processes) and one private kwok cluster `b` with its own `loom
 * operator`. kwok pods run nothing, so the job's checkpoints are written where it really runs: it
 * starts in `self`, is preempted into `b` (self is full), then `b`'s kube-apiserver is stopped
 * (SIGSTOP: unreachable with its state kept, so that it can come back) → after clusterLostTimeout
 * (10 s here, 30 s by default; the member fences its copy after half of it) the job is admitted to `self` again and resumes from the step it
 * checkpointed; when `b`'s API server comes back (SIGCONT) the stale copy there is deleted. The
 * workers' own marker files (pid, start, last beat) show that no two ran at once.
 */
describe("fleet failover: a lost member's job resumes elsewhere from its checkpoint, never twice", () => {
  const cp = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-failover-"));
  const state = ownState("failover-b");
  let b: TestCluster;
  let operator: ReturnType<typeof startOperator>;
  let apiserverPid = 0;
  let stopped = false;
  // biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
  type Obj = Record<string, any>;

  const until = <T>(what: string, probe: () => Promise<T | undefined>) =>
    waitUntil(what, probe, {
      ms: 120_000,
      every: 500,
      context: async () => `${JSON.stringify((await job("train"))?.status)}\n${cp.log.slice(-3000)}`,
    });
  const job = async (name: string): Promise<Obj | undefined> => {
    const r = await cp.cli(["get", "tj", name, "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };
  const inB = (name: string) =>
    b.kubectl(["get", "trainingjobs.loom.dev", name, "-n", "loom-default", "-o", "json"]);

  // A worker that counts steps, checkpoints every 5 (and on SIGTERM) to $LOOM_CHECKPOINT_DIR/loom.json,
  // resumes from it, and keeps a marker file of its own: "START LAST_BEAT" (epoch seconds).
  const worker = `
import json, os, signal, sys, time
d = os.environ["LOOM_CHECKPOINT_DIR"]
marks = os.path.join(d, "markers"); os.makedirs(marks, exist_ok=True)
ckpt = os.path.join(d, "loom.json")
step = json.load(open(ckpt))["step"] if os.path.exists(ckpt) else 0
print(f"resuming from step {step}" if step else "starting at step 0", flush=True)
start = time.time()
mark = os.path.join(marks, f"{os.getpid()}-{time.time_ns()}")
stop = False
def on_term(_s, _f):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
def save():
    with open(ckpt + ".tmp", "w") as f: f.write(json.dumps({"step": step}))
    os.replace(ckpt + ".tmp", ckpt)
while True:
    with open(mark, "w") as f: f.write(f"{start} {time.time()}")
    if stop:
        save(); print(f"stopped at step {step}", flush=True); sys.exit(143)
    time.sleep(0.2); step += 1
    if step % 5 == 0: save()
`;
  const trainJob = JSON.stringify({
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name: "train" },
    spec: { command: ["python3", "-u", "-c", worker], resources: { cpu: 1, memory: "256Mi" } },
  });
  // Fills `self` (only there) and outranks train: train is preempted and the queue moves it to b.
  const hogJob = JSON.stringify({
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name: "hog" },
    spec: {
      command: ["sleep", "3600"],
      priority: 10,
      clusters: ["self"],
      resources: { cpu: 2, memory: "256Mi" },
    },
  });

  const memberYaml = (unschedulable: boolean) => {
    const file = join(dir, `b-${unschedulable}.yaml`);
    writeFileSync(
      file,
      `apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: b}\nspec: {clusterLostTimeout: 10s, unschedulable: ${unschedulable}}\n`,
    );
    return file;
  };

  beforeAll(async () => {
    const own = operatorCluster("failover-b", { nodes: 1 });
    b = own.cluster;
    operator = startOperator(own.operatorKubeconfig);
    await operator.ready;
    const pids = readFileSync(join(state, "pids"), "utf8");
    apiserverPid = Number(/^kube-apiserver\s+(\d+)/m.exec(pids)?.[1]);
    expect(apiserverPid).toBeGreaterThan(0);
    await cp.start();
    // b takes no work at first (self is tried first anyway): train starts in self, where it really runs.
    const r = await cp.cli(["apply", "-f", memberYaml(true), "--kubeconfig-file", b.kubeconfig]);
    expect(r.code, r.stderr).toBe(0);
    await until("b Ready", async () => {
      const out = (await cp.cli(["get", "clusters"])).stdout;
      return /^b\s+Ready/m.test(out) && /^self\s+Ready/m.test(out) ? true : undefined;
    });
  }, 600_000);

  afterAll(async () => {
    if (stopped) process.kill(apiserverPid, "SIGCONT");
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    await operator?.stop();
  });

  it("runs in self, moves to b, resumes in self from its checkpoint when b is lost; b's copy is deleted when it returns", async () => {
    const started = Date.now();
    expect((await cp.cli(["apply", "-f", "-"], { input: trainJob })).code).toBe(0);
    const first = await until("train Running in self", async () => {
      const j = await job("train");
      return j?.status?.phase === "Running" && !j.status.admission?.cluster && j.status.checkpoint?.step >= 10
        ? j
        : undefined;
    });
    const ckptDir = join(cp.dataDir, "workloads", first.metadata.uid, "checkpoint");
    expect(existsSync(join(ckptDir, "loom.json"))).toBe(true);

    // b takes work (the same file re-applied without --kubeconfig-file keeps its secret); self is filled by a job that outranks train: train checkpoints on SIGTERM
    // and the queue places it in b.
    const m = await cp.cli(["apply", "-f", memberYaml(false)]);
    expect(m.code, m.stderr).toBe(0);
    const h = await cp.cli(["apply", "-f", "-"], { input: hogJob });
    expect(h.code, h.stderr).toBe(0);
    await until("train placed in b", async () => {
      const j = await job("train");
      return j?.status?.admission?.cluster === "b" && j.status.phase === "Running" ? j : undefined;
    });
    expect(inB("train").code).toBe(0);
    // b counts its attempts from 1; the control plane shows them after the one made in self.
    await until("b's attempt counted after self's", async () =>
      (await job("train"))?.status?.attempts === first.status.attempts + 1 ? true : undefined,
    );
    const early = await cp.cli(["logs", "train", "--attempt", String(first.status.attempts)]);
    expect(early.stderr).toMatch(/ran before the job was placed in this member cluster/);
    const stepAtMove = JSON.parse(readFileSync(join(ckptDir, "loom.json"), "utf8")).step as number;
    const d = await cp.cli(["delete", "tj", "hog", "--timeout", "60"]);
    expect(d.code, d.stderr).toBe(0);

    // b's API server stops answering: after clusterLostTimeout train is admitted to self again.
    process.kill(apiserverPid, "SIGSTOP");
    stopped = true;
    const lostAt = Date.now();
    const back = await until("train Running in self again", async () => {
      const j = await job("train");
      return j?.status?.phase === "Running" && !j.status.admission?.cluster ? j : undefined;
    });
    const failoverMs = Date.now() - lostAt;
    const resumed = await until("the resumed worker's first line", async () => {
      const out = (await cp.cli(["logs", "train"])).stdout;
      return /resuming from step \d+|starting at step 0/.exec(out)?.[0];
    });
    // The first attempt (in self) checkpointed on SIGTERM; the one after failover starts there.
    const firstLog = (await cp.cli(["logs", "train", "--attempt", String(first.status.attempts)])).stdout;
    const stoppedAt = Number(/stopped at step (\d+)/.exec(firstLog)?.[1]);
    expect(stoppedAt, firstLog).toBe(stepAtMove);
    expect(resumed).toBe(`resuming from step ${stoppedAt}`);
    const described = (await cp.cli(["describe", "tj", "train"])).stdout;
    expect(described).toMatch(/ClusterLost/);
    expect(back.status.conditions.find((c: Obj) => c.type === "Admitted")?.status).toBe("True");
    expect(back.status.attempts).toBe(first.status.attempts + 2); // self, b, self again: none reused

    // b answers again: the copy it kept of train is deleted there; train keeps running in self.
    process.kill(apiserverPid, "SIGCONT");
    stopped = false;
    await until("the stale copy in b deleted", async () => (inB("train").code !== 0 ? true : undefined));
    expect((await job("train"))?.status?.phase).toBe("Running");
    expect((await job("train"))?.status?.admission?.cluster).toBeUndefined();

    // Never two workers at once: the markers' [start, last beat] intervals do not overlap.
    const marks = readdirSync(join(ckptDir, "markers")).map((f) =>
      readFileSync(join(ckptDir, "markers", f), "utf8")
        .split(" ")
        .map(Number),
    );
    expect(marks.length).toBeGreaterThanOrEqual(2);
    marks.sort((x, y) => x[0]! - y[0]!);
    for (let i = 1; i < marks.length; i++) expect(marks[i]![0]).toBeGreaterThan(marks[i - 1]![1]!);
    console.log(
      `fleet failover: b lost → train Running in self in ${failoverMs} ms (clusterLostTimeout 10 s); test ${Date.now() - started} ms`,
    );
  }, 600_000);
});

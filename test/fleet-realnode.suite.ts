import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { operatorCluster, ownState, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * Failover of work that really ran (issue 23): member `b` is a cluster with the machine's real
 * node (test/k8s/node.sh), so the job's worker runs there for real (busybox sh, on this kernel),
 * checkpoints to its claim, and `b`'s operator reports each step (pods/exec of loom.json), which
 * the control plane (`loom up`, the `self` member) pulls (tar through pods/exec) into the job's
 * checkpoint directory. Then `b` is lost as a whole: its API server stops answering (SIGSTOP, its
 * state kept), its kubelet stops (SIGSTOP) and the worker's process dies (SIGKILL: the machine
 * went away). After clusterLostTimeout the job runs in `self` from the synced step. When `b`
 * returns (API server first, then its node) the stale copy is deleted there, and the workers' own
 * marker files show no two ever ran at once.
 */
process.env.LOOM_K8S_REAL_NODE = "1";
const IMAGE = "loom.local/busybox:1";
const ROOT = join(import.meta.dirname, "..");

describe("fleet failover of a member where the work really ran (real node)", () => {
  const cp = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-fleet-real-"));
  const state = ownState("fleet-real");
  const token = `loom-fleet-real-${Date.now()}`;
  let b: TestCluster;
  let operator: ReturnType<typeof startOperator> | undefined;
  const stoppedPids: number[] = [];
  // biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
  type Obj = Record<string, any>;

  async function until<T>(
    what: string,
    probe: () => Promise<T | undefined> | T | undefined,
    tries = 360,
  ): Promise<T> {
    for (let i = 0; i < tries; i++) {
      const v = await probe();
      if (v !== undefined) return v;
      await sleep(500);
    }
    throw new Error(
      `timed out waiting for ${what}: ${JSON.stringify((await job())?.status)}\n${cp.log.slice(-3000)}\n${operator?.log().slice(-2000) ?? ""}`,
    );
  }
  const job = async (): Promise<Obj | undefined> => {
    const r = await cp.cli(["get", "tj", "train", "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };
  const pidOf = (name: string) =>
    Number(new RegExp(`^${name}\\s+(\\d+)`, "m").exec(readFileSync(join(state, "pids"), "utf8"))?.[1]);
  /** The pid of the worker's sh on this machine: the process whose command line carries the token. */
  const workerPid = () => {
    for (const p of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
      try {
        const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8");
        if (cmd.startsWith("sh\0") && cmd.includes(token)) return Number(p);
      } catch {
        // gone meanwhile
      }
    }
    return undefined;
  };

  // Counts steps, checkpoints every 5 (and on SIGTERM) to loom.json, resumes from it, keeps a
  // marker of its own: "START LAST_BEAT" (epoch seconds). busybox sh here; the same script in self.
  const worker = `: ${token}
d="$LOOM_CHECKPOINT_DIR"; mkdir -p "$d/markers"
step=0; [ -f "$d/loom.json" ] && step=$(sed 's/[^0-9]//g' "$d/loom.json")
if [ "$step" -gt 0 ]; then echo "resuming from step $step"; else echo "starting at step 0"; fi
start=$(date +%s); mark="$d/markers/$$-$start"
save() { echo "{\\"step\\": $step}" > "$d/loom.json.tmp" && mv "$d/loom.json.tmp" "$d/loom.json"; }
trap 'save; echo "stopped at step $step"; exit 143' TERM
while true; do
  echo "$start $(date +%s)" > "$mark"
  sleep 0.2; step=$((step+1))
  [ $((step % 5)) -eq 0 ] && save
done`;
  const manifest = (name: string, spec: Obj) =>
    JSON.stringify({ apiVersion: "loom.dev/v1alpha1", kind: "TrainingJob", metadata: { name }, spec });

  beforeAll(async () => {
    const own = operatorCluster("fleet-real", { nodes: 1 });
    b = own.cluster;
    // Only the real node takes work in b (kwok pods run nothing).
    b.kubectl(["cordon", "kwok-node-0"]);
    // The copy's checkpoint claim: a hostPath volume on real-0, so the test reads b's markers
    // even after b is gone.
    const vol = join(state, "fleet-ckpt");
    rmSync(vol, { recursive: true, force: true });
    mkdirSync(vol, { recursive: true });
    chmodSync(vol, 0o777);
    b.kubectl(["create", "namespace", "loom-default"]);
    const pv = {
      apiVersion: "v1",
      kind: "PersistentVolume",
      metadata: { name: "fleet-ckpt" },
      spec: {
        capacity: { storage: "1Gi" },
        accessModes: ["ReadWriteMany"],
        hostPath: { path: vol },
        storageClassName: "",
        claimRef: { namespace: "loom-default", name: "fleet-ckpt" },
      },
    };
    const pvc = {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: "fleet-ckpt", namespace: "loom-default" },
      spec: {
        accessModes: ["ReadWriteMany"],
        storageClassName: "",
        volumeName: "fleet-ckpt",
        resources: { requests: { storage: "1Gi" } },
      },
    };
    for (const o of [pv, pvc])
      expect(b.kubectl(["apply", "-f", "-"], { input: JSON.stringify(o) }).code).toBe(0);
    operator = startOperator(own.operatorKubeconfig);
    await operator.ready;
    await cp.start();
    const member = join(dir, "b.yaml");
    writeFileSync(
      member,
      "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: b}\nspec: {clusterLostTimeout: 5s}\n",
    );
    const r = await cp.cli(["apply", "-f", member, "--kubeconfig-file", b.kubeconfig]);
    expect(r.code, r.stderr).toBe(0);
    await until("b Ready", async () =>
      /^b\s+Ready/m.test((await cp.cli(["get", "clusters"])).stdout) ? true : undefined,
    );
  }, 3_600_000);

  afterAll(async () => {
    for (const pid of stoppedPids.splice(0)) {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // gone
      }
    }
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    await operator?.stop();
    // One real node per machine: handed back for the next suite (test/realnode.e2e.test.ts).
    if (b && process.env.LOOM_TEST_KEEP_CLUSTER !== "1")
      spawnSync("bash", [join(ROOT, "test/k8s/down.sh")], {
        env: { ...process.env, LOOM_K8S_STATE: state },
        stdio: "ignore",
      });
  });

  it("runs on b's real node, its checkpoints synced to the control plane; b lost, it resumes in self from them; back, b's copy is deleted and no two workers ever ran at once", async () => {
    // self is full (a job only it may take), so train goes to b.
    const hog = manifest("hog", {
      command: ["sleep", "3600"],
      priority: 10,
      clusters: ["self"],
      resources: { cpu: 2, memory: "256Mi" },
    });
    expect((await cp.cli(["apply", "-f", "-"], { input: hog })).code).toBe(0);
    await until("hog Running in self", async () => {
      const r = await cp.cli(["get", "tj", "hog", "-o", "json"]);
      return r.code === 0 && JSON.parse(r.stdout).status?.phase === "Running" ? true : undefined;
    });
    const train = manifest("train", {
      image: IMAGE,
      command: ["sh", "-c", worker],
      resources: { cpu: "100m", memory: "64Mi" },
      tolerations: [{ key: "loom.dev/real-node", operator: "Exists" }],
      checkpoint: { claimName: "fleet-ckpt" },
      terminationGracePeriodSeconds: 5,
    });
    expect((await cp.cli(["apply", "-f", "-"], { input: train })).code).toBe(0);
    const placed = await until("train Running in b", async () => {
      const j = await job();
      return j?.status?.admission?.cluster === "b" && j.status.phase === "Running" ? j : undefined;
    });
    const pods = JSON.parse(
      b.kubectl(["get", "pods", "-n", "loom-default", "-l", "loom.dev/workload=train", "-o", "json"]).stdout,
    ) as { items: Obj[] };
    expect(pods.items.map((p) => p.spec.nodeName)).toEqual(["real-0"]);
    // b's operator reports the step (status.checkpoint), the mirror brings it here and the
    // control plane pulls the files into the job's own checkpoint directory.
    const ckptDir = join(cp.dataDir, "workloads", placed.metadata.uid, "checkpoint");
    const synced = await until("a checkpoint of step ≥ 15 synced from b", async () => {
      const j = await job();
      try {
        const step = JSON.parse(readFileSync(join(ckptDir, "loom.json"), "utf8")).step as number;
        return j?.status?.checkpoint?.step >= 15 && step >= 15 ? step : undefined;
      } catch {
        return undefined;
      }
    });
    expect(readdirSync(join(ckptDir, "markers")).length).toBeGreaterThan(0);

    // b is lost as a whole: API server and kubelet stop, the worker's process dies with its machine.
    expect((await cp.cli(["delete", "tj", "hog", "--timeout", "60"])).code).toBe(0);
    const pid = workerPid();
    expect(pid, "the worker's process on this machine").toBeGreaterThan(0);
    for (const name of ["kube-apiserver", "kubelet"]) {
      const p = pidOf(name);
      process.kill(p, "SIGSTOP");
      stoppedPids.push(p);
    }
    process.kill(pid!, "SIGKILL");
    const lostAt = Date.now();
    const lastSynced = JSON.parse(readFileSync(join(ckptDir, "loom.json"), "utf8")).step as number;
    expect(lastSynced).toBeGreaterThanOrEqual(synced);
    await until("train Running in self", async () => {
      const j = await job();
      return j?.status?.phase === "Running" && !j.status.admission?.cluster ? j : undefined;
    });
    const failoverMs = Date.now() - lostAt;
    const resumed = await until("the resumed worker's first line", async () => {
      const out = (await cp.cli(["logs", "train"])).stdout;
      return /resuming from step \d+|starting at step 0/.exec(out)?.[0];
    });
    expect(resumed).toBe(`resuming from step ${lastSynced}`);

    // b returns, API server first: the control plane marks its stale copy deleted before b's node
    // is back, so b never starts another attempt of it. The copy itself goes only once its pods
    // are confirmed gone, which takes the node's kubelet (as Kubernetes keeps a pod on a silent
    // node Terminating): so the node comes back next, and then the copy must be gone.
    const apiserver = pidOf("kube-apiserver");
    process.kill(apiserver, "SIGCONT");
    await until("the stale copy in b marked for deletion", () => {
      const r = b.kubectl(["get", "trainingjobs.loom.dev", "train", "-n", "loom-default", "-o", "json"]);
      if (r.code !== 0) return true;
      return (JSON.parse(r.stdout) as Obj).metadata?.deletionTimestamp ? true : undefined;
    });
    for (const p of stoppedPids.splice(0)) process.kill(p, "SIGCONT");
    await until("the stale copy in b deleted", () =>
      b.kubectl(["get", "trainingjobs.loom.dev", "train", "-n", "loom-default"]).code !== 0
        ? true
        : undefined,
    );
    expect((await job())?.status?.phase).toBe("Running");
    expect((await job())?.status?.admission?.cluster).toBeUndefined();
    await sleep(3000); // b's node back: nothing of train starts there again
    expect(
      b
        .kubectl(["get", "pods", "-n", "loom-default", "-l", "loom.dev/workload=train", "-o", "name"])
        .stdout.trim(),
    ).toBe("");

    // Never two workers at once: b's markers (on its claim) and self's, [start, last beat].
    const read = (d: string) =>
      readdirSync(d).map((f) => readFileSync(join(d, f), "utf8").trim().split(" ").map(Number));
    // b's own files last: their beats are newer than the copies of them synced here.
    const marks = [...read(join(ckptDir, "markers")), ...read(join(state, "fleet-ckpt", "markers"))];
    const unique = [...new Map(marks.map((m) => [m[0], m])).values()].sort((x, y) => x[0]! - y[0]!);
    expect(unique.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < unique.length; i++) expect(unique[i]![0]).toBeGreaterThan(unique[i - 1]![1]!);
    console.log(
      `fleet failover (real node): b lost → train Running in self in ${failoverMs} ms (clusterLostTimeout 5 s); resumed from step ${lastSynced}`,
    );
  }, 900_000);
});

import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, until as waitUntil } from "./helpers.js";
import { applyYaml, type Obj, registerLoomMember, trainingJob } from "./loommembers.js";
import { CuttableProxy } from "./proxy.js";

const BASE = "/apis/loom.dev/v1alpha1";

/**
 * Self-fencing across a partition (issue 23, point 4), for real: a control plane (`loom up`) and
 * a member `a` (a second `loom up`, `spec.api: loom`) that the control plane reaches only through
 * a proxy the test cuts. `a` stays healthy and runs the job's real worker processes. Cut: `a`
 * stops seeing the control plane's lease renewed and stops the copy's workers itself (Fenced);
 * after clusterLostTimeout the control plane re-admits the job on its own platform (`self`). The
 * workers' own marker files (start, last beat) show that a's had stopped before self's started.
 * Healed: the copy in `a` is deleted and the job runs once, in self.
 */
describe("fleet fencing: a member cut off from its control plane stops the job before it runs elsewhere", () => {
  const cp = new LoomProcess();
  const a = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-fence-"));
  let proxy: CuttableProxy;

  const until = <T>(what: string, probe: () => Promise<T | undefined>) =>
    waitUntil(what, probe, {
      ms: 180_000,
      every: 300,
      context: () => `control plane:\n${cp.log.slice(-3000)}\nmember a:\n${a.log.slice(-3000)}`,
    });
  const get = trainingJob;
  const apply = (p: LoomProcess, yaml: string, extra: string[] = []) => applyYaml(p, dir, yaml, extra);
  const selfMember = (unschedulable: boolean) =>
    apply(
      cp,
      `apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: self}\nspec: {platform: self, unschedulable: ${unschedulable}}\n`,
    );
  /** Each worker's [start, last beat] (epoch seconds) from its marker file. */
  const markers = (checkpointDir: string): number[][] => {
    const d = join(checkpointDir, "markers");
    if (!existsSync(d)) return [];
    return readdirSync(d).map((f) => readFileSync(join(d, f), "utf8").split(" ").map(Number));
  };

  // A worker that beats into its own marker file every 0.2 s and exits on SIGTERM.
  const worker = `
import os, signal, sys, time
marks = os.path.join(os.environ["LOOM_CHECKPOINT_DIR"], "markers"); os.makedirs(marks, exist_ok=True)
mark = os.path.join(marks, f"{os.getpid()}-{time.time_ns()}")
start = time.time()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
print("worker started", flush=True)
while True:
    with open(mark, "w") as f: f.write(f"{start} {time.time()}")
    time.sleep(0.2)
`;

  beforeAll(async () => {
    await cp.start();
    await a.start();
    proxy = new CuttableProxy("127.0.0.1", Number(new URL(a.url).port));
    await proxy.start();
    // The control plane's own platform takes nothing at first: the job goes to a.
    await selfMember(true);
    // Through the proxy. 20 s: the lease in a lasts 10 s (half), renewed every 3.3 s.
    await registerLoomMember(cp, dir, {
      name: "a",
      server: `http://127.0.0.1:${proxy.port}`,
      token: a.token,
      clusterLostTimeout: "20s",
    });
    await until("a Ready", async () => {
      const r = await cp.cli(["get", "clusters"]);
      return /^a\s+Ready/m.test(r.stdout) ? true : undefined;
    });
  }, 120_000);

  afterAll(async () => {
    proxy?.heal();
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    await a.stop();
    proxy?.close();
  });

  it("only an admin renews a lease in a member, with a duration it can use", async () => {
    const key = await a.api("POST", `${BASE}/projects/default/apikeys`, { name: "not-admin" });
    expect(key.status, JSON.stringify(key.body)).toBe(201);
    const res = await fetch(`${a.url}${BASE}/fleetleases/intruder`, {
      method: "PUT",
      headers: { authorization: `Bearer ${(key.body as Obj).key}`, "content-type": "application/json" },
      body: JSON.stringify({ leaseDurationSeconds: 3600 }),
    });
    expect(res.status).toBe(403);
    const bad = await a.api("PUT", `${BASE}/fleetleases/cp`, { leaseDurationSeconds: "forever" });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toMatch(/whole number of seconds from 1 to 3600/);
  });

  it("cut off, a stops the copy's workers itself (Fenced); the job runs in self only after; healed, a's copy is deleted", async () => {
    const train = JSON.stringify({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "train" },
      spec: {
        command: ["python3", "-u", "-c", worker],
        resources: { cpu: 1, memory: "256Mi" },
        terminationGracePeriodSeconds: 30,
      },
    });
    expect((await cp.cli(["apply", "-f", "-"], { input: train })).code).toBe(0);
    await until("train Running in a", async () => {
      const j = await get(cp, "train");
      return j?.status?.admission?.cluster === "a" && j.status.phase === "Running" ? j : undefined;
    });
    const copy = await until("a's copy Running", async () => {
      const c = await get(a, "train");
      return c?.status?.phase === "Running" ? c : undefined;
    });
    const aDir = join(a.dataDir, "workloads", copy.metadata.uid, "checkpoint");
    await until("a's worker beating", async () => (markers(aDir).length > 0 ? true : undefined));
    // self may take work again: the job stays where it runs until a is lost.
    await selfMember(false);

    proxy.partition();
    const cutAt = Date.now();
    // a, still healthy, stops the copy itself and says why.
    const fenced = await until("a's copy Fenced", async () => {
      const c = await get(a, "train");
      const cond = c?.status?.conditions?.find((x: Obj) => x.type === "Fenced");
      return cond?.status === "True" && !c?.status?.workers ? c : undefined;
    });
    const fencedMs = Date.now() - cutAt;
    const described = (await a.cli(["describe", "tj", "train"])).stdout;
    expect(described).toMatch(/Fenced/);
    expect(described).toMatch(/has not renewed its lease for \d+s .*stopped so the job cannot run twice/);
    expect(fenced.metadata.labels["loom.dev/fleet-uid"]).toBeDefined();
    const aMarks = markers(aDir);
    expect(aMarks.length).toBe(1);

    // The control plane re-admits the job on its own platform after clusterLostTimeout.
    const back = await until("train Running in self", async () => {
      const j = await get(cp, "train");
      return j?.status?.phase === "Running" && !j.status.admission?.cluster ? j : undefined;
    });
    const failoverMs = Date.now() - cutAt;
    const cpDir = join(cp.dataDir, "workloads", back.metadata.uid, "checkpoint");
    await until("self's worker beating", async () => (markers(cpDir).length > 0 ? true : undefined));
    const cpMarks = markers(cpDir);
    // a's worker had beaten its last before self's started: never two at once.
    const aLast = Math.max(...aMarks.map((m) => m[1]!));
    const selfFirst = Math.min(...cpMarks.map((m) => m[0]!));
    expect(selfFirst, `a last beat ${aLast}, self started ${selfFirst}`).toBeGreaterThan(aLast);
    expect((await cp.cli(["describe", "tj", "train"])).stdout).toMatch(/ClusterLost/);

    // Healed: the lease is renewed again, yet a's copy never restarts; the control plane deletes it.
    proxy.heal();
    await until("a Ready again", async () => {
      const r = await cp.cli(["get", "clusters"]);
      return /^a\s+Ready/m.test(r.stdout) ? true : undefined;
    });
    await until("the stale copy in a deleted", async () => ((await get(a, "train")) ? undefined : true));
    for (const m of markers(aDir)) expect(m[1]).toBeLessThanOrEqual(aLast); // a ran nothing since
    const now = await get(cp, "train");
    expect(now?.status?.phase).toBe("Running");
    expect(now?.status?.admission?.cluster).toBeUndefined();
    expect(markers(cpDir).length).toBe(1); // one worker in self, never restarted
    console.log(
      `fleet fence: a fenced its copy ${fencedMs} ms after the cut (lease 10 s); the job ran in self ${failoverMs} ms after (clusterLostTimeout 20 s); a's last beat ${(selfFirst - aLast).toFixed(1)} s before self's first`,
    );
  }, 300_000);
});

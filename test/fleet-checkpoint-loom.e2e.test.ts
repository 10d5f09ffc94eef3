import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, processesNaming, until as waitUntil } from "./helpers.js";
import { applyYaml, type Obj, registerLoomMember, trainingJob } from "./loommembers.js";

/**
 * Checkpoints out of and into Loom members (issue 23, "failover in seconds"), for real: a control
 * plane (`loom up`, its own platform takes no work) and two members `a` and `b`, each a second
 * `loom up` reached by its API (`spec.api: loom`), all running real worker processes. The job
 * runs in `a` and checkpoints; the control plane pulls each new checkpoint through a's checkpoint
 * route. Then `a` is lost for good (the server and its workers killed): after clusterLostTimeout
 * the job is admitted to `b`, its copy there is created with the step the control plane holds,
 * b's first attempt waits until the control plane has written that checkpoint through b's route,
 * and the worker's own first line says the step it resumed from — the synced one, not 0 — and
 * that the checkpoint's other file came with it.
 */
describe("fleet checkpoints with Loom members: a job lost with its member resumes in another from the synced step", () => {
  const cp = new LoomProcess();
  const a = new LoomProcess();
  const b = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-ckpt-loom-"));
  let aKilled = false;

  const until = <T>(what: string, probe: () => Promise<T | undefined>) =>
    waitUntil(what, probe, {
      ms: 180_000,
      every: 300,
      context: () =>
        `control plane:\n${cp.log.slice(-3000)}\nmember a:\n${a.log.slice(-1500)}\nmember b:\n${b.log.slice(-3000)}`,
    });
  const get = trainingJob;
  const apply = (p: LoomProcess, yaml: string) => applyYaml(p, dir, yaml);
  const register = (name: string, member: LoomProcess) =>
    registerLoomMember(cp, dir, { name, server: member.url, token: member.token, clusterLostTimeout: "10s" });
  /** Kills `a` and every process it started: the machine is gone, its workers with it. */
  const loseA = async () => {
    const workers = processesNaming(a.dataDir).filter((pid) => pid !== a.pid);
    await a.kill("SIGKILL");
    aKilled = true;
    for (const pid of workers) {
      for (const target of [-pid, pid])
        try {
          process.kill(target, "SIGKILL");
        } catch {
          // not a group leader, or gone already
        }
    }
  };

  // A worker that counts steps, checkpoints every 5 (loom.json, and weights.txt that must match
  // it), resumes from its checkpoint and says from which step, and whether the weights came too.
  const worker = `
import json, os, signal, sys, time
d = os.environ["LOOM_CHECKPOINT_DIR"]
ckpt = os.path.join(d, "loom.json"); weights = os.path.join(d, "weights.txt")
step = json.load(open(ckpt))["step"] if os.path.exists(ckpt) else 0
if step:
    w = open(weights).read() if os.path.exists(weights) else "none"
    print(f"resuming from step {step}; weights {'match' if w == f'w{step}' else 'missing: ' + w}", flush=True)
else:
    print("starting at step 0", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
def save():
    with open(weights + ".tmp", "w") as f: f.write(f"w{step}")
    os.replace(weights + ".tmp", weights)
    with open(ckpt + ".tmp", "w") as f: f.write(json.dumps({"step": step}))
    os.replace(ckpt + ".tmp", ckpt)
while True:
    time.sleep(0.2); step += 1
    if step % 5 == 0: save()
`;

  beforeAll(async () => {
    // One after another: three servers starting at once on a loaded machine can miss the start timeout.
    await cp.start();
    await a.start();
    await b.start();
    // The control plane's own platform takes nothing: the job goes to a (members by name), then b.
    await apply(
      cp,
      "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: self}\nspec: {platform: self, unschedulable: true}\n",
    );
    await register("a", a);
    await register("b", b);
    await until("a and b Ready", async () => {
      const out = (await cp.cli(["get", "clusters"])).stdout;
      return /^a\s+Ready/m.test(out) && /^b\s+Ready/m.test(out) ? true : undefined;
    });
  }, 180_000);

  afterAll(async () => {
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    await b.stop();
    if (aKilled) await loseA(); // anything left of a's (nothing, unless the kill raced a start)
    await a.stop();
  });

  it("syncs a's checkpoints to the control plane; lost with a, the job resumes in b from the synced step", async () => {
    const started = Date.now();
    const train = JSON.stringify({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "train" },
      spec: { command: ["python3", "-u", "-c", worker], resources: { cpu: 1, memory: "256Mi" } },
    });
    expect((await cp.cli(["apply", "-f", "-"], { input: train })).code).toBe(0);
    const job = await until("train Running in a", async () => {
      const j = await get(cp, "train");
      return j?.status?.admission?.cluster === "a" && j.status.phase === "Running" ? j : undefined;
    });
    // The control plane keeps the job's checkpoint in its own directory for the job: pulled from a.
    const vault = join(cp.dataDir, "workloads", job.metadata.uid, "checkpoint");
    const held = () =>
      existsSync(join(vault, "loom.json"))
        ? (JSON.parse(readFileSync(join(vault, "loom.json"), "utf8")).step as number)
        : undefined;
    await until("a checkpoint of step 15 or more synced from a", async () =>
      (held() ?? 0) >= 15 ? true : undefined,
    );
    expect(readFileSync(join(vault, "weights.txt"), "utf8")).toMatch(/^w\d+$/);
    const firstLog = (await cp.cli(["logs", "train"])).stdout;
    expect(firstLog).toMatch(/starting at step 0/);

    // a is lost with its workers: after clusterLostTimeout the job goes to b.
    await loseA();
    const lostAt = Date.now();
    const copy = await until("b's copy of train", async () => {
      const c = await get(b, "train");
      return c?.metadata?.annotations?.["loom.dev/fleet-checkpoint-seed"] !== undefined ? c : undefined;
    });
    const seededStep = Number(copy.metadata.annotations["loom.dev/fleet-checkpoint-seed"]);
    expect(seededStep).toBeGreaterThanOrEqual(15);
    const moved = await until("train Running in b", async () => {
      const j = await get(cp, "train");
      return j?.status?.admission?.cluster === "b" && j.status.phase === "Running" ? j : undefined;
    });
    const failoverMs = Date.now() - lostAt;
    // The worker's own first line in b: the step the control plane held, with its weights.
    const resumed = await until("b's worker's first line", async () => {
      const out = (await cp.cli(["logs", "train"])).stdout;
      return /resuming from step \d+[^\n]*|starting at step 0/.exec(out)?.[0];
    });
    expect(resumed).toBe(`resuming from step ${seededStep}; weights match`);
    const inB = await get(b, "train");
    expect(inB?.status?.conditions?.find((c: Obj) => c.type === "CheckpointSeeded")).toMatchObject({
      status: "True",
      reason: "Seeded",
    });
    const described = (await cp.cli(["describe", "tj", "train"])).stdout;
    expect(described).toMatch(/ClusterLost/);
    expect(described).toMatch(/CheckpointSeeded/);
    expect(moved.status.attempts).toBe(job.status.attempts + 1); // a's, then b's: none reused
    console.log(
      `fleet checkpoints (Loom members): synced step ${seededStep} from a; a lost → train resumed in b from it, Running ${failoverMs} ms after the kill (clusterLostTimeout 10 s); test ${Date.now() - started} ms`,
    );
  }, 300_000);
});

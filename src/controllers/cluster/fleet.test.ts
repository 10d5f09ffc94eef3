import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { type Cluster, FENCED_CONDITION, FLEET_HOLDER_ANNOTATION } from "../../api/cluster.js";
import { CLUSTER, TRAININGJOB, validateManifest } from "../../api/kinds.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import { DirCheckpointVault } from "../../platforms/embedded/checkpointvault.js";
import type { OpenedDatabase } from "../../platforms/embedded/db.js";
import type { SqliteEventRecorder } from "../../platforms/embedded/events.js";
import { memoryStore } from "../../platforms/embedded/memorystore.js";
import { SqliteSecretStore } from "../../platforms/embedded/secrets.js";
import { WorkloadFiles } from "../../platforms/embedded/workloadfiles.js";
import type { CheckpointFiles, MemberCluster } from "../../ports/fleet.js";
import type { Runtime } from "../../ports/runtime.js";
import { coreScheduler, type NodeCapacity } from "../../ports/scheduler.js";
import { AdmissionReconciler } from "../admission/reconciler.js";
import { FLEET_UID_LABEL, RemoteJobs } from "./dispatch.js";
import { Fleet } from "./fleet.js";
import { ClusterReconciler } from "./reconciler.js";

// The fleet's loops over real stores (issue 23): a control plane's SQLite store, and two members
// whose Loom stores are SQLite stores too (the port does not say which platform a member is; the
// kwok e2e runs real Kubernetes members). The members' own operators are played by this test:
// it writes the status their loops would.

const GiB = 2 ** 30;
const opened: OpenedDatabase[] = [];
afterEach(async () => {
  for (const d of opened.splice(0)) await d.close();
});

async function storeOf() {
  const opening = await memoryStore();
  opened.push(opening.db);
  return opening;
}

const node = (name: string, gpus: number): NodeCapacity => ({
  name,
  cpuMillis: 32_000,
  memoryBytes: 128 * GiB,
  gpus: Array.from({ length: gpus }, (_, i) => `${i}`),
});

async function world(
  projects: { name: string; spec: Record<string, unknown> }[] = [{ name: "p", spec: {} }],
) {
  const cp = await storeOf();
  const secrets = new SqliteSecretStore(cp.db.db);
  const members = new Map<
    string,
    MemberCluster & {
      reachable: boolean;
      ckpt?: CheckpointFiles;
      pulls: number;
      leases: [string, number][];
      usageError?: string;
    }
  >();
  for (const name of ["a", "b"]) {
    const m = await storeOf();
    const member = {
      store: m.store,
      events: m.events,
      reachable: true,
      ckpt: undefined as CheckpointFiles | undefined,
      pulls: 0,
      // The member's copy's checkpoint directory, as its platform would read it.
      checkpoint: async () => {
        member.pulls++;
        return member.ckpt;
      },
      leases: [] as [string, number][],
      renewLease: async (holder: string, seconds: number) => {
        member.leases.push([holder, seconds]);
      },
      nodes: async () => [node("n0", 8)],
      probe: async () => {
        if (!member.reachable) throw new Error("connect ECONNREFUSED");
        return { kubernetes: "v1.31.0", loom: "test" };
      },
      close: () => {},
    };
    members.set(name, member);
  }
  let clock = Date.parse("2026-01-01T00:00:00Z");
  const now = () => new Date(clock);
  const log = pino({ level: "silent" });
  const fleet = new Fleet({
    connector: { connect: async (_c, kubeconfig) => members.get(kubeconfig.replace("clusters: ", ""))! },
    secrets,
    localNodes: async () => [],
    version: "test",
    now,
    holder: "cp",
  });
  let capacityChanges = 0;
  const clusters = new ClusterReconciler({
    store: cp.store,
    events: cp.events,
    fleet,
    log,
    now,
    onCapacityChange: () => void capacityChanges++,
    // Free capacity per pool, as the admission loop sees it (the manager wires the same).
    snapshot: () => admission.snapshot(),
  });
  const jobs = async () => (await cp.store.list(TRAININGJOB)).items as TrainingJob[];
  const admission = new AdmissionReconciler({
    store: cp.store,
    listJobs: () => cache,
    listProjects: () => projects.map((p) => ({ metadata: { name: p.name }, spec: p.spec }) as never),
    runtime: { nodes: async () => [] } as unknown as Runtime,
    scheduler: coreScheduler,
    events: cp.events,
    log,
    now,
    fleet,
  });
  let cache: TrainingJob[] = [];
  const cycle = async () => {
    cache = await jobs();
    await admission.reconcile("cycle");
    cache = await jobs();
  };
  // The control plane's checkpoint copies: the embedded platform's own workload directories.
  const files = new WorkloadFiles(mkdtempSync(join(tmpdir(), "loom-fleet-vault-")));
  const remote = new RemoteJobs({
    store: cp.store,
    events: cp.events,
    log,
    now,
    member: (n) => fleet.member(n),
    vault: new DirCheckpointVault(files),
    holder: fleet.holder,
  });
  const register = async (name: string) => {
    await secrets.put(`cluster-${name}-kubeconfig`, `clusters: ${name}`);
    const { object } = validateManifest({
      apiVersion: "loom.dev/v1alpha1",
      kind: CLUSTER,
      metadata: { name, labels: { region: name === "a" ? "eu" : "us" } },
      spec: { kubeconfigSecret: { name: `cluster-${name}-kubeconfig` }, clusterLostTimeout: "30s" },
    });
    await cp.store.create(object);
    await clusters.reconcile(name);
  };
  const submit = async (
    name: string,
    gpu: number,
    workers = 1,
    extra: Record<string, unknown> = {},
    project = "p",
  ) => {
    const { object } = validateManifest({
      apiVersion: "loom.dev/v1alpha1",
      kind: TRAININGJOB,
      metadata: { name, project },
      spec: { command: ["python", "train.py"], workers, resources: { gpu }, ...extra },
    });
    const created = await cp.store.create({
      ...object,
      metadata: { ...object.metadata, finalizers: ["loom.dev/runtime"] },
    });
    return created as TrainingJob;
  };
  const get = async (name: string, project = "p") =>
    (await cp.store.get(TRAININGJOB, project, name)) as TrainingJob;
  return {
    cp,
    members,
    fleet,
    clusters,
    cycle,
    jobs,
    remote,
    files,
    register,
    submit,
    get,
    capacityChanges: () => capacityChanges,
    tick: (ms: number) => {
      clock += ms;
    },
  };
}

describe("the fleet: one queue over members", () => {
  it("registers members: Ready with version and capacity per pool, and the self member appears", async () => {
    const w = await world();
    await w.register("a");
    const a = (await w.cp.store.get(CLUSTER, "", "a")) as Cluster;
    expect(a.status?.phase).toBe("Ready");
    expect(a.status?.version).toEqual({ kubernetes: "v1.31.0", loom: "test" });
    expect(a.status?.pools).toEqual([
      {
        name: "default",
        nodes: 1,
        gpu: 8,
        cpuMillis: 32_000,
        memoryBytes: 128 * GiB,
        free: { gpu: 8, cpuMillis: 32_000, memoryBytes: 128 * GiB },
      },
    ]);
    expect(a.status?.capacityText).toBe("8 GPU, 32 CPU, 128Gi [default:1]");
    expect(a.status?.freeText).toBe("8 GPU, 32 CPU, 128Gi");
    const self = (await w.cp.store.get(CLUSTER, "", "self")) as Cluster;
    expect(self.spec.platform).toBe("self");
    expect(w.capacityChanges()).toBe(1);
  });

  it("a member whose kubeconfig secret is missing is Unreachable and says how to give it", async () => {
    const w = await world();
    const { object } = validateManifest({
      apiVersion: "loom.dev/v1alpha1",
      kind: CLUSTER,
      metadata: { name: "c" },
      spec: { kubeconfigSecret: { name: "nope" } },
    });
    await w.cp.store.create(object);
    await w.clusters.reconcile("c");
    const c = (await w.cp.store.get(CLUSTER, "", "c")) as Cluster;
    expect(c.status?.phase).toBe("Unreachable");
    expect(c.status?.conditions?.[0]?.message).toMatch(/no secret "nope".*--kubeconfig-file/);
  });

  it("fills a then b, spec.clusters and a selector narrow, a gang too big for any member waits naming each", async () => {
    const w = await world();
    await w.register("a");
    await w.register("b");
    await w.submit("j1", 4);
    await w.submit("j2", 4);
    await w.submit("j3", 4);
    await w.cycle();
    // Jobs made in one millisecond are equals in the queue: which two fill a is not fixed.
    const placed = await Promise.all(["j1", "j2", "j3"].map(async (n) => (await w.get(n)).status?.admission));
    expect(placed.map((p) => p?.cluster).sort()).toEqual(["a", "a", "b"]);
    expect(placed.map((p) => p?.node).sort()).toEqual(["a/n0", "a/n0", "b/n0"]);
    await w.submit("onlyb", 2, 1, { clusters: ["b"] });
    await w.submit("us", 1, 1, { clusterSelector: { region: "us" } });
    await w.submit("huge", 8, 2);
    await w.cycle();
    expect((await w.get("onlyb")).status?.admission?.cluster).toBe("b");
    expect((await w.get("us")).status?.admission?.cluster).toBe("b");
    const huge = await w.get("huge");
    expect(huge.status?.admission).toBeUndefined();
    const why = huge.status?.conditions?.find((c) => c.type === "Admitted")?.message ?? "";
    expect(why).toMatch(/fits in no member cluster/);
    expect(why).toMatch(/ a: /);
    expect(why).toMatch(/; b: /);
  });

  it("two projects of equal quota share the fleet: the one that borrowed it all gives back, across members, to its fair share", async () => {
    const quota = { quota: { gpu: 4 } };
    const w = await world([
      { name: "p1", spec: quota },
      { name: "p2", spec: quota },
    ]);
    await w.register("a");
    await w.register("b");
    const held = async () => {
      const by: Record<string, number> = {};
      for (const j of await w.jobs())
        if (j.status?.admission) {
          const k = `${j.metadata.project}@${j.status.admission.cluster}`;
          by[k] = (by[k] ?? 0) + 2;
        }
      return by;
    };
    // The members' own Loom would run the copies; here the dispatch loop stands for the whole
    // round trip: copies made, preempted ones deleted there and put back in the queue.
    const settle = async () => {
      for (let round = 0; round < 6; round++) {
        await w.cycle();
        for (const j of await w.jobs()) if (j.status?.admission) await w.remote.reconcile(j);
      }
    };
    for (let i = 0; i < 6; i++) await w.submit(`p1-${i}`, 2, 1, {}, "p1");
    await settle();
    // Alone, p1 borrows everything it asks for: 12 of the 16 GPUs, a filled first.
    expect(await held()).toEqual({ "p1@a": 8, "p1@b": 4 });
    for (let i = 0; i < 6; i++) await w.submit(`p2-${i}`, 2, 1, {}, "p2");
    await settle();
    const by = await held();
    const total = (p: string) => (by[`${p}@a`] ?? 0) + (by[`${p}@b`] ?? 0);
    expect([total("p1"), total("p2")]).toEqual([8, 8]);
    expect((by["p1@a"] ?? 0) + (by["p2@a"] ?? 0)).toBe(8);
    expect((by["p1@b"] ?? 0) + (by["p2@b"] ?? 0)).toBe(8);
    // What p1 gave back was taken from it by fair share, and each member holds only admitted copies.
    const preempted = (await w.jobs()).filter((j) => (j.status?.preemptions ?? 0) > 0);
    expect(preempted.map((j) => j.metadata.project)).toEqual(["p1", "p1"]);
    for (const [name, m] of w.members) {
      const copies = (await m.store.list(TRAININGJOB)).items.map((c) => `${c.metadata.project}@${name}`);
      expect(copies.length).toBe(4);
      for (const c of copies) expect(by[c]).toBeGreaterThan(0);
    }
  });

  it("creates the job in its member, mirrors status and events back, and deletes the copy with the job", async () => {
    const w = await world();
    await w.register("a");
    await w.register("b");
    await w.submit("j1", 4);
    await w.cycle();
    await w.remote.reconcile(await w.get("j1"));
    const a = w.members.get("a")!;
    const copy = (await a.store.get(TRAININGJOB, "p", "j1")) as TrainingJob;
    expect(copy.metadata.labels?.[FLEET_UID_LABEL]).toBe((await w.get("j1")).metadata.uid);
    expect(copy.spec.clusters).toBeUndefined();
    await a.store.get("Project", "", "p"); // made for it, without a quota
    // The member's operator runs it (played here): its status comes back.
    await a.store.updateStatus({ ...copy, status: { phase: "Running", ready: "1/1", attempts: 1 } });
    await (a.events as SqliteEventRecorder).record(
      { kind: TRAININGJOB, project: "p", name: "j1", uid: copy.metadata.uid },
      "Normal",
      "Started",
      "attempt 1 started",
    );
    expect(await w.remote.reconcile(await w.get("j1"))).toEqual({ requeueAfterMs: 2000 });
    const mirrored = await w.get("j1");
    expect(mirrored.status?.phase).toBe("Running");
    expect(mirrored.status?.ready).toBe("1/1");
    expect(mirrored.status?.admission?.cluster).toBe("a");
    const events = await w.cp.events.listFor({ kind: TRAININGJOB, project: "p", name: "j1" });
    expect(events.map((e) => e.message)).toContain("[cluster a] attempt 1 started");
    // Deleted on the control plane: the copy goes first, then the finalizer.
    await w.cp.store.delete(TRAININGJOB, "p", "j1");
    await w.remote.reconcile(await w.get("j1"));
    await expect(a.store.get(TRAININGJOB, "p", "j1")).rejects.toThrow(/not found/);
    await expect(w.get("j1")).rejects.toThrow(/not found/);
  });

  it("a job whose name is taken in the member by another job is not adopted", async () => {
    const w = await world();
    await w.register("a");
    await w.register("b");
    const a = w.members.get("a")!;
    await a.store.create({
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "p" },
      spec: {},
    } as never);
    const { object } = validateManifest({
      apiVersion: "loom.dev/v1alpha1",
      kind: TRAININGJOB,
      metadata: { name: "j1", project: "p" },
      spec: { command: ["sleep", "1"] },
    });
    await a.store.create(object);
    await w.submit("j1", 4);
    await w.cycle();
    await w.remote.reconcile(await w.get("j1"));
    const j = await w.get("j1");
    expect(j.status?.conditions?.find((c) => c.type === "Dispatched")?.reason).toBe("MemberNameTaken");
    const theirs = (await a.store.get(TRAININGJOB, "p", "j1")) as TrainingJob;
    expect(theirs.metadata.labels?.[FLEET_UID_LABEL]).toBeUndefined();
  });

  it("an unreachable member's nodes leave the queue: new work goes to the other", async () => {
    const w = await world();
    await w.register("a");
    await w.register("b");
    w.members.get("a")!.reachable = false;
    await w.clusters.reconcile("a");
    expect(((await w.cp.store.get(CLUSTER, "", "a")) as Cluster).status?.phase).toBe("Unreachable");
    await w.submit("j1", 4);
    await w.cycle();
    expect((await w.get("j1")).status?.admission?.cluster).toBe("b");
  });

  it("failover: a member lost past clusterLostTimeout has its jobs re-admitted elsewhere; back, its stale copy is stopped", async () => {
    const w = await world();
    await w.register("a");
    await w.register("b");
    await w.submit("j1", 4, 1, { clusters: ["a", "b"] });
    await w.cycle();
    expect((await w.get("j1")).status?.admission?.cluster).toBe("a");
    await w.remote.reconcile(await w.get("j1"));
    const a = w.members.get("a")!;
    await a.store.get(TRAININGJOB, "p", "j1"); // its copy runs in a
    a.reachable = false;
    await w.clusters.reconcile("a");
    w.tick(29_000);
    await w.clusters.reconcile("a");
    expect((await w.get("j1")).status?.admission?.cluster).toBe("a"); // not yet: 29 s < 30 s
    w.tick(1_000);
    await w.clusters.reconcile("a");
    const lost = await w.get("j1");
    expect(lost.status?.admission).toBeUndefined();
    expect(lost.status?.conditions?.find((c) => c.type === "Admitted")?.reason).toBe("ClusterLost");
    await w.cycle();
    expect((await w.get("j1")).status?.admission?.cluster).toBe("b");
    await w.remote.reconcile(await w.get("j1"));
    await w.members.get("b")!.store.get(TRAININGJOB, "p", "j1");
    // a answers again: the copy it still has is stopped there, so j1 never runs twice.
    a.reachable = true;
    await w.clusters.reconcile("a");
    await expect(a.store.get(TRAININGJOB, "p", "j1")).rejects.toThrow(/not found/);
    await w.members.get("b")!.store.get(TRAININGJOB, "p", "j1"); // b's copy stays
  });

  it("renews its lease in each member at each probe; a copy the member fenced sends the job back to the queue and is deleted", async () => {
    const w = await world();
    await w.register("a");
    const a = w.members.get("a")!;
    // Half of clusterLostTimeout (30 s), renewed at each probe, at least three times a lease.
    expect(a.leases).toEqual([["cp", 15]]);
    expect(await w.clusters.reconcile("a")).toEqual({ requeueAfterMs: 5000 });
    expect(a.leases.length).toBe(2);
    await w.submit("j1", 4);
    await w.cycle();
    await w.remote.reconcile(await w.get("j1"));
    const copy = (await a.store.get(TRAININGJOB, "p", "j1")) as TrainingJob;
    expect(copy.metadata.annotations?.[FLEET_HOLDER_ANNOTATION]).toBe("cp");
    // The member's Loom fenced it (its lease lapsed there while a renewal was late) and stopped it.
    await a.store.updateStatus({
      ...copy,
      status: {
        phase: "Pending",
        conditions: [
          { type: FENCED_CONDITION, status: "True", reason: "LeaseExpired", message: "lease lapsed" },
        ],
      },
    } as TrainingJob);
    // The control plane decides: the copy goes, the job waits in the one queue to be admitted again.
    expect(await w.remote.reconcile(await w.get("j1"))).toEqual({});
    await expect(a.store.get(TRAININGJOB, "p", "j1")).rejects.toThrow(/not found/);
    const back = await w.get("j1");
    expect(back.status?.admission).toBeUndefined();
    const admitted = back.status?.conditions?.find((c) => c.type === "Admitted");
    expect(admitted?.reason).toBe("Fenced");
    expect(admitted?.message).toMatch(/cluster a stopped its copy: lease lapsed/);
    await w.cycle();
    expect((await w.get("j1")).status?.admission?.cluster).toBe("a");
  });

  it("syncs a member's checkpoints to the control plane as they are reported; after failover to self the job resumes from the last one", async () => {
    const w = await world();
    await w.register("a");
    await w.submit("j1", 4, 1, { clusters: ["a", "self"] });
    await w.cycle();
    const j1 = await w.get("j1");
    expect(j1.status?.admission?.cluster).toBe("a");
    await w.remote.reconcile(j1);
    const a = w.members.get("a")!;
    // No checkpoint reported yet: nothing is pulled.
    await w.remote.reconcile(await w.get("j1"));
    expect(a.pulls).toBe(0);
    const report = async (step: number) =>
      a.store.updateStatus({
        ...((await a.store.get(TRAININGJOB, "p", "j1")) as TrainingJob),
        status: { phase: "Running", attempts: 1, checkpoint: { step, time: "2026-01-01T00:00:00Z" } },
      });
    a.ckpt = new Map([
      ["loom.json", Buffer.from('{"step": 20}')],
      ["shards/ckpt.pt", Buffer.from("weights@20")],
    ]);
    await report(20);
    await w.remote.reconcile(await w.get("j1"));
    const dir = w.files.checkpointDir(j1.metadata.uid);
    expect(readFileSync(join(dir, "shards/ckpt.pt"), "utf8")).toBe("weights@20");
    expect(a.pulls).toBe(1);
    // The same step again: not pulled again; a newer one replaces it.
    await w.remote.reconcile(await w.get("j1"));
    expect(a.pulls).toBe(1);
    a.ckpt = new Map([
      ["loom.json", Buffer.from('{"step": 40}')],
      ["shards/ckpt.pt", Buffer.from("weights@40")],
    ]);
    await report(40);
    await w.remote.reconcile(await w.get("j1"));
    expect(readFileSync(join(dir, "shards/ckpt.pt"), "utf8")).toBe("weights@40");
    // a is lost: the job goes to self, whose attempt's LOOM_CHECKPOINT_DIR is that directory.
    a.reachable = false;
    await w.clusters.reconcile("a");
    w.tick(30_000);
    await w.clusters.reconcile("a");
    expect((await w.get("j1")).status?.conditions?.find((c) => c.type === "Admitted")?.reason).toBe(
      "ClusterLost",
    );
    expect(JSON.parse(readFileSync(join(dir, "loom.json"), "utf8")).step).toBe(40);
  });

  it("a member's checkpoint file names that leave the job's directory are refused, and nothing is written", async () => {
    const w = await world();
    await w.register("a");
    await w.submit("j1", 4);
    await w.cycle();
    await w.remote.reconcile(await w.get("j1"));
    const a = w.members.get("a")!;
    const copy = (await a.store.get(TRAININGJOB, "p", "j1")) as TrainingJob;
    a.ckpt = new Map([
      ["ok.pt", Buffer.from("fine")],
      ["../../../admin-token", Buffer.from("attacker's")],
      ["loom.json", Buffer.from('{"step": 5}')],
    ]);
    await a.store.updateStatus({
      ...copy,
      status: { phase: "Running", checkpoint: { step: 5, time: "2026-01-01T00:00:00Z" } },
    });
    await w.remote.reconcile(await w.get("j1"));
    const dir = w.files.checkpointDir((await w.get("j1")).metadata.uid);
    expect(() => readFileSync(join(dir, "ok.pt"))).toThrow(/ENOENT/);
    expect(() => readFileSync(join(w.files.root, "..", "admin-token"))).toThrow(/ENOENT/);
    for (const bad of ["/etc/passwd", "..", "a/../../x"])
      await expect(
        new DirCheckpointVault(w.files).put("u", new Map([[bad, Buffer.from("x")]])),
      ).rejects.toThrow(/leaves the checkpoint directory/);
  });

  it("attempts made before a job came to a member are counted on: numbers (and their logs) are never reused", async () => {
    const w = await world();
    await w.register("a");
    const created = await w.submit("j1", 4);
    // Two attempts ran elsewhere before (preempted in self, say).
    await w.cp.store.updateStatus({ ...created, status: { phase: "Pending", attempts: 2 } });
    await w.cycle();
    await w.remote.reconcile(await w.get("j1"));
    const a = w.members.get("a")!;
    const copy = (await a.store.get(TRAININGJOB, "p", "j1")) as TrainingJob;
    expect(copy.metadata.annotations?.["loom.dev/fleet-attempt-base"]).toBe("2");
    // Not started there yet: still 2, not forgotten (a failover now would start attempt 3).
    await w.remote.reconcile(await w.get("j1"));
    expect((await w.get("j1")).status?.attempts).toBe(2);
    await a.store.updateStatus({ ...copy, status: { phase: "Running", attempts: 1 } });
    await w.remote.reconcile(await w.get("j1"));
    expect((await w.get("j1")).status?.attempts).toBe(3);
  });
});

describe("the fleet: a member's own work (work it holds that this control plane did not place)", () => {
  const busy = (gpu: number, pods = 1): NodeCapacity => ({
    ...node("n0", 8),
    usedByOthers: { cpuMillis: 2000, memoryBytes: 4 * GiB, gpu, pods },
  });

  it("is subtracted: a member whose GPUs its own users hold takes no gang, the next member does, and `get clusters` shows it free of neither", async () => {
    const w = await world();
    // a's own users hold 6 of its 8 GPUs (a job submitted to a directly): 2 are left.
    w.members.get("a")!.nodes = async () => [busy(6, 2)];
    await w.register("a");
    await w.register("b");
    await w.submit("j1", 4);
    await w.cycle();
    const j1 = (await w.get("j1")).status?.admission;
    expect(j1?.cluster).toBe("b");
    // What is left in a still takes what fits there.
    await w.submit("small", 2);
    await w.cycle();
    expect((await w.get("small")).status?.admission?.cluster).toBe("a");
    // Free per pool: a's 8 less its own 6 less the 2 placed; b's 8 less the 4 placed.
    await w.clusters.reconcile("a");
    await w.clusters.reconcile("b");
    const a = (await w.cp.store.get(CLUSTER, "", "a")) as Cluster;
    const b = (await w.cp.store.get(CLUSTER, "", "b")) as Cluster;
    expect(a.status?.pools?.[0]?.free?.gpu).toBe(0);
    expect(a.status?.freeText).toBe("0 GPU, 30 CPU, 124Gi");
    expect(b.status?.freeText).toBe("4 GPU, 32 CPU, 128Gi");
    // A gang that only a may take waits, and says a's own work holds it.
    await w.submit("onlya", 2, 1, { clusters: ["a"] });
    await w.cycle();
    const onlya = await w.get("onlya");
    expect(onlya.status?.admission).toBeUndefined();
    const why = onlya.status?.conditions?.find((c) => c.type === "Admitted")?.message ?? "";
    expect(why).toMatch(/gpu: requested 2, free 0/);
  });

  it("as it changes: the member's own job ends, the queue looks again and places there", async () => {
    const w = await world();
    let own = 8;
    w.members.get("a")!.nodes = async () => [busy(own)];
    await w.register("a");
    await w.submit("onlya", 4, 1, { clusters: ["a"] });
    await w.cycle();
    expect((await w.get("onlya")).status?.admission).toBeUndefined();
    const before = w.capacityChanges();
    own = 0;
    await w.clusters.reconcile("a");
    expect(w.capacityChanges()).toBe(before + 1);
    await w.cycle();
    expect((await w.get("onlya")).status?.admission?.cluster).toBe("a");
  });

  it("figures a member sends that are not counts never break a cycle: they count as nothing", async () => {
    const w = await world();
    const junk = [
      { cpuMillis: Number.NaN, memoryBytes: -5, gpu: Number.POSITIVE_INFINITY, pods: 1e12 },
      { cpuMillis: "lots", memoryBytes: null, gpu: "8", pods: {} },
    ] as unknown as NodeCapacity["usedByOthers"][];
    let i = 0;
    w.members.get("a")!.nodes = async () => [{ ...node("n0", 8), usedByOthers: junk[i++ % 2] }];
    await w.register("a");
    await w.submit("j1", 8);
    await w.cycle();
    expect((await w.get("j1")).status?.admission?.cluster).toBe("a");
    await w.clusters.reconcile("a");
    await w.submit("j2", 1);
    await w.cycle();
    expect((await w.get("j2")).status?.admission).toBeUndefined();
  });

  it("a member whose own work cannot be read stays Ready and says why (its nodes look free of it)", async () => {
    const w = await world();
    w.members.get("a")!.usageError = 'pods is forbidden: User "cp" cannot list resource "pods"';
    await w.register("a");
    const a = (await w.cp.store.get(CLUSTER, "", "a")) as Cluster;
    expect(a.status?.phase).toBe("Ready");
    expect(a.status?.conditions?.[0]?.reason).toBe("OwnWorkNotCounted");
    expect(a.status?.conditions?.[0]?.message).toMatch(/cannot list resource "pods".*list pods/);
  });
});

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { FLEET_SEED_ANNOTATION } from "../../api/cluster.js";
import { TRAININGJOB, validateManifest } from "../../api/kinds.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import { DirCheckpointVault } from "../../platforms/embedded/checkpointvault.js";
import type { OpenedDatabase } from "../../platforms/embedded/db.js";
import { memoryStore } from "../../platforms/embedded/memorystore.js";
import { WorkloadFiles } from "../../platforms/embedded/workloadfiles.js";
import type { CheckpointFiles, MemberCluster } from "../../ports/fleet.js";
import type { WorkloadRef } from "../../ports/runtime.js";
import { MIRROR_INTERVAL_MS, MIRROR_RESYNC_MS, RemoteJobs } from "./dispatch.js";

// RemoteJobs over real SQLite stores (the control plane's and a member's): seeding a copy that
// moves into a member with the checkpoint the control plane holds, and mirroring by one watch
// per member. The member's operator is played by the test (it writes the copy's status).

const opened: OpenedDatabase[] = [];
afterEach(async () => {
  for (const d of opened.splice(0)) await d.close();
});

async function storeOf() {
  const opening = await memoryStore();
  opened.push(opening.db);
  return opening;
}

async function world(opts: { seed?: boolean } = {}) {
  const cp = await storeOf();
  const m = await storeOf();
  const seeds: { ref: WorkloadRef; files: CheckpointFiles }[] = [];
  let waiting = 1;
  const member: MemberCluster = {
    store: m.store,
    events: m.events,
    nodes: async () => [],
    probe: async () => ({}),
    ...(opts.seed !== false
      ? {
          seed: async (ref: WorkloadRef, files: CheckpointFiles) => {
            seeds.push({ ref, files });
            return waiting;
          },
        }
      : {}),
    close: () => {},
  };
  const files = new WorkloadFiles(mkdtempSync(join(tmpdir(), "loom-dispatch-vault-")));
  const vault = new DirCheckpointVault(files);
  const events = cp.events;
  const remote = new RemoteJobs({
    store: cp.store,
    events,
    log: pino({ level: "silent" }),
    now: () => new Date("2026-12-07T00:00:00Z"),
    member: (name) => (name === "b" ? member : undefined),
    vault,
  });
  const submit = async (name: string) => {
    const { object } = validateManifest({
      apiVersion: "loom.dev/v1alpha1",
      kind: TRAININGJOB,
      metadata: { name, project: "p" },
      spec: { command: ["python", "train.py"], resources: { cpu: 1 } },
    });
    const created = (await cp.store.create(object)) as TrainingJob;
    return (await cp.store.updateStatus({
      ...created,
      status: { phase: "Pending", attempts: 1, admission: { cluster: "b", workers: [] } as never },
    })) as TrainingJob;
  };
  const get = async (name: string) => (await cp.store.get(TRAININGJOB, "p", name)) as TrainingJob;
  const copy = async (name: string) => (await m.store.get(TRAININGJOB, "p", name)) as TrainingJob;
  return {
    cp,
    m,
    vault,
    seeds,
    remote,
    submit,
    get,
    copy,
    setWaiting: (n: number) => {
      waiting = n;
    },
  };
}

const until = async (ok: () => boolean) => {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(ok()).toBe(true);
};

describe("RemoteJobs: checkpoints into a member, mirroring by watch", () => {
  it("a job that ran elsewhere is created in the member marked for its checkpoint; its first attempt gets the files, once", async () => {
    const w = await world();
    const job = await w.submit("train");
    // The job checkpointed at step 40 before it moved (in self, or synced from a lost member).
    const held = new Map([
      ["loom.json", Buffer.from('{"step": 40}')],
      ["shards/w.pt", Buffer.from([1, 2, 3])],
    ]);
    await w.vault.put(job.metadata.uid, held);
    expect((await w.remote.reconcile(await w.get("train"))).requeueAfterMs).toBe(1000);
    const copy = await w.copy("train");
    expect(copy.metadata.annotations?.[FLEET_SEED_ANNOTATION]).toBe("40");
    // The copy's workers are not ready for it yet: asked again, with the copy's own uid.
    expect(w.seeds.at(-1)?.ref).toEqual({
      kind: TRAININGJOB,
      project: "p",
      name: "train",
      uid: copy.metadata.uid,
    });
    expect(w.seeds.at(-1)?.files).toEqual(held);
    w.setWaiting(0);
    expect((await w.remote.reconcile(await w.get("train"))).requeueAfterMs).toBe(MIRROR_INTERVAL_MS);
    const asked = w.seeds.length;
    await w.remote.reconcile(await w.get("train"));
    expect(w.seeds.length).toBe(asked);
    const events = await w.cp.events.listFor(
      { kind: TRAININGJOB, project: "p", name: "train", uid: job.metadata.uid },
      20,
    );
    expect(events.map((e) => e.reason)).toContain("CheckpointSeeded");
  });

  it("without a checkpoint held, or a member that cannot be seeded, the copy starts as it is", async () => {
    const w = await world();
    await w.submit("fresh");
    await w.remote.reconcile(await w.get("fresh"));
    expect((await w.copy("fresh")).metadata.annotations?.[FLEET_SEED_ANNOTATION]).toBeUndefined();
    expect(w.seeds).toEqual([]);

    const v = await world({ seed: false });
    const job = await v.submit("train");
    await v.vault.put(job.metadata.uid, new Map([["loom.json", Buffer.from('{"step": 3}')]]));
    await v.remote.reconcile(await v.get("train"));
    expect((await v.copy("train")).metadata.annotations?.[FLEET_SEED_ANNOTATION]).toBeUndefined();
  });

  it("one watch per member wakes the job whose copy changed; with it live, jobs are not read every 2 s", async () => {
    const w = await world();
    const woken: string[] = [];
    w.remote.watchCopies((key) => woken.push(key));
    await w.submit("j1");
    await w.submit("j2");
    // The watch is opening: the short interval still holds.
    expect((await w.remote.reconcile(await w.get("j1"))).requeueAfterMs).toBe(MIRROR_INTERVAL_MS);
    await until(() => woken.includes("p/j1"));
    expect((await w.remote.reconcile(await w.get("j2"))).requeueAfterMs).toBe(MIRROR_RESYNC_MS);
    expect((await w.remote.reconcile(await w.get("j1"))).requeueAfterMs).toBe(MIRROR_RESYNC_MS);
    // The member's operator starts j2: its job here is woken, and the mirror reads it.
    woken.length = 0;
    await w.m.store.updateStatus({ ...(await w.copy("j2")), status: { phase: "Running", attempts: 1 } });
    await until(() => woken.includes("p/j2"));
    expect(woken).not.toContain("p/j1");
    await w.remote.reconcile(await w.get("j2"));
    expect((await w.get("j2")).status?.phase).toBe("Running");
    // A copy nobody placed (no loom.dev/fleet-uid label) wakes nothing.
    woken.length = 0;
    const { object } = validateManifest({
      apiVersion: "loom.dev/v1alpha1",
      kind: TRAININGJOB,
      metadata: { name: "local", project: "p" },
      spec: { command: ["true"] },
    });
    await w.m.store.create(object);
    await w.m.store.updateStatus({ ...(await w.copy("j1")), status: { phase: "Running", attempts: 1 } });
    await until(() => woken.includes("p/j1"));
    expect(woken).not.toContain("p/local");
    w.remote.close();
  });
});

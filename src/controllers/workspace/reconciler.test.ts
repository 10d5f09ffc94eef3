import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { getCondition } from "../../api/meta.js";
import { type Workspace, WorkspaceSpec } from "../../api/workspace.js";
import { type OpenedDatabase, openSqlite } from "../../platforms/embedded/db.js";
import { SqliteEventRecorder } from "../../platforms/embedded/events.js";
import { SqliteResourceStore } from "../../platforms/embedded/store.js";
import type { WorkloadModels } from "../../ports/models.js";
import type {
  Preparation,
  ReplicaObservation,
  RevisionRuntime,
  RevisionSpec,
  Runtime,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { WorkspaceEndpoint } from "../../ports/workspaces.js";
import { InMemoryWorkspaceDirectory } from "../../server/workspaces/directory.js";
import { serviceOfReplica } from "../inferenceservice/names.js";
import {
  IDLE_STOPPED,
  WORKSPACE,
  WORKSPACE_FINALIZER,
  WorkspaceReconciler,
  workspaceOfReplica,
  workspaceRef,
  workspaceUrl,
} from "./reconciler.js";

/**
 * The Workspace lifecycle against an in-memory serving capability (revisions whose one replica
 * the test makes ready or lets go), the real SQLite store, and the real directory.
 */

const PROJECT = "p";

class FakeRevisions implements RevisionRuntime {
  readonly revisions = new Map<string, { spec: RevisionSpec; replicas: ReplicaObservation[] }>();
  readonly applied: RevisionSpec[] = [];
  readonly deleted: string[] = [];

  async applyRevision(spec: RevisionSpec): Promise<void> {
    this.applied.push(structuredClone(spec));
    const rev = this.revisions.get(spec.revision) ?? { spec, replicas: [] };
    rev.spec = spec;
    if (spec.replicas > 0 && rev.replicas.length === 0 && !this.preempted)
      rev.replicas.push({
        id: `${spec.revision}-r0`,
        host: "127.0.0.1",
        port: 40000,
        ready: false,
        startedAt: "",
      });
    this.revisions.set(spec.revision, rev);
  }

  async observeRevision(_s: WorkloadRef, revision: string) {
    const rev = this.revisions.get(revision);
    return {
      replicas: rev && rev.spec.replicas > 0 ? rev.replicas : [],
      ...(this.preempted ? { preempted: this.preempted } : {}),
    };
  }

  /** Set: the scheduler reclaimed the replica and its replacement waits for a place. */
  preempted: string | undefined;

  /** The scheduler stops the replica (the embedded platform's preempt): the replacement waits. */
  preempt(message: string): void {
    this.preempted = message;
    for (const r of this.revisions.values()) r.replicas = [];
  }

  /** The waiting replacement is placed and started. */
  place(): void {
    this.preempted = undefined;
    for (const r of this.revisions.values())
      if (r.spec.replicas > 0 && r.replicas.length === 0)
        r.replicas.push({
          id: `${r.spec.revision}-r1`,
          host: "127.0.0.1",
          port: 40001,
          ready: false,
          startedAt: "",
        });
  }

  /** Deleted revisions stay (their replica stopping) until settle(), as the embedded platform's do. */
  slowDelete = false;

  async deleteRevision(_s: WorkloadRef, revision: string): Promise<void> {
    this.deleted.push(revision);
    const rev = this.revisions.get(revision);
    if (this.slowDelete && rev) rev.spec = { ...rev.spec, replicas: 0 };
    else this.revisions.delete(revision);
  }

  async listRevisions() {
    return [...this.revisions.values()].map((r) => ({ service: r.spec.service, revision: r.spec.revision }));
  }

  /** The platform finished stopping a revision scaled to zero (its process is gone). */
  settle(): void {
    for (const [k, r] of this.revisions) if (r.spec.replicas === 0) this.revisions.delete(k);
  }

  ready(): void {
    for (const r of this.revisions.values()) for (const x of r.replicas) x.ready = true;
  }
}

describe("Workspace controller", () => {
  let database: OpenedDatabase;
  let store: SqliteResourceStore;
  let revisions: FakeRevisions;
  let directory: InMemoryWorkspaceDirectory;
  let reconciler: WorkspaceReconciler;
  let preparation: Preparation;
  /** The injected clock: tests move it forward. */
  let clock: Date;
  const now = () => clock;
  /** What the in-memory runtime says each replica (by uid) listens on. */
  let listening: Map<string, number[]>;
  const looked: WorkloadRef[] = [];

  beforeEach(async () => {
    database = await openSqlite(":memory:");
    store = await SqliteResourceStore.open(database.db, { now });
    revisions = new FakeRevisions();
    directory = new InMemoryWorkspaceDirectory();
    preparation = { ready: true };
    clock = new Date("2024-05-06T07:08:09.000Z");
    listening = new Map();
    looked.length = 0;
    const runtime = {
      serving: revisions,
      prepare: () => preparation,
      listeningPorts: async (ref: WorkloadRef, worker?: number) => {
        looked.push(ref);
        expect(worker).toBe(0);
        return listening.get(ref.uid) ?? [];
      },
    } as unknown as Runtime;
    reconciler = new WorkspaceReconciler({
      store,
      runtime,
      events: new SqliteEventRecorder(database.db, now),
      log: pino({ level: "silent" }),
      now,
      directory,
      workspaceOrigin: () => "http://ws.localhost:7471",
    });
  });

  afterEach(async () => {
    await store.close();
    await database.close();
  });

  async function create(spec: Record<string, unknown> = {}, name = "nb"): Promise<Workspace> {
    return (await store.create({
      apiVersion: "loom.dev/v1alpha1",
      kind: WORKSPACE,
      metadata: { name, project: PROJECT } as Workspace["metadata"],
      spec: WorkspaceSpec.parse(spec),
    })) as Workspace;
  }

  const get = async (name = "nb") => (await store.get(WORKSPACE, PROJECT, name)) as Workspace;
  const reconcile = (name = "nb") => reconciler.reconcile(`${PROJECT}/${name}`);
  async function patch(spec: Record<string, unknown>, name = "nb") {
    const ws = await get(name);
    await store.update({ ...ws, spec: WorkspaceSpec.parse({ ...ws.spec, ...spec }) });
  }

  it("runs JupyterLab as one non-preemptible replica with a persistent home, Running once it answers", async () => {
    await create({ resources: { gpu: 0.5 } });
    await reconcile();
    const spec = revisions.applied.at(-1)!;
    expect(spec.replicas).toBe(1);
    expect(spec.preemptible).toBe(false);
    expect(spec.gpu).toBe(0.5);
    expect(spec.home).toEqual({ name: "nb" });
    expect(spec.service).toMatchObject({ kind: WORKSPACE, project: PROJECT, name: "nb" });
    expect(spec.worker.command.slice(0, 2)).toEqual(["/bin/sh", "-c"]);
    expect(spec.worker.command).toEqual(
      expect.arrayContaining([
        "jupyter",
        "lab",
        "--port=$PORT",
        "--ServerApp.base_url=/",
        "--IdentityProvider.token=",
      ]),
    );
    // JupyterLab comes with the environment the pyenv builder makes.
    expect(spec.python).toEqual({
      interpreter: "python3",
      requirements: ["jupyterlab"],
      systemSitePackages: false,
    });
    expect(spec.readinessPath).toBe("/api");
    let ws = await get();
    expect(ws.status?.phase).toBe("Starting");
    expect(ws.status?.url).toBe("http://nb--p.ws.localhost:7471/");
    expect(directory.lookup(PROJECT, "nb")).toBeUndefined();
    revisions.ready();
    await reconcile();
    ws = await get();
    expect(ws.status?.phase).toBe("Running");
    expect(getCondition(ws.status?.conditions, "Ready")?.status).toBe("True");
    expect(ws.metadata.finalizers).toContain(WORKSPACE_FINALIZER);
    // The replica's own handle rides along: the origin dials /proxy/P/ into its network with it.
    const rid = [...revisions.revisions.values()][0]!.replicas[0]!.id;
    expect(directory.lookup(PROJECT, "nb")).toEqual<WorkspaceEndpoint>({
      ref: { kind: WORKSPACE, project: PROJECT, name: "nb", uid: ws.metadata.uid },
      host: "127.0.0.1",
      port: 40000,
      ports: [],
      replica: { kind: WORKSPACE, project: PROJECT, name: rid, uid: rid },
    });
  });

  it("a running workspace's other listening ports become status.ports and /proxy/P/ targets, polled every second", async () => {
    await create({ ide: "none", command: ["python3", "-m", "http.server", "$PORT"] });
    await reconcile();
    revisions.ready();
    const rid = [...revisions.revisions.values()][0]!.replicas[0]!.id;
    // The IDE's own port (40000) is not a forwarded port; duplicates (IPv4 and IPv6) count once.
    listening.set(rid, [40000, 9000, 5000, 9000]);
    const result = await reconcile();
    expect(result.requeueAfterMs).toBe(1000);
    expect(looked.at(-1)).toMatchObject({ name: rid, uid: rid, project: PROJECT });
    let ws = await get();
    expect(ws.status?.ports).toEqual([
      { port: 5000, url: "http://nb--p.ws.localhost:7471/proxy/5000/" },
      { port: 9000, url: "http://nb--p.ws.localhost:7471/proxy/9000/" },
    ]);
    expect(directory.lookup(PROJECT, "nb")?.ports).toEqual([5000, 9000]);
    // A port closes: it leaves the status and the directory at the next poll.
    listening.set(rid, [40000, 9000]);
    await reconcile();
    ws = await get();
    expect(ws.status?.ports).toEqual([{ port: 9000, url: "http://nb--p.ws.localhost:7471/proxy/9000/" }]);
    expect(directory.lookup(PROJECT, "nb")?.ports).toEqual([9000]);
    // Idempotent: nothing changed, nothing written.
    const version = ws.metadata.resourceVersion;
    await reconcile();
    expect((await get()).metadata.resourceVersion).toBe(version);
    // Stopped: no ports.
    await patch({ stopped: true });
    await reconcile();
    expect((await get()).status?.ports).toBeUndefined();
    expect(directory.lookup(PROJECT, "nb")).toBeUndefined();
  });

  it("Kubernetes: ports asked inside the replica (serving.replicaPorts, an exec) at the 5 s cadence, every 2 s only while it is used; a failed look keeps the last", async () => {
    const asked: { service: WorkloadRef; replica: string }[] = [];
    let fail = false;
    const ports = new Map<string, number[]>();
    const serving = Object.assign(revisions, {
      replicaPorts: async (service: WorkloadRef, replica: string) => {
        asked.push({ service, replica });
        if (fail) throw new Error("exec: no cat in the image");
        return ports.get(replica) ?? [];
      },
    });
    const r = new WorkspaceReconciler({
      store,
      // No Runtime.listeningPorts: the platform cannot see a pod's sockets from outside.
      runtime: { serving } as unknown as Runtime,
      events: new SqliteEventRecorder(database.db, now),
      log: pino({ level: "silent" }),
      now,
      directory,
      workspaceOrigin: () => "http://ws.localhost:7471",
    });
    const ws = await create({ ide: "none", command: ["python3", "-m", "http.server", "$PORT"] });
    await r.reconcile(`${PROJECT}/nb`);
    revisions.ready();
    const rid = [...revisions.revisions.values()][0]!.replicas[0]!.id;
    ports.set(rid, [40000, 6006]);
    // Nobody connected: the usual cadence, no faster poll.
    expect((await r.reconcile(`${PROJECT}/nb`)).requeueAfterMs).toBe(5000);
    expect(asked.at(-1)).toEqual({
      service: expect.objectContaining({ uid: ws.metadata.uid }),
      replica: rid,
    });
    expect((await get()).status?.ports).toEqual([
      { port: 6006, url: "http://nb--p.ws.localhost:7471/proxy/6006/" },
    ]);
    // The replica's handle is published, so the origin dials /proxy/P/ into the replica's pod.
    expect(directory.lookup(PROJECT, "nb")).toMatchObject({ ports: [6006], replica: { name: rid } });
    // Someone uses it through the origin: every 2 s, for a minute after.
    directory.touch(PROJECT, "nb", clock);
    expect((await r.reconcile(`${PROJECT}/nb`)).requeueAfterMs).toBe(2000);
    clock = new Date(clock.getTime() + 61_000);
    expect((await r.reconcile(`${PROJECT}/nb`)).requeueAfterMs).toBe(5000);
    // An exec that fails does not close the ports.
    fail = true;
    await r.reconcile(`${PROJECT}/nb`);
    expect((await get()).status?.ports).toEqual([
      { port: 6006, url: "http://nb--p.ws.localhost:7471/proxy/6006/" },
    ]);
  });

  it("model access: the revision's replica gets OPENAI_BASE_URL, the bridge on PYTHONPATH and the key as a file, one per revision; stopping revokes it", async () => {
    const calls: string[] = [];
    const models: WorkloadModels = {
      access: async (ref, session, opts) => {
        calls.push(`access ${ref.name} ${session} ${opts?.exclusive ?? false}`);
        return {
          env: { OPENAI_BASE_URL: "http://loom/v1", PYTHONPATH: "$(HOME)/.loom/python" },
          files: [{ path: ".loom/openai-key", data: "sk-loom-k\n", mode: 0o600 }],
        };
      },
      revoke: async (ref) => {
        calls.push(`revoke ${ref.name}`);
      },
    };
    const tracking = {
      sessionCredentials: async (ref: WorkloadRef, session: string) => {
        calls.push(`tracking ${ref.name} ${session}`);
        return {
          env: {
            MLFLOW_TRACKING_URI: "http://loom/mlflow/projects/p",
            LOOM_MLFLOW_CREDENTIALS: "$(HOME)/.mlflow/credentials",
          },
          files: [
            {
              path: ".mlflow/credentials",
              data: "[mlflow]\nmlflow_tracking_password = t-secret\n",
              mode: 0o600,
            },
          ],
        };
      },
      revokeCredentials: async (ref: WorkloadRef) => {
        calls.push(`revoke-tracking ${ref.name}`);
      },
    };
    const r = new WorkspaceReconciler({
      store,
      runtime: { serving: revisions } as unknown as Runtime,
      events: new SqliteEventRecorder(database.db, now),
      log: pino({ level: "silent" }),
      now,
      models,
      tracking,
    });
    await create({ ide: "none", command: ["python3", "app.py"], env: { PYTHONPATH: "/src" } });
    await r.reconcile(`${PROJECT}/nb`);
    const spec = revisions.applied.at(-1)!;
    expect(spec.worker.env).toMatchObject({
      OPENAI_BASE_URL: "http://loom/v1",
      PYTHONPATH: "$(HOME)/.loom/python:/src",
      MLFLOW_TRACKING_URI: "http://loom/mlflow/projects/p",
      LOOM_MLFLOW_CREDENTIALS: "$(HOME)/.mlflow/credentials",
    });
    expect(spec.worker.files).toEqual([
      { path: ".loom/openai-key", data: "sk-loom-k\n", mode: 0o600 },
      { path: ".mlflow/credentials", data: "[mlflow]\nmlflow_tracking_password = t-secret\n", mode: 0o600 },
    ]);
    // The key and token are the revision's, never exclusive (a re-adopted replica keeps its own),
    // never in the status or env.
    expect(calls).toEqual([`access nb ${spec.revision} false`, `tracking nb ${spec.revision}`]);
    expect(JSON.stringify(await get())).not.toContain("sk-loom-k");
    expect(JSON.stringify(await get()) + JSON.stringify(spec.worker.env)).not.toContain("t-secret");
    // The wrapper links the persistent home's ~/.mlflow/credentials to the replica's file.
    expect(spec.worker.command[2]).toContain('ln -sfn "$LOOM_MLFLOW_CREDENTIALS"');
    await patch({ stopped: true });
    await r.reconcile(`${PROJECT}/nb`);
    revisions.settle();
    await r.reconcile(`${PROJECT}/nb`);
    expect((await get()).status?.phase).toBe("Stopped");
    expect(calls.slice(-2)).toEqual(["revoke nb", "revoke-tracking nb"]);
    // Stopped, the zero-replica revision carries no key.
    expect(revisions.applied.at(-1)?.worker.files).toBeUndefined();
  });

  it("ssh: the replica gets the project's registered keys as a file and LOOM_SSHD; keys read at each apply; port 2222 is not a /proxy/ port", async () => {
    let keys = ["ssh-ed25519 AAAAone alice@laptop"];
    const asked: string[] = [];
    const r = new WorkspaceReconciler({
      store,
      runtime: {
        serving: revisions,
        listeningPorts: async (ref: WorkloadRef) => listening.get(ref.uid) ?? [],
      } as unknown as Runtime,
      events: new SqliteEventRecorder(database.db, now),
      log: pino({ level: "silent" }),
      now,
      sshKeys: {
        authorizedKeys: async (project) => {
          asked.push(project);
          return keys;
        },
      },
      sshd: "/opt/loom/runtimes/loom-sshd/loom-sshd.sh",
    });
    // The user's env cannot point sshd at another keys file.
    await create({
      ide: "none",
      command: ["python3", "app.py"],
      env: { LOOM_SSH_AUTHORIZED_KEYS_FILE: "/x" },
    });
    await r.reconcile(`${PROJECT}/nb`);
    let spec = revisions.applied.at(-1)!;
    expect(asked).toEqual([PROJECT]);
    expect(spec.worker.env).toMatchObject({
      LOOM_SSH_AUTHORIZED_KEYS_FILE: "$(HOME)/.loom/ssh/authorized_keys",
      LOOM_SSHD: "/opt/loom/runtimes/loom-sshd/loom-sshd.sh",
    });
    expect(spec.worker.files).toEqual([
      { path: ".loom/ssh/authorized_keys", data: "ssh-ed25519 AAAAone alice@laptop\n", mode: 0o600 },
    ]);
    // The wrapper starts sshd in the background before it execs the server.
    expect(spec.worker.command[2]).toMatch(/; \[ -x \/usr\/sbin\/sshd \] && .*sh "\$LOOM_SSHD" .*& \}; /);
    const revision = spec.revision;
    // A key added later: the same revision (nothing restarts), its file has it for the next start.
    keys = [...keys, "ssh-ed25519 AAAAtwo bob@desk"];
    revisions.ready();
    const rid = [...revisions.revisions.values()][0]!.replicas[0]!.id;
    listening.set(rid, [40000, 2222, 8080]);
    await r.reconcile(`${PROJECT}/nb`);
    spec = revisions.applied.at(-1)!;
    expect(spec.revision).toBe(revision);
    expect(spec.worker.files?.[0]?.data).toBe(
      "ssh-ed25519 AAAAone alice@laptop\nssh-ed25519 AAAAtwo bob@desk\n",
    );
    expect((await get()).status?.ports).toEqual([{ port: 8080 }]);
    // Keys that cannot be read never stop a workspace: it starts without them.
    const broken = new WorkspaceReconciler({
      store,
      runtime: { serving: revisions } as unknown as Runtime,
      events: new SqliteEventRecorder(database.db, now),
      log: pino({ level: "silent" }),
      now,
      sshKeys: {
        authorizedKeys: async () => {
          throw new Error("database is locked");
        },
      },
    });
    await create({ ide: "none", command: ["python3", "app.py"] }, "other");
    await broken.reconcile(`${PROJECT}/other`);
    spec = revisions.applied.at(-1)!;
    expect(spec.worker.files).toBeUndefined();
    expect(spec.worker.env.LOOM_SSH_AUTHORIZED_KEYS_FILE).toBeUndefined();
    // Without LOOM_SSHD (Kubernetes: the image decides), the wrapper starts no sshd.
    expect(spec.worker.env.LOOM_SSHD).toBeUndefined();
    expect(spec.worker.command[2]).not.toContain("sshd");
  });

  it("idleTimeout: culled after that long without activity (spec kept, Stopped/Idle); activity spares it; loom start brings it back", async () => {
    const reconciler2 = (ideActivity?: () => Promise<Date | undefined>) =>
      new WorkspaceReconciler({
        store,
        runtime: { serving: revisions, listeningPorts: async () => [] } as unknown as Runtime,
        events: new SqliteEventRecorder(database.db, now),
        log: pino({ level: "silent" }),
        now,
        directory,
        workspaceOrigin: () => "http://ws.localhost:7471",
        ...(ideActivity ? { ideActivity } : {}),
      });
    let ide: Date | undefined;
    const r = reconciler2(async () => ide);
    const run = () => r.reconcile(`${PROJECT}/nb`);
    const tick = (s: number) => {
      clock = new Date(clock.getTime() + s * 1000);
    };
    await create({ idleTimeout: "30s" });
    await run();
    revisions.ready();
    await run();
    expect((await get()).status?.phase).toBe("Running"); // the idle clock starts here
    tick(20);
    directory.touch(PROJECT, "nb", clock); // a request through the origin (or port-forward)
    tick(25);
    await run();
    expect((await get()).status?.phase).toBe("Running"); // 25 s since the request
    // The proxy saw nothing for 31 s, but Jupyter's own record (a busy kernel) is recent: spared.
    tick(6);
    ide = new Date(clock.getTime() - 5000);
    await run();
    let ws = await get();
    expect(ws.status?.phase).toBe("Running");
    expect(ws.status?.lastActivityTime).toBe(ide.toISOString());
    // Nothing at all for 30 s: culled. The spec is the user's and stays; the mark is an annotation.
    tick(25);
    await run();
    ws = await get();
    expect(ws.spec.stopped).toBe(false);
    expect(ws.metadata.annotations?.[IDLE_STOPPED]).toBe(clock.toISOString());
    expect(revisions.applied.at(-1)!.replicas).toBe(0);
    revisions.settle();
    await run();
    ws = await get();
    expect(ws.status?.phase).toBe("Stopped");
    expect(ws.status?.stoppedReason).toBe("Idle");
    const ready = getCondition(ws.status?.conditions, "Ready");
    expect(ready?.reason).toBe("Idle");
    expect(ready?.message).toContain("stopped after 30s without activity");
    expect(directory.lookup(PROJECT, "nb")).toBeUndefined();
    // Stays stopped however long it waits.
    tick(3600);
    await run();
    expect((await get()).status?.phase).toBe("Stopped");
    // loom start: spec.stopped false and the mark removed (one merge patch) → it runs again.
    const culled = await get();
    await store.update({
      ...culled,
      metadata: { ...culled.metadata, annotations: {} },
    });
    await run();
    revisions.ready();
    await run();
    ws = await get();
    expect(ws.status?.phase).toBe("Running");
    expect(ws.status?.stoppedReason).toBeUndefined();
    // A fresh start: the idle clock starts again (old activity does not cull it at once).
    tick(10);
    await run();
    expect((await get()).status?.phase).toBe("Running");
  });

  it("idleTimeout: a workspace whose GPU computes is spared though nothing else moves; culled once it stops", async () => {
    let busy: boolean | undefined = true;
    const asked: string[][] = [];
    const r = new WorkspaceReconciler({
      store,
      runtime: { serving: revisions, listeningPorts: async () => [] } as unknown as Runtime,
      events: new SqliteEventRecorder(database.db, now),
      log: pino({ level: "silent" }),
      now,
      directory,
      gpuActivity: async (devices) => {
        asked.push(devices);
        return busy;
      },
    });
    const run = () => r.reconcile(`${PROJECT}/nb`);
    await create({ idleTimeout: "30s", resources: { gpu: 1 } });
    await run();
    for (const rev of revisions.revisions.values())
      for (const x of rev.replicas) x.gpus = [{ device: "3", share: 1 }];
    revisions.ready();
    await run();
    expect((await get()).status?.phase).toBe("Running");
    clock = new Date(clock.getTime() + 60_000);
    await run();
    expect((await get()).status?.phase).toBe("Running");
    expect(asked.at(-1)).toEqual(["3"]); // the replica's own device, nobody else's
    // The GPU went quiet (or nvidia-smi cannot say): 30 s later, culled.
    busy = undefined;
    clock = new Date(clock.getTime() + 31_000);
    await run();
    expect((await get()).metadata.annotations?.[IDLE_STOPPED]).toBeDefined();
  });

  it("no idleTimeout: never culled", async () => {
    await create({});
    await reconcile();
    revisions.ready();
    await reconcile();
    clock = new Date(clock.getTime() + 86_400_000);
    await reconcile();
    expect((await get()).status?.phase).toBe("Running");
    expect((await get()).metadata.annotations?.[IDLE_STOPPED]).toBeUndefined();
  });

  it("preemptible: true is passed on to the scheduler's view of the replica", async () => {
    await create({ preemptible: true });
    await reconcile();
    expect(revisions.applied.at(-1)!.preemptible).toBe(true);
  });

  it("preempted: Pending with reason Preempted and the scheduler's words while it waits; Running again once placed", async () => {
    await create({ ide: "none", command: ["python3", "-m", "http.server", "$PORT"], preemptible: true });
    await reconcile();
    revisions.ready();
    await reconcile();
    expect((await get()).status?.phase).toBe("Running");
    revisions.preempt("preempted for big (priority 10 > 0) in project p");
    await reconcile();
    let ws = await get();
    expect(ws.status?.phase).toBe("Pending");
    expect(ws.status?.stoppedReason).toBe("Preempted");
    expect(ws.status?.replica).toBeUndefined();
    expect(directory.lookup(PROJECT, "nb")).toBeUndefined();
    const ready = getCondition(ws.status?.conditions, "Ready");
    expect(ready?.reason).toBe("Preempted");
    expect(ready?.message).toBe(
      "preempted for big (priority 10 > 0) in project p; it runs again once the scheduler places it (its home is kept)",
    );
    revisions.place();
    revisions.ready();
    await reconcile();
    ws = await get();
    expect(ws.status?.phase).toBe("Running");
    expect(ws.status?.stoppedReason).toBeUndefined();
    expect(getCondition(ws.status?.conditions, "Ready")?.reason).toBe("Ready");
  });

  it("a preempted workspace the user then stops says User", async () => {
    await create({ ide: "none", command: ["python3", "-m", "http.server", "$PORT"], preemptible: true });
    await reconcile();
    revisions.ready();
    await reconcile();
    revisions.preempt("preempted for big (priority 10 > 0) in project p");
    await reconcile();
    await patch({ stopped: true });
    await reconcile();
    revisions.settle();
    await reconcile();
    const ws = await get();
    expect(ws.status?.phase).toBe("Stopped");
    expect(ws.status?.stoppedReason).toBe("User");
  });

  it("stop scales to zero and says Stopped only once the replica is gone; start runs it again", async () => {
    await create({ ide: "none", command: ["python3", "-m", "http.server", "$PORT"] });
    await reconcile();
    revisions.ready();
    await reconcile();
    await patch({ stopped: true });
    await reconcile();
    expect(revisions.applied.at(-1)!.replicas).toBe(0);
    let ws = await get();
    expect(ws.status?.phase).not.toBe("Stopped"); // the process may still be ending
    expect(getCondition(ws.status?.conditions, "Ready")?.reason).toBe("Stopping");
    expect(directory.lookup(PROJECT, "nb")).toBeUndefined();
    revisions.settle();
    const applies = revisions.applied.length;
    await reconcile();
    await reconcile();
    ws = await get();
    expect(ws.status?.phase).toBe("Stopped");
    expect(ws.status?.stoppedReason).toBe("User");
    // Gone and stopped: nothing more is applied (no empty revision is made again).
    expect(revisions.applied.length).toBe(applies);
    await patch({ stopped: false });
    await reconcile();
    expect(revisions.applied.at(-1)!.replicas).toBe(1);
    expect(revisions.applied.at(-1)!.home).toEqual({ name: "nb" }); // the same home again
    revisions.ready();
    await reconcile();
    ws = await get();
    expect(ws.status?.phase).toBe("Running");
    expect(ws.status?.stoppedReason).toBeUndefined();
  });

  it("where the platform lists no revisions (Kubernetes: a Deployment of zero stays), Stopped once no replica is left", async () => {
    (revisions as { listRevisions?: unknown }).listRevisions = undefined;
    await create({ ide: "none", command: ["python3", "-m", "http.server", "$PORT"] });
    await reconcile();
    revisions.ready();
    await reconcile();
    const revision = (await get()).status!.revision!;
    // The pod still ends after the Deployment went to zero.
    const { replicas } = await revisions.observeRevision(workspaceRef(await get()), revision);
    let lingering = true;
    const observe = revisions.observeRevision.bind(revisions);
    revisions.observeRevision = async (s, r) => (lingering ? { replicas } : observe(s, r));
    await patch({ stopped: true });
    await reconcile();
    expect(revisions.applied.at(-1)!.replicas).toBe(0);
    expect(getCondition((await get()).status?.conditions, "Ready")?.reason).toBe("Stopping");
    lingering = false;
    await reconcile();
    const ws = await get();
    expect(ws.status?.phase).toBe("Stopped");
    expect(ws.status?.stoppedReason).toBe("User");
    await patch({ stopped: false });
    await reconcile();
    expect(revisions.applied.at(-1)!.replicas).toBe(1);
    revisions.ready();
    await reconcile();
    expect((await get()).status?.phase).toBe("Running");
  });

  it("a changed spec is a new revision; the old one is deleted", async () => {
    await create({ ide: "none", command: ["srv", "$PORT"] });
    await reconcile();
    const first = (await get()).status!.revision!;
    expect(first).toMatch(/^nb-ws[0-9a-f]{6}$/);
    await patch({ env: { A: "1" } });
    await reconcile();
    const second = (await get()).status!.revision!;
    expect(second).not.toBe(first);
    expect(revisions.deleted).toEqual([first]);
    expect(revisions.applied.at(-1)!.worker.env.A).toBe("1");
  });

  it("ide: vscode fails with what to do instead, and runs nothing", async () => {
    await create({ ide: "vscode" });
    await reconcile();
    const ws = await get();
    expect(ws.status?.phase).toBe("Failed");
    const ready = getCondition(ws.status?.conditions, "Ready");
    expect(ready?.reason).toBe("Unsupported");
    expect(ready?.message).toMatch(/needs code-server on the server.*LOOM_CODE_SERVER/);
    expect(revisions.applied).toEqual([]);
  });

  it("says it is building the environment while the pyenv builder runs", async () => {
    preparation = { ready: false, message: "installing jupyterlab (1m12s so far)" };
    await create();
    revisions.applyRevision = async (spec) => void revisions.applied.push(spec); // no replica yet
    await reconcile();
    const ws = await get();
    expect(ws.status?.phase).toBe("Pending");
    expect(getCondition(ws.status?.conditions, "Ready")).toMatchObject({
      reason: "BuildingEnvironment",
      message: "installing jupyterlab (1m12s so far)",
    });
  });

  it("deleting a workspace deletes its revision and unpublishes it (the finalizer)", async () => {
    await create();
    await reconcile();
    revisions.ready();
    await reconcile();
    const rev = (await get()).status!.revision!;
    await store.delete(WORKSPACE, PROJECT, "nb");
    await reconcile();
    expect(revisions.deleted).toContain(rev);
    expect(directory.lookup(PROJECT, "nb")).toBeUndefined();
    await expect(get()).rejects.toThrow();
  });

  it("a deleted workspace keeps its finalizer until its replica's process is gone", async () => {
    await create();
    await reconcile();
    revisions.slowDelete = true;
    await store.delete(WORKSPACE, PROJECT, "nb");
    expect((await reconcile()).requeueAfterMs).toBeGreaterThan(0);
    expect((await get()).metadata.finalizers).toContain(WORKSPACE_FINALIZER);
    revisions.settle();
    await reconcile();
    await expect(get()).rejects.toThrow();
  });

  it("a workspace replica's name is told apart from a model replica's", () => {
    expect(workspaceOfReplica("nb-wsa1b2c3-r0")).toBe("nb");
    expect(workspaceOfReplica("my-ws-wsa1b2c3-r12")).toBe("my-ws");
    expect(workspaceOfReplica("chat-3-r0")).toBeUndefined();
    expect(workspaceOfReplica("x-ws-1-r0")).toBeUndefined();
    expect(serviceOfReplica("chat-3-r0")).toBe("chat");
    expect(workspaceUrl("http://ws.localhost:7471", "team-a", "nb")).toBe(
      "http://nb--team-a.ws.localhost:7471/",
    );
  });
});

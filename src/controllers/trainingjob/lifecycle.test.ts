import type { Readable } from "node:stream";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NotFoundError } from "../../api/errors.js";
import { getCondition } from "../../api/meta.js";
import {
  type Admission,
  type TrainingJob,
  TrainingJobSpec,
  type TrainingJobStatus,
} from "../../api/trainingjob.js";
import { type OpenedDatabase, openSqlite } from "../../platforms/embedded/db.js";
import { SqliteEventRecorder } from "../../platforms/embedded/events.js";
import { SqliteResourceStore } from "../../platforms/embedded/store.js";
import type { WorkloadModels } from "../../ports/models.js";
import type {
  GangObservation,
  GangSpec,
  Runtime,
  WorkerEndpoint,
  WorkerObservation,
  WorkloadRef,
} from "../../ports/runtime.js";
import { RUNTIME_FINALIZER, TRAININGJOB, TrainingJobReconciler } from "./reconciler.js";

/**
 * The TrainingJob lifecycle, phase by phase, against an in-memory Runtime whose workers the test
 * ends at will, the real SQLite store, and a clock the test moves.
 */

const PROJECT = "p";
const BASE_BACKOFF_MS = 5000;

interface Gang {
  attempt: number;
  workers: WorkerObservation[];
  stopping: boolean;
}

/** The Runtime port in memory: every start is recorded, workers run until the test ends them. */
class FakeRuntime implements Runtime {
  readonly mpiHost = { command: ["mpi-host"], env: {} };
  readonly gangs = new Map<string, Gang>();
  readonly started: GangSpec[] = [];
  readonly stops: { ref: WorkloadRef; graceSeconds: number }[] = [];
  readonly released: WorkloadRef[] = [];
  /** stop() answers "still stopping" this many more times before the workers are gone. */
  slowStops = 0;

  constructor(private readonly now: () => Date) {}

  async nodes() {
    return [];
  }

  async endpoints(
    _ref: WorkloadRef,
    attempt: number,
    workers: number,
    ports: number,
  ): Promise<WorkerEndpoint[]> {
    return Array.from({ length: workers }, (_, i) => ({
      host: `w${i}-a${attempt}`,
      ports: Array.from({ length: ports }, (_, p) => 29500 + p),
    }));
  }

  async lastActivity(): Promise<Date | undefined> {
    return undefined;
  }

  /** For each start, whether the caller's finalizer write was still under way beside it. */
  readonly heldBeside: boolean[] = [];

  async start(spec: GangSpec, held?: Promise<unknown>): Promise<void> {
    this.heldBeside.push(!!held);
    // As a runtime must: no worker before the caller's write is done (and none if it failed).
    await held;
    const gang = this.gangs.get(spec.ref.uid);
    if (gang?.attempt === spec.attempt) return;
    if (gang?.workers.some((w) => w.state === "Running"))
      throw new Error(`attempt ${gang.attempt} still has live workers`);
    this.started.push(structuredClone(spec));
    this.gangs.set(spec.ref.uid, {
      attempt: spec.attempt,
      stopping: false,
      workers: spec.workers.map((w) => ({
        index: w.index,
        state: "Running",
        pid: 1000 + w.index,
        startTime: this.now().toISOString(),
      })),
    });
  }

  async observe(ref: WorkloadRef): Promise<GangObservation | undefined> {
    const gang = this.gangs.get(ref.uid);
    // A copy: the reconciler may add to and sort what it is given.
    return gang ? structuredClone(gang) : undefined;
  }

  async stop(ref: WorkloadRef, graceSeconds: number): Promise<boolean> {
    this.stops.push({ ref, graceSeconds });
    const gang = this.gangs.get(ref.uid);
    if (!gang?.workers.some((w) => w.state === "Running")) return true;
    if (this.slowStops > 0) {
      this.slowStops--;
      gang.stopping = true;
      return false;
    }
    for (const w of gang.workers) if (w.state === "Running") this.end(w, 143, "SIGTERM");
    gang.stopping = false;
    return true;
  }

  async release(ref: WorkloadRef): Promise<void> {
    this.released.push(ref);
    this.gangs.delete(ref.uid);
  }

  async list(): Promise<WorkloadRef[]> {
    return [];
  }

  logs(): Promise<Readable> {
    throw new Error("no logs in the fake runtime");
  }

  async ensureProject(): Promise<void> {}
  async removeProject(): Promise<void> {}
  onChange(): void {}
  async close(): Promise<void> {}

  /** Worker `index` of the job's current attempt exits. */
  exit(job: TrainingJob, index: number, exitCode: number): void {
    const w = this.gangs.get(job.metadata.uid)!.workers.find((x) => x.index === index)!;
    this.end(w, exitCode);
  }

  private end(w: WorkerObservation, exitCode: number, signal?: string): void {
    w.state = exitCode === 0 ? "Succeeded" : "Failed";
    w.exitCode = exitCode;
    if (signal) w.signal = signal;
    delete w.pid;
    w.finishTime = this.now().toISOString();
  }
}

describe("TrainingJobReconciler (fake runtime, SQLite store)", () => {
  let database: OpenedDatabase;
  let store: SqliteResourceStore;
  let events: SqliteEventRecorder;
  let runtime: FakeRuntime;
  let reconciler: TrainingJobReconciler;
  let clock: number;
  let uids: number;
  const now = () => new Date(clock);

  beforeEach(async () => {
    clock = Date.parse("2024-05-06T07:08:09.000Z");
    uids = 0;
    database = await openSqlite(":memory:");
    store = await SqliteResourceStore.open(database.db, { now, newUid: () => `uid-${++uids}-0000` });
    events = new SqliteEventRecorder(database.db, now);
    runtime = new FakeRuntime(now);
    reconciler = new TrainingJobReconciler({
      store,
      runtime,
      events,
      log: pino({ level: "silent" }),
      now,
      baseBackoffMs: BASE_BACKOFF_MS,
      maxBackoffMs: 60_000,
    });
  });

  afterEach(async () => {
    await store.close();
    await database.close();
  });

  async function createJob(spec: Record<string, unknown> = {}, name = "train"): Promise<TrainingJob> {
    return (await store.create({
      apiVersion: "loom.dev/v1alpha1",
      kind: TRAININGJOB,
      metadata: { name, project: PROJECT } as TrainingJob["metadata"],
      spec: TrainingJobSpec.parse({
        command: ["python", "train.py"],
        env: { FOO: "bar" },
        workers: 2,
        framework: "pytorch",
        ...spec,
      }),
    })) as TrainingJob;
  }

  const getJob = async (name = "train") => (await store.get(TRAININGJOB, PROJECT, name)) as TrainingJob;

  async function setStatus(fields: Partial<TrainingJobStatus>, name = "train"): Promise<TrainingJob> {
    const job = await getJob(name);
    return (await store.updateStatus({ ...job, status: { ...job.status, ...fields } })) as TrainingJob;
  }

  /** What the admission loop writes when it gives the job capacity. */
  const admit = (workers = 2, name = "train") =>
    setStatus(
      {
        admission: {
          node: "node-a",
          workers,
          cpuMillis: 1000,
          memoryBytes: 1 << 30,
          gpus: [],
          admittedAt: now().toISOString(),
        } satisfies Admission,
      },
      name,
    );

  const reconcile = (name = "train") => reconciler.reconcile(`${PROJECT}/${name}`);

  /** Admitted and running attempt 1. */
  async function running(spec: Record<string, unknown> = {}): Promise<TrainingJob> {
    await createJob(spec);
    await admit();
    await reconcile();
    return getJob();
  }

  it("starts a first attempt beside the finalizer's write, and nothing when that write fails", async () => {
    await createJob({ failurePolicy: { maxRestarts: 3 } });
    await admit();
    // The finalizer's write fails once (the job changed under it): no worker starts, nothing is
    // written, and the retry starts the gang.
    let failures = 1;
    const failing = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === "update")
          return async (obj: TrainingJob) => {
            if (failures-- > 0) throw new Error("conflict: the object has been modified");
            return target.update(obj);
          };
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const beside = new TrainingJobReconciler({
      store: failing,
      runtime,
      events,
      log: pino({ level: "silent" }),
      now,
    });
    await expect(beside.reconcile(`${PROJECT}/train`)).rejects.toThrow(/conflict/);
    expect(runtime.started).toEqual([]);
    expect((await getJob()).status?.phase).toBeUndefined();
    expect((await getJob()).metadata.finalizers ?? []).toEqual([]);
    await beside.reconcile(`${PROJECT}/train`);
    expect(runtime.heldBeside).toEqual([true, true]);
    expect(runtime.started).toHaveLength(1);
    const job = await getJob();
    expect(job.metadata.finalizers).toEqual([RUNTIME_FINALIZER]);
    expect(job.status).toMatchObject({ phase: "Running", attempts: 1 });
    // Once it holds the finalizer, a start (the next attempt) has nothing beside it.
    runtime.exit(job, 0, 1);
    for (let i = 0; i < 4 && runtime.started.length < 2; i++) {
      await beside.reconcile(`${PROJECT}/train`);
      clock += 60_000;
    }
    expect(runtime.started).toHaveLength(2);
    expect(runtime.heldBeside.at(-1)).toBe(false);
  });

  it("waits for admission, then starts attempt 1 with every worker's planned environment", async () => {
    await createJob();
    expect(await reconcile()).toEqual({});
    expect(runtime.started).toEqual([]);
    expect((await getJob()).status?.phase).toBeUndefined();

    await admit();
    await reconcile();
    expect(runtime.started).toHaveLength(1);
    const gang = runtime.started[0]!;
    const job = await getJob();
    expect(gang.attempt).toBe(1);
    expect(gang.ref).toEqual({ kind: TRAININGJOB, project: PROJECT, name: "train", uid: job.metadata.uid });
    expect(gang.workers.map((w) => w.index)).toEqual([0, 1]);
    for (const w of gang.workers) {
      expect(w.command).toEqual(["python", "train.py"]);
      expect(w.allocation.node).toBe("node-a");
      expect(w.env).toMatchObject({
        PYTHONUNBUFFERED: "1",
        FOO: "bar",
        MASTER_ADDR: "w0-a1",
        MASTER_PORT: "29500",
        WORLD_SIZE: "2",
        RANK: String(w.index),
        LOOM_WORKER_INDEX: String(w.index),
        LOOM_WORKERS: "2",
        LOOM_PEERS: "w0-a1:29500,w1-a1:29500",
        LOOM_RENDEZVOUS_ID: `${job.metadata.uid.slice(0, 8)}-a1`,
        LOOM_PROJECT: PROJECT,
        LOOM_WORKLOAD: "train",
        LOOM_WORKLOAD_KIND: TRAININGJOB,
        LOOM_WORKLOAD_UID: job.metadata.uid,
        LOOM_ATTEMPT: "1",
      });
    }
    // The first observation goes into the same write: both workers running.
    expect(job.metadata.finalizers).toEqual([RUNTIME_FINALIZER]);
    expect(job.status).toMatchObject({ phase: "Running", attempts: 1, ready: "2/2", activeWorkers: 2 });
    expect(job.status?.workers?.map((w) => [w.state, w.pid])).toEqual([
      ["Running", 1000],
      ["Running", 1001],
    ]);
    expect(getCondition(job.status?.conditions, "Running")?.status).toBe("True");

    // Nothing changed: no new attempt.
    await reconcile();
    expect(runtime.started).toHaveLength(1);
  });

  it("a failed worker stops the gang and restarts it (attempt 2, one restart counted); the next restart waits out the backoff", async () => {
    await running({ failurePolicy: { maxRestarts: 3 } });
    runtime.exit(await getJob(), 1, 1);
    expect(await reconcile()).toEqual({ requeueAfterMs: 0 });
    let job = await getJob();
    expect(job.status?.restarts).toBe(1);
    expect(job.status?.workers?.map((w) => w.state)).toEqual(["Running", "Failed"]);
    const restarting = getCondition(job.status?.conditions, "Restarting");
    expect(restarting).toMatchObject({ status: "True", reason: "WorkerFailed" });
    expect(restarting?.message).toContain("worker 1 exited with code 1 on attempt 1 of 4");

    // The rest of the gang is stopped while it still runs, slowly: no start until it is gone.
    runtime.slowStops = 1;
    expect(await reconcile()).toEqual({ requeueAfterMs: 250 });
    expect(runtime.started).toHaveLength(1);
    // The first restart is immediate: no backoff yet.
    await reconcile();
    expect(runtime.started.map((g) => g.attempt)).toEqual([1, 2]);
    expect(runtime.started[1]!.workers[0]!.env.LOOM_ATTEMPT).toBe("2");
    job = await getJob();
    expect(job.status).toMatchObject({ phase: "Running", attempts: 2, restarts: 1, ready: "2/2" });
    expect(getCondition(job.status?.conditions, "Restarting")?.message).toBe(
      "attempt 2 started after a failure",
    );

    // The second failure waits the base backoff, on the injected clock.
    runtime.exit(job, 0, 2);
    expect(await reconcile()).toEqual({ requeueAfterMs: 0 });
    expect((await getJob()).status?.restarts).toBe(2);
    expect(await reconcile()).toEqual({ requeueAfterMs: BASE_BACKOFF_MS });
    expect(runtime.gangs.get(job.metadata.uid)!.workers.map((w) => w.state)).toEqual(["Failed", "Failed"]);
    expect(runtime.started).toHaveLength(2);
    clock += BASE_BACKOFF_MS;
    await reconcile();
    expect(runtime.started.map((g) => g.attempt)).toEqual([1, 2, 3]);
    expect((await getJob()).status).toMatchObject({ attempts: 3, restarts: 2, phase: "Running" });
  });

  it("a failurePolicy rule that says Fail fails the job at once, then stops what still runs", async () => {
    await running({ failurePolicy: { maxRestarts: 3, rules: [{ exitCodes: [3], action: "Fail" }] } });
    runtime.exit(await getJob(), 0, 3);
    await reconcile();
    const job = await getJob();
    expect(job.status?.phase).toBe("Failed");
    expect(job.status?.completionTime).toBe(now().toISOString());
    const failed = getCondition(job.status?.conditions, "Failed");
    expect(failed).toMatchObject({ status: "True", reason: "FailurePolicyRule" });
    expect(failed?.message).toContain("worker 0 exited with code 3 on attempt 1");
    expect(job.status?.restarts).toBeUndefined();

    // Finished: worker 1 is a straggler, stopped, and the status shows how each ended.
    await reconcile();
    expect(runtime.gangs.get(job.metadata.uid)!.workers.every((w) => w.state !== "Running")).toBe(true);
    await reconcile();
    expect((await getJob()).status?.workers?.map((w) => w.state)).toEqual(["Failed", "Failed"]);
    expect(runtime.started).toHaveLength(1);
  });

  it("with no restarts left, a failure fails the job (BackoffLimitExceeded)", async () => {
    await running();
    runtime.exit(await getJob(), 1, 1);
    await reconcile();
    const job = await getJob();
    expect(job.status?.phase).toBe("Failed");
    expect(getCondition(job.status?.conditions, "Failed")?.reason).toBe("BackoffLimitExceeded");
    expect(runtime.started).toHaveLength(1);
  });

  it("a preemption stops the gang gracefully and returns the job to the queue, keeping its attempt and counting no restart", async () => {
    const before = await running({ failurePolicy: { maxRestarts: 1 }, terminationGracePeriodSeconds: 7 });
    await setStatus({
      preemption: {
        requestedAt: now().toISOString(),
        for: "p/urgent",
        reason: "Priority",
        message: "a higher-priority job needs the GPUs",
      },
    });
    // The workers take their grace period: the job stays admitted until they are gone.
    runtime.slowStops = 1;
    expect(await reconcile()).toEqual({ requeueAfterMs: 250 });
    expect((await getJob()).status?.phase).toBe("Running");
    expect(runtime.stops.at(-1)?.graceSeconds).toBe(7);

    await reconcile();
    let job = await getJob();
    expect(job.status).toMatchObject({ phase: "Pending", attempts: 1, preemptions: 1, preemptedAttempt: 1 });
    expect(job.status?.admission).toBeUndefined();
    expect(job.status?.preemption).toBeUndefined();
    expect(job.status?.workers).toBeUndefined();
    expect(job.status?.restarts).toBeUndefined();
    expect(getCondition(job.status?.conditions, "Admitted")).toMatchObject({
      status: "False",
      reason: "Preempted",
    });
    expect(runtime.gangs.get(before.metadata.uid)!.workers.map((w) => w.signal)).toEqual([
      "SIGTERM",
      "SIGTERM",
    ]);

    // Waiting in the queue: nothing starts until the admission loop admits it again.
    await reconcile();
    expect(runtime.started).toHaveLength(1);
    await admit();
    await reconcile();
    expect(runtime.started.map((g) => g.attempt)).toEqual([1, 2]);
    job = await getJob();
    expect(job.status).toMatchObject({ phase: "Running", attempts: 2, preemptions: 1 });
    expect(job.status?.restarts).toBeUndefined();
    expect(job.status?.preemptedAttempt).toBeUndefined();
    expect(getCondition(job.status?.conditions, "Restarting")?.message).toBe(
      "attempt 2 started after a preemption or resize",
    );
  });

  it("a resize stops the gang and returns it to the queue, then starts the larger gang", async () => {
    await running({ workers: { min: 1, max: 3 } });
    await setStatus({ resize: { workers: 3, reason: "room for more", requestedAt: now().toISOString() } });
    await reconcile();
    let job = await getJob();
    expect(job.status).toMatchObject({ phase: "Pending", attempts: 1, preemptedAttempt: 1 });
    expect(job.status?.resize).toBeUndefined();
    expect(job.status?.admission).toBeUndefined();
    expect(job.status?.preemptions).toBeUndefined();
    expect(getCondition(job.status?.conditions, "Admitted")).toMatchObject({
      status: "False",
      reason: "Resizing",
      message: "stopped attempt 1 to grow to 3 workers: room for more",
    });
    expect(runtime.gangs.get(job.metadata.uid)!.workers.every((w) => w.state === "Failed")).toBe(true);

    await admit(3);
    await reconcile();
    expect(runtime.started.map((g) => g.workers.length)).toEqual([2, 3]);
    job = await getJob();
    expect(job.status).toMatchObject({ phase: "Running", attempts: 2, activeWorkers: 3, ready: "3/3" });
    expect(job.status?.restarts).toBeUndefined();
  });

  it("deletion stops every worker and releases them before the finalizer goes", async () => {
    const job = await running();
    await store.delete(TRAININGJOB, PROJECT, "train");
    runtime.slowStops = 1;
    expect(await reconcile()).toEqual({ requeueAfterMs: 250 });
    expect(runtime.released).toEqual([]);
    expect((await getJob()).metadata.finalizers).toEqual([RUNTIME_FINALIZER]);

    expect(await reconcile()).toEqual({});
    expect(runtime.released.map((r) => r.uid)).toEqual([job.metadata.uid]);
    expect(runtime.gangs.has(job.metadata.uid)).toBe(false);
    await expect(getJob()).rejects.toBeInstanceOf(NotFoundError);
  });

  it("model access: every worker gets the attempt's key as a file (exclusive per attempt), the bridge before the spec's PYTHONPATH; the end revokes it", async () => {
    const calls: string[] = [];
    const models: WorkloadModels = {
      access: async (ref, session, opts) => {
        calls.push(`access ${ref.name} ${session} ${opts?.exclusive ?? false}`);
        return {
          env: { OPENAI_BASE_URL: "http://loom/v1", PYTHONPATH: "$(HOME)/.loom/python" },
          files: [{ path: ".loom/openai-key", data: `sk-loom-${session}\n`, mode: 0o600 }],
        };
      },
      revoke: async (ref) => {
        calls.push(`revoke ${ref.name}`);
      },
    };
    reconciler = new TrainingJobReconciler({
      store,
      runtime,
      events,
      log: pino({ level: "silent" }),
      now,
      models,
      baseBackoffMs: BASE_BACKOFF_MS,
      maxBackoffMs: 60_000,
    });
    const job = await running({ env: { PYTHONPATH: "/src" }, failurePolicy: { maxRestarts: 1 } });
    for (const w of runtime.started[0]!.workers) {
      expect(w.env).toMatchObject({
        OPENAI_BASE_URL: "http://loom/v1",
        PYTHONPATH: "$(HOME)/.loom/python:/src",
      });
      expect(w.files).toEqual([{ path: ".loom/openai-key", data: "sk-loom-attempt-1\n", mode: 0o600 }]);
    }
    expect(JSON.stringify(await getJob())).not.toContain("sk-loom-");
    runtime.exit(job, 1, 1);
    await reconcile();
    await reconcile();
    expect(runtime.started[1]!.workers[0]!.files?.[0]?.data).toBe("sk-loom-attempt-2\n");
    expect(calls).toEqual(["access train attempt-1 true", "access train attempt-2 true"]);
    const second = await getJob();
    runtime.exit(second, 0, 0);
    runtime.exit(second, 1, 0);
    await reconcile();
    expect((await getJob()).status?.phase).toBe("Succeeded");
    expect(calls.at(-1)).toBe("revoke train");
  });

  it("succeeds once every worker exits 0", async () => {
    const job = await running();
    runtime.exit(job, 0, 0);
    await reconcile();
    expect((await getJob()).status).toMatchObject({ phase: "Running", ready: "1/2" });
    runtime.exit(job, 1, 0);
    await reconcile();
    const done = await getJob();
    expect(done.status).toMatchObject({
      phase: "Succeeded",
      ready: "0/2",
      completionTime: now().toISOString(),
    });
    expect(getCondition(done.status?.conditions, "Succeeded")).toMatchObject({
      status: "True",
      message: "all 2 worker(s) exited with code 0 on attempt 1",
    });
    const recorded = await events.listFor({ kind: TRAININGJOB, project: PROJECT, name: "train" });
    expect(recorded.map((e) => e.reason)).toContain("Completed");
    expect(runtime.started).toHaveLength(1);
  });

  it("reading from a lagging informer cache, acts on its own newer write rather than the cache's copy", async () => {
    await createJob();
    const admitted = await admit();
    // The cache never catches up: it keeps the copy from before the start.
    const cached = new TrainingJobReconciler({
      store,
      runtime,
      events,
      log: pino({ level: "silent" }),
      now,
      cached: () => admitted,
    });
    await cached.reconcile(`${PROJECT}/train`);
    expect(runtime.started).toHaveLength(1);
    runtime.exit(await getJob(), 0, 0);
    // With the cache's copy (attempt 0, an old resourceVersion) this would be a conflict.
    await cached.reconcile(`${PROJECT}/train`);
    expect((await getJob()).status).toMatchObject({ attempts: 1, ready: "1/2" });
    expect(runtime.started).toHaveLength(1);
  });
});

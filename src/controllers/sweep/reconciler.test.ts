import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NotFoundError } from "../../api/errors.js";
import {
  SWEEP_LABEL,
  type Sweep,
  SweepSpec,
  TRIAL_LABEL,
  TRIAL_PARAMS_ANNOTATION,
  type TrialStatus,
} from "../../api/sweep.js";
import type { TrainingJob, TrainingJobStatus } from "../../api/trainingjob.js";
import type { Point } from "../../core/sweep/earlystop.js";
import { type OpenedDatabase, openSqlite } from "../../platforms/embedded/db.js";
import { SqliteEventRecorder } from "../../platforms/embedded/events.js";
import { SqliteResourceStore } from "../../platforms/embedded/store.js";
import { TRAININGJOB } from "../trainingjob/reconciler.js";
import {
  bestTrial,
  type ModelRegistrar,
  SWEEP,
  SweepReconciler,
  type TrialMetrics,
  trialSpec,
} from "./reconciler.js";

const PROJECT = "p";
const NOW = new Date("2024-05-06T07:08:09.000Z");
const TEMPLATE = { command: ["python", "train.py"], env: { FOO: "bar" } };

function sweepSpec(fields: Record<string, unknown> = {}): SweepSpec {
  return SweepSpec.parse({
    objective: { metric: "val_loss", goal: "minimize" },
    parameters: [{ name: "lr", logUniform: { min: 1e-5, max: 1e-1 } }],
    template: TEMPLATE,
    ...fields,
  });
}

function sweepObject(name: string, spec: SweepSpec, labels?: Record<string, string>): Sweep {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: SWEEP,
    metadata: {
      name,
      project: PROJECT,
      labels,
      uid: "",
      resourceVersion: "",
      generation: 0,
      creationTimestamp: "",
    },
    spec,
  };
}

describe("trialSpec", () => {
  const sweep = sweepObject(
    "search",
    sweepSpec({
      parameters: [
        { name: "lr", logUniform: { min: 1e-5, max: 1e-1 } },
        { name: "batch-size", int: { min: 16, max: 64, step: 16 }, flag: "--batch-size" },
        { name: "opt", categorical: { values: ["adam", "sgd"] }, env: "MY_OPTIMIZER", flag: "--opt" },
      ],
    }),
  );
  const params = { lr: 0.001, "batch-size": 32, opt: "adam" };

  it("puts every value in its environment variable (default: the name upper-cased) and flags after the command", () => {
    const spec = trialSpec(sweep, params);
    expect(spec.env).toEqual({ FOO: "bar", LR: "0.001", BATCH_SIZE: "32", MY_OPTIMIZER: "adam" });
    expect(spec.command).toEqual(["python", "train.py", "--batch-size", "32", "--opt", "adam"]);
    // The rest of the template is kept, and the template itself is untouched.
    expect(spec.priority).toBe(0);
    expect(sweep.spec.template.command).toEqual(["python", "train.py"]);
    expect(sweep.spec.template.env).toEqual({ FOO: "bar" });
  });

  it("puts trials in one experiment: the sweep's name unless the template names one", () => {
    expect(trialSpec(sweep, params).experiment).toBe("search");
    const named = {
      ...sweep,
      spec: { ...sweep.spec, template: { ...sweep.spec.template, experiment: "exp" } },
    };
    expect(trialSpec(named, params).experiment).toBe("exp");
  });
});

describe("bestTrial", () => {
  const trial = (number: number, phase: TrialStatus["phase"], objective?: number): TrialStatus => ({
    number,
    name: `s-${number}`,
    params: {},
    phase,
    objective,
  });
  const trials = [
    trial(1, "Succeeded", 0.5),
    trial(2, "Succeeded", 0.3),
    trial(3, "Failed", 0.1),
    trial(4, "EarlyStopped", 0.05),
    trial(5, "Running", 0.01),
    trial(6, "Succeeded", 0.9),
    trial(7, "Succeeded"),
    trial(8, "Succeeded", 0.3),
  ];

  it("picks the best succeeded trial by the goal, ignoring the others; ties go to the earlier trial", () => {
    expect(bestTrial(sweepSpec(), trials)?.number).toBe(2);
    expect(bestTrial(sweepSpec({ objective: { metric: "acc", goal: "maximize" } }), trials)?.number).toBe(6);
    expect(bestTrial(sweepSpec(), trials.slice(2, 5))).toBeUndefined();
  });
});

describe("SweepReconciler (SQLite store)", () => {
  let database: OpenedDatabase;
  let store: SqliteResourceStore;
  let events: SqliteEventRecorder;
  let reconciler: SweepReconciler;
  let metrics: Map<string, Point[]>;
  let metricNames: string[];
  let registered: Parameters<ModelRegistrar["register"]>[];
  let uids: number;

  beforeEach(async () => {
    uids = 0;
    database = await openSqlite(":memory:");
    store = await SqliteResourceStore.open(database.db, { now: () => NOW, newUid: () => `uid-${++uids}` });
    events = new SqliteEventRecorder(database.db, () => NOW);
    metrics = new Map();
    metricNames = [];
    registered = [];
    const trialMetrics: TrialMetrics = {
      history: async (project, runId, metric) => {
        expect(project).toBe(PROJECT);
        metricNames.push(metric);
        return metrics.get(runId) ?? [];
      },
    };
    const registrar: ModelRegistrar = {
      register: async (project, req) => {
        registered.push([project, req]);
        return { version: String(registered.length) };
      },
    };
    reconciler = new SweepReconciler({
      store,
      events,
      log: pino({ level: "silent" }),
      now: () => NOW,
      metrics: trialMetrics,
      registrar,
      pollMs: 1234,
    });
  });

  afterEach(async () => {
    await store.close();
    await database.close();
  });

  async function createSweep(name: string, fields: Record<string, unknown>, labels?: Record<string, string>) {
    return (await store.create(sweepObject(name, sweepSpec(fields), labels))) as Sweep;
  }

  const getSweep = async (name = "s") => (await store.get(SWEEP, PROJECT, name)) as Sweep;

  async function jobsOf(sweep = "s"): Promise<TrainingJob[]> {
    const list = await store.list(TRAININGJOB, {
      project: PROJECT,
      labelSelector: `${SWEEP_LABEL}=${sweep}`,
    });
    return (list.items as TrainingJob[]).sort(
      (a, b) => Number(a.metadata.labels?.[TRIAL_LABEL]) - Number(b.metadata.labels?.[TRIAL_LABEL]),
    );
  }

  const jobNames = async (sweep = "s") => (await jobsOf(sweep)).map((j) => j.metadata.name);

  /** What the TrainingJob controller would write: the phase and the tracking run. */
  async function setJob(
    name: string,
    phase: NonNullable<TrainingJobStatus["phase"]>,
    extra: TrainingJobStatus = {},
  ) {
    const job = (await store.get(TRAININGJOB, PROJECT, name)) as TrainingJob;
    const status: TrainingJobStatus = {
      ...job.status,
      phase,
      tracking: { experimentId: "1", runId: `run-${name}` },
      ...extra,
    };
    await store.updateStatus({ ...job, status });
  }

  /** A trial's job finishes (or runs) having reported these objective values at steps 1, 2, … */
  async function report(name: string, phase: NonNullable<TrainingJobStatus["phase"]>, values: number[]) {
    await setJob(name, phase);
    metrics.set(
      `run-${name}`,
      values.map((value, i) => ({ step: i + 1, value })),
    );
  }

  const reasons = async (name = "s") =>
    (await events.listFor({ kind: SWEEP, project: PROJECT, name }, 100)).map((e) => e.reason);

  const exists = async (name: string) =>
    store.get(TRAININGJOB, PROJECT, name).then(
      () => true,
      (err) => {
        if (err instanceof NotFoundError) return false;
        throw err;
      },
    );

  it("runs parallelism trials at a time, then names the best and registers it exactly once", async () => {
    await createSweep(
      "s",
      {
        algorithm: "random",
        parallelism: 2,
        maxTrials: 4,
        register: { model: "m" },
      },
      { team: "a" },
    );
    expect(await reconciler.reconcile(`${PROJECT}/s`)).toEqual({ requeueAfterMs: 1234 });

    const jobs = await jobsOf();
    expect(jobs.map((j) => j.metadata.name)).toEqual(["s-1", "s-2"]);
    let sweep = await getSweep();
    expect(sweep.status?.phase).toBe("Running");
    expect(sweep.status?.startTime).toBe(NOW.toISOString());
    expect(sweep.status?.trials?.map((t) => [t.number, t.name, t.phase])).toEqual([
      [1, "s-1", "Pending"],
      [2, "s-2", "Pending"],
    ]);
    for (const [i, job] of jobs.entries()) {
      const trial = sweep.status!.trials![i]!;
      expect(job.metadata.labels).toEqual({ team: "a", [SWEEP_LABEL]: "s", [TRIAL_LABEL]: String(i + 1) });
      expect(JSON.parse(job.metadata.annotations![TRIAL_PARAMS_ANNOTATION]!)).toEqual(trial.params);
      expect(job.spec.env).toEqual({ FOO: "bar", LR: String(trial.params.lr) });
      expect(job.spec.experiment).toBe("s");
      expect(trial.params.lr as number).toBeGreaterThanOrEqual(1e-5);
      expect(trial.params.lr as number).toBeLessThanOrEqual(1e-1);
    }
    expect(sweep.status!.trials![0]!.params).not.toEqual(sweep.status!.trials![1]!.params);
    expect((await reasons()).filter((r) => r === "TrialCreated")).toHaveLength(2);

    // Nothing changed: nothing more is made.
    await reconciler.reconcile(`${PROJECT}/s`);
    expect(await jobNames()).toEqual(["s-1", "s-2"]);

    // A running trial does not make room; a finished one does.
    await report("s-1", "Running", [0.9]);
    await reconciler.reconcile(`${PROJECT}/s`);
    expect(await jobNames()).toEqual(["s-1", "s-2"]);
    sweep = await getSweep();
    expect(sweep.status?.trials?.[0]).toMatchObject({
      phase: "Running",
      runId: "run-s-1",
      objective: 0.9,
      step: 1,
    });
    expect(metricNames).toContain("val_loss");

    await report("s-1", "Succeeded", [0.9, 0.5]);
    await reconciler.reconcile(`${PROJECT}/s`);
    expect(await jobNames()).toEqual(["s-1", "s-2", "s-3"]);
    sweep = await getSweep();
    expect(sweep.status?.trials?.[0]).toMatchObject({ phase: "Succeeded", objective: 0.5, step: 2 });
    expect(sweep.status?.best).toMatchObject({ trial: 1, name: "s-1", objective: 0.5 });
    expect(sweep.status).toMatchObject({ succeeded: 1, running: 2, failed: 0, earlyStopped: 0 });

    await report("s-2", "Succeeded", [0.4, 0.2]);
    await report("s-3", "Succeeded", [0.9]);
    await reconciler.reconcile(`${PROJECT}/s`);
    expect(await jobNames()).toEqual(["s-1", "s-2", "s-3", "s-4"]);
    expect((await getSweep()).status?.phase).toBe("Running");
    expect(registered).toHaveLength(0);

    await report("s-4", "Succeeded", [0.3]);
    expect(await reconciler.reconcile(`${PROJECT}/s`)).toEqual({});
    sweep = await getSweep();
    expect(await jobNames()).toEqual(["s-1", "s-2", "s-3", "s-4"]);
    expect(sweep.status).toMatchObject({
      phase: "Succeeded",
      completionTime: NOW.toISOString(),
      succeeded: 4,
      running: 0,
      best: { trial: 2, name: "s-2", objective: 0.2, params: sweep.status!.trials![1]!.params },
      model: { name: "m", version: "1", alias: "champion" },
    });
    expect(sweep.status?.conditions?.find((c) => c.type === "Complete")).toMatchObject({
      status: "True",
      reason: "Succeeded",
    });
    expect(sweep.status?.conditions?.find((c) => c.type === "Registered")).toMatchObject({ status: "True" });
    const s2 = (await store.get(TRAININGJOB, PROJECT, "s-2")) as TrainingJob;
    expect(registered).toEqual([
      [
        PROJECT,
        {
          model: "m",
          source: "runs:/run-s-2/model",
          runId: "run-s-2",
          alias: "champion",
          tags: {
            "loom.sweep": "s",
            "loom.trial": "2",
            "loom.workload": "s-2",
            "loom.workload_uid": s2.metadata.uid,
          },
        },
      ],
    ]);
    expect(await reasons()).toEqual(expect.arrayContaining(["Registered", "Succeeded"]));

    // Done: reconciling again registers nothing more and writes nothing.
    const rv = sweep.metadata.resourceVersion;
    expect(await reconciler.reconcile(`${PROJECT}/s`)).toEqual({});
    expect(registered).toHaveLength(1);
    expect((await getSweep()).metadata.resourceVersion).toBe(rv);
    expect(await jobNames()).toEqual(["s-1", "s-2", "s-3", "s-4"]);
  });

  it("grid: runs every combination once and stops at the grid's size", async () => {
    await createSweep("s", {
      algorithm: "grid",
      maxTrials: 10,
      parallelism: 5,
      parameters: [
        { name: "opt", categorical: { values: ["adam", "sgd"] } },
        { name: "layers", int: { min: 1, max: 2 } },
      ],
    });
    await reconciler.reconcile(`${PROJECT}/s`);
    const jobs = await jobsOf();
    expect(jobs.map((j) => [j.spec.env.OPT, j.spec.env.LAYERS])).toEqual([
      ["adam", "1"],
      ["adam", "2"],
      ["sgd", "1"],
      ["sgd", "2"],
    ]);
    for (const [i, name] of ["s-1", "s-2", "s-3", "s-4"].entries()) await report(name, "Succeeded", [i]);
    await reconciler.reconcile(`${PROJECT}/s`);
    expect(await jobNames()).toHaveLength(4);
    expect((await getSweep()).status).toMatchObject({ phase: "Succeeded", best: { trial: 1 } });
    // No register section: nothing registered.
    expect(registered).toHaveLength(0);
  });

  it("maximize: the best is the highest", async () => {
    await createSweep("s", { maxTrials: 2, parallelism: 2, objective: { metric: "acc", goal: "maximize" } });
    await reconciler.reconcile(`${PROJECT}/s`);
    await report("s-1", "Succeeded", [0.7]);
    await report("s-2", "Succeeded", [0.8, 0.6]);
    await reconciler.reconcile(`${PROJECT}/s`);
    // Trial 2's latest value (0.6) is what counts, not its best along the way.
    expect((await getSweep()).status).toMatchObject({
      phase: "Succeeded",
      best: { trial: 1, objective: 0.7 },
    });
    expect(metricNames.every((m) => m === "acc")).toBe(true);
  });

  it("early stopping (median) deletes the stopped trial's job, records why, and starts another", async () => {
    await createSweep("s", {
      parallelism: 3,
      maxTrials: 4,
      earlyStopping: { rule: "median", minTrials: 2 },
    });
    await reconciler.reconcile(`${PROJECT}/s`);
    expect(await jobNames()).toEqual(["s-1", "s-2", "s-3"]);
    await report("s-1", "Running", [1.0, 0.9, 0.8]);
    await report("s-2", "Running", [1.1, 1.0, 0.9]);
    await report("s-3", "Running", [3.0, 3.0, 3.0]);
    await reconciler.reconcile(`${PROJECT}/s`);

    const sweep = await getSweep();
    const trials = sweep.status!.trials!;
    expect(trials.map((t) => t.phase)).toEqual(["Running", "Running", "EarlyStopped", "Pending"]);
    expect(trials[2]!.message).toMatch(/median rule at step 3/);
    expect(sweep.status).toMatchObject({ earlyStopped: 1, running: 3 });
    expect(await exists("s-3")).toBe(false);
    expect(await exists("s-1")).toBe(true);
    expect(await jobNames()).toEqual(["s-1", "s-2", "s-4"]);
    const stopped = (await events.listFor({ kind: SWEEP, project: PROJECT, name: "s" }, 100)).filter(
      (e) => e.reason === "EarlyStopped",
    );
    expect(stopped).toHaveLength(1);
    expect(stopped[0]!.message).toMatch(/^trial 3 \(s-3\): median rule at step 3/);

    // The stopped trial stays stopped (its job being gone is no failure), and is not stopped twice.
    await reconciler.reconcile(`${PROJECT}/s`);
    const again = (await getSweep()).status!;
    expect(again.trials![2]).toMatchObject({ phase: "EarlyStopped", objective: 3 });
    expect(again.failed).toBe(0);
    expect((await reasons()).filter((r) => r === "EarlyStopped")).toHaveLength(1);

    // The rest finish: the sweep succeeds without the stopped trial.
    await report("s-1", "Succeeded", [1.0, 0.9, 0.8]);
    await report("s-2", "Succeeded", [1.1, 1.0, 0.9]);
    await report("s-4", "Succeeded", [1.0, 0.95, 0.85, 0.7]);
    await reconciler.reconcile(`${PROJECT}/s`);
    expect((await getSweep()).status).toMatchObject({
      phase: "Succeeded",
      earlyStopped: 1,
      succeeded: 3,
      best: { trial: 4 },
    });
  });

  it("a stopped trial whose job is still stopping stays EarlyStopped, however the job ends", async () => {
    await createSweep("s", { parallelism: 3, maxTrials: 3, earlyStopping: { rule: "median", minTrials: 2 } });
    await reconciler.reconcile(`${PROJECT}/s`);
    // The TrainingJob controller's finalizer: deleting the job first stops its workers.
    const job = (await store.get(TRAININGJOB, PROJECT, "s-3")) as TrainingJob;
    await store.update({ ...job, metadata: { ...job.metadata, finalizers: ["loom.dev/runtime"] } });
    await report("s-1", "Running", [1.0, 0.9, 0.8]);
    await report("s-2", "Running", [1.1, 1.0, 0.9]);
    await report("s-3", "Running", [3.0, 3.0, 3.0]);
    await reconciler.reconcile(`${PROJECT}/s`);
    const stopping = (await store.get(TRAININGJOB, PROJECT, "s-3")) as TrainingJob;
    expect(stopping.metadata.deletionTimestamp).toBeDefined();

    // SIGTERM ended its workers: the job says Failed (or still Running) until the finalizer goes.
    for (const phase of ["Running", "Failed"] as const) {
      await setJob("s-3", phase);
      await reconciler.reconcile(`${PROJECT}/s`);
      const status = (await getSweep()).status!;
      expect(status.trials![2]).toMatchObject({ phase: "EarlyStopped" });
      expect(status).toMatchObject({ earlyStopped: 1, failed: 0, running: 2 });
    }
    // Judged and stopped once: one event, not repeated.
    const stopped = (await events.listFor({ kind: SWEEP, project: PROJECT, name: "s" }, 100)).filter(
      (e) => e.reason === "EarlyStopped",
    );
    expect(stopped.map((e) => e.count)).toEqual([1]);
  });

  it("early stopping (ASHA) stops the worse half at a rung and remembers the rung it judged", async () => {
    await createSweep("s", {
      parallelism: 4,
      maxTrials: 4,
      earlyStopping: { rule: "asha", minSteps: 2, reductionFactor: 2 },
    });
    await reconciler.reconcile(`${PROJECT}/s`);
    for (const [i, name] of ["s-1", "s-2", "s-3", "s-4"].entries()) await report(name, "Running", [9, i + 1]);
    await reconciler.reconcile(`${PROJECT}/s`);
    const trials = (await getSweep()).status!.trials!;
    expect(trials.map((t) => t.phase)).toEqual(["Running", "Running", "EarlyStopped", "EarlyStopped"]);
    expect(trials.map((t) => t.rung)).toEqual([0, 0, 0, 0]);
    expect(await jobNames()).toEqual(["s-1", "s-2"]);
  });

  it("more failed trials than maxFailedTrials fails the sweep and stops the rest", async () => {
    await createSweep("s", { parallelism: 3, maxTrials: 10, maxFailedTrials: 1 });
    await reconciler.reconcile(`${PROJECT}/s`);
    await setJob("s-1", "Failed", {
      conditions: [
        { type: "Complete", status: "False", reason: "Failed", message: "exit 3", lastTransitionTime: "" },
      ],
    });
    await reconciler.reconcile(`${PROJECT}/s`);
    // One failure is allowed: another trial replaces it.
    let sweep = await getSweep();
    expect(sweep.status?.phase).toBe("Running");
    expect(sweep.status?.trials?.[0]).toMatchObject({ phase: "Failed", message: "exit 3" });
    expect(await jobNames()).toEqual(["s-1", "s-2", "s-3", "s-4"]);

    // Succeeded without ever reporting the objective: a failure too.
    await setJob("s-2", "Succeeded");
    await report("s-3", "Running", [1]);
    expect(await reconciler.reconcile(`${PROJECT}/s`)).toEqual({});
    sweep = await getSweep();
    expect(sweep.status?.phase).toBe("Failed");
    expect(sweep.status?.completionTime).toBe(NOW.toISOString());
    expect(sweep.status?.trials?.[1]?.message).toMatch(/without reporting the objective metric val_loss/);
    expect(sweep.status?.conditions?.find((c) => c.type === "Complete")).toMatchObject({
      status: "False",
      reason: "TooManyFailedTrials",
    });
    expect(await reasons()).toContain("TooManyFailedTrials");
    // No new trial; the active ones are stopped; the failed ones are kept to look at.
    expect(await jobNames()).toEqual(["s-1", "s-2"]);

    // Failed is final.
    expect(await reconciler.reconcile(`${PROJECT}/s`)).toEqual({});
    expect((await getSweep()).status?.phase).toBe("Failed");
    expect(await jobNames()).toEqual(["s-1", "s-2"]);
  });

  it("a trial whose job was deleted by someone else fails", async () => {
    await createSweep("s", { maxTrials: 3 });
    await reconciler.reconcile(`${PROJECT}/s`);
    await store.delete(TRAININGJOB, PROJECT, "s-1");
    await reconciler.reconcile(`${PROJECT}/s`);
    const trials = (await getSweep()).status!.trials!;
    expect(trials[0]).toMatchObject({ phase: "Failed", message: "its TrainingJob was deleted" });
    expect(trials[1]).toMatchObject({ name: "s-2", phase: "Pending" });
  });

  it("deleting the sweep deletes its trials (and only its)", async () => {
    await createSweep("s", { parallelism: 2 });
    await createSweep("other", { parallelism: 1 });
    await reconciler.reconcile(`${PROJECT}/s`);
    await reconciler.reconcile(`${PROJECT}/other`);
    expect(await jobNames()).toEqual(["s-1", "s-2"]);
    await store.delete(SWEEP, PROJECT, "s");
    expect(await reconciler.reconcile(`${PROJECT}/s`)).toEqual({});
    expect(await jobNames()).toEqual([]);
    expect(await jobNames("other")).toEqual(["other-1"]);
  });

  it("adopts a trial job made before a crash lost the status write, instead of duplicating it", async () => {
    await createSweep("s", { parallelism: 2, maxTrials: 4 });
    await reconciler.reconcile(`${PROJECT}/s`);
    const before = await getSweep();
    const made = before.status!.trials!;
    // The status that was written only knew trial 1.
    await store.updateStatus({ ...before, status: { ...before.status, trials: [made[0]!] } });
    await reconciler.reconcile(`${PROJECT}/s`);
    expect(await jobNames()).toEqual(["s-1", "s-2"]);
    let trials = (await getSweep()).status!.trials!;
    expect(trials.map((t) => [t.number, t.name, t.phase])).toEqual([
      [1, "s-1", "Pending"],
      [2, "s-2", "Pending"],
    ]);
    expect(trials[1]!.params).toEqual(made[1]!.params);

    // No status at all: both are adopted, with the params their jobs say.
    await store.updateStatus({ ...(await getSweep()), status: undefined });
    await report("s-1", "Succeeded", [0.5]);
    await reconciler.reconcile(`${PROJECT}/s`);
    expect(await jobNames()).toEqual(["s-1", "s-2", "s-3"]);
    trials = (await getSweep()).status!.trials!;
    expect(trials.map((t) => [t.number, t.phase])).toEqual([
      [1, "Succeeded"],
      [2, "Pending"],
      [3, "Pending"],
    ]);
    expect(trials.map((t) => t.params)).toEqual([made[0]!.params, made[1]!.params, trials[2]!.params]);
  });

  it("a sweep made again under the same name does not take over its predecessor's trials", async () => {
    const first = await createSweep("s", { parallelism: 1, maxTrials: 2 });
    await reconciler.reconcile(`${PROJECT}/s`);
    // The TrainingJob controller's finalizer: deleting the job waits for its workers to stop.
    const old = (await store.get(TRAININGJOB, PROJECT, "s-1")) as TrainingJob;
    await store.update({ ...old, metadata: { ...old.metadata, finalizers: ["loom.dev/runtime"] } });
    await store.delete(SWEEP, PROJECT, "s");
    const second = await createSweep("s", { parallelism: 1, maxTrials: 2 });
    expect(second.metadata.uid).not.toBe(first.metadata.uid);

    await reconciler.reconcile(`${PROJECT}/s`);
    // The old trial is being deleted; its name is still taken.
    const marked = (await store.get(TRAININGJOB, PROJECT, "s-1")) as TrainingJob;
    expect(marked.metadata.deletionTimestamp).toBeDefined();
    expect((await getSweep()).status?.trials ?? []).toEqual([]);
    await reconciler.reconcile(`${PROJECT}/s`);
    expect((await getSweep()).status?.failed ?? 0).toBe(0);
    expect(await reasons()).toContain("TrialNameTaken");

    // Its workers stopped: the finalizer goes, and with it the job.
    await store.update({ ...marked, metadata: { ...marked.metadata, finalizers: [] } });
    expect(await exists("s-1")).toBe(false);
    await reconciler.reconcile(`${PROJECT}/s`);
    const fresh = (await store.get(TRAININGJOB, PROJECT, "s-1")) as TrainingJob;
    expect(fresh.metadata.annotations?.["loom.dev/sweep-uid"]).toBe(second.metadata.uid);
    await reconciler.reconcile(`${PROJECT}/s`);
    expect((await getSweep()).status?.trials?.map((t) => [t.name, t.phase])).toEqual([["s-1", "Pending"]]);
  });

  it("does not take a job of the trial's name that is no trial of the sweep", async () => {
    const unrelated: TrainingJob = {
      apiVersion: "loom.dev/v1alpha1",
      kind: TRAININGJOB,
      metadata: {
        name: "s-1",
        project: PROJECT,
        uid: "",
        resourceVersion: "",
        generation: 0,
        creationTimestamp: "",
      },
      spec: { ...sweepSpec().template, command: ["other"] },
    };
    await store.create(unrelated);
    await createSweep("s", { maxTrials: 2 });
    expect(await reconciler.reconcile(`${PROJECT}/s`)).toEqual({ requeueAfterMs: 1234 });
    const sweep = await getSweep();
    expect(sweep.status?.phase).toBe("Running");
    expect(sweep.status?.trials).toEqual([]);
    const taken = (await events.listFor({ kind: SWEEP, project: PROJECT, name: "s" })).find(
      (e) => e.reason === "TrialNameTaken",
    );
    expect(taken).toMatchObject({ type: "Warning" });
    expect(taken?.message).toContain("TrainingJob s-1");
    // Left alone.
    const job = (await store.get(TRAININGJOB, PROJECT, "s-1")) as TrainingJob;
    expect(job.spec.command).toEqual(["other"]);
    expect(job.metadata.deletionTimestamp).toBeUndefined();
  });
});

import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { AlreadyExistsError, NotFoundError } from "../../api/errors.js";
import { SWEEP } from "../../api/kinds.js";
import { API_VERSION, setCondition } from "../../api/meta.js";
import {
  parameterEnv,
  SWEEP_LABEL,
  type Sweep,
  type SweepSpec,
  type SweepStatus,
  TRIAL_LABEL,
  TRIAL_PARAMS_ANNOTATION,
  type TrialStatus,
} from "../../api/sweep.js";
import type { TrainingJob, TrainingJobSpec } from "../../api/trainingjob.js";
import { type Point, shouldStop, type TrialCurve } from "../../core/sweep/earlystop.js";
import { type Observation, type Params, plannedTrials, suggest } from "../../core/sweep/suggest.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ModelRegistrar, TrialMetrics } from "../../ports/tracking.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { TRAININGJOB } from "../trainingjob/reconciler.js";

export type { ModelRegistrar, TrialMetrics };

export { SWEEP };

/** Which incarnation of a sweep made a trial: a sweep deleted and made again does not adopt old trials. */
const SWEEP_UID_ANNOTATION = "loom.dev/sweep-uid";

export interface SweepDeps {
  store: ResourceStore;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
  metrics?: TrialMetrics;
  registrar?: ModelRegistrar;
  /** How often a running sweep reads its trials' metrics. */
  pollMs?: number;
}

const ACTIVE = new Set(["Pending", "Running"]);

/**
 * Runs a Sweep: suggests parameters (grid, random, TPE), makes each trial a TrainingJob from the
 * template with its parameters in structured fields, reads the objective from tracking, stops
 * trials the early-stopping rule gives up on (by deleting their job: SIGTERM and the grace
 * period, as any stop), and when done names the best trial and registers its model.
 */
export class SweepReconciler implements Reconciler {
  readonly name = "sweep";

  constructor(private readonly deps: SweepDeps) {}

  async reconcile(key: string): Promise<ReconcileResult> {
    const [project, name] = key.split("/") as [string, string];
    let sweep: Sweep;
    try {
      sweep = (await this.deps.store.get(SWEEP, project, name)) as Sweep;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      // Gone: its trials go too (they are owned by it).
      for (const job of await this.trialJobs(project, name)) await this.deleteJob(job);
      return {};
    }
    const spec = sweep.spec;
    const jobs = await this.ownTrialJobs(sweep);
    const before = sweep.status ?? {};
    const status: SweepStatus = structuredClone(before);
    const now = this.deps.now();
    status.startTime ??= now.toISOString();
    const trials = adoptTrials(status.trials ?? [], jobs);
    status.trials = trials;

    // 1. Observe every trial: its job's phase and the objective it reported.
    const curves = await this.observeTrials(sweep, trials, jobs);

    // 2. Early stopping: judge running trials against all the others.
    const toStop: TrainingJob[] = [];
    if (spec.earlyStopping && !isDone(status))
      toStop.push(...(await this.stopEarly(sweep, trials, curves, jobs)));

    // 3. Done, failed, or room for more trials.
    if (!isDone(status)) {
      if (countPhase(trials, "Failed") > spec.maxFailedTrials)
        toStop.push(...(await this.failOverBudget(sweep, status, trials, jobs, now)));
      else {
        await this.suggestAndCreate(sweep, trials);
        if (trials.length >= plannedTrials(spec) && activeCount(trials) === 0)
          await this.complete(sweep, status, jobs, now);
      }
    }

    // 4. Counts, best so far, the Running condition.
    summarize(sweep, status, trials, now);
    if (!isDeepStrictEqual(before, status)) await this.deps.store.updateStatus({ ...sweep, status });
    // After the status says why: stopping deletes the job, and with it what it said.
    for (const job of toStop) await this.deleteJob(job);
    return isDone(status) ? {} : { requeueAfterMs: this.deps.pollMs ?? 2000 };
  }

  /** The sweep's trial jobs by name; those of an earlier sweep of the same name are deleted. */
  private async ownTrialJobs(sweep: Sweep): Promise<Map<string, TrainingJob>> {
    const jobs = new Map<string, TrainingJob>();
    for (const job of await this.trialJobs(sweep.metadata.project!, sweep.metadata.name)) {
      if (job.metadata.annotations?.[SWEEP_UID_ANNOTATION] !== sweep.metadata.uid) await this.deleteJob(job);
      else jobs.set(job.metadata.name, job);
    }
    return jobs;
  }

  /** Each trial's phase from its job, and the objective it reported; returns every trial's curve. */
  private async observeTrials(
    sweep: Sweep,
    trials: TrialStatus[],
    jobs: Map<string, TrainingJob>,
  ): Promise<Map<number, Point[]>> {
    const spec = sweep.spec;
    const curves = new Map<number, Point[]>();
    for (const t of trials) {
      const job = jobs.get(t.name);
      if (job) {
        t.runId = job.status?.tracking?.runId ?? t.runId;
        if (t.phase !== "EarlyStopped") t.phase = job.status?.phase ?? "Pending";
      } else if (ACTIVE.has(t.phase)) {
        t.phase = "Failed";
        t.message = "its TrainingJob was deleted";
      }
      if (t.runId && this.deps.metrics) {
        const points = await this.deps.metrics.history(
          sweep.metadata.project!,
          t.runId,
          spec.objective.metric,
        );
        curves.set(t.number, points);
        const last = points.at(-1);
        if (last) {
          t.objective = last.value;
          t.step = last.step;
        }
      }
      if (t.phase === "Failed" && job && !t.message)
        t.message = job.status?.conditions?.at(-1)?.message ?? "the TrainingJob failed";
      if (t.phase === "Succeeded" && t.objective === undefined) {
        t.phase = "Failed";
        t.message = this.deps.metrics
          ? `succeeded without reporting the objective metric ${spec.objective.metric}`
          : "no tracking store to read the objective from on this platform";
      }
    }
    return curves;
  }

  /** Marks the running trials the early-stopping rule gives up on; returns their jobs to stop. */
  private async stopEarly(
    sweep: Sweep,
    trials: TrialStatus[],
    curves: Map<number, Point[]>,
    jobs: Map<string, TrainingJob>,
  ): Promise<TrainingJob[]> {
    const spec = sweep.spec;
    const toStop: TrainingJob[] = [];
    if (!spec.earlyStopping) return toStop;
    const all: TrialCurve[] = trials.map((t) => ({
      number: t.number,
      points: curves.get(t.number) ?? [],
      running: ACTIVE.has(t.phase),
    }));
    for (const t of trials) {
      if (t.phase !== "Running") continue;
      const mine = all.find((c) => c.number === t.number)!;
      const decision = shouldStop(spec.earlyStopping, spec.objective.goal, mine, all, t.rung);
      if (decision.rung !== undefined) t.rung = decision.rung;
      if (!decision.stop) continue;
      t.phase = "EarlyStopped";
      t.message = decision.reason;
      const job = jobs.get(t.name);
      if (job) toStop.push(job);
      await this.event(sweep, "Normal", "EarlyStopped", `trial ${t.number} (${t.name}): ${decision.reason}`);
    }
    return toStop;
  }

  /** More trials failed than maxFailedTrials: the sweep fails; returns the active trials' jobs to stop. */
  private async failOverBudget(
    sweep: Sweep,
    status: SweepStatus,
    trials: TrialStatus[],
    jobs: Map<string, TrainingJob>,
    now: Date,
  ): Promise<TrainingJob[]> {
    const spec = sweep.spec;
    const toStop: TrainingJob[] = [];
    const failed = countPhase(trials, "Failed");
    status.phase = "Failed";
    status.completionTime = now.toISOString();
    const message = `${failed} trials failed, more than maxFailedTrials (${spec.maxFailedTrials}); see the trials' messages`;
    status.conditions = setCondition(
      status.conditions,
      { type: "Complete", status: "False", reason: "TooManyFailedTrials", message },
      now,
    );
    for (const t of trials)
      if (ACTIVE.has(t.phase)) {
        const job = jobs.get(t.name);
        if (job) toStop.push(job);
        t.phase = "Failed";
        t.message = "stopped: the sweep failed";
      }
    await this.event(sweep, "Warning", "TooManyFailedTrials", message);
    return toStop;
  }

  /** Makes trials, with parameters suggested from those that succeeded, up to spec.parallelism. */
  private async suggestAndCreate(sweep: Sweep, trials: TrialStatus[]): Promise<void> {
    const spec = sweep.spec;
    const planned = plannedTrials(spec);
    const observed: Observation[] = trials
      .filter((t) => t.phase === "Succeeded" && t.objective !== undefined)
      .map((t) => ({ params: t.params, objective: t.objective! }));
    while (activeCount(trials) < spec.parallelism && trials.length < planned) {
      const number = (trials.at(-1)?.number ?? 0) + 1;
      const params = suggest(spec, number, observed);
      const trialName = `${sweep.metadata.name}-${number}`;
      // The name is still taken (an earlier sweep of this name whose trial is stopping): wait.
      if (!(await this.createTrial(sweep, number, trialName, params))) break;
      trials.push({ number, name: trialName, params, phase: "Pending" });
      await this.event(
        sweep,
        "Normal",
        "TrialCreated",
        `trial ${number} (${trialName}): ${paramsText(params)}`,
      );
    }
  }

  /** All trials have ended: name the best, register its model, finish. */
  private async complete(
    sweep: Sweep,
    status: SweepStatus,
    jobs: Map<string, TrainingJob>,
    now: Date,
  ): Promise<void> {
    const spec = sweep.spec;
    const best = bestTrial(spec, status.trials ?? []);
    if (!best) {
      status.phase = "Failed";
      status.completionTime = now.toISOString();
      status.conditions = setCondition(
        status.conditions,
        {
          type: "Complete",
          status: "False",
          reason: "NoSuccessfulTrial",
          message: `no trial succeeded with a value of ${spec.objective.metric}`,
        },
        now,
      );
      await this.event(sweep, "Warning", "NoSuccessfulTrial", "no trial succeeded");
      return;
    }
    if (spec.register && !status.model) {
      if (!this.deps.registrar || !best.runId) {
        status.conditions = setCondition(
          status.conditions,
          {
            type: "Registered",
            status: "False",
            reason: "NoRegistry",
            message: "no model registry on this platform to register the best trial in",
          },
          now,
        );
      } else {
        const job = jobs.get(best.name);
        const tags: Record<string, string> = {
          "loom.sweep": sweep.metadata.name,
          "loom.trial": String(best.number),
          "loom.workload": best.name,
          ...(job?.metadata.uid ? { "loom.workload_uid": job.metadata.uid } : {}),
          ...(job?.status?.checkpoint?.step !== undefined
            ? { "loom.checkpoint_step": String(job.status.checkpoint.step) }
            : {}),
          ...(job?.spec.initCheckpointFrom
            ? { "loom.init_checkpoint_from": job.spec.initCheckpointFrom }
            : {}),
        };
        const { version } = await this.deps.registrar.register(sweep.metadata.project!, {
          model: spec.register.model,
          source: `runs:/${best.runId}/${spec.register.artifactPath}`,
          runId: best.runId,
          alias: spec.register.alias,
          tags,
        });
        status.model = { name: spec.register.model, version, alias: spec.register.alias };
        const message = `trial ${best.number} registered as ${spec.register.model} version ${version} (@${spec.register.alias})`;
        status.conditions = setCondition(
          status.conditions,
          { type: "Registered", status: "True", reason: "Registered", message },
          now,
        );
        await this.event(sweep, "Normal", "Registered", message);
      }
    }
    status.phase = "Succeeded";
    status.completionTime = now.toISOString();
    const message = `best: trial ${best.number} (${best.name}) ${spec.objective.metric}=${best.objective} with ${paramsText(best.params)}`;
    status.conditions = setCondition(
      status.conditions,
      { type: "Complete", status: "True", reason: "Succeeded", message },
      now,
    );
    await this.event(sweep, "Normal", "Succeeded", message);
  }

  /** Makes the trial's job; false when the name belongs to a job that is not this sweep's. */
  private async createTrial(sweep: Sweep, number: number, name: string, params: Params): Promise<boolean> {
    const job: TrainingJob = {
      apiVersion: API_VERSION,
      kind: TRAININGJOB,
      metadata: {
        name,
        project: sweep.metadata.project,
        labels: {
          ...sweep.metadata.labels,
          [SWEEP_LABEL]: sweep.metadata.name,
          [TRIAL_LABEL]: String(number),
        },
        annotations: {
          // The sweep's own annotations (scrape configs, tooling) reach its trials, as labels do.
          ...withoutApplyRecord(sweep.metadata.annotations),
          [SWEEP_UID_ANNOTATION]: sweep.metadata.uid,
          [TRIAL_PARAMS_ANNOTATION]: JSON.stringify(params),
        },
      } as unknown as TrainingJob["metadata"],
      spec: trialSpec(sweep, params),
    };
    try {
      await this.deps.store.create(job);
      return true;
    } catch (err) {
      if (!(err instanceof AlreadyExistsError)) throw err;
    }
    // Made by an earlier pass whose status write was lost: it is adopted as it is. Anything else
    // of that name (a trial of an earlier sweep of this name, still stopping, or a job that is
    // no trial at all) is not this trial: recording it would fail the trial once that job goes.
    let existing: TrainingJob;
    try {
      existing = (await this.deps.store.get(TRAININGJOB, sweep.metadata.project!, name)) as TrainingJob;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
    if (
      existing.metadata.annotations?.[SWEEP_UID_ANNOTATION] === sweep.metadata.uid &&
      existing.metadata.labels?.[TRIAL_LABEL] === String(number)
    )
      return true;
    await this.event(
      sweep,
      existing.metadata.deletionTimestamp ? "Normal" : "Warning",
      "TrialNameTaken",
      existing.metadata.deletionTimestamp
        ? `trial ${number} waits for TrainingJob ${name}, not this sweep's trial, to finish being deleted`
        : `trial ${number} cannot be made: TrainingJob ${name} exists and is not this sweep's trial`,
    );
    return false;
  }

  private async trialJobs(project: string, sweep: string): Promise<TrainingJob[]> {
    const list = await this.deps.store.list(TRAININGJOB, {
      project,
      labelSelector: `${SWEEP_LABEL}=${sweep}`,
    });
    return list.items as TrainingJob[];
  }

  private async deleteJob(job: TrainingJob): Promise<void> {
    if (job.metadata.deletionTimestamp) return;
    try {
      await this.deps.store.delete(TRAININGJOB, job.metadata.project!, job.metadata.name);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
  }

  private async event(sweep: Sweep, type: "Normal" | "Warning", reason: string, message: string) {
    await this.deps.events.record(
      { kind: SWEEP, project: sweep.metadata.project!, name: sweep.metadata.name, uid: sweep.metadata.uid },
      type,
      reason,
      message,
    );
  }
}

function withoutApplyRecord(annotations: Record<string, string> | undefined): Record<string, string> {
  const out = { ...annotations };
  delete out["kubectl.kubernetes.io/last-applied-configuration"];
  return out;
}

function isDone(status: SweepStatus): boolean {
  return status.phase === "Succeeded" || status.phase === "Failed";
}

function countPhase(trials: TrialStatus[], phase: string): number {
  return trials.filter((t) => t.phase === phase).length;
}

function activeCount(trials: TrialStatus[]): number {
  return trials.filter((t) => ACTIVE.has(t.phase)).length;
}

/** The trials in number order, with any job made just before a crash (before the status said so) adopted. */
function adoptTrials(trials: TrialStatus[], jobs: Map<string, TrainingJob>): TrialStatus[] {
  for (const job of jobs.values()) {
    const number = Number(job.metadata.labels?.[TRIAL_LABEL]);
    if (!trials.some((t) => t.number === number))
      trials.push({
        number,
        name: job.metadata.name,
        params: JSON.parse(job.metadata.annotations?.[TRIAL_PARAMS_ANNOTATION] ?? "{}"),
        phase: "Pending",
      });
  }
  trials.sort((a, b) => a.number - b.number);
  return trials;
}

/** Counts, the best trial so far, and while running a condition that says how far it is. */
function summarize(sweep: Sweep, status: SweepStatus, trials: TrialStatus[], now: Date): void {
  const spec = sweep.spec;
  status.succeeded = countPhase(trials, "Succeeded");
  status.failed = countPhase(trials, "Failed");
  status.earlyStopped = countPhase(trials, "EarlyStopped");
  status.running = activeCount(trials);
  const best = bestTrial(spec, trials);
  if (best)
    status.best = { trial: best.number, name: best.name, objective: best.objective!, params: best.params };
  if (!isDone(status)) {
    status.phase = "Running";
    status.conditions = setCondition(
      status.conditions,
      {
        type: "Complete",
        status: "False",
        reason: "TrialsRunning",
        message: `${trials.length} of ${plannedTrials(spec)} trials started, ${status.running} running, ${status.succeeded} succeeded, ${status.earlyStopped} stopped early, ${status.failed} failed`,
      },
      now,
    );
  }
  status.observedGeneration = sweep.metadata.generation;
}

/** A trial's TrainingJob: the template with each parameter in its environment variable (and flag). */
export function trialSpec(sweep: Pick<Sweep, "metadata" | "spec">, params: Params): TrainingJobSpec {
  const spec: SweepSpec = sweep.spec;
  const template = structuredClone(spec.template);
  const env = { ...template.env };
  const command = [...template.command];
  for (const p of spec.parameters) {
    const value = String(params[p.name]);
    env[parameterEnv(p)] = value;
    if (p.flag) command.push(p.flag, value);
  }
  return {
    ...template,
    command,
    env,
    // All trials in one experiment, so the MLflow UI compares them side by side.
    experiment: template.experiment ?? sweep.metadata.name,
  };
}

/** The best succeeded trial by the objective (ties: the earlier trial). */
export function bestTrial(spec: SweepSpec, trials: TrialStatus[]): TrialStatus | undefined {
  let best: TrialStatus | undefined;
  for (const t of trials) {
    if (t.phase !== "Succeeded" || t.objective === undefined) continue;
    if (
      !best ||
      (spec.objective.goal === "minimize" ? t.objective < best.objective! : t.objective > best.objective!)
    )
      best = t;
  }
  return best;
}

export function paramsText(params: Params): string {
  return Object.entries(params)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

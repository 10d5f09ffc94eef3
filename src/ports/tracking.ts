import type { Point } from "../core/sweep/earlystop.js";

/**
 * What controllers need of experiment tracking, so that they never import tracking/: the
 * composition roots pass tracking's implementations (tracking/workloads.ts, server/models.ts).
 */

/** What a workload needs to log to Loom's tracking with the mlflow client and no setup. */
export interface WorkloadTracking {
  /**
   * The workload's experiment (made if missing) and its one run, made on the first call and
   * found again by its tag afterwards, so every attempt of a job lands in the same run.
   */
  ensureRun(
    ref: { project: string; name: string; uid: string },
    experiment: string,
  ): Promise<{ experimentId: string; runId: string }>;
  /** Marks the run with the attempt now running. */
  tagAttempt(project: string, runId: string, attempt: number): Promise<void>;
  /** MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN (a token that reaches this project only). */
  clientEnv(project: string): Promise<Record<string, string>>;
}

/** Reads what trials report (embedded: Loom's own tracking store). */
export interface TrialMetrics {
  history(project: string, runId: string, metric: string): Promise<Point[]>;
}

/** Registers a trial's model as a version of a registered model (embedded: Loom's registry). */
export interface ModelRegistrar {
  register(
    project: string,
    req: { model: string; source: string; runId: string; alias: string; tags: Record<string, string> },
  ): Promise<{ version: string }>;
}

import type { Point } from "../core/sweep/earlystop.js";
import type { SecretFile, WorkloadRef } from "./runtime.js";

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
    /** Tags a run made by this call with the attempt (then `created`: no tagAttempt needed). */
    attempt?: number,
  ): Promise<{ experimentId: string; runId: string; created?: boolean }>;
  /** Marks the run with the attempt now running. */
  tagAttempt(project: string, runId: string, attempt: number): Promise<void>;
  /**
   * A credential of the workload's own (an editor's token for its project, bound to its uid),
   * made anew for each attempt (the previous one revoked): env MLFLOW_TRACKING_URI and
   * LOOM_TOKEN_FILE, and the token in files under the workload's HOME (~/.mlflow/credentials,
   * which the mlflow client reads), never in env (readable from /proc/PID/environ).
   */
  clientCredentials(ref: WorkloadRef): Promise<{ env: Record<string, string>; files: SecretFile[] }>;
  /**
   * The same credential for a long-running workload's `session` (a Workspace's or an App's
   * revision): made once per session while this process lives, earlier ones left valid (a
   * replica re-adopted after a restart keeps its own) until `revokeCredentials`. Also names the
   * credentials file in env (LOOM_MLFLOW_CREDENTIALS, a path) for a workload whose HOME is not
   * the private one the files are written under (a Workspace's persistent home links to it).
   * Optional: a platform without it gives Workspaces and Apps no tracking credential.
   */
  sessionCredentials?(
    ref: WorkloadRef,
    session: string,
  ): Promise<{ env: Record<string, string>; files: SecretFile[] }>;
  /** Revokes the workload's credentials: call when it ends (finished, deleted, collected). */
  revokeCredentials(ref: WorkloadRef): Promise<void>;
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

import type { SecretFile, WorkloadRef } from "../ports/runtime.js";
import type { WorkloadTracking } from "../ports/tracking.js";
import type { TrackingStore } from "./store.js";

export type { WorkloadTracking };

export const WORKLOAD_UID_TAG = "loom.workload_uid";
const ATTEMPT_TAG = "loom.attempt";

/** Embedded: the tracking store in this process; workers call back over loopback. */
export class LocalWorkloadTracking implements WorkloadTracking {
  constructor(
    private readonly store: TrackingStore,
    /** The server's URL, known once it listens. */
    private readonly url: () => string,
    /** A workload's own credential (server/workloadtokens.ts workloadCredentials). */
    private readonly credentials: {
      mint(ref: WorkloadRef): Promise<string>;
      mintShared(ref: WorkloadRef): Promise<string>;
      revoke(ref: WorkloadRef): Promise<void>;
    },
  ) {}

  /** uid → session → token: a long-running workload's session token, minted once while this process lives. */
  private readonly sessions = new Map<string, Map<string, string>>();

  async ensureRun(
    ref: { project: string; name: string; uid: string },
    experiment: string,
    attempt?: number,
  ): Promise<{ experimentId: string; runId: string; created: boolean }> {
    let experimentId: string;
    // An experiment made by this call holds no run yet: nothing to look for.
    let fresh = false;
    try {
      experimentId = (await this.store.getExperimentByName(ref.project, experiment)).experiment_id;
    } catch {
      try {
        experimentId = await this.store.createExperiment(ref.project, experiment);
        fresh = true;
      } catch {
        // Two jobs creating the same experiment at once: the other one won.
        experimentId = (await this.store.getExperimentByName(ref.project, experiment)).experiment_id;
      }
    }
    if (!fresh) {
      // A run made for this job before its status could say so (a crash, a conflict on the write).
      const found = await this.store.searchRuns(ref.project, {
        experimentIds: [experimentId],
        filter: `tags.\`${WORKLOAD_UID_TAG}\` = '${ref.uid}'`,
        viewType: "ALL",
        maxResults: 1,
      });
      if (found.runs[0]) return { experimentId, runId: found.runs[0].info.run_id, created: false };
    }
    const runId = await this.store.startRun(ref.project, {
      experimentId,
      runName: ref.name,
      userId: "loom",
      tags: [
        { key: "loom.project", value: ref.project },
        { key: "loom.workload", value: ref.name },
        { key: WORKLOAD_UID_TAG, value: ref.uid },
        { key: "mlflow.source.name", value: `loom:trainingjob/${ref.name}` },
        // The first attempt's tag with the run itself (tagAttempt is then not needed).
        ...(attempt !== undefined ? [{ key: ATTEMPT_TAG, value: String(attempt) }] : []),
      ],
    });
    return { experimentId, runId, created: true };
  }

  async tagAttempt(project: string, runId: string, attempt: number): Promise<void> {
    await this.store.logBatch(project, runId, { tags: [{ key: ATTEMPT_TAG, value: String(attempt) }] });
  }

  async clientCredentials(ref: WorkloadRef): Promise<{ env: Record<string, string>; files: SecretFile[] }> {
    // A job's attempt: the last attempt's token (and any session's) goes.
    this.sessions.delete(ref.uid);
    return this.filesFor(ref, await this.credentials.mint(ref));
  }

  async sessionCredentials(
    ref: WorkloadRef,
    session: string,
  ): Promise<{ env: Record<string, string>; files: SecretFile[] }> {
    // Workspaces re-apply their revision every second: a token per apply would be thousands.
    let token = this.sessions.get(ref.uid)?.get(session);
    if (!token) {
      token = await this.credentials.mintShared(ref);
      const tokens = this.sessions.get(ref.uid) ?? new Map<string, string>();
      tokens.set(session, token);
      this.sessions.set(ref.uid, tokens);
    }
    const creds = this.filesFor(ref, token);
    return { ...creds, env: { ...creds.env, [CREDENTIALS_ENV]: `$(HOME)/${CREDENTIALS_FILE}` } };
  }

  private filesFor(ref: WorkloadRef, token: string): { env: Record<string, string>; files: SecretFile[] } {
    const base = this.url();
    return {
      env: {
        MLFLOW_TRACKING_URI: ref.project === "default" ? base : `${base}/mlflow/projects/${ref.project}`,
        LOOM_TOKEN_FILE: `$(HOME)/${TOKEN_FILE}`,
      },
      files: [
        // The mlflow client's own credentials file: Basic auth, the token as the password.
        { path: CREDENTIALS_FILE, data: mlflowCredentials(token), mode: 0o600 },
        { path: TOKEN_FILE, data: `${token}\n`, mode: 0o600 },
      ],
    };
  }

  async revokeCredentials(ref: WorkloadRef): Promise<void> {
    this.sessions.delete(ref.uid);
    await this.credentials.revoke(ref);
  }
}

/** Where a workload finds its token for Loom's CLI (LOOM_TOKEN_FILE), under its HOME. */
const TOKEN_FILE = ".loom/token";
/** The mlflow client's credentials file, under the private HOME the runtime writes files to. */
const CREDENTIALS_FILE = ".mlflow/credentials";
/** Names that file (a path, not a secret) where HOME is another directory (a Workspace's). */
export const CREDENTIALS_ENV = "LOOM_MLFLOW_CREDENTIALS";

/** ~/.mlflow/credentials as mlflow.utils.credentials reads it (configparser, section [mlflow]). */
export function mlflowCredentials(token: string): string {
  return `[mlflow]\nmlflow_tracking_username = loom\nmlflow_tracking_password = ${token}\n`;
}

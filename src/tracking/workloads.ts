import type { SecretFile, WorkloadRef } from "../ports/runtime.js";
import type { WorkloadTracking } from "../ports/tracking.js";
import type { TrackingStore } from "./store.js";

export type { WorkloadTracking };

export const WORKLOAD_UID_TAG = "loom.workload_uid";

/** Embedded: the tracking store in this process; workers call back over loopback. */
export class LocalWorkloadTracking implements WorkloadTracking {
  constructor(
    private readonly store: TrackingStore,
    /** The server's URL, known once it listens. */
    private readonly url: () => string,
    /** A workload's own credential (server/workloadtokens.ts workloadCredentials). */
    private readonly credentials: {
      mint(ref: WorkloadRef): Promise<string>;
      revoke(ref: WorkloadRef): Promise<void>;
    },
  ) {}

  async ensureRun(
    ref: { project: string; name: string; uid: string },
    experiment: string,
  ): Promise<{ experimentId: string; runId: string }> {
    const experimentId = await this.store
      .getExperimentByName(ref.project, experiment)
      .then((e) => e.experiment_id)
      .catch(() => this.store.createExperiment(ref.project, experiment))
      // Two jobs creating the same experiment at once: the other one won.
      .catch(async () => (await this.store.getExperimentByName(ref.project, experiment)).experiment_id);
    const found = await this.store.searchRuns(ref.project, {
      experimentIds: [experimentId],
      filter: `tags.\`${WORKLOAD_UID_TAG}\` = '${ref.uid}'`,
      viewType: "ALL",
      maxResults: 1,
    });
    if (found.runs[0]) return { experimentId, runId: found.runs[0].info.run_id };
    const run = await this.store.createRun(ref.project, {
      experimentId,
      runName: ref.name,
      userId: "loom",
      tags: [
        { key: "loom.project", value: ref.project },
        { key: "loom.workload", value: ref.name },
        { key: WORKLOAD_UID_TAG, value: ref.uid },
        { key: "mlflow.source.name", value: `loom:trainingjob/${ref.name}` },
      ],
    });
    return { experimentId, runId: run.info.run_id };
  }

  async tagAttempt(project: string, runId: string, attempt: number): Promise<void> {
    await this.store.logBatch(project, runId, { tags: [{ key: "loom.attempt", value: String(attempt) }] });
  }

  async clientCredentials(ref: WorkloadRef): Promise<{ env: Record<string, string>; files: SecretFile[] }> {
    const base = this.url();
    const token = await this.credentials.mint(ref);
    return {
      env: {
        MLFLOW_TRACKING_URI: ref.project === "default" ? base : `${base}/mlflow/projects/${ref.project}`,
        LOOM_TOKEN_FILE: `$(HOME)/${TOKEN_FILE}`,
      },
      files: [
        // The mlflow client's own credentials file: Basic auth, the token as the password.
        { path: ".mlflow/credentials", data: mlflowCredentials(token), mode: 0o600 },
        { path: TOKEN_FILE, data: `${token}\n`, mode: 0o600 },
      ],
    };
  }

  async revokeCredentials(ref: WorkloadRef): Promise<void> {
    await this.credentials.revoke(ref);
  }
}

/** Where a workload finds its token for Loom's CLI (LOOM_TOKEN_FILE), under its HOME. */
const TOKEN_FILE = ".loom/token";

/** ~/.mlflow/credentials as mlflow.utils.credentials reads it (configparser, section [mlflow]). */
export function mlflowCredentials(token: string): string {
  return `[mlflow]\nmlflow_tracking_username = loom\nmlflow_tracking_password = ${token}\n`;
}

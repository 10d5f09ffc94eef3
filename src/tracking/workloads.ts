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
    /** An editor's token scoped to the project: one job cannot write another project's runs. */
    private readonly tokenFor: (project: string) => Promise<string>,
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

  async clientEnv(project: string): Promise<Record<string, string>> {
    const base = this.url();
    return {
      MLFLOW_TRACKING_URI: project === "default" ? base : `${base}/mlflow/projects/${project}`,
      MLFLOW_TRACKING_TOKEN: await this.tokenFor(project),
    };
  }
}

import type { Kysely } from "kysely";
import { Experiments } from "./experiments.js";
import { MetricHistories } from "./metrics.js";
import { Runs } from "./runs.js";
import type { RunsSchema, TrackingDialect } from "./schema.js";
import type {
  DatasetInput,
  Experiment,
  KeyValue,
  Metric,
  RawMetric,
  Run,
  RunInfo,
  SearchRunsRequest,
  ViewType,
} from "./types.js";

export type { TrackingDialect } from "./schema.js";
export type {
  DatasetInput,
  Experiment,
  KeyValue,
  Metric,
  RawMetric,
  Run,
  RunInfo,
  SearchRunsRequest,
  ViewType,
} from "./types.js";

/**
 * MLflow's tracking model on Loom's database: experiments (per project), runs, params, tags,
 * metric history with a latest-value table for search, and dataset inputs. Every call is scoped
 * to one project: another project's experiments and runs do not exist for it.
 */
export class TrackingStore {
  private readonly experiments: Experiments;
  private readonly runs: Runs;
  private readonly metrics: MetricHistories;

  constructor(
    db: Kysely<unknown>,
    now: () => number = Date.now,
    /** Which SQL the few dialect-specific spots speak (LIKE); everything else is the same. */
    dialect: TrackingDialect = "sqlite",
  ) {
    const tables = db as Kysely<RunsSchema>;
    this.experiments = new Experiments(tables, now, dialect);
    this.runs = new Runs(tables, now, dialect, this.experiments);
    this.metrics = new MetricHistories(tables, (project, runId) => this.runs.row(project, runId));
  }

  // ---- experiments -----------------------------------------------------------------------

  createExperiment(
    project: string,
    name: string,
    artifactLocation?: string,
    tags: KeyValue[] = [],
  ): Promise<string> {
    return this.experiments.create(project, name, artifactLocation, tags);
  }

  getExperiment(project: string, id: string): Promise<Experiment> {
    return this.experiments.get(project, id);
  }

  getExperimentByName(project: string, name: string): Promise<Experiment> {
    return this.experiments.getByName(project, name);
  }

  searchExperiments(
    project: string,
    opts: { viewType?: ViewType; maxResults?: number; pageToken?: string; filter?: string },
  ): Promise<{ experiments: Experiment[]; next_page_token?: string }> {
    return this.experiments.search(project, opts);
  }

  renameExperiment(project: string, id: string, newName: string): Promise<void> {
    return this.experiments.rename(project, id, newName);
  }

  setExperimentLifecycle(project: string, id: string, stage: "active" | "deleted"): Promise<void> {
    return this.experiments.setLifecycle(project, id, stage);
  }

  setExperimentTag(project: string, id: string, key: string, value: string): Promise<void> {
    return this.experiments.setTag(project, id, key, value);
  }

  deleteExperimentTag(project: string, id: string, key: string): Promise<void> {
    return this.experiments.deleteTag(project, id, key);
  }

  // ---- runs ------------------------------------------------------------------------------

  createRun(
    project: string,
    req: { experimentId?: string; userId?: string; runName?: string; startTime?: number; tags?: KeyValue[] },
  ): Promise<Run> {
    return this.runs.create(project, req);
  }

  /** createRun without reading the run back: its id (for Loom's own runs, made per job). */
  startRun(
    project: string,
    req: { experimentId?: string; userId?: string; runName?: string; startTime?: number; tags?: KeyValue[] },
  ): Promise<string> {
    return this.runs.insert(project, req);
  }

  getRun(project: string, runId: string | undefined): Promise<Run> {
    return this.runs.get(project, runId);
  }

  updateRun(
    project: string,
    runId: string | undefined,
    req: { status?: string; endTime?: number; runName?: string },
  ): Promise<RunInfo> {
    return this.runs.update(project, runId, req);
  }

  setRunLifecycle(project: string, runId: string | undefined, stage: "active" | "deleted"): Promise<void> {
    return this.runs.setLifecycle(project, runId, stage);
  }

  logBatch(
    project: string,
    runId: string | undefined,
    batch: { metrics?: RawMetric[]; params?: KeyValue[]; tags?: KeyValue[] },
  ): Promise<void> {
    return this.runs.logBatch(project, runId, batch);
  }

  deleteTag(project: string, runId: string | undefined, key: string): Promise<void> {
    return this.runs.deleteTag(project, runId, key);
  }

  logInputs(project: string, runId: string | undefined, datasets: DatasetInput[]): Promise<void> {
    return this.runs.logInputs(project, runId, datasets);
  }

  searchRuns(project: string, req: SearchRunsRequest): Promise<{ runs: Run[]; next_page_token?: string }> {
    return this.runs.search(project, req);
  }

  // ---- metric history --------------------------------------------------------------------

  metricHistory(
    project: string,
    runId: string | undefined,
    key: string,
    opts: { maxResults?: number; pageToken?: string } = {},
  ): Promise<{ metrics: Metric[]; next_page_token?: string }> {
    return this.metrics.metricHistory(project, runId, key, opts);
  }

  /** One metric across many runs, sampled for charts (MetricHistories.metricHistoryBulkInterval). */
  metricHistoryBulkInterval(
    project: string,
    req: { runIds: string[]; metricKey: string; maxResults?: number; startStep?: number; endStep?: number },
  ): Promise<{ metrics: (Metric & { run_id: string })[] }> {
    return this.metrics.metricHistoryBulkInterval(project, req);
  }
}

import { randomBytes } from "node:crypto";
import { type Kysely, type RawBuilder, sql } from "kysely";
import { invalidParameter, MlflowError, notFound } from "./errors.js";
import { type Clause, type OrderBy, parseFilter, parseOrderBy } from "./filter.js";

/** The SQL dialect under tracking (tracking/db.ts opens one of each). */
export type TrackingDialect = "sqlite" | "postgres";

/** Tracking's tables (migration 0003_tracking in the SQLite store; db.ts on PostgreSQL). */
interface TrackingSchema {
  tr_experiments: {
    experiment_id: number | undefined;
    project: string;
    name: string;
    artifact_location: string;
    lifecycle_stage: string;
    creation_time: number;
    last_update_time: number;
  };
  tr_experiment_tags: { experiment_id: number; key: string; value: string };
  tr_runs: {
    run_uuid: string;
    experiment_id: number;
    project: string;
    run_name: string;
    user_id: string;
    status: string;
    start_time: number;
    end_time: number | null;
    lifecycle_stage: string;
    artifact_uri: string;
  };
  tr_params: { run_uuid: string; key: string; value: string };
  tr_tags: { run_uuid: string; key: string; value: string };
  tr_metrics: {
    run_uuid: string;
    key: string;
    value: number;
    is_nan: number;
    timestamp: number;
    step: number;
  };
  tr_latest_metrics: {
    run_uuid: string;
    key: string;
    value: number;
    is_nan: number;
    timestamp: number;
    step: number;
  };
  tr_inputs: { run_uuid: string; name: string; digest: string; context: string | null; body: string };
}

export interface KeyValue {
  key: string;
  value: string;
}

export interface Experiment {
  experiment_id: string;
  name: string;
  artifact_location: string;
  lifecycle_stage: string;
  creation_time: number;
  last_update_time: number;
  tags?: KeyValue[];
}

export interface Metric {
  key: string;
  value: number | string;
  timestamp: number;
  step: number;
}

export interface RunInfo {
  run_uuid: string;
  run_id: string;
  experiment_id: string;
  run_name: string;
  user_id: string;
  status: string;
  start_time: number;
  end_time?: number;
  artifact_uri: string;
  lifecycle_stage: string;
}

export interface Run {
  info: RunInfo;
  data: { metrics?: Metric[]; params?: KeyValue[]; tags?: KeyValue[] };
  inputs: { dataset_inputs?: unknown[] };
}

export type ViewType = "ACTIVE_ONLY" | "DELETED_ONLY" | "ALL";

const RUN_STATUSES = new Set(["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]);
const MAX_RESULTS = 50_000;
/** get-history-bulk-interval's limits, MLflow's: runs per call, and values per run (the default). */
const MAX_RUNS_BULK_INTERVAL = 100;
const MAX_RESULTS_PER_RUN = 2500;
/** What MLflow stores for ±infinity (its SQL stores do the same). */
const MAX_DOUBLE = 1.7976931348623157e308;
/** The experiment a run lands in when the client names none ("0"), one per project. */
const DEFAULT_EXPERIMENT = "Default";

/**
 * MLflow's tracking model on Loom's database: experiments (per project), runs, params, tags,
 * metric history with a latest-value table for search, and dataset inputs. Every call is scoped
 * to one project: another project's experiments and runs do not exist for it.
 */
export class TrackingStore {
  private readonly db: Kysely<TrackingSchema>;

  constructor(
    db: Kysely<unknown>,
    private readonly now: () => number = Date.now,
    /** Which SQL the few dialect-specific spots speak (LIKE); everything else is the same. */
    private readonly dialect: TrackingDialect = "sqlite",
  ) {
    this.db = db as Kysely<TrackingSchema>;
  }

  // ---- experiments -----------------------------------------------------------------------

  async createExperiment(
    project: string,
    name: string,
    artifactLocation?: string,
    tags: KeyValue[] = [],
  ): Promise<string> {
    if (!name) throw invalidParameter("Missing value for required parameter 'name'.");
    const existing = await this.db
      .selectFrom("tr_experiments")
      .select("experiment_id")
      .where("project", "=", project)
      .where("name", "=", name)
      .executeTakeFirst();
    if (existing)
      throw new MlflowError(
        "RESOURCE_ALREADY_EXISTS",
        `Experiment '${name}' already exists in project ${project}.`,
      );
    const t = this.now();
    const row = await this.db
      .insertInto("tr_experiments")
      .values({
        project,
        name,
        artifact_location: artifactLocation ?? "",
        lifecycle_stage: "active",
        creation_time: t,
        last_update_time: t,
      })
      .returning("experiment_id")
      .executeTakeFirstOrThrow()
      .catch((err: unknown) => {
        // Another writer made it between the check and the insert (a pool runs them in parallel).
        if (isUniqueViolation(err))
          throw new MlflowError(
            "RESOURCE_ALREADY_EXISTS",
            `Experiment '${name}' already exists in project ${project}.`,
          );
        throw err;
      });
    const id = row.experiment_id!;
    if (!artifactLocation)
      await this.db
        .updateTable("tr_experiments")
        .set({ artifact_location: `mlflow-artifacts:/${id}` })
        .where("experiment_id", "=", id)
        .execute();
    for (const tag of tags) await this.setExperimentTag(project, String(id), tag.key, tag.value);
    return String(id);
  }

  /** The project's experiment by id; "0" is its default experiment (made on first use). */
  private async experimentRow(project: string, id: string) {
    if (id === "0") return this.defaultExperiment(project);
    if (!/^\d+$/.test(id))
      throw invalidParameter(`Invalid experiment ID '${id}'. Experiment ID must be a valid integer.`);
    const row = await this.db
      .selectFrom("tr_experiments")
      .selectAll()
      .where("experiment_id", "=", Number(id))
      .where("project", "=", project)
      .executeTakeFirst();
    if (!row) throw notFound(`No Experiment with id=${id} exists`);
    return row;
  }

  private async defaultExperiment(project: string) {
    const find = () =>
      this.db
        .selectFrom("tr_experiments")
        .selectAll()
        .where("project", "=", project)
        .where("name", "=", DEFAULT_EXPERIMENT)
        .executeTakeFirst();
    const row = await find();
    if (row) return row;
    await this.createExperiment(project, DEFAULT_EXPERIMENT).catch((err: unknown) => {
      if (!(err instanceof MlflowError && err.errorCode === "RESOURCE_ALREADY_EXISTS")) throw err;
    });
    return (await find())!;
  }

  async getExperiment(project: string, id: string): Promise<Experiment> {
    return this.toExperiment(await this.experimentRow(project, id));
  }

  async getExperimentByName(project: string, name: string): Promise<Experiment> {
    if (name === DEFAULT_EXPERIMENT) return this.toExperiment(await this.defaultExperiment(project));
    const row = await this.db
      .selectFrom("tr_experiments")
      .selectAll()
      .where("project", "=", project)
      .where("name", "=", name)
      .executeTakeFirst();
    if (!row) throw notFound(`Could not find experiment with name '${name}'`);
    return this.toExperiment(row);
  }

  async searchExperiments(
    project: string,
    opts: { viewType?: ViewType; maxResults?: number; pageToken?: string; filter?: string },
  ): Promise<{ experiments: Experiment[]; next_page_token?: string }> {
    const max = checkMaxResults(opts.maxResults ?? 1000);
    const offset = decodePageToken(opts.pageToken);
    let q = this.db.selectFrom("tr_experiments").selectAll().where("project", "=", project);
    const view = opts.viewType ?? "ACTIVE_ONLY";
    if (view !== "ALL") q = q.where("lifecycle_stage", "=", view === "ACTIVE_ONLY" ? "active" : "deleted");
    for (const clause of parseExperimentFilter(opts.filter)) {
      if (clause.entity === "tag") {
        q = q.where(
          sql<boolean>`exists (select 1 from tr_experiment_tags t where t.experiment_id = tr_experiments.experiment_id and t.key = ${clause.key} and ${textCompare(this.dialect, sql`t.value`, clause)})`,
        );
      } else {
        q = q.where(textCompare(this.dialect, sql.ref(clause.key), clause));
      }
    }
    const rows = await q
      .orderBy("creation_time", "desc")
      .orderBy("experiment_id", "asc")
      .limit(max + 1)
      .offset(offset)
      .execute();
    const page = rows.slice(0, max);
    return {
      experiments: await Promise.all(page.map((r) => this.toExperiment(r))),
      ...(rows.length > max ? { next_page_token: encodePageToken(offset + max) } : {}),
    };
  }

  async renameExperiment(project: string, id: string, newName: string): Promise<void> {
    if (!newName) throw invalidParameter("Missing value for required parameter 'new_name'.");
    const row = await this.experimentRow(project, id);
    const clash = await this.db
      .selectFrom("tr_experiments")
      .select("experiment_id")
      .where("project", "=", project)
      .where("name", "=", newName)
      .executeTakeFirst();
    if (clash && clash.experiment_id !== row.experiment_id)
      throw new MlflowError("RESOURCE_ALREADY_EXISTS", `Experiment '${newName}' already exists.`);
    await this.db
      .updateTable("tr_experiments")
      .set({ name: newName, last_update_time: this.now() })
      .where("experiment_id", "=", row.experiment_id!)
      .execute();
  }

  async setExperimentLifecycle(project: string, id: string, stage: "active" | "deleted"): Promise<void> {
    const row = await this.experimentRow(project, id);
    await this.db
      .updateTable("tr_experiments")
      .set({ lifecycle_stage: stage, last_update_time: this.now() })
      .where("experiment_id", "=", row.experiment_id!)
      .execute();
    // Its runs follow it, as in MLflow.
    await this.db
      .updateTable("tr_runs")
      .set({ lifecycle_stage: stage })
      .where("experiment_id", "=", row.experiment_id!)
      .execute();
  }

  async setExperimentTag(project: string, id: string, key: string, value: string): Promise<void> {
    const row = await this.experimentRow(project, id);
    await this.db
      .insertInto("tr_experiment_tags")
      .values({ experiment_id: row.experiment_id!, key, value })
      .onConflict((oc) => oc.columns(["experiment_id", "key"]).doUpdateSet({ value }))
      .execute();
  }

  async deleteExperimentTag(project: string, id: string, key: string): Promise<void> {
    const row = await this.experimentRow(project, id);
    await this.db
      .deleteFrom("tr_experiment_tags")
      .where("experiment_id", "=", row.experiment_id!)
      .where("key", "=", key)
      .execute();
  }

  private async toExperiment(row: TrackingSchema["tr_experiments"]): Promise<Experiment> {
    const tags = await this.db
      .selectFrom("tr_experiment_tags")
      .select(["key", "value"])
      .where("experiment_id", "=", row.experiment_id!)
      .execute();
    return {
      experiment_id: String(row.experiment_id),
      name: row.name,
      artifact_location: row.artifact_location,
      lifecycle_stage: row.lifecycle_stage,
      creation_time: row.creation_time,
      last_update_time: row.last_update_time,
      ...(tags.length ? { tags } : {}),
    };
  }

  // ---- runs ------------------------------------------------------------------------------

  async createRun(
    project: string,
    req: { experimentId?: string; userId?: string; runName?: string; startTime?: number; tags?: KeyValue[] },
  ): Promise<Run> {
    const exp = await this.experimentRow(project, req.experimentId ?? "0");
    if (exp.lifecycle_stage !== "active")
      throw invalidParameter(`The experiment ${exp.experiment_id} must be in the 'active' state.`);
    const runId = randomBytes(16).toString("hex");
    const tags = [...(req.tags ?? [])];
    const runName =
      req.runName || tags.find((t) => t.key === "mlflow.runName")?.value || `run-${runId.slice(0, 8)}`;
    if (!tags.some((t) => t.key === "mlflow.runName")) tags.push({ key: "mlflow.runName", value: runName });
    await this.db
      .insertInto("tr_runs")
      .values({
        run_uuid: runId,
        experiment_id: exp.experiment_id!,
        project,
        run_name: runName,
        user_id: req.userId ?? "",
        status: "RUNNING",
        start_time: req.startTime ?? this.now(),
        end_time: null,
        lifecycle_stage: "active",
        artifact_uri: `${exp.artifact_location}/${runId}/artifacts`,
      })
      .execute();
    for (const t of tags) await this.upsert("tr_tags", runId, t.key, t.value);
    return this.getRun(project, runId);
  }

  private async runRow(project: string, runId: string | undefined) {
    if (!runId) throw invalidParameter("Missing value for required parameter 'run_id'.");
    const row = await this.db
      .selectFrom("tr_runs")
      .selectAll()
      .where("run_uuid", "=", runId)
      .where("project", "=", project)
      .executeTakeFirst();
    if (!row) throw notFound(`Run with id=${runId} not found`);
    return row;
  }

  /** Writes need an active run (MLflow refuses to log to a deleted one). */
  private async activeRun(project: string, runId: string | undefined) {
    const row = await this.runRow(project, runId);
    if (row.lifecycle_stage !== "active")
      throw new MlflowError(
        "INVALID_PARAMETER_VALUE",
        `The run ${runId} must be in the 'active' state. Current state is ${row.lifecycle_stage}.`,
      );
    return row;
  }

  async getRun(project: string, runId: string | undefined): Promise<Run> {
    return (await this.toRuns([await this.runRow(project, runId)]))[0]!;
  }

  async updateRun(
    project: string,
    runId: string | undefined,
    req: { status?: string; endTime?: number; runName?: string },
  ): Promise<RunInfo> {
    const row = await this.runRow(project, runId);
    const set: Partial<TrackingSchema["tr_runs"]> = {};
    if (req.status !== undefined) {
      if (!RUN_STATUSES.has(req.status))
        throw invalidParameter(`Invalid run status '${req.status}': one of ${[...RUN_STATUSES].join(", ")}`);
      set.status = req.status;
    }
    if (req.endTime !== undefined) set.end_time = req.endTime;
    if (req.runName) {
      set.run_name = req.runName;
      await this.upsert("tr_tags", row.run_uuid, "mlflow.runName", req.runName);
    }
    if (Object.keys(set).length)
      await this.db.updateTable("tr_runs").set(set).where("run_uuid", "=", row.run_uuid).execute();
    return (await this.getRun(project, row.run_uuid)).info;
  }

  async setRunLifecycle(
    project: string,
    runId: string | undefined,
    stage: "active" | "deleted",
  ): Promise<void> {
    const row = await this.runRow(project, runId);
    await this.db
      .updateTable("tr_runs")
      .set({ lifecycle_stage: stage })
      .where("run_uuid", "=", row.run_uuid)
      .execute();
  }

  async logBatch(
    project: string,
    runId: string | undefined,
    batch: { metrics?: RawMetric[]; params?: KeyValue[]; tags?: KeyValue[] },
  ): Promise<void> {
    const run = await this.activeRun(project, runId);
    const metrics = (batch.metrics ?? []).map(toStoredMetric);
    await this.db.transaction().execute(async (tx) => {
      for (const p of batch.params ?? []) {
        if (p.key === undefined) throw invalidParameter("every param needs a key");
        const value = String(p.value ?? "");
        const old = await tx
          .selectFrom("tr_params")
          .select("value")
          .where("run_uuid", "=", run.run_uuid)
          .where("key", "=", p.key)
          .executeTakeFirst();
        if (old && old.value !== value)
          throw invalidParameter(
            `Changing param values is not allowed. Param with key='${p.key}' was already logged with value='${old.value}' for run ID='${run.run_uuid}'. Attempted logging new value '${value}'.`,
          );
        if (!old)
          await tx.insertInto("tr_params").values({ run_uuid: run.run_uuid, key: p.key, value }).execute();
      }
      for (const t of batch.tags ?? []) {
        if (t.key === undefined) throw invalidParameter("every tag needs a key");
        const value = String(t.value ?? "");
        await tx
          .insertInto("tr_tags")
          .values({ run_uuid: run.run_uuid, key: t.key, value })
          .onConflict((oc) => oc.columns(["run_uuid", "key"]).doUpdateSet({ value }))
          .execute();
        if (t.key === "mlflow.runName")
          await tx
            .updateTable("tr_runs")
            .set({ run_name: value })
            .where("run_uuid", "=", run.run_uuid)
            .execute();
      }
      if (metrics.length) {
        for (let i = 0; i < metrics.length; i += 100)
          await tx
            .insertInto("tr_metrics")
            .values(metrics.slice(i, i + 100).map((m) => ({ run_uuid: run.run_uuid, ...m })))
            .execute();
        // The latest value per key: highest step, then newest timestamp, then largest value.
        for (const m of latestPerKey(metrics)) {
          await sql`insert into tr_latest_metrics (run_uuid, key, value, is_nan, timestamp, step)
            values (${run.run_uuid}, ${m.key}, ${m.value}, ${m.is_nan}, ${m.timestamp}, ${m.step})
            on conflict (run_uuid, key) do update set value = excluded.value, is_nan = excluded.is_nan,
              timestamp = excluded.timestamp, step = excluded.step
            where excluded.step > tr_latest_metrics.step
               or (excluded.step = tr_latest_metrics.step and excluded.timestamp > tr_latest_metrics.timestamp)
               or (excluded.step = tr_latest_metrics.step and excluded.timestamp = tr_latest_metrics.timestamp and excluded.value >= tr_latest_metrics.value)`.execute(
            tx,
          );
        }
      }
    });
  }

  async deleteTag(project: string, runId: string | undefined, key: string): Promise<void> {
    const run = await this.activeRun(project, runId);
    const found = await this.db
      .deleteFrom("tr_tags")
      .where("run_uuid", "=", run.run_uuid)
      .where("key", "=", key)
      .executeTakeFirst();
    if (Number(found.numDeletedRows) === 0)
      throw notFound(`No tag with name: ${key} in run with id ${run.run_uuid}`);
  }

  async logInputs(project: string, runId: string | undefined, datasets: DatasetInput[]): Promise<void> {
    const run = await this.activeRun(project, runId);
    for (const d of datasets) {
      if (!d.dataset?.name || d.dataset.digest === undefined)
        throw invalidParameter("every dataset input needs dataset.name and dataset.digest");
      const context = d.tags?.find((t) => t.key === "mlflow.data.context")?.value ?? null;
      await this.db
        .insertInto("tr_inputs")
        .values({
          run_uuid: run.run_uuid,
          name: d.dataset.name,
          digest: d.dataset.digest,
          context,
          body: JSON.stringify(d),
        })
        .onConflict((oc) =>
          oc.columns(["run_uuid", "name", "digest"]).doUpdateSet({ context, body: JSON.stringify(d) }),
        )
        .execute();
    }
  }

  async metricHistory(
    project: string,
    runId: string | undefined,
    key: string,
    opts: { maxResults?: number; pageToken?: string } = {},
  ): Promise<{ metrics: Metric[]; next_page_token?: string }> {
    if (!key) throw invalidParameter("Missing value for required parameter 'metric_key'.");
    const run = await this.runRow(project, runId);
    const offset = decodePageToken(opts.pageToken);
    const max = opts.maxResults;
    let q = this.db
      .selectFrom("tr_metrics")
      .select(["key", "value", "is_nan", "timestamp", "step"])
      .where("run_uuid", "=", run.run_uuid)
      .where("key", "=", key)
      .orderBy("timestamp")
      .orderBy("step");
    if (max !== undefined) q = q.limit(max + 1).offset(offset);
    const rows = await q.execute();
    const page = max !== undefined ? rows.slice(0, max) : rows;
    return {
      metrics: page.map(fromStoredMetric),
      ...(max !== undefined && rows.length > max ? { next_page_token: encodePageToken(offset + max) } : {}),
    };
  }

  /**
   * One metric across many runs, sampled for charts (the UI's get-history-bulk-interval), as
   * MLflow's SQL store does it: each run's values in [startStep, endStep] (all of them when no
   * range is given), ordered by step, timestamp, value, go into `maxResults` equal buckets
   * (NTILE) and the first of each is kept, except that the run's last value always replaces the
   * first of the last bucket; a run with at most `maxResults` values gives them all. Runs that
   * do not exist in the project give nothing, as in MLflow. One query for all the runs.
   */
  async metricHistoryBulkInterval(
    project: string,
    req: { runIds: string[]; metricKey: string; maxResults?: number; startStep?: number; endStep?: number },
  ): Promise<{ metrics: (Metric & { run_id: string })[] }> {
    const { runIds, metricKey } = req;
    if (runIds.length === 0) throw invalidParameter("Missing value for required parameter 'run_ids'.");
    if (runIds.length > MAX_RUNS_BULK_INTERVAL)
      throw invalidParameter(
        `GetMetricHistoryBulkInterval request must specify at most ${MAX_RUNS_BULK_INTERVAL} run_ids. Received ${runIds.length} run_ids.`,
      );
    if (!metricKey) throw invalidParameter("Missing value for required parameter 'metric_key'.");
    const max = req.maxResults ?? MAX_RESULTS_PER_RUN;
    if (!Number.isInteger(max) || max < 1 || max > MAX_RESULTS_PER_RUN)
      throw invalidParameter(`max_results must be between 1 and ${MAX_RESULTS_PER_RUN}.`);
    const { startStep, endStep } = req;
    if ((startStep === undefined) !== (endStep === undefined))
      throw invalidParameter("If either start step or end step are specified, both must be specified.");
    for (const [k, v] of [
      ["start_step", startStep],
      ["end_step", endStep],
    ] as const)
      if (v !== undefined && !Number.isInteger(v))
        throw invalidParameter(`'${k}' must be an integer, got ${v}`);
    if (startStep !== undefined && endStep !== undefined && startStep > endStep)
      throw invalidParameter(
        `end_step must be greater than start_step. Found start_step=${startStep} and end_step=${endStep}.`,
      );
    const ids = [...new Set(runIds)];
    const range =
      startStep !== undefined && endStep !== undefined
        ? sql`and m.step between ${startStep} and ${endStep}`
        : sql``;
    // Per run (w): n values, the NTILE bucket of each, its place in the run (pos) and in its bucket (rn).
    const rows = await sql<StoredMetric & { run_uuid: string }>`
      select run_uuid, key, value, is_nan, timestamp, step from (
        select b.*, row_number() over (partition by b.run_uuid, b.bucket order by b.pos) as rn from (
          select m.run_uuid, m.key, m.value, m.is_nan, m.timestamp, m.step,
            count(*) over (partition by m.run_uuid) as n,
            ntile(${sql.lit(max)}) over w as bucket,
            row_number() over w as pos
          from tr_metrics m join tr_runs r on r.run_uuid = m.run_uuid
          where r.project = ${project} and m.key = ${metricKey}
            and m.run_uuid in (${sql.join(ids)}) ${range}
          window w as (partition by m.run_uuid order by m.step, m.timestamp, m.value, m.is_nan)
        ) b
      ) s
      where s.pos = s.n or (s.rn = 1 and s.bucket < s.n and s.bucket < ${sql.lit(max)})
      order by s.run_uuid, s.pos`.execute(this.db);
    const place = new Map(ids.map((id, i) => [id, i]));
    return {
      metrics: rows.rows
        .map((r) => ({ ...fromStoredMetric(r), run_id: r.run_uuid }))
        // By run as asked for (a stable sort keeps each run's steps in order).
        .sort((a, b) => place.get(a.run_id)! - place.get(b.run_id)!),
    };
  }

  async searchRuns(
    project: string,
    req: {
      experimentIds: string[];
      filter?: string;
      viewType?: ViewType;
      maxResults?: number;
      orderBy?: string[];
      pageToken?: string;
    },
  ): Promise<{ runs: Run[]; next_page_token?: string }> {
    const max = checkMaxResults(req.maxResults ?? 1000);
    const offset = decodePageToken(req.pageToken);
    const clauses = parseFilter(req.filter);
    const order = parseOrderBy(req.orderBy);
    const ids: number[] = [];
    for (const id of req.experimentIds) {
      // Unknown or other projects' experiments simply have no runs here.
      const row = await this.experimentRow(project, id).catch((err: unknown) => {
        if (err instanceof MlflowError && err.errorCode === "RESOURCE_DOES_NOT_EXIST") return undefined;
        throw err;
      });
      if (row) ids.push(row.experiment_id!);
    }
    if (ids.length === 0) return { runs: [] };
    const where: RawBuilder<unknown>[] = [
      sql`r.project = ${project}`,
      sql`r.experiment_id in (${sql.join(ids)})`,
    ];
    const view = req.viewType ?? "ACTIVE_ONLY";
    if (view !== "ALL") where.push(sql`r.lifecycle_stage = ${view === "ACTIVE_ONLY" ? "active" : "deleted"}`);
    for (const c of clauses) where.push(clauseSql(this.dialect, c));
    const orderSql = [...order.map((o) => orderSqlOf(o)), sql`r.start_time desc`, sql`r.run_uuid asc`];
    const rows = await sql<
      TrackingSchema["tr_runs"]
    >`select r.* from tr_runs r where ${sql.join(where, sql` and `)}
      order by ${sql.join(orderSql)} limit ${max + 1} offset ${offset}`.execute(this.db);
    const page = rows.rows.slice(0, max);
    return {
      runs: await this.toRuns(page),
      ...(rows.rows.length > max ? { next_page_token: encodePageToken(offset + max) } : {}),
    };
  }

  private async upsert(
    table: "tr_tags" | "tr_params",
    runId: string,
    key: string,
    value: string,
  ): Promise<void> {
    await this.db
      .insertInto(table)
      .values({ run_uuid: runId, key, value })
      .onConflict((oc) => oc.columns(["run_uuid", "key"]).doUpdateSet({ value }))
      .execute();
  }

  private async toRuns(rows: TrackingSchema["tr_runs"][]): Promise<Run[]> {
    if (rows.length === 0) return [];
    const ids = rows.map((r) => r.run_uuid);
    const [metrics, params, tags, inputs] = await Promise.all([
      this.db.selectFrom("tr_latest_metrics").selectAll().where("run_uuid", "in", ids).execute(),
      this.db.selectFrom("tr_params").selectAll().where("run_uuid", "in", ids).execute(),
      this.db.selectFrom("tr_tags").selectAll().where("run_uuid", "in", ids).execute(),
      this.db.selectFrom("tr_inputs").select(["run_uuid", "body"]).where("run_uuid", "in", ids).execute(),
    ]);
    const group = <T extends { run_uuid: string }>(list: T[]) => {
      const m = new Map<string, T[]>();
      for (const x of list) m.set(x.run_uuid, [...(m.get(x.run_uuid) ?? []), x]);
      return m;
    };
    const [bm, bp, bt, bi] = [group(metrics), group(params), group(tags), group(inputs)];
    return rows.map((r) => {
      const m = (bm.get(r.run_uuid) ?? []).map(fromStoredMetric);
      const p = (bp.get(r.run_uuid) ?? []).map(({ key, value }) => ({ key, value }));
      const t = (bt.get(r.run_uuid) ?? []).map(({ key, value }) => ({ key, value }));
      const i = (bi.get(r.run_uuid) ?? []).map((x) => JSON.parse(x.body) as unknown);
      return {
        info: {
          run_uuid: r.run_uuid,
          run_id: r.run_uuid,
          experiment_id: String(r.experiment_id),
          run_name: r.run_name,
          user_id: r.user_id,
          status: r.status,
          start_time: r.start_time,
          ...(r.end_time !== null ? { end_time: r.end_time } : {}),
          artifact_uri: r.artifact_uri,
          lifecycle_stage: r.lifecycle_stage,
        },
        data: {
          ...(m.length ? { metrics: m } : {}),
          ...(p.length ? { params: p } : {}),
          ...(t.length ? { tags: t } : {}),
        },
        inputs: i.length ? { dataset_inputs: i } : {},
      };
    });
  }
}

export interface RawMetric {
  key?: string;
  value?: number | string;
  timestamp?: number | string;
  step?: number | string;
}

export interface DatasetInput {
  tags?: KeyValue[];
  dataset?: { name?: string; digest?: string; [k: string]: unknown };
}

interface StoredMetric {
  key: string;
  value: number;
  is_nan: number;
  timestamp: number;
  step: number;
}

function toStoredMetric(m: RawMetric): StoredMetric {
  if (!m.key) throw invalidParameter("Missing value for required parameter 'key'.");
  if (m.timestamp === undefined || m.timestamp === "")
    throw invalidParameter("Missing value for required parameter 'timestamp'.");
  const timestamp = Number(m.timestamp);
  const step = Number(m.step ?? 0);
  if (!Number.isInteger(timestamp) || !Number.isInteger(step))
    throw invalidParameter(`metric '${m.key}': timestamp and step must be integers`);
  let value: number;
  let isNan = 0;
  if (m.value === "NaN" || (typeof m.value === "number" && Number.isNaN(m.value))) {
    value = 0;
    isNan = 1;
  } else {
    value = m.value === "Infinity" ? MAX_DOUBLE : m.value === "-Infinity" ? -MAX_DOUBLE : Number(m.value);
    if (m.value === undefined || Number.isNaN(value))
      throw invalidParameter(`metric '${m.key}': value must be a number, got ${JSON.stringify(m.value)}`);
    if (!Number.isFinite(value)) value = value > 0 ? MAX_DOUBLE : -MAX_DOUBLE;
  }
  return { key: m.key, value, is_nan: isNan, timestamp, step };
}

function fromStoredMetric(m: {
  key: string;
  value: number;
  is_nan: number;
  timestamp: number;
  step: number;
}): Metric {
  return { key: m.key, value: m.is_nan ? "NaN" : m.value, timestamp: m.timestamp, step: m.step };
}

function latestPerKey(metrics: StoredMetric[]): StoredMetric[] {
  const best = new Map<string, StoredMetric>();
  for (const m of metrics) {
    const b = best.get(m.key);
    if (
      !b ||
      m.step > b.step ||
      (m.step === b.step && m.timestamp > b.timestamp) ||
      (m.step === b.step && m.timestamp === b.timestamp && m.value >= b.value)
    )
      best.set(m.key, m);
  }
  return [...best.values()];
}

function checkMaxResults(n: number): number {
  if (!Number.isInteger(n) || n < 1)
    throw invalidParameter(`max_results must be a positive integer, got ${n}`);
  if (n > MAX_RESULTS)
    throw invalidParameter(
      `Invalid value ${n} for parameter 'max_results' supplied. It must be at most ${MAX_RESULTS}`,
    );
  return n;
}

function encodePageToken(offset: number): string {
  return Buffer.from(JSON.stringify({ offset })).toString("base64");
}

function decodePageToken(token: string | undefined): number {
  if (!token) return 0;
  try {
    const offset = (JSON.parse(Buffer.from(token, "base64").toString("utf8")) as { offset?: unknown }).offset;
    if (typeof offset === "number" && Number.isInteger(offset) && offset >= 0) return offset;
  } catch {
    // falls through
  }
  throw invalidParameter("Invalid page token, could not base64-decode");
}

/** Experiments: name and tags only (`name LIKE 'x%'`, `tags.team = 'a'`). */
function parseExperimentFilter(
  text: string | undefined,
): { entity: "tag" | "name"; key: string; comparator: Clause["comparator"]; value: Clause["value"] }[] {
  if (!text?.trim()) return [];
  // Reuse the run grammar: `name` reads as attributes.name, which the run grammar does not know.
  const rewritten = text.replace(/(^|\s)(attributes\.)?name(\s)/gi, "$1attributes.run_name$3");
  return parseFilter(rewritten).map((c) => {
    if (c.entity === "tag") return { entity: "tag", key: c.key, comparator: c.comparator, value: c.value };
    if (c.entity === "attribute" && c.key === "run_name")
      return { entity: "name", key: "name", comparator: c.comparator, value: c.value };
    throw invalidParameter(`experiments are searched by name and tags only, not ${c.entity}.${c.key}`);
  });
}

/** A unique or primary key was violated (on PostgreSQL or SQLite). */
function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "23505" || code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY";
}

/** LIKE in MLflow is case-sensitive (SQLite's is not): as GLOB, with GLOB's specials escaped. */
function likeToGlob(pattern: string): string {
  let out = "";
  for (const ch of pattern) {
    if (ch === "%") out += "*";
    else if (ch === "_") out += "?";
    else if (ch === "*" || ch === "?" || ch === "[") out += `[${ch}]`;
    else out += ch;
  }
  return out;
}

/**
 * The one place the dialects differ: LIKE is case-sensitive on PostgreSQL (and has ILIKE), as
 * MLflow's LIKE is; SQLite's LIKE ignores case, so there it is GLOB, and ILIKE is LIKE.
 */
function textCompare(
  dialect: TrackingDialect,
  column: RawBuilder<unknown> | ReturnType<typeof sql.ref>,
  c: { comparator: Clause["comparator"]; value: Clause["value"] },
): RawBuilder<boolean> {
  const v = c.value;
  switch (c.comparator) {
    case "LIKE":
      return dialect === "postgres"
        ? sql<boolean>`${column} like ${String(v)}`
        : sql<boolean>`${column} glob ${likeToGlob(String(v))}`;
    case "ILIKE":
      return dialect === "postgres"
        ? sql<boolean>`${column} ilike ${String(v)}`
        : sql<boolean>`lower(${column}) like lower(${String(v)})`;
    case "IN":
      return sql<boolean>`${column} in (${sql.join(v as string[])})`;
    case "NOT IN":
      return sql<boolean>`${column} not in (${sql.join(v as string[])})`;
    default:
      return sql<boolean>`${column} ${sql.raw(c.comparator)} ${v}`;
  }
}

const ATTRIBUTE_COLUMNS: Record<string, string> = {
  run_id: "run_uuid",
  run_name: "run_name",
  status: "status",
  user_id: "user_id",
  start_time: "start_time",
  end_time: "end_time",
  artifact_uri: "artifact_uri",
};

function clauseSql(dialect: TrackingDialect, c: Clause): RawBuilder<unknown> {
  switch (c.entity) {
    case "metric":
      return sql`exists (select 1 from tr_latest_metrics m where m.run_uuid = r.run_uuid and m.key = ${c.key} and m.is_nan = 0 and m.value ${sql.raw(c.comparator)} ${c.value})`;
    case "param":
      return sql`exists (select 1 from tr_params p where p.run_uuid = r.run_uuid and p.key = ${c.key} and ${textCompare(dialect, sql`p.value`, c)})`;
    case "tag":
      return sql`exists (select 1 from tr_tags t where t.run_uuid = r.run_uuid and t.key = ${c.key} and ${textCompare(dialect, sql`t.value`, c)})`;
    case "dataset":
      return sql`exists (select 1 from tr_inputs d where d.run_uuid = r.run_uuid and ${textCompare(dialect, sql.ref(`d.${c.key}`), c)})`;
    default:
      return textCompare(dialect, sql.ref(`r.${ATTRIBUTE_COLUMNS[c.key]}`), c);
  }
}

/** Runs without the ordered-by value come last either way, as in MLflow. */
function orderSqlOf(o: OrderBy): RawBuilder<unknown> {
  const dir = sql.raw(o.ascending ? "asc" : "desc");
  let value: RawBuilder<unknown>;
  switch (o.entity) {
    case "metric":
      value = sql`(select m.value from tr_latest_metrics m where m.run_uuid = r.run_uuid and m.key = ${o.key} and m.is_nan = 0)`;
      break;
    case "param":
      value = sql`(select p.value from tr_params p where p.run_uuid = r.run_uuid and p.key = ${o.key})`;
      break;
    case "tag":
      value = sql`(select t.value from tr_tags t where t.run_uuid = r.run_uuid and t.key = ${o.key})`;
      break;
    case "attribute":
      value = sql.ref(`r.${ATTRIBUTE_COLUMNS[o.key]}`) as unknown as RawBuilder<unknown>;
      break;
    default:
      throw invalidParameter("runs cannot be ordered by datasets");
  }
  return sql`${value} is null, ${value} ${dir}`;
}

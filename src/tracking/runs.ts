import { randomBytes } from "node:crypto";
import { type Kysely, type RawBuilder, sql } from "kysely";
import { invalidParameter, MlflowError, notFound } from "./errors.js";
import type { Experiments } from "./experiments.js";
import { parseFilter, parseOrderBy } from "./filter.js";
import { fromStoredMetric, recordMetrics, toStoredMetric } from "./metrics.js";
import type { RunsSchema, TrackingDialect } from "./schema.js";
import { checkMaxResults, clauseSql, decodePageToken, encodePageToken, orderSqlOf } from "./search.js";
import type { DatasetInput, KeyValue, RawMetric, Run, RunInfo, SearchRunsRequest } from "./types.js";
import { checkBatch, keyOf, keyValues, LIMITS, listOf, nameOf } from "./validate.js";

const RUN_STATUSES = new Set(["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]);

/** Runs and what they log (params, tags, metrics, dataset inputs), and run search. */
export class Runs {
  constructor(
    private readonly db: Kysely<RunsSchema>,
    private readonly now: () => number,
    private readonly dialect: TrackingDialect,
    private readonly experiments: Experiments,
  ) {}

  async create(
    project: string,
    req: { experimentId?: string; userId?: string; runName?: string; startTime?: number; tags?: KeyValue[] },
  ): Promise<Run> {
    return this.get(project, await this.insert(project, req));
  }

  /** Makes a run and its tags (one transaction) and returns its id, without reading it back. */
  async insert(
    project: string,
    req: { experimentId?: string; userId?: string; runName?: string; startTime?: number; tags?: KeyValue[] },
  ): Promise<string> {
    const exp = await this.experiments.row(project, req.experimentId ?? "0");
    if (exp.lifecycle_stage !== "active")
      throw invalidParameter(`The experiment ${exp.experiment_id} must be in the 'active' state.`);
    const runId = randomBytes(16).toString("hex");
    // Checked before the first write; the run and its tags are one transaction.
    const tags = keyValues(req.tags, "tags", "runTag");
    if (req.runName) nameOf(req.runName, "run_name");
    if (req.startTime !== undefined && !Number.isSafeInteger(req.startTime))
      throw invalidParameter(`'start_time' must be an integer (ms since the epoch), got ${req.startTime}`);
    const runName =
      req.runName || tags.find((t) => t.key === "mlflow.runName")?.value || `run-${runId.slice(0, 8)}`;
    if (!tags.some((t) => t.key === "mlflow.runName")) tags.push({ key: "mlflow.runName", value: runName });
    await this.db.transaction().execute(async (tx) => {
      await tx
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
      // One statement for all of them; a key given twice keeps its last value, as one upsert
      // after another did.
      const byKey = new Map(tags.map((t) => [t.key, t.value]));
      await tx
        .insertInto("tr_tags")
        .values([...byKey].map(([key, value]) => ({ run_uuid: runId, key, value })))
        .execute();
    });
    return runId;
  }

  /** The project's run by id. */
  async row(project: string, runId: string | undefined) {
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
    const row = await this.row(project, runId);
    if (row.lifecycle_stage !== "active")
      throw new MlflowError(
        "INVALID_PARAMETER_VALUE",
        `The run ${runId} must be in the 'active' state. Current state is ${row.lifecycle_stage}.`,
      );
    return row;
  }

  async get(project: string, runId: string | undefined): Promise<Run> {
    return (await this.toRuns([await this.row(project, runId)]))[0]!;
  }

  async update(
    project: string,
    runId: string | undefined,
    req: { status?: string; endTime?: number; runName?: string },
  ): Promise<RunInfo> {
    const row = await this.row(project, runId);
    const set: Partial<RunsSchema["tr_runs"]> = {};
    if (req.status !== undefined) {
      if (!RUN_STATUSES.has(req.status))
        throw invalidParameter(`Invalid run status '${req.status}': one of ${[...RUN_STATUSES].join(", ")}`);
      set.status = req.status;
    }
    if (req.endTime !== undefined) {
      if (!Number.isSafeInteger(req.endTime))
        throw invalidParameter(`'end_time' must be an integer (ms since the epoch), got ${req.endTime}`);
      set.end_time = req.endTime;
    }
    if (req.runName) {
      nameOf(req.runName, "run_name");
      set.run_name = req.runName;
      await this.upsert("tr_tags", row.run_uuid, "mlflow.runName", req.runName);
    }
    if (Object.keys(set).length)
      await this.db.updateTable("tr_runs").set(set).where("run_uuid", "=", row.run_uuid).execute();
    return (await this.get(project, row.run_uuid)).info;
  }

  async setLifecycle(project: string, runId: string | undefined, stage: "active" | "deleted"): Promise<void> {
    const row = await this.row(project, runId);
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
    // MLflow's limits, and every entry checked, before anything is written.
    const rawMetrics = listOf(batch.metrics, "metrics");
    const rawParams = listOf(batch.params, "params");
    const rawTags = listOf(batch.tags, "tags");
    checkBatch({ metrics: rawMetrics.length, params: rawParams.length, tags: rawTags.length });
    const metrics = rawMetrics.map((m, i) => toStoredMetric(m as RawMetric, `metrics[${i}]`));
    const params = keyValues(rawParams, "params", "param", LIMITS.paramsTagsPerBatch);
    const tags = keyValues(rawTags, "tags", "runTag", LIMITS.paramsTagsPerBatch);
    const run = await this.activeRun(project, runId);
    await this.db.transaction().execute(async (tx) => {
      for (const p of params) {
        const value = p.value;
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
      for (const t of tags) {
        const value = t.value;
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
      await recordMetrics(tx, run.run_uuid, metrics);
    });
  }

  async deleteTag(project: string, runId: string | undefined, key: string): Promise<void> {
    keyOf(key, "key");
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
    const list = listOf(datasets, "datasets");
    if (list.length > LIMITS.datasetsPerBatch)
      throw invalidParameter(
        `'datasets' may hold at most ${LIMITS.datasetsPerBatch} inputs, got ${list.length}`,
      );
    // Each input checked before any is written.
    const rows = list.map((raw, i) => {
      const d = (raw && typeof raw === "object" ? raw : {}) as DatasetInput;
      const { name, digest } = d.dataset && typeof d.dataset === "object" ? d.dataset : {};
      if (typeof name !== "string" || !name || typeof digest !== "string")
        throw invalidParameter(
          `'datasets[${i}]' needs dataset.name and dataset.digest (strings): every dataset input names one`,
        );
      const tags = keyValues(d.tags, `datasets[${i}].tags`, "runTag");
      const context = tags.find((t) => t.key === "mlflow.data.context")?.value ?? null;
      return { name, digest, context, body: JSON.stringify(d) };
    });
    const run = await this.activeRun(project, runId);
    await this.db.transaction().execute(async (tx) => {
      for (const r of rows)
        await tx
          .insertInto("tr_inputs")
          .values({ run_uuid: run.run_uuid, ...r })
          .onConflict((oc) =>
            oc.columns(["run_uuid", "name", "digest"]).doUpdateSet({ context: r.context, body: r.body }),
          )
          .execute();
    });
  }

  async search(project: string, req: SearchRunsRequest): Promise<{ runs: Run[]; next_page_token?: string }> {
    const max = checkMaxResults(req.maxResults ?? 1000);
    const offset = decodePageToken(req.pageToken);
    const clauses = parseFilter(req.filter);
    const order = parseOrderBy(req.orderBy);
    const ids: number[] = [];
    for (const id of req.experimentIds) {
      // Unknown or other projects' experiments simply have no runs here.
      const row = await this.experiments.row(project, id).catch((err: unknown) => {
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
      RunsSchema["tr_runs"]
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

  private async toRuns(rows: RunsSchema["tr_runs"][]): Promise<Run[]> {
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

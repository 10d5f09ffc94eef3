import { randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import { invalidParameter, notFound } from "./errors.js";
import { parseFilter } from "./filter.js";
import type { LoggedSchema } from "./schema.js";
import type { KeyValue, TrackingStore } from "./store.js";
import { keyValues, listOf, nameOf } from "./validate.js";

export interface LoggedModel {
  info: {
    model_id: string;
    experiment_id: string;
    name: string;
    creation_timestamp_ms: number;
    last_updated_timestamp_ms: number;
    artifact_uri: string;
    status: string;
    model_type: string;
    source_run_id: string;
    tags?: KeyValue[];
  };
  data: { params?: KeyValue[] };
}

const STATUSES = new Set(["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"]);

/**
 * MLflow 3's logged models: what `mlflow.<flavor>.log_model` makes, with an artifact root of its
 * own (`mlflow-artifacts:/EXP/models/m-…/artifacts`), linked to the run that logged it.
 */
export class LoggedModels {
  private readonly db: Kysely<LoggedSchema>;

  constructor(
    db: Kysely<unknown>,
    private readonly tracking: TrackingStore,
    private readonly now: () => number = Date.now,
  ) {
    this.db = db as Kysely<LoggedSchema>;
  }

  async create(
    project: string,
    req: {
      experimentId: string;
      name?: string;
      sourceRunId?: string;
      params?: KeyValue[];
      tags?: KeyValue[];
    },
  ): Promise<LoggedModel> {
    // Checked before it is written.
    const tags = keyValues(req.tags, "tags", "runTag");
    const params = keyValues(req.params, "params", "param");
    if (req.name) nameOf(req.name, "name");
    const exp = await this.tracking.getExperiment(project, req.experimentId);
    if (req.sourceRunId) await this.tracking.getRun(project, req.sourceRunId);
    const modelId = `m-${randomBytes(16).toString("hex")}`;
    const t = this.now();
    await this.db
      .insertInto("tr_logged_models")
      .values({
        model_id: modelId,
        project,
        experiment_id: Number(exp.experiment_id),
        name: req.name || modelId,
        status: "LOGGED_MODEL_PENDING",
        source_run_id: req.sourceRunId ?? "",
        artifact_uri: `${exp.artifact_location}/models/${modelId}/artifacts`,
        creation_timestamp_ms: t,
        last_updated_timestamp_ms: t,
        body: JSON.stringify({ tags, params }),
      })
      .execute();
    return this.get(project, modelId);
  }

  private async row(project: string, modelId: string) {
    const row = await this.db
      .selectFrom("tr_logged_models")
      .selectAll()
      .where("model_id", "=", modelId)
      .where("project", "=", project)
      .executeTakeFirst();
    if (!row) throw notFound(`Logged model with ID '${modelId}' not found.`);
    return row;
  }

  async get(project: string, modelId: string): Promise<LoggedModel> {
    return toLoggedModel(await this.row(project, modelId));
  }

  async finalize(project: string, modelId: string, status: string): Promise<LoggedModel> {
    await this.row(project, modelId);
    if (!STATUSES.has(status)) throw invalidParameter(`Invalid logged model status '${status}'`);
    await this.db
      .updateTable("tr_logged_models")
      .set({ status, last_updated_timestamp_ms: this.now() })
      .where("model_id", "=", modelId)
      .execute();
    return this.get(project, modelId);
  }

  async setTags(project: string, modelId: string, tags: KeyValue[]): Promise<void> {
    const checked = keyValues(tags, "tags", "runTag");
    const row = await this.row(project, modelId);
    const body = JSON.parse(row.body) as { tags: KeyValue[]; params: KeyValue[] };
    for (const t of checked) {
      body.tags = body.tags.filter((x) => x.key !== t.key);
      body.tags.push(t);
    }
    await this.db
      .updateTable("tr_logged_models")
      .set({ body: JSON.stringify(body), last_updated_timestamp_ms: this.now() })
      .where("model_id", "=", modelId)
      .execute();
  }

  async deleteTag(project: string, modelId: string, key: string): Promise<void> {
    const row = await this.row(project, modelId);
    const body = JSON.parse(row.body) as { tags: KeyValue[]; params: KeyValue[] };
    body.tags = body.tags.filter((x) => x.key !== key);
    await this.db
      .updateTable("tr_logged_models")
      .set({ body: JSON.stringify(body) })
      .where("model_id", "=", modelId)
      .execute();
  }

  async delete(project: string, modelId: string): Promise<void> {
    await this.row(project, modelId);
    await this.db.deleteFrom("tr_logged_models").where("model_id", "=", modelId).execute();
    await this.db.deleteFrom("tr_run_outputs").where("model_id", "=", modelId).execute();
  }

  /** By experiment and `name = '…'` (what the client sends to resolve runs:/RUN/NAME). */
  async search(
    project: string,
    req: { experimentIds: string[]; filter?: string; maxResults?: number },
  ): Promise<{ models: LoggedModel[] }> {
    const clauses = parseFilter(req.filter, {
      name: "name",
      source_run_id: "source_run_id",
      status: "status",
    });
    const ids: number[] = [];
    for (const id of req.experimentIds) {
      const exp = await this.tracking.getExperiment(project, id).catch(() => undefined);
      if (exp) ids.push(Number(exp.experiment_id));
    }
    if (ids.length === 0) return { models: [] };
    const rows = await this.db
      .selectFrom("tr_logged_models")
      .selectAll()
      .where("project", "=", project)
      .where("experiment_id", "in", ids)
      .orderBy("creation_timestamp_ms", "desc")
      .execute();
    const models = rows
      .filter((r) =>
        clauses.every((c) => {
          const actual = String((r as Record<string, unknown>)[c.key] ?? "");
          if (c.comparator === "=") return actual === String(c.value);
          if (c.comparator === "!=") return actual !== String(c.value);
          throw invalidParameter(`logged models are searched with = and != only, not ${c.comparator}`);
        }),
      )
      .slice(0, req.maxResults ?? 100)
      .map(toLoggedModel);
    return { models };
  }

  async recordOutputs(
    project: string,
    runId: string,
    models: { model_id?: string; step?: number }[],
  ): Promise<void> {
    await this.tracking.getRun(project, runId);
    // Every output checked (its model this project's) before any is written.
    const rows = listOf(models, "models").map((raw, i) => {
      const m = (raw && typeof raw === "object" ? raw : {}) as { model_id?: unknown; step?: unknown };
      if (typeof m.model_id !== "string" || !m.model_id)
        throw invalidParameter(`'models[${i}].model_id' is missing: every output names a model_id`);
      const step = Number(m.step ?? 0);
      if (!Number.isSafeInteger(step)) throw invalidParameter(`'models[${i}].step' must be an integer`);
      return { run_uuid: runId, model_id: m.model_id, step };
    });
    for (const r of rows) await this.row(project, r.model_id);
    for (const r of rows)
      await this.db
        .insertInto("tr_run_outputs")
        .values(r)
        .onConflict((oc) => oc.columns(["run_uuid", "model_id"]).doUpdateSet({ step: r.step }))
        .execute();
  }

  async outputsOf(runIds: string[]): Promise<Map<string, { model_id: string; step: number }[]>> {
    const out = new Map<string, { model_id: string; step: number }[]>();
    if (runIds.length === 0) return out;
    const rows = await this.db
      .selectFrom("tr_run_outputs")
      .selectAll()
      .where("run_uuid", "in", runIds)
      .execute();
    for (const r of rows)
      out.set(r.run_uuid, [...(out.get(r.run_uuid) ?? []), { model_id: r.model_id, step: r.step }]);
    return out;
  }
}

function toLoggedModel(r: LoggedSchema["tr_logged_models"]): LoggedModel {
  const body = JSON.parse(r.body) as { tags: KeyValue[]; params: KeyValue[] };
  return {
    info: {
      model_id: r.model_id,
      experiment_id: String(r.experiment_id),
      name: r.name,
      creation_timestamp_ms: r.creation_timestamp_ms,
      last_updated_timestamp_ms: r.last_updated_timestamp_ms,
      artifact_uri: r.artifact_uri,
      status: r.status,
      model_type: "",
      source_run_id: r.source_run_id,
      ...(body.tags.length ? { tags: body.tags } : {}),
    },
    data: body.params.length ? { params: body.params } : {},
  };
}

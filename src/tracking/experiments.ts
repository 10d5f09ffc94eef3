import type { Kysely } from "kysely";
import { invalidParameter, MlflowError, notFound } from "./errors.js";
import type { RunsSchema, TrackingDialect } from "./schema.js";
import {
  checkMaxResults,
  decodePageToken,
  encodePageToken,
  experimentClauseSql,
  parseExperimentFilter,
} from "./search.js";
import type { Experiment, KeyValue, ViewType } from "./types.js";
import { keyOf, keyValues, nameOf, tagValue } from "./validate.js";

/** The experiment a run lands in when the client names none ("0"), one per project. */
const DEFAULT_EXPERIMENT = "Default";

/** A project's experiments and their tags (TrackingStore's experiment calls). */
export class Experiments {
  constructor(
    private readonly db: Kysely<RunsSchema>,
    private readonly now: () => number,
    private readonly dialect: TrackingDialect,
  ) {}

  async create(
    project: string,
    name: string,
    artifactLocation?: string,
    tags: KeyValue[] = [],
  ): Promise<string> {
    if (!name) throw invalidParameter("Missing value for required parameter 'name'.");
    nameOf(name, "name");
    // Everything is checked before the first write, and the writes are one transaction.
    const checked = keyValues(tags, "tags", "experimentTag");
    if (artifactLocation !== undefined) checkArtifactLocation(artifactLocation);
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
    const id = await this.db
      .transaction()
      .execute(async (tx) => {
        const row = await tx
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
          .executeTakeFirstOrThrow();
        const id = row.experiment_id!;
        if (!artifactLocation)
          await tx
            .updateTable("tr_experiments")
            .set({ artifact_location: `mlflow-artifacts:/${id}` })
            .where("experiment_id", "=", id)
            .execute();
        for (const tag of checked)
          await tx
            .insertInto("tr_experiment_tags")
            .values({ experiment_id: id, key: tag.key, value: tag.value })
            .onConflict((oc) => oc.columns(["experiment_id", "key"]).doUpdateSet({ value: tag.value }))
            .execute();
        return id;
      })
      .catch((err: unknown) => {
        // Another writer made it between the check and the insert (a pool runs them in parallel).
        if (isUniqueViolation(err))
          throw new MlflowError(
            "RESOURCE_ALREADY_EXISTS",
            `Experiment '${name}' already exists in project ${project}.`,
          );
        throw err;
      });
    return String(id);
  }

  /** The project's experiment by id; "0" is its default experiment (made on first use). */
  async row(project: string, id: string) {
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
    await this.create(project, DEFAULT_EXPERIMENT).catch((err: unknown) => {
      if (!(err instanceof MlflowError && err.errorCode === "RESOURCE_ALREADY_EXISTS")) throw err;
    });
    return (await find())!;
  }

  async get(project: string, id: string): Promise<Experiment> {
    return this.toExperiment(await this.row(project, id));
  }

  async getByName(project: string, name: string): Promise<Experiment> {
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

  async search(
    project: string,
    opts: { viewType?: ViewType; maxResults?: number; pageToken?: string; filter?: string },
  ): Promise<{ experiments: Experiment[]; next_page_token?: string }> {
    const max = checkMaxResults(opts.maxResults ?? 1000);
    const offset = decodePageToken(opts.pageToken);
    let q = this.db.selectFrom("tr_experiments").selectAll().where("project", "=", project);
    const view = opts.viewType ?? "ACTIVE_ONLY";
    if (view !== "ALL") q = q.where("lifecycle_stage", "=", view === "ACTIVE_ONLY" ? "active" : "deleted");
    for (const clause of parseExperimentFilter(opts.filter))
      q = q.where(experimentClauseSql(this.dialect, clause));
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

  async rename(project: string, id: string, newName: string): Promise<void> {
    if (!newName) throw invalidParameter("Missing value for required parameter 'new_name'.");
    nameOf(newName, "new_name");
    const row = await this.row(project, id);
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

  async setLifecycle(project: string, id: string, stage: "active" | "deleted"): Promise<void> {
    const row = await this.row(project, id);
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

  async setTag(project: string, id: string, key: string, value: string): Promise<void> {
    keyOf(key, "key");
    value = tagValue(value, "value", "experimentTag");
    const row = await this.row(project, id);
    await this.db
      .insertInto("tr_experiment_tags")
      .values({ experiment_id: row.experiment_id!, key, value })
      .onConflict((oc) => oc.columns(["experiment_id", "key"]).doUpdateSet({ value }))
      .execute();
  }

  async deleteTag(project: string, id: string, key: string): Promise<void> {
    const row = await this.row(project, id);
    await this.db
      .deleteFrom("tr_experiment_tags")
      .where("experiment_id", "=", row.experiment_id!)
      .where("key", "=", key)
      .execute();
  }

  private async toExperiment(row: RunsSchema["tr_experiments"]): Promise<Experiment> {
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
}

/** A unique or primary key was violated (on PostgreSQL or SQLite): another writer got there first. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "23505" || code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY";
}

/**
 * An experiment's own artifact location: only the project's artifact store (mlflow-artifacts:/,
 * the default), never a path or another store a run's files would be written to or read from.
 */
function checkArtifactLocation(location: string): void {
  if (location === "") return;
  throw invalidParameter(
    `'artifact_location' is not supported (got '${location}'): experiments keep their artifacts in the project's store; leave it unset`,
  );
}

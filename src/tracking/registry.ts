import type { Kysely } from "kysely";
import { invalidParameter, MlflowError, notFound } from "./errors.js";
import { isUniqueViolation } from "./experiments.js";
import {
  type Clause,
  type Grammar,
  MODEL_VERSION_GRAMMAR,
  parseFilter,
  REGISTERED_MODEL_GRAMMAR,
} from "./filter.js";
import { checkPromptSource, isPromptVersion, promptScope } from "./prompts.js";
import { checkRunInProject, checkVersionSource } from "./references.js";
import type { RegistrySchema } from "./schema.js";
import type { KeyValue } from "./store.js";
import { keyOf, keyValues, nameOf, tagValue } from "./validate.js";

export interface ModelVersion {
  name: string;
  version: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  current_stage: string;
  description: string;
  source: string;
  run_id?: string;
  status: "READY";
  run_link: string;
  tags?: KeyValue[];
  aliases?: string[];
}

export interface RegisteredModel {
  name: string;
  creation_timestamp: number;
  last_updated_timestamp: number;
  description?: string;
  latest_versions?: ModelVersion[];
  tags?: KeyValue[];
  aliases?: { alias: string; version: string }[];
}

const STAGES = ["None", "Staging", "Production", "Archived"];
/** Tags of a registered model itself are stored as those of "version 0". */
const MODEL = 0;

/**
 * MLflow's model registry, per project: registered models, their numbered versions (always
 * READY: Loom copies nothing, a version points at its source), tags, aliases such as
 * `champion`, and the legacy stages.
 */
export class ModelRegistry {
  private readonly db: Kysely<RegistrySchema>;

  constructor(
    db: Kysely<unknown>,
    private readonly now: () => number = Date.now,
  ) {
    this.db = db as Kysely<RegistrySchema>;
  }

  async createModel(
    project: string,
    name: string,
    description?: string,
    tags: KeyValue[] = [],
  ): Promise<RegisteredModel> {
    if (!name) throw invalidParameter("Missing value for required parameter 'name'.");
    nameOf(name, "name");
    // Checked before the first write; the model and its tags are one transaction.
    const checked = keyValues(tags, "tags", "registryTag");
    if (await this.modelRow(project, name).catch(() => undefined))
      throw new MlflowError("RESOURCE_ALREADY_EXISTS", `Registered Model (name=${name}) already exists.`);
    const t = this.now();
    await this.db
      .transaction()
      .execute(async (tx) => {
        await tx
          .insertInto("tr_registered_models")
          .values({
            project,
            name,
            description: description ?? null,
            creation_timestamp: t,
            last_updated_timestamp: t,
          })
          .execute();
        for (const tag of checked) await this.setTag(project, name, MODEL, tag.key, tag.value, tx);
      })
      .catch((err: unknown) => {
        // Another writer made it between the check and the insert.
        if (isUniqueViolation(err))
          throw new MlflowError("RESOURCE_ALREADY_EXISTS", `Registered Model (name=${name}) already exists.`);
        throw err;
      });
    return this.getModel(project, name);
  }

  private async modelRow(project: string, name: string) {
    if (!name) throw invalidParameter("Missing value for required parameter 'name'.");
    const row = await this.db
      .selectFrom("tr_registered_models")
      .selectAll()
      .where("project", "=", project)
      .where("name", "=", name)
      .executeTakeFirst();
    if (!row) throw notFound(`Registered Model with name=${name} not found`);
    return row;
  }

  private async versionRow(project: string, name: string, version: string | undefined) {
    await this.modelRow(project, name);
    const n = Number(version);
    if (!version || !Number.isInteger(n) || n < 1)
      throw invalidParameter(`Invalid model version '${version}'`);
    const row = await this.db
      .selectFrom("tr_model_versions")
      .selectAll()
      .where("project", "=", project)
      .where("name", "=", name)
      .where("version", "=", n)
      .executeTakeFirst();
    if (!row) throw notFound(`Model Version (name=${name}, version=${version}) not found`);
    return row;
  }

  async getModel(project: string, name: string): Promise<RegisteredModel> {
    const row = await this.modelRow(project, name);
    const [tags, aliases, versions] = await Promise.all([
      this.tagsOf(project, name, MODEL),
      this.db
        .selectFrom("tr_model_aliases")
        .selectAll()
        .where("project", "=", project)
        .where("name", "=", name)
        .execute(),
      this.db
        .selectFrom("tr_model_versions")
        .selectAll()
        .where("project", "=", project)
        .where("name", "=", name)
        .orderBy("version")
        .execute(),
    ]);
    // The latest version in each stage, as MLflow reports latest_versions.
    const latest = new Map<string, RegistrySchema["tr_model_versions"]>();
    for (const v of versions) latest.set(v.current_stage, v);
    return {
      name: row.name,
      creation_timestamp: row.creation_timestamp,
      last_updated_timestamp: row.last_updated_timestamp,
      ...(row.description ? { description: row.description } : {}),
      ...(latest.size
        ? { latest_versions: await Promise.all([...latest.values()].map((v) => this.toVersion(v))) }
        : {}),
      ...(tags.length ? { tags } : {}),
      ...(aliases.length
        ? { aliases: aliases.map((a) => ({ alias: a.alias, version: String(a.version) })) }
        : {}),
    };
  }

  async searchModels(
    project: string,
    opts: { filter?: string; maxResults?: number; pageToken?: string },
  ): Promise<{ registered_models: RegisteredModel[]; next_page_token?: string }> {
    const clauses = promptScope(parseRegistryFilter(opts.filter, REGISTERED_MODEL_GRAMMAR));
    const rows = await this.db
      .selectFrom("tr_registered_models")
      .select("name")
      .where("project", "=", project)
      .orderBy("name")
      .execute();
    const models: RegisteredModel[] = [];
    for (const r of rows) {
      const m = await this.getModel(project, r.name);
      if (clauses.every((c) => matches(c, { name: m.name }, m.tags ?? []))) models.push(m);
    }
    return page(models, opts.maxResults ?? 100, opts.pageToken, "registered_models");
  }

  async updateModel(
    project: string,
    name: string,
    description: string | undefined,
  ): Promise<RegisteredModel> {
    await this.modelRow(project, name);
    await this.db
      .updateTable("tr_registered_models")
      .set({ description: description ?? null, last_updated_timestamp: this.now() })
      .where("project", "=", project)
      .where("name", "=", name)
      .execute();
    return this.getModel(project, name);
  }

  async renameModel(project: string, name: string, newName: string): Promise<RegisteredModel> {
    await this.modelRow(project, name);
    if (!newName) throw invalidParameter("Missing value for required parameter 'new_name'.");
    nameOf(newName, "new_name");
    if (await this.modelRow(project, newName).catch(() => undefined))
      throw new MlflowError("RESOURCE_ALREADY_EXISTS", `Registered Model (name=${newName}) already exists.`);
    await this.db.transaction().execute(async (tx) => {
      for (const table of [
        "tr_registered_models",
        "tr_model_versions",
        "tr_registry_tags",
        "tr_model_aliases",
      ] as const)
        await tx
          .updateTable(table)
          .set({ name: newName })
          .where("project", "=", project)
          .where("name", "=", name)
          .execute();
    });
    return this.getModel(project, newName);
  }

  async deleteModel(project: string, name: string): Promise<void> {
    await this.modelRow(project, name);
    await this.db.transaction().execute(async (tx) => {
      for (const table of [
        "tr_registered_models",
        "tr_model_versions",
        "tr_registry_tags",
        "tr_model_aliases",
      ] as const)
        await tx.deleteFrom(table).where("project", "=", project).where("name", "=", name).execute();
    });
  }

  async setTag(
    project: string,
    name: string,
    version: number,
    key: string,
    value: string,
    db: Kysely<RegistrySchema> = this.db,
  ): Promise<void> {
    keyOf(key, "key");
    value = tagValue(value, "value", "registryTag");
    await db
      .insertInto("tr_registry_tags")
      .values({ project, name, version, key, value })
      .onConflict((oc) => oc.columns(["project", "name", "version", "key"]).doUpdateSet({ value }))
      .execute();
  }

  async setModelTag(project: string, name: string, key: string, value: string): Promise<void> {
    await this.modelRow(project, name);
    await this.setTag(project, name, MODEL, key, value);
  }

  async setVersionTag(
    project: string,
    name: string,
    version: string,
    key: string,
    value: string,
  ): Promise<void> {
    const v = await this.versionRow(project, name, version);
    await this.setTag(project, name, v.version, key, value);
  }

  async deleteTag(project: string, name: string, version: string | undefined, key: string): Promise<void> {
    const n = version === undefined ? MODEL : (await this.versionRow(project, name, version)).version;
    if (n === MODEL) await this.modelRow(project, name);
    await this.db
      .deleteFrom("tr_registry_tags")
      .where("project", "=", project)
      .where("name", "=", name)
      .where("version", "=", n)
      .where("key", "=", key)
      .execute();
  }

  async createVersion(
    project: string,
    req: {
      name: string;
      source: string;
      runId?: string;
      runLink?: string;
      description?: string;
      tags?: KeyValue[];
    },
  ): Promise<ModelVersion> {
    await this.modelRow(project, req.name);
    if (!req.source) throw invalidParameter("Missing value for required parameter 'source'.");
    // Checked before the first write: the tags, and that source and run are this project's.
    const tags = keyValues(req.tags, "tags", "registryTag");
    // A prompt version has no artifact: its source is one of MLflow's placeholders, and only those.
    if (isPromptVersion(tags)) checkPromptSource(req.source);
    else await checkVersionSource(this.db as Kysely<unknown>, project, req.source);
    // A runs:/RUN/... source names its run when the client does not.
    const runId = req.runId || /^runs:\/([0-9a-f]{32})\//.exec(req.source)?.[1] || null;
    if (runId) await checkRunInProject(this.db as Kysely<unknown>, project, runId, "run_id");
    const t = this.now();
    // Two creates at once may pick the same number: the loser takes the next one.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.insertVersion(project, req, runId, tags, t);
      } catch (err) {
        if (!isUniqueViolation(err) || attempt >= 5) throw err;
      }
    }
  }

  /** The next version of a model, with its tags, in one transaction. */
  private async insertVersion(
    project: string,
    req: { name: string; source: string; runLink?: string; description?: string },
    runId: string | null,
    tags: KeyValue[],
    t: number,
  ): Promise<ModelVersion> {
    const version = await this.db.transaction().execute(async (tx) => {
      const last = await tx
        .selectFrom("tr_model_versions")
        .select((eb) => eb.fn.max("version").as("v"))
        .where("project", "=", project)
        .where("name", "=", req.name)
        .executeTakeFirst();
      const version = Number(last?.v ?? 0) + 1;
      await tx
        .insertInto("tr_model_versions")
        .values({
          project,
          name: req.name,
          version,
          description: req.description ?? "",
          source: req.source,
          run_id: runId,
          run_link: req.runLink ?? "",
          current_stage: "None",
          creation_timestamp: t,
          last_updated_timestamp: t,
        })
        .execute();
      for (const tag of tags) await this.setTag(project, req.name, version, tag.key, tag.value, tx);
      await tx
        .updateTable("tr_registered_models")
        .set({ last_updated_timestamp: t })
        .where("project", "=", project)
        .where("name", "=", req.name)
        .execute();
      return version;
    });
    return this.getVersion(project, req.name, String(version));
  }

  async getVersion(project: string, name: string, version: string | undefined): Promise<ModelVersion> {
    return this.toVersion(await this.versionRow(project, name, version));
  }

  async searchVersions(
    project: string,
    opts: { filter?: string; maxResults?: number; pageToken?: string },
  ): Promise<{ model_versions: ModelVersion[]; next_page_token?: string }> {
    const clauses = promptScope(parseRegistryFilter(opts.filter, MODEL_VERSION_GRAMMAR));
    const rows = await this.db
      .selectFrom("tr_model_versions")
      .selectAll()
      .where("project", "=", project)
      .orderBy("name")
      .orderBy("version", "desc")
      .execute();
    const versions: ModelVersion[] = [];
    for (const r of rows) {
      const v = await this.toVersion(r);
      const fields = { name: v.name, run_id: v.run_id ?? "", source: v.source, version_number: v.version };
      if (clauses.every((c) => matches(c, fields, v.tags ?? []))) versions.push(v);
    }
    return page(versions, opts.maxResults ?? 10_000, opts.pageToken, "model_versions");
  }

  async updateVersion(
    project: string,
    name: string,
    version: string,
    description: string | undefined,
  ): Promise<ModelVersion> {
    const v = await this.versionRow(project, name, version);
    await this.db
      .updateTable("tr_model_versions")
      .set({ description: description ?? "", last_updated_timestamp: this.now() })
      .where("project", "=", project)
      .where("name", "=", name)
      .where("version", "=", v.version)
      .execute();
    return this.getVersion(project, name, version);
  }

  async transitionStage(
    project: string,
    name: string,
    version: string,
    stage: string,
    archiveExisting: boolean,
  ): Promise<ModelVersion> {
    const v = await this.versionRow(project, name, version);
    const canonical = STAGES.find((s) => s.toLowerCase() === stage?.toLowerCase());
    if (!canonical)
      throw invalidParameter(
        `Invalid Model Version stage: ${stage}. Value must be one of ${STAGES.join(", ")}.`,
      );
    const t = this.now();
    if (archiveExisting && (canonical === "Staging" || canonical === "Production"))
      await this.db
        .updateTable("tr_model_versions")
        .set({ current_stage: "Archived", last_updated_timestamp: t })
        .where("project", "=", project)
        .where("name", "=", name)
        .where("current_stage", "=", canonical)
        .where("version", "!=", v.version)
        .execute();
    await this.db
      .updateTable("tr_model_versions")
      .set({ current_stage: canonical, last_updated_timestamp: t })
      .where("project", "=", project)
      .where("name", "=", name)
      .where("version", "=", v.version)
      .execute();
    return this.getVersion(project, name, version);
  }

  async deleteVersion(project: string, name: string, version: string): Promise<void> {
    const v = await this.versionRow(project, name, version);
    await this.db.transaction().execute(async (tx) => {
      for (const table of ["tr_model_versions", "tr_registry_tags", "tr_model_aliases"] as const)
        await tx
          .deleteFrom(table)
          .where("project", "=", project)
          .where("name", "=", name)
          .where("version", "=", v.version)
          .execute();
    });
  }

  async setAlias(project: string, name: string, alias: string, version: string): Promise<void> {
    const v = await this.versionRow(project, name, version);
    nameOf(alias, "alias");
    if (!alias || /^v\d+$/i.test(alias) || alias.toLowerCase() === "latest")
      throw invalidParameter(`'${alias}' cannot be an alias: latest and v<number> name versions already`);
    await this.db
      .insertInto("tr_model_aliases")
      .values({ project, name, alias, version: v.version })
      .onConflict((oc) => oc.columns(["project", "name", "alias"]).doUpdateSet({ version: v.version }))
      .execute();
  }

  async deleteAlias(project: string, name: string, alias: string): Promise<void> {
    await this.modelRow(project, name);
    await this.db
      .deleteFrom("tr_model_aliases")
      .where("project", "=", project)
      .where("name", "=", name)
      .where("alias", "=", alias)
      .execute();
  }

  async versionByAlias(project: string, name: string, alias: string): Promise<ModelVersion> {
    await this.modelRow(project, name);
    // `latest` is no stored alias: it names the newest version, as on MLflow's server.
    if (alias.toLowerCase() === "latest") {
      const newest = await this.db
        .selectFrom("tr_model_versions")
        .select((eb) => eb.fn.max("version").as("v"))
        .where("project", "=", project)
        .where("name", "=", name)
        .executeTakeFirst();
      if (newest?.v == null) throw notFound(`Latest version not found for model ${name}.`);
      return this.getVersion(project, name, String(newest.v));
    }
    const row = await this.db
      .selectFrom("tr_model_aliases")
      .select("version")
      .where("project", "=", project)
      .where("name", "=", name)
      .where("alias", "=", alias)
      .executeTakeFirst();
    // MLflow answers a missing alias with 400, not 404.
    if (!row) throw invalidParameter(`Registered model alias ${alias} not found.`);
    return this.getVersion(project, name, String(row.version));
  }

  async latestVersions(project: string, name: string, stages: string[]): Promise<ModelVersion[]> {
    const model = await this.getModel(project, name);
    const wanted = stages.map((s) => s.toLowerCase());
    return (model.latest_versions ?? []).filter(
      (v) => wanted.length === 0 || wanted.includes(v.current_stage.toLowerCase()),
    );
  }

  private async tagsOf(project: string, name: string, version: number): Promise<KeyValue[]> {
    return this.db
      .selectFrom("tr_registry_tags")
      .select(["key", "value"])
      .where("project", "=", project)
      .where("name", "=", name)
      .where("version", "=", version)
      .execute();
  }

  private async toVersion(v: RegistrySchema["tr_model_versions"]): Promise<ModelVersion> {
    const [tags, aliases] = await Promise.all([
      this.tagsOf(v.project, v.name, v.version),
      this.db
        .selectFrom("tr_model_aliases")
        .select("alias")
        .where("project", "=", v.project)
        .where("name", "=", v.name)
        .where("version", "=", v.version)
        .execute(),
    ]);
    return {
      name: v.name,
      version: String(v.version),
      creation_timestamp: v.creation_timestamp,
      last_updated_timestamp: v.last_updated_timestamp,
      current_stage: v.current_stage,
      description: v.description,
      source: v.source,
      ...(v.run_id ? { run_id: v.run_id } : {}),
      status: "READY",
      run_link: v.run_link,
      ...(tags.length ? { tags } : {}),
      ...(aliases.length ? { aliases: aliases.map((a) => a.alias) } : {}),
    };
  }
}

/** The registry's filters, in MLflow's grammar for models or for versions (its own attributes, tags). */
function parseRegistryFilter(text: string | undefined, grammar: Grammar): Clause[] {
  return parseFilter(text, grammar);
}

function matches(c: Clause, fields: Record<string, string>, tags: KeyValue[]): boolean {
  let actual: string | undefined;
  if (c.entity === "tag") actual = tags.find((t) => t.key === c.key)?.value;
  else actual = fields[c.key];
  // A missing tag differs from any value (the client hides prompts with `!= 'true'`).
  if (actual === undefined) return c.comparator === "!=" || c.comparator === "NOT IN";
  const v = c.value;
  switch (c.comparator) {
    case "=":
      return actual === String(v);
    case "!=":
      return actual !== String(v);
    case "LIKE":
      return likeRegex(String(v), "").test(actual);
    case "ILIKE":
      return likeRegex(String(v), "i").test(actual);
    case "IN":
      return (v as string[]).includes(actual);
    case "NOT IN":
      return !(v as string[]).includes(actual);
    default: {
      const [a, b] = [Number(actual), Number(v)];
      return c.comparator === ">"
        ? a > b
        : c.comparator === ">="
          ? a >= b
          : c.comparator === "<"
            ? a < b
            : a <= b;
    }
  }
}

function likeRegex(pattern: string, flags: string): RegExp {
  const body = [...pattern]
    .map((ch) => (ch === "%" ? ".*" : ch === "_" ? "." : ch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("");
  return new RegExp(`^${body}$`, flags);
}

function page<K extends string, T>(
  items: T[],
  max: number,
  token: string | undefined,
  key: K,
): { [P in K]: T[] } & { next_page_token?: string } {
  let offset = 0;
  if (token) {
    try {
      offset =
        Number((JSON.parse(Buffer.from(token, "base64").toString("utf8")) as { offset: number }).offset) || 0;
    } catch {
      throw invalidParameter("Invalid page token, could not base64-decode");
    }
  }
  const out = { [key]: items.slice(offset, offset + max) } as { [P in K]: T[] } & {
    next_page_token?: string;
  };
  if (items.length > offset + max)
    out.next_page_token = Buffer.from(JSON.stringify({ offset: offset + max })).toString("base64");
  return out;
}

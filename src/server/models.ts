import { existsSync, realpathSync } from "node:fs";
import { dirname, join, resolve, sep } from "node:path";
import { z } from "zod";
import { NotFoundError, ValidationError } from "../api/errors.js";
import { MODEL, TRAININGJOB, toFieldIssues } from "../api/kinds.js";
import { API_VERSION, ResourceName } from "../api/meta.js";
import { type Model, ModelSpec, type ModelVersionLineage } from "../api/model.js";
import type { TrainingJob } from "../api/trainingjob.js";
import type { ModelResolver } from "../controllers/inferenceservice/reconciler.js";
import type { ResourceStore } from "../ports/store.js";
import type { ModelRegistrar, TrialMetrics } from "../ports/tracking.js";
import { MlflowError } from "../tracking/errors.js";
import { IS_PROMPT_TAG, NOT_PROMPT_FILTER } from "../tracking/prompts.js";
import type { ModelRegistry, ModelVersion, RegisteredModel } from "../tracking/registry.js";
import type { TrackingStore } from "../tracking/store.js";

const ModelManifest = z.object({
  apiVersion: z.literal(API_VERSION, { error: `apiVersion must be "${API_VERSION}"` }),
  kind: z.literal(MODEL),
  metadata: z.object({ name: ResourceName, project: ResourceName.optional() }).loose(),
  spec: ModelSpec.default({}),
});

/**
 * The `Model` kind: registered models of the MLflow registry seen as Loom objects, each version
 * with its lineage — job → run → checkpoint → version — read from the run's tags (every Loom
 * workload's run carries its project, job and attempt) and the job's status.
 */
export class ModelView {
  constructor(
    private readonly registry: ModelRegistry,
    private readonly tracking: TrackingStore,
    private readonly store: ResourceStore,
  ) {}

  async list(project: string): Promise<Model[]> {
    const out: Model[] = [];
    let token: string | undefined;
    do {
      // Prompts share the registry's tables; `loom get models` lists models only (as MLflow does).
      const page = await this.registry.searchModels(project, {
        filter: NOT_PROMPT_FILTER,
        maxResults: 1000,
        pageToken: token,
      });
      for (const m of page.registered_models) out.push(await this.toModel(project, m));
      token = page.next_page_token;
    } while (token);
    return out;
  }

  async get(project: string, name: string): Promise<Model> {
    const m = await this.translate(() => this.registry.getModel(project, name), name);
    // A prompt shares the registry's tables but is no model (`loom get prompt` shows it).
    if ((m.tags ?? []).some((t) => t.key === IS_PROMPT_TAG && t.value.toLowerCase() === "true"))
      throw new NotFoundError(`model "${name}" not found: it is a prompt (\`loom describe prompt ${name}\`)`);
    return this.toModel(project, m);
  }

  /** `loom apply` of a Model: creates the registered model, or updates its description. */
  async apply(project: string, body: unknown, dryRun = false): Promise<{ model: Model; created: boolean }> {
    const parsed = ModelManifest.safeParse(body);
    if (!parsed.success) {
      const issues = toFieldIssues(parsed.error, "");
      throw new ValidationError(
        `invalid manifest: ${issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`,
        issues,
      );
    }
    const { metadata, spec } = parsed.data;
    if (dryRun) {
      // `loom apply --dry-run` (and apply's own validation pass): what it would be, nothing written.
      try {
        const current = await this.get(project, metadata.name);
        // As the real apply stores it: the description is replaced (left out, it is cleared).
        const next = spec.description ? { description: spec.description } : {};
        return { model: { ...current, spec: next }, created: false };
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        const now = new Date().toISOString();
        return {
          model: {
            apiVersion: API_VERSION,
            kind: MODEL,
            metadata: {
              name: metadata.name,
              project,
              uid: "",
              resourceVersion: "0",
              generation: 1,
              creationTimestamp: now,
            },
            spec,
            status: { versions: [] },
          },
          created: true,
        };
      }
    }
    let created = false;
    try {
      await this.registry.getModel(project, metadata.name);
      await this.registry.updateModel(project, metadata.name, spec.description ?? "");
    } catch (err) {
      if (!(err instanceof MlflowError) || err.errorCode !== "RESOURCE_DOES_NOT_EXIST") throw err;
      await this.registry.createModel(project, metadata.name, spec.description);
      created = true;
    }
    return { model: await this.get(project, metadata.name), created };
  }

  async delete(project: string, name: string): Promise<Model> {
    const model = await this.get(project, name);
    await this.registry.deleteModel(project, name);
    return model;
  }

  private async translate<T>(f: () => Promise<T>, name: string): Promise<T> {
    try {
      return await f();
    } catch (err) {
      if (err instanceof MlflowError && err.errorCode === "RESOURCE_DOES_NOT_EXIST")
        throw new NotFoundError(`model "${name}" not found: \`loom get models\` lists this project's models`);
      throw err;
    }
  }

  private async toModel(project: string, m: RegisteredModel): Promise<Model> {
    const { model_versions } = await this.registry.searchVersions(project, {
      filter: `name = '${m.name.replace(/'/g, "''")}'`,
      maxResults: 10_000,
    });
    const versions = await Promise.all(
      model_versions
        .sort((a, b) => Number(a.version) - Number(b.version))
        .map((v) => this.lineage(project, v)),
    );
    const aliases = Object.fromEntries((m.aliases ?? []).map((a) => [a.alias, a.version]));
    const latest = versions.at(-1);
    const created = new Date(m.creation_timestamp).toISOString();
    return {
      apiVersion: API_VERSION,
      kind: MODEL,
      metadata: {
        name: m.name,
        project,
        uid: `model-${project}-${m.name}`,
        resourceVersion: String(m.last_updated_timestamp),
        generation: 1,
        creationTimestamp: created,
        ...(m.tags?.length ? { annotations: Object.fromEntries(m.tags.map((t) => [t.key, t.value])) } : {}),
      },
      spec: { ...(m.description ? { description: m.description } : {}) },
      status: {
        ...(latest ? { latestVersion: latest.version } : {}),
        aliases,
        ...(Object.keys(aliases).length
          ? {
              aliasText: Object.entries(aliases)
                .map(([a, v]) => `${a}=${v}`)
                .join(","),
            }
          : {}),
        ...(latest?.job ? { latestJob: latest.job } : {}),
        versions,
      },
    };
  }

  /** Where a version came from: its run, the job that logged the run, the job's checkpoint. */
  private async lineage(project: string, v: ModelVersion): Promise<ModelVersionLineage> {
    const tags = Object.fromEntries((v.tags ?? []).map((t) => [t.key, t.value]));
    const out: ModelVersionLineage = {
      version: v.version,
      aliases: v.aliases ?? [],
      ...(v.current_stage && v.current_stage !== "None" ? { stage: v.current_stage } : {}),
      source: v.source,
      ...(v.run_id ? { runId: v.run_id } : {}),
      createdAt: new Date(v.creation_timestamp).toISOString(),
      ...(tags["loom.sweep"] ? { sweep: tags["loom.sweep"] } : {}),
      ...(tags["loom.trial"] ? { trial: tags["loom.trial"] } : {}),
    };
    let job = tags["loom.workload"];
    let jobUid = tags["loom.workload_uid"];
    if (v.run_id) {
      try {
        const run = await this.tracking.getRun(project, v.run_id);
        out.experimentId = run.info.experiment_id;
        const runTags = Object.fromEntries((run.data.tags ?? []).map((t) => [t.key, t.value]));
        job ??= runTags["loom.workload"];
        jobUid ??= runTags["loom.workload_uid"];
      } catch (err) {
        if (!(err instanceof MlflowError)) throw err;
      }
    }
    if (job) {
      out.job = job;
      try {
        const tj = (await this.store.get(TRAININGJOB, project, job)) as TrainingJob;
        if (jobUid && tj.metadata.uid !== jobUid) out.jobPhase = "deleted (a newer job has its name)";
        else {
          out.jobPhase = tj.status?.phase ?? "Pending";
          if (tj.status?.checkpoint?.step !== undefined) out.checkpointStep = tj.status.checkpoint.step;
          if (tj.spec.initCheckpointFrom) out.initCheckpointFrom = tj.spec.initCheckpointFrom;
        }
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        out.jobPhase = "deleted";
      }
      if (out.checkpointStep === undefined && tags["loom.checkpoint_step"])
        out.checkpointStep = Number(tags["loom.checkpoint_step"]);
      if (out.initCheckpointFrom === undefined && tags["loom.init_checkpoint_from"])
        out.initCheckpointFrom = tags["loom.init_checkpoint_from"];
    }
    return out;
  }
}

/**
 * Where a model reference is on this machine: models:/NAME@ALIAS or models:/NAME/VERSION (the
 * registry), runs:/RUN/PATH and mlflow-artifacts:/… (the artifact store), or a plain path.
 */
export function localModelResolver(
  registry: ModelRegistry,
  tracking: TrackingStore,
  artifactsDir: string,
): ModelResolver {
  return {
    async resolve(project, model) {
      let source = model;
      const m = /^models:\/([^/@]+)(?:@([^/]+)|\/(\d+))$/.exec(model);
      if (model.startsWith("models:/") && !m)
        throw new Error(`model "${model}": write models:/NAME@ALIAS or models:/NAME/VERSION`);
      if (m) {
        const [, name, alias, version] = m;
        try {
          const v = alias
            ? await registry.versionByAlias(project, name!, alias)
            : await registry.getVersion(project, name!, version);
          source = v.source;
        } catch (err) {
          if (err instanceof MlflowError)
            throw new Error(`model "${model}" is not in project ${project}'s registry: ${err.message}`);
          throw err;
        }
      }
      // Wherever the reference leads, the files must be this project's (spec.model names it).
      const own = join(artifactsDir, project);
      let dir = source;
      const run = /^runs:\/([0-9a-f]{32})\/?(.*)$/.exec(source);
      if (run) {
        const r = await tracking.getRun(project, run[1]);
        dir = join(own, r.info.artifact_uri.replace(/^mlflow-artifacts:\//, ""), run[2] ?? "");
      } else if (source.startsWith("mlflow-artifacts:/"))
        dir = join(own, source.replace(/^mlflow-artifacts:\//, ""));
      else if (/^[a-z][a-z0-9+.-]*:/.test(source))
        throw new Error(
          `model source ${source} is not on this machine (runs:/, mlflow-artifacts:/ or a path)`,
        );
      if (!existsSync(dir)) throw new Error(`model "${model}" resolved to ${dir}, which does not exist`);
      checkInsideProject(model, dir, own, artifactsDir);
      return dir;
    },
  };
}

/**
 * spec.model's files stay inside the project: what a reference resolves to (symlinks followed)
 * is under the project's own artifact store, or outside the artifact store altogether (a local
 * path the operator put there); never another project's artifacts, nor the data dir around them.
 */
function checkInsideProject(model: string, dir: string, own: string, artifactsDir: string): void {
  const real = realpathSync(dir);
  const inside = (root: string) => {
    const r = existsSync(root) ? realpathSync(root) : resolve(root);
    return real === r || real.startsWith(r + sep);
  };
  if (inside(own)) return;
  if (inside(dirname(artifactsDir)))
    throw new Error(
      `spec.model "${model}" resolves to ${real}, outside this project's artifacts: a model may only name its own project's files`,
    );
}

/** The sweep controller's ports on Loom's own tracking store and registry (embedded). */
export function trackingTrialMetrics(tracking: TrackingStore): TrialMetrics {
  return {
    async history(project, runId, metric) {
      try {
        const { metrics } = await tracking.metricHistory(project, runId, metric);
        return metrics
          .filter((m) => typeof m.value === "number" && Number.isFinite(m.value))
          .map((m) => ({ step: Number(m.step), value: m.value as number }))
          .sort((a, b) => a.step - b.step);
      } catch (err) {
        if (err instanceof MlflowError && err.errorCode === "RESOURCE_DOES_NOT_EXIST") return [];
        throw err;
      }
    },
  };
}

export function registryRegistrar(registry: ModelRegistry): ModelRegistrar {
  return {
    async register(project, req) {
      try {
        await registry.getModel(project, req.model);
      } catch (err) {
        if (!(err instanceof MlflowError) || err.errorCode !== "RESOURCE_DOES_NOT_EXIST") throw err;
        await registry.createModel(project, req.model);
      }
      // Idempotent: a pass that registered but could not record it finds its version again.
      const { model_versions } = await registry.searchVersions(project, {
        filter: `name = '${req.model.replace(/'/g, "''")}' and run_id = '${req.runId}'`,
      });
      const existing = model_versions.find((v) => v.source === req.source);
      const version =
        existing ??
        (await registry.createVersion(project, {
          name: req.model,
          source: req.source,
          runId: req.runId,
          tags: Object.entries(req.tags).map(([key, value]) => ({ key, value })),
        }));
      await registry.setAlias(project, req.model, req.alias, version.version);
      return { version: version.version };
    },
  };
}

import { NotFoundError } from "../api/errors.js";
import { PROMPT } from "../api/kinds.js";
import { API_VERSION } from "../api/meta.js";
import type { Prompt, PromptVersionView } from "../api/prompt.js";
import { MlflowError } from "../tracking/errors.js";
import { IS_PROMPT_TAG, PROMPT_FILTER } from "../tracking/prompts.js";
import type { ModelRegistry, ModelVersion, RegisteredModel } from "../tracking/registry.js";

/** Tags MLflow's client keeps for itself on a prompt and its versions; shown as fields, not tags. */
const INTERNAL = /^(mlflow\.prompt\.|_mlflow_)/;

/**
 * The `Prompt` kind: the prompts of the registry (registered models tagged
 * mlflow.prompt.is_prompt, as MLflow's client writes them) seen as read-only Loom objects,
 * each version with its template.
 */
export class PromptView {
  constructor(private readonly registry: ModelRegistry) {}

  async list(project: string): Promise<Prompt[]> {
    const out: Prompt[] = [];
    let token: string | undefined;
    do {
      const page = await this.registry.searchModels(project, {
        filter: PROMPT_FILTER,
        maxResults: 1000,
        pageToken: token,
      });
      for (const m of page.registered_models) out.push(await this.toPrompt(project, m));
      token = page.next_page_token;
    } while (token);
    return out;
  }

  async get(project: string, name: string): Promise<Prompt> {
    const missing = () =>
      new NotFoundError(`prompt "${name}" not found: \`loom get prompts\` lists this project's prompts`);
    let m: RegisteredModel;
    try {
      m = await this.registry.getModel(project, name);
    } catch (err) {
      if (err instanceof MlflowError && err.errorCode === "RESOURCE_DOES_NOT_EXIST") throw missing();
      throw err;
    }
    // A model of the same registry is no prompt.
    if (!(m.tags ?? []).some((t) => t.key === IS_PROMPT_TAG && t.value.toLowerCase() === "true"))
      throw missing();
    return this.toPrompt(project, m);
  }

  /** `loom delete prompt NAME`: the prompt, its versions and aliases (as the client's delete_prompt). */
  async delete(project: string, name: string): Promise<Prompt> {
    const prompt = await this.get(project, name);
    await this.registry.deleteModel(project, name);
    return prompt;
  }

  private async toPrompt(project: string, m: RegisteredModel): Promise<Prompt> {
    const { model_versions } = await this.registry.searchVersions(project, {
      filter: `name = '${m.name.replace(/'/g, "''")}' AND ${PROMPT_FILTER}`,
      maxResults: 10_000,
    });
    const versions = model_versions
      .sort((a, b) => Number(a.version) - Number(b.version))
      .map((v) => versionView(v));
    const aliases = Object.fromEntries((m.aliases ?? []).map((a) => [a.alias, a.version]));
    const tags = userTags(m.tags);
    return {
      apiVersion: API_VERSION,
      kind: PROMPT,
      metadata: {
        name: m.name,
        project,
        uid: `prompt-${project}-${m.name}`,
        resourceVersion: String(m.last_updated_timestamp),
        generation: 1,
        creationTimestamp: new Date(m.creation_timestamp).toISOString(),
      },
      spec: { ...(m.description ? { description: m.description } : {}) },
      status: {
        ...(versions.length ? { latestVersion: versions.at(-1)!.version } : {}),
        aliases,
        ...(Object.keys(aliases).length
          ? {
              aliasText: Object.entries(aliases)
                .map(([a, v]) => `${a}=${v}`)
                .join(","),
            }
          : {}),
        ...(tags ? { tags } : {}),
        versions,
      },
    };
  }
}

function userTags(list: { key: string; value: string }[] | undefined): Record<string, string> | undefined {
  const kept = (list ?? []).filter((t) => !INTERNAL.test(t.key));
  return kept.length ? Object.fromEntries(kept.map((t) => [t.key, t.value])) : undefined;
}

function versionView(v: ModelVersion): PromptVersionView {
  const all = Object.fromEntries((v.tags ?? []).map((t) => [t.key, t.value]));
  const tags = userTags(v.tags);
  return {
    version: v.version,
    aliases: v.aliases ?? [],
    template: all["mlflow.prompt.text"] ?? "",
    // The client keeps a version's commit message as its description.
    ...(v.description ? { commitMessage: v.description } : {}),
    ...(tags ? { tags } : {}),
    createdAt: new Date(v.creation_timestamp).toISOString(),
  };
}

import type { LoggedModels } from "../logged.js";
import type { ModelRegistry } from "../registry.js";
import type { KeyValue } from "../types.js";
import { type AddRoute, list, need, num, str } from "./http.js";

/** The model registry: registered models, their versions, tags and aliases. */
export function registryRoutes(
  route: AddRoute,
  deps: { registry: ModelRegistry; loggedModels: LoggedModels },
): void {
  const r = deps.registry;
  const lm = deps.loggedModels;
  /** Where a version's files are: a logged model's own artifact root, or its source as given. */
  const downloadUri = async (project: string, source: string) => {
    const m = /^models:\/(m-[0-9a-f]+)$/.exec(source);
    return m ? (await lm.get(project, m[1]!)).info.artifact_uri : source;
  };
  route("POST", "registered-models/create", async (p, f) => ({
    registered_model: await r.createModel(
      p,
      need(f, "name"),
      str(f, "description"),
      list<KeyValue>(f, "tags"),
    ),
  }));
  route("GET", "registered-models/get", async (p, f) => ({
    registered_model: await r.getModel(p, need(f, "name")),
  }));
  route("GET", "registered-models/search", (p, f) =>
    r.searchModels(p, {
      filter: str(f, "filter"),
      maxResults: num(f, "max_results"),
      pageToken: str(f, "page_token"),
    }),
  );
  route("PATCH", "registered-models/update", async (p, f) => ({
    registered_model: await r.updateModel(p, need(f, "name"), str(f, "description")),
  }));
  route("POST", "registered-models/rename", async (p, f) => ({
    registered_model: await r.renameModel(p, need(f, "name"), need(f, "new_name")),
  }));
  route("DELETE", "registered-models/delete", async (p, f) => {
    await r.deleteModel(p, need(f, "name"));
    return {};
  });
  route("POST", "registered-models/set-tag", async (p, f) => {
    await r.setModelTag(p, need(f, "name"), need(f, "key"), str(f, "value") ?? "");
    return {};
  });
  route("DELETE", "registered-models/delete-tag", async (p, f) => {
    await r.deleteTag(p, need(f, "name"), undefined, need(f, "key"));
    return {};
  });
  route("POST", "registered-models/alias", async (p, f) => {
    await r.setAlias(p, need(f, "name"), need(f, "alias"), need(f, "version"));
    return {};
  });
  route("GET", "registered-models/alias", async (p, f) => ({
    model_version: await r.versionByAlias(p, need(f, "name"), need(f, "alias")),
  }));
  route("DELETE", "registered-models/alias", async (p, f) => {
    await r.deleteAlias(p, need(f, "name"), need(f, "alias"));
    return {};
  });
  route("POST", "registered-models/get-latest-versions", async (p, f) => ({
    model_versions: await r.latestVersions(p, need(f, "name"), list<string>(f, "stages")),
  }));
  route("POST", "model-versions/create", async (p, f) => ({
    model_version: await r.createVersion(p, {
      name: need(f, "name"),
      source: need(f, "source"),
      // A version of a logged model (models:/m-…) comes from the run that logged it.
      runId:
        str(f, "run_id") ??
        (str(f, "model_id")
          ? (await lm.get(p, need(f, "model_id"))).info.source_run_id || undefined
          : undefined),
      runLink: str(f, "run_link"),
      description: str(f, "description"),
      tags: list<KeyValue>(f, "tags"),
    }),
  }));
  route("GET", "model-versions/get", async (p, f) => ({
    model_version: await r.getVersion(p, need(f, "name"), need(f, "version")),
  }));
  route("GET", "model-versions/search", (p, f) =>
    r.searchVersions(p, {
      filter: str(f, "filter"),
      maxResults: num(f, "max_results"),
      pageToken: str(f, "page_token"),
    }),
  );
  route("PATCH", "model-versions/update", async (p, f) => ({
    model_version: await r.updateVersion(p, need(f, "name"), need(f, "version"), str(f, "description")),
  }));
  route("POST", "model-versions/transition-stage", async (p, f) => ({
    model_version: await r.transitionStage(
      p,
      need(f, "name"),
      need(f, "version"),
      need(f, "stage"),
      f.archive_existing_versions === true || f.archive_existing_versions === "true",
    ),
  }));
  route("POST", "model-versions/set-tag", async (p, f) => {
    await r.setVersionTag(p, need(f, "name"), need(f, "version"), need(f, "key"), str(f, "value") ?? "");
    return {};
  });
  route("DELETE", "model-versions/delete-tag", async (p, f) => {
    await r.deleteTag(p, need(f, "name"), need(f, "version"), need(f, "key"));
    return {};
  });
  route("DELETE", "model-versions/delete", async (p, f) => {
    await r.deleteVersion(p, need(f, "name"), need(f, "version"));
    return {};
  });
  route("GET", "model-versions/get-download-uri", async (p, f) => ({
    artifact_uri: await downloadUri(p, (await r.getVersion(p, need(f, "name"), need(f, "version"))).source),
  }));
}

import { beforeAll, describe, expect, it } from "vitest";
import { TRACKING_BACKENDS, useTrackingBackend } from "../../test/postgres.js";
import { type Tracking, trackingOn } from "./db.js";

describe.each(TRACKING_BACKENDS)("model registry and logged models on $name", (backend) => {
  const opened = useTrackingBackend(backend);
  let t: Tracking;
  let clock = 1_767_225_600_000;
  beforeAll(() => {
    const database = opened()?.database;
    if (database) t = trackingOn(database, () => clock++);
  });

  it("numbers versions, keeps tags, aliases and stages, renames and deletes", async () => {
    const { registry } = t;
    const exp = await t.store.createExperiment("p", "reg");
    const run = await t.store.createRun("p", { experimentId: exp });
    const model = await registry.createModel("p", "Gpt", "tiny", [{ key: "k", value: "v" }]);
    expect(model).toMatchObject({ name: "Gpt", description: "tiny", tags: [{ key: "k", value: "v" }] });
    expect(model.creation_timestamp).toBeGreaterThan(2 ** 32);
    await expect(registry.createModel("p", "Gpt")).rejects.toMatchObject({
      errorCode: "RESOURCE_ALREADY_EXISTS",
    });
    const v1 = await registry.createVersion("p", {
      name: "Gpt",
      source: `runs:/${run.info.run_id}/model`,
      tags: [{ key: "stage", value: "tested" }],
    });
    const v2 = await registry.createVersion("p", { name: "Gpt", source: "s3://b/m" });
    expect([v1.version, v2.version, v1.run_id]).toEqual(["1", "2", run.info.run_id]);
    await registry.setAlias("p", "Gpt", "champion", "2");
    expect((await registry.versionByAlias("p", "Gpt", "champion")).version).toBe("2");
    await expect(registry.versionByAlias("p", "Gpt", "nope")).rejects.toMatchObject({
      errorCode: "INVALID_PARAMETER_VALUE",
    });
    await registry.transitionStage("p", "Gpt", "1", "production", false);
    await registry.transitionStage("p", "Gpt", "2", "Production", true);
    expect((await registry.getVersion("p", "Gpt", "1")).current_stage).toBe("Archived");
    expect((await registry.latestVersions("p", "Gpt", ["Production"])).map((v) => v.version)).toEqual(["2"]);
    await registry.createModel("p", "gpt-lower");
    await registry.createModel("q", "Gpt");
    const names = async (filter?: string) =>
      (await registry.searchModels("p", { filter })).registered_models.map((m) => m.name);
    expect(await names()).toEqual(["Gpt", "gpt-lower"]);
    expect(await names("name LIKE 'G%'")).toEqual(["Gpt"]);
    expect(await names("name ILIKE 'g%'")).toEqual(["Gpt", "gpt-lower"]);
    const versions = await registry.searchVersions("p", { filter: `run_id = '${run.info.run_id}'` });
    expect(versions.model_versions.map((v) => v.version)).toEqual(["1"]);
    const paged = await registry.searchModels("p", { maxResults: 1 });
    const rest = await registry.searchModels("p", { maxResults: 1, pageToken: paged.next_page_token });
    expect([...paged.registered_models, ...rest.registered_models].map((m) => m.name)).toEqual([
      "Gpt",
      "gpt-lower",
    ]);
    await registry.renameModel("p", "Gpt", "Gpt2");
    expect((await registry.getModel("p", "Gpt2")).aliases).toEqual([{ alias: "champion", version: "2" }]);
    expect((await registry.getVersion("p", "Gpt2", "1")).tags).toEqual([{ key: "stage", value: "tested" }]);
    await registry.deleteVersion("p", "Gpt2", "1");
    expect((await registry.searchVersions("p", { filter: "name = 'Gpt2'" })).model_versions).toHaveLength(1);
    await registry.deleteModel("p", "Gpt2");
    await expect(registry.getModel("p", "Gpt2")).rejects.toMatchObject({
      errorCode: "RESOURCE_DOES_NOT_EXIST",
    });
    expect((await registry.getModel("q", "Gpt")).name).toBe("Gpt");
  });

  it("logged models: made pending, finalized, tagged, searched, linked to the run that logged them", async () => {
    const { loggedModels, store } = t;
    const exp = await store.createExperiment("p", "logged");
    const run = await store.createRun("p", { experimentId: exp });
    const m = await loggedModels.create("p", {
      experimentId: exp,
      name: "model",
      sourceRunId: run.info.run_id,
      params: [{ key: "a", value: "1" }],
    });
    expect(m.info).toMatchObject({
      status: "LOGGED_MODEL_PENDING",
      experiment_id: exp,
      artifact_uri: `mlflow-artifacts:/${exp}/models/${m.info.model_id}/artifacts`,
    });
    expect(m.info.creation_timestamp_ms).toBeGreaterThan(2 ** 32);
    expect((await loggedModels.finalize("p", m.info.model_id, "LOGGED_MODEL_READY")).info.status).toBe(
      "LOGGED_MODEL_READY",
    );
    await loggedModels.setTags("p", m.info.model_id, [{ key: "t", value: "x" }]);
    expect((await loggedModels.get("p", m.info.model_id)).info.tags).toEqual([{ key: "t", value: "x" }]);
    const found = await loggedModels.search("p", { experimentIds: [exp], filter: "name = 'model'" });
    expect(found.models.map((x) => x.info.model_id)).toEqual([m.info.model_id]);
    await loggedModels.recordOutputs("p", run.info.run_id, [{ model_id: m.info.model_id, step: 3 }]);
    expect((await loggedModels.outputsOf([run.info.run_id])).get(run.info.run_id)).toEqual([
      { model_id: m.info.model_id, step: 3 },
    ]);
    await expect(loggedModels.get("q", m.info.model_id)).rejects.toMatchObject({
      errorCode: "RESOURCE_DOES_NOT_EXIST",
    });
    await loggedModels.delete("p", m.info.model_id);
    expect((await loggedModels.outputsOf([run.info.run_id])).size).toBe(0);
  });
});

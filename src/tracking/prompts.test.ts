import { beforeAll, describe, expect, it } from "vitest";
import { TRACKING_BACKENDS, useTrackingBackend } from "../../test/postgres.js";
import { type Tracking, trackingOn } from "./db.js";
import { IS_PROMPT_TAG, NOT_PROMPT_FILTER, PROMPT_FILTER } from "./prompts.js";

describe.each(TRACKING_BACKENDS)("prompts in the model registry on $name", (backend) => {
  const opened = useTrackingBackend(backend);
  let t: Tracking;
  beforeAll(() => {
    const database = opened()?.database;
    if (database) t = trackingOn(database, () => 1_767_225_600_000);
  });
  const promptTag = [{ key: IS_PROMPT_TAG, value: "true" }];

  it("a prompt version takes only MLflow's source placeholders; a model version never does", async () => {
    const { registry } = t;
    await registry.createModel("p", "greet", "", promptTag);
    const tags = [...promptTag, { key: "mlflow.prompt.text", value: "Hi {{x}}" }];
    for (const source of ["dummy-source", "prompt-template"])
      await registry.createVersion("p", { name: "greet", source, tags });
    // A prompt version pointing at a file is refused (MLflow's server refuses it too).
    await expect(
      registry.createVersion("p", { name: "greet", source: "/etc/passwd", tags }),
    ).rejects.toMatchObject({
      errorCode: "INVALID_PARAMETER_VALUE",
      message: expect.stringMatching(/Invalid prompt source: '\/etc\/passwd'/),
    });
    await registry.createModel("p", "net");
    await expect(registry.createVersion("p", { name: "net", source: "dummy-source" })).rejects.toMatchObject({
      errorCode: "INVALID_PARAMETER_VALUE",
    });
  });

  it("`latest` names the newest version; a model search leaves prompts out unless it asks for them", async () => {
    const { registry } = t;
    expect((await registry.versionByAlias("p", "greet", "latest")).version).toBe("2");
    await expect(registry.versionByAlias("p", "net", "latest")).rejects.toMatchObject({
      errorCode: "RESOURCE_DOES_NOT_EXIST",
    });
    const names = async (filter?: string) =>
      (await registry.searchModels("p", { filter })).registered_models.map((m) => m.name);
    expect(await names()).toEqual(["net"]);
    expect(await names(NOT_PROMPT_FILTER)).toEqual(["net"]);
    expect(await names(`tags.\`${IS_PROMPT_TAG}\` = 'false'`)).toEqual(["net"]);
    expect(await names(PROMPT_FILTER)).toEqual(["greet"]);
    expect(await names(`tags.\`${IS_PROMPT_TAG}\` != 'false'`)).toEqual(["greet"]);
    const versions = async (filter?: string) =>
      (await registry.searchVersions("p", { filter })).model_versions.map((v) => `${v.name}/${v.version}`);
    expect(await versions()).toEqual([]);
    expect(await versions(`name = 'greet' AND ${PROMPT_FILTER}`)).toEqual(["greet/2", "greet/1"]);
  });
});

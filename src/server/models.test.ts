import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TRACKING_BACKENDS, useTrackingBackend } from "../../test/postgres.js";
import { validateManifest } from "../api/kinds.js";
import { type Tracking, trackingOn } from "../tracking/db.js";
import { localModelResolver } from "./models.js";

/** spec.model and spec.initCheckpointFrom resolve only inside the caller's project. */
describe("references stay inside their project", () => {
  const opened = useTrackingBackend(TRACKING_BACKENDS[0]!);
  let t: Tracking;
  let data: string;
  let artifacts: string;
  let theirs: string;
  beforeAll(async () => {
    t = trackingOn(opened().database);
    data = mkdtempSync(join(tmpdir(), "loom-refs-"));
    artifacts = join(data, "artifacts");
    // Project a's model files, and project b's own.
    const exp = await t.store.createExperiment("a", "secret");
    theirs = join(artifacts, "a", exp, "model");
    mkdirSync(theirs, { recursive: true });
    writeFileSync(join(theirs, "weights"), "a's");
    const mine = await t.store.createExperiment("b", "mine");
    mkdirSync(join(artifacts, "b", mine, "model"), { recursive: true });
    writeFileSync(join(data, "loom.db"), "");
  });
  afterAll(() => rmSync(data, { recursive: true, force: true }));

  it("an InferenceService in b cannot serve a's files by path, by ../ or through a symlink", async () => {
    const models = localModelResolver(t.registry, t.store, artifacts);
    const link = join(mkdtempSync(join(tmpdir(), "loom-link-")), "m");
    symlinkSync(theirs, link);
    for (const ref of [theirs, join(artifacts, "a"), data, link, "mlflow-artifacts:/../a/1/model"])
      await expect(models.resolve("b", ref), ref).rejects.toThrow(/spec\.model|does not exist/);
    await expect(models.resolve("b", theirs)).rejects.toThrow(/outside this project's artifacts/);
    await expect(models.resolve("b", link)).rejects.toThrow(/outside this project's artifacts/);
    // Its own files, and a path outside the data dir, resolve.
    const own = (await t.store.getExperimentByName("b", "mine")).experiment_id;
    expect(await models.resolve("b", `mlflow-artifacts:/${own}/model`)).toBe(
      join(artifacts, "b", own, "model"),
    );
    expect(await models.resolve("b", tmpdir())).toBe(tmpdir());
  });

  it("manifests naming ../ in spec.model, or a path or project/name as initCheckpointFrom, are refused at admission", () => {
    const svc = (model: string) => ({
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name: "s", project: "b" },
      spec: { model },
    });
    expect(() => validateManifest(svc("mlflow-artifacts:/../a/1/model"))).toThrow(/spec\.model.*'\.\.'/s);
    expect(() => validateManifest(svc("models:/tiny@champion"))).not.toThrow();
    const job = (from: string) => ({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "j", project: "b" },
      spec: { command: ["true"], initCheckpointFrom: from },
    });
    expect(() => validateManifest(job("a/pretrain"))).toThrow(/initCheckpointFrom.*this project/s);
    expect(() => validateManifest(job("../pretrain"))).toThrow(/initCheckpointFrom/);
    expect(() => validateManifest(job("pretrain"))).not.toThrow();
  });
});

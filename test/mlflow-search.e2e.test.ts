import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { mlflowPython } from "./tracking-client.js";

/**
 * MLflow's search grammar through the official client: what MLflow's docs and the client itself
 * send (nested runs by `tags.mlflow.parentRunId`, log_table/load_table's
 * `tags.mlflow.loggedArtifacts LIKE`), and keys with dots and spaces in backticks or quotes, in
 * every search (runs, experiments, registered models, model versions).
 */
// Backticks in the script are written ~ (a template literal cannot hold them bare).
const SCRIPT = String.raw`
import os, pandas as pd, mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

client = MlflowClient()
exp = mlflow.set_experiment("search-grammar")
ids = [exp.experiment_id]
names = lambda runs: sorted(r.info.run_name for r in runs)

with mlflow.start_run(run_name="parent") as parent:
    for i in range(2):
        with mlflow.start_run(run_name=f"child-{i}", nested=True):
            mlflow.log_metric("loss", i)
    mlflow.log_table(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), artifact_file="tables/t.json")
with mlflow.start_run(run_name="other"):
    pass
pid = parent.info.run_id

# Nested runs, as MLflow's docs find them, and the same key quoted two other ways.
children = mlflow.search_runs(ids, filter_string=f"tags.mlflow.parentRunId = '{pid}'", output_format="list")
assert names(children) == ["child-0", "child-1"], names(children)
assert names(client.search_runs(ids, f'tag."mlflow.parentRunId" = "{pid}"')) == ["child-0", "child-1"]
assert names(client.search_runs(ids, f"tags.~mlflow.parentRunId~ = '{pid}' and metrics.loss > 0")) == ["child-1"]
assert names(client.search_runs(ids, "tags.mlflow.parentRunId IS NULL")) == ["other", "parent"]
assert names(client.search_runs(ids, "tags.mlflow.parentRunId IS NOT NULL")) == ["child-0", "child-1"]
print("nested runs: ok")

# log_table + load_table: by run id, and by the client's own search of tags.mlflow.loggedArtifacts.
assert list(mlflow.load_table("tables/t.json", run_ids=[pid])["a"]) == [1, 2]
found = mlflow.load_table("tables/t.json", extra_columns=["run_id"])
assert list(found["run_id"]) == [pid, pid] and list(found["b"]) == ["x", "y"], found
print("load_table: ok")

# Keys with dots and spaces, backticked or double-quoted, in a filter and in order_by.
with mlflow.start_run(run_name="spaced") as spaced:
    mlflow.set_tag("team name.v2", "nlp")
    mlflow.log_metric("val loss.ema", 0.25)
    mlflow.log_param("lr.base rate", "0.1")
f = "tags.~team name.v2~ = 'nlp' and metrics.~val loss.ema~ < 0.5 and params.\"lr.base rate\" = '0.1'"
assert [r.info.run_id for r in client.search_runs(ids, f)] == [spaced.info.run_id]
ordered = client.search_runs(ids, "attributes.status = 'FINISHED'", order_by=["metrics.~val loss.ema~ DESC"])
assert ordered[0].info.run_id == spaced.info.run_id
print("quoted keys: ok")

# Experiments, registered models and model versions, each in its own grammar.
client.set_experiment_tag(exp.experiment_id, "team.name", "nlp")
assert [e.name for e in client.search_experiments(filter_string="tags.~team.name~ = 'nlp'")] == ["search-grammar"]
assert "search-grammar" not in [e.name for e in client.search_experiments(filter_string="tags.team.name IS NULL")]
client.create_registered_model("grammar-model", tags={"stage.gate": "ok"})
assert [m.name for m in client.search_registered_models("tags.stage.gate = 'ok'")] == ["grammar-model"]
client.create_model_version("grammar-model", f"runs:/{pid}/model", run_id=pid, tags={"review.by": "ann"})
mv = client.search_model_versions(f"name = 'grammar-model' and tags.~review.by~ = 'ann' and run_id IN ('{pid}') and version_number >= 1")
assert [v.version for v in mv] == ["1"], mv
print("experiments and registry: ok")

# A key with other characters, unquoted, is refused with a way out.
try:
    client.search_runs(ids, "tags.my-key = 'x'")
    raise AssertionError("tags.my-key was accepted")
except MlflowException as e:
    assert e.error_code == "INVALID_PARAMETER_VALUE" and "backticks" in e.message, e
print("OK")
`.replaceAll("~", "`");

describe("MLflow search grammar, driven by the official mlflow client (embedded)", () => {
  const loom = new LoomProcess();
  let python = "";
  beforeAll(async () => {
    python = mlflowPython();
    await loom.start();
  }, 300_000);
  afterAll(() => loom.stop());

  it("nested runs by tags.mlflow.parentRunId, log_table + load_table, backticked keys with dots and spaces, IS NULL, every search", () => {
    const r = spawnSync(python, ["-c", SCRIPT], {
      encoding: "utf8",
      env: { ...process.env, MLFLOW_TRACKING_URI: loom.url, MLFLOW_TRACKING_TOKEN: loom.token },
      timeout: 120_000,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.status, out).toBe(0);
    expect(r.stdout).toMatch(/OK\s*$/);
  }, 180_000);
});

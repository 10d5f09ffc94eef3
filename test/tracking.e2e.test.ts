import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT, spawnAsync } from "./helpers.js";
import { clientSuite, mlflowPython, torchPython, VENV } from "./tracking-client.js";

describe("MLflow tracking API, driven by the official mlflow client (embedded)", () => {
  const loom = new LoomProcess();
  let python = "";
  beforeAll(async () => {
    python = mlflowPython();
    await loom.start();
  }, 300_000);
  afterAll(() => loom.stop());

  const suite = (uri: string, suffix: string, token = loom.token) => clientSuite(python, uri, token, suffix);

  it("experiments, runs, every logging call, search with filters, order and pages, metric history, artifacts, model registry, pyfunc log_model and load_model by alias", async () => {
    const r = await suite(loom.url, "root");
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/OK 67 checks/);
  }, 180_000);

  it("samples one metric across runs for the UI's charts (get-history-bulk-interval), under every prefix", async () => {
    const api = (path: string, body?: unknown, token?: string) =>
      loom.api(body ? "POST" : "GET", path, body, token);
    const exp = await api("/api/2.0/mlflow/experiments/create", { name: "charts" });
    const expId = (exp.body as { experiment_id: string }).experiment_id;
    const run = async (steps: number[]) => {
      const created = await api("/api/2.0/mlflow/runs/create", { experiment_id: expId });
      const id = (created.body as { run: { info: { run_id: string } } }).run.info.run_id;
      const metrics = steps.map((step) => ({ key: "loss", value: step / 2, timestamp: 1_000 + step, step }));
      expect((await api("/api/2.0/mlflow/runs/log-batch", { run_id: id, metrics })).status).toBe(200);
      return id;
    };
    const a = await run([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const b = await run([4, 2]);
    const query = (ids: string[], extra = "") =>
      `metrics/get-history-bulk-interval?${ids.map((id) => `run_ids=${id}`).join("&")}&metric_key=loss${extra}`;
    for (const prefix of [
      "/ajax-api/2.0/mlflow",
      "/api/2.0/mlflow",
      "/mlflow/projects/default/api/2.0/mlflow",
    ]) {
      const got = await api(`${prefix}/${query([b, a], "&max_results=4")}`);
      expect(got.status, prefix).toBe(200);
      expect(
        (got.body as { metrics: { run_id: string; step: number }[] }).metrics.map((m) => [m.run_id, m.step]),
        prefix,
      ).toEqual([
        [b, 2],
        [b, 4],
        [a, 0],
        [a, 3],
        [a, 6],
        [a, 9],
      ]);
    }
    const ranged = await api(`/ajax-api/2.0/mlflow/${query([a], "&start_step=2&end_step=5&max_results=2")}`);
    expect(ranged.body).toEqual({
      metrics: [
        { key: "loss", value: 1, timestamp: 1_002, step: 2, run_id: a },
        { key: "loss", value: 2.5, timestamp: 1_005, step: 5, run_id: a },
      ],
    });
    // MLflow's errors.
    const refused = async (path: string, message: RegExp) => {
      const r = await api(`/ajax-api/2.0/mlflow/${path}`);
      expect(r.status, path).toBe(400);
      expect(r.body, path).toMatchObject({
        error_code: "INVALID_PARAMETER_VALUE",
        message: expect.stringMatching(message),
      });
    };
    const many = Array.from({ length: 101 }, (_, i) => `${a.slice(0, 29)}${String(i).padStart(3, "0")}`);
    await refused(query(many), /at most 100 run_ids. Received 101 run_ids/);
    await refused(`metrics/get-history-bulk-interval?run_ids=${a}`, /'metric_key'/);
    await refused("metrics/get-history-bulk-interval?metric_key=loss", /'run_ids'/);
    await refused(query([a], "&max_results=2501"), /between 1 and 2500/);
    await refused(query([a], "&start_step=3"), /both must be specified/);
    await refused(query([a], "&start_step=5&end_step=1"), /end_step must be greater than start_step/);
    // Tenancy: another project does not see these runs, and its token cannot reach this project.
    const project = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: charts}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: project })).code).toBe(0);
    const token = (
      await loom.cli(["token", "create", "dana", "-p", "charts", "--role", "viewer"])
    ).stdout.trim();
    const theirs = await api(`/mlflow/projects/charts/api/2.0/mlflow/${query([a])}`, undefined, token);
    expect(theirs).toEqual({ status: 200, body: {} });
    const denied = await api(`/ajax-api/2.0/mlflow/${query([a])}`, undefined, token);
    expect(denied.status).toBe(403);
    expect(denied.body).toMatchObject({ error_code: "PERMISSION_DENIED" });
  }, 60_000);

  it("mlflow.pytorch log_model, register, alias champion, load_model by alias and by runs:/ gives the same outputs", async () => {
    const torch = torchPython();
    const r = await spawnAsync(torch, [join(ROOT, "test/fixtures/tracking/pytorch_roundtrip.py")], {
      env: {
        ...process.env,
        MLFLOW_TRACKING_URI: loom.url,
        MLFLOW_TRACKING_TOKEN: loom.token,
        SUFFIX: "torch",
      },
      timeout: 300_000,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.status, out).toBe(0);
    expect(out).not.toMatch(/^FAIL/m);
    expect(out).toMatch(/OK 8 checks/);
  }, 1_200_000);

  it("serves each project at its own URI, and one project's experiments and runs do not exist for another", async () => {
    const project = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: team-a}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: project })).code).toBe(0);
    // Alice's token reaches team-a only; the whole client suite runs with it there.
    const token = async (args: string[]) => {
      const created = await loom.cli(["token", "create", ...args]);
      expect(created.code, created.stderr).toBe(0);
      return created.stdout.trim();
    };
    const alice = await token(["alice", "-p", "team-a", "--role", "editor"]);
    const viewer = await token(["carol", "-p", "team-a", "--role", "viewer"]);
    const r = await suite(`${loom.url}/mlflow/projects/team-a`, "team-a", alice);
    expect(r.code, r.out).toBe(0);
    const as = (who: string, method: string, path: string, body?: unknown) =>
      loom.api(method, path, body, who);
    const denied = await as(alice, "POST", "/api/2.0/mlflow/experiments/search", {});
    expect(denied.status).toBe(403);
    expect(denied.body).toMatchObject({
      error_code: "PERMISSION_DENIED",
      message: 'token "alice" is for project team-a; it cannot reach project default',
    });
    const read = await as(viewer, "POST", "/mlflow/projects/team-a/api/2.0/mlflow/experiments/search", {});
    expect(read.status).toBe(200);
    const write = await as(viewer, "POST", "/mlflow/projects/team-a/api/2.0/mlflow/experiments/create", {
      name: "x",
    });
    expect(write.status).toBe(403);
    expect(write.body).toMatchObject({ error_code: "PERMISSION_DENIED" });
    // Only an unscoped admin makes tokens.
    const notAdmin = await loom.cli(["token", "create", "eve", "-p", "team-a"], {
      env: { LOOM_TOKEN: alice },
    });
    expect(notAdmin.code).toBe(1);
    expect(notAdmin.stderr).toMatch(/reaches project team-a only|only an admin token/);
    const api = (path: string, body?: unknown) => loom.api(body ? "POST" : "GET", path, body);
    const created = await api("/mlflow/projects/team-a/api/2.0/mlflow/experiments/create", {
      name: "secret",
    });
    const id = (created.body as { experiment_id: string }).experiment_id;
    expect(
      (await api(`/mlflow/projects/team-a/api/2.0/mlflow/experiments/get?experiment_id=${id}`)).status,
    ).toBe(200);
    const fromDefault = await api(`/api/2.0/mlflow/experiments/get?experiment_id=${id}`);
    expect(fromDefault.status).toBe(404);
    expect(fromDefault.body).toMatchObject({ error_code: "RESOURCE_DOES_NOT_EXIST" });
    const run = await api("/mlflow/projects/team-a/api/2.0/mlflow/runs/create", { experiment_id: id });
    const runId = (run.body as { run: { info: { run_id: string } } }).run.info.run_id;
    expect((await api(`/api/2.0/mlflow/runs/get?run_id=${runId}`)).status).toBe(404);
    const search = await api("/api/2.0/mlflow/runs/search", { experiment_ids: [id] });
    expect(search.body).toEqual({});
    // A project that does not exist, an endpoint Loom does not serve, a token that is wrong.
    expect((await api("/mlflow/projects/nope/api/2.0/mlflow/experiments/search", {})).body).toMatchObject({
      error_code: "RESOURCE_DOES_NOT_EXIST",
      message: "project nope does not exist",
    });
    const unknown = await api("/api/2.0/mlflow/no-such-endpoint");
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ error_code: "ENDPOINT_NOT_FOUND" });
    expect((await loom.api("GET", "/api/2.0/mlflow/experiments/search", undefined, "wrong")).status).toBe(
      401,
    );
  }, 180_000);

  it("zero-config inside a job: every attempt logs to the job's one run, tagged with project, job and attempt", async () => {
    const job = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: logs-itself}
spec:
  command: [python, test/fixtures/tracking/in_job.py]
  workingDir: .
  python: {venv: ${VENV}}
  experiment: zero-config
  failurePolicy: {maxRestarts: 1}
`;
    expect((await loom.cli(["apply", "-f", "-"], { input: job })).code).toBe(0);
    const done = await loom.waitFor(
      "logs-itself",
      (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
      120_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.attempts).toBe(2);
    const exp = await loom.api("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=zero-config");
    const expId = (exp.body as { experiment: { experiment_id: string } }).experiment.experiment_id;
    const runs = (await loom.api("POST", "/api/2.0/mlflow/runs/search", { experiment_ids: [expId] }))
      .body as {
      runs: {
        info: { run_id: string; status: string; run_name: string };
        data: { tags: { key: string; value: string }[]; params: unknown[] };
      }[];
    };
    expect(runs.runs).toHaveLength(1);
    const run = runs.runs[0]!;
    const tags = Object.fromEntries(run.data.tags.map((t) => [t.key, t.value]));
    expect(tags).toMatchObject({
      "loom.project": "default",
      "loom.workload": "logs-itself",
      "loom.workload_uid": done.metadata.uid,
      "loom.attempt": "2",
    });
    expect(run.info.status).toBe("FINISHED");
    expect(run.info.run_name).toBe("logs-itself");
    const history = (
      await loom.api("GET", `/api/2.0/mlflow/metrics/get-history?run_id=${run.info.run_id}&metric_key=loss`)
    ).body as { metrics: { step: number }[] };
    expect(history.metrics.map((m) => m.step)).toEqual([10, 11, 12, 20, 21, 22]);
    const logs = (await loom.cli(["logs", "tj/logs-itself"])).stdout;
    expect(logs).toContain(`logged to ${run.info.run_id} in ${expId}`);
  }, 180_000);
});

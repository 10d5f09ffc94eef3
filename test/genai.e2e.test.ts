import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { mlflowPython, py } from "./tracking-client.js";

describe("MLflow 3 GenAI client against Loom: the prompt registry", () => {
  const loom = new LoomProcess();
  let python = "";
  const tokens: Record<string, string> = {};
  const uri = (project: string) => `${loom.url}/mlflow/projects/${project}`;
  beforeAll(async () => {
    python = mlflowPython();
    await loom.start();
    for (const p of ["team-a", "team-b"]) {
      const project = `apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: ${p}}\n`;
      expect((await loom.cli(["apply", "-f", "-"], { input: project })).code).toBe(0);
      const created = await loom.cli(["token", "create", `dev-${p}`, "-p", p, "--role", "editor"]);
      expect(created.code, created.stderr).toBe(0);
      tokens[p] = created.stdout.trim();
    }
  }, 300_000);
  afterAll(() => loom.stop());

  it("registers versions, moves and deletes aliases, loads by version, alias and @latest, tags versions, searches; models and prompts do not mix", async () => {
    const r = await py(python, "test/fixtures/tracking/prompts_suite.py", loom.url, loom.token, {
      SUFFIX: "root",
    });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/OK 16 checks/);
  }, 180_000);

  it("`loom get prompts` lists prompts (not models), `loom get models` models (not prompts), describe shows each version's template; apply is refused, delete deletes", async () => {
    const prompts = await loom.cli(["get", "prompts"]);
    expect(prompts.code, prompts.stderr).toBe(0);
    expect(prompts.stdout).toMatch(/^NAME\s+LATEST\s+ALIASES\s+AGE/);
    expect(prompts.stdout).toMatch(/greeting-root\s+2\s+champion=1\s/);
    expect(prompts.stdout).toMatch(/other-root\s+1\s+<none>/);
    expect(prompts.stdout).not.toMatch(/model-root/);
    const models = await loom.cli(["get", "models"]);
    expect(models.stdout).toMatch(/model-root/);
    expect(models.stdout).not.toMatch(/greeting-root|other-root/);
    const described = await loom.cli(["describe", "prompt", "greeting-root"]);
    expect(described.code, described.stderr).toBe(0);
    expect(described.stdout).toMatch(
      /2: shorter .*\n\s+\| Hi \{\{name\}\}, as a \{\{role\}\}, answer briefly\./,
    );
    expect(described.stdout).toMatch(
      /1: first \(aliases: champion; tags: team=nlp;.*\n\s+\| Hello, \{\{name\}\}!/,
    );
    // A model is no prompt, and says where to look.
    const notPrompt = await loom.cli(["describe", "prompt", "model-root"]);
    expect(notPrompt.code).not.toBe(0);
    expect(notPrompt.stderr).toMatch(/prompt "model-root" not found: `loom get prompts` lists/);
    // Written by the client only: a manifest is refused, saying so; delete removes it from the registry.
    const applied = await loom.cli(["apply", "-f", "-"], {
      input: "apiVersion: loom.dev/v1alpha1\nkind: Prompt\nmetadata: {name: manifest}\n",
    });
    expect(applied.code).not.toBe(0);
    expect(applied.stderr).toMatch(
      /prompts are written with the mlflow client \(mlflow.genai.register_prompt\), not applied/,
    );
    expect((await loom.cli(["delete", "prompt", "other-root"])).stdout).toMatch(
      /prompt.loom.dev\/other-root deleted/,
    );
    expect((await loom.cli(["get", "prompts"])).stdout).not.toMatch(/other-root|manifest/);
    expect((await loom.cli(["delete", "prompt", "model-root"])).code).not.toBe(0);
    expect((await loom.cli(["get", "models"])).stdout).toMatch(/model-root/);
    const asModel = await loom.cli(["get", "model", "greeting-root"]);
    expect(asModel.code).not.toBe(0);
    expect(asModel.stderr).toMatch(/model "greeting-root" not found: it is a prompt/);
  }, 60_000);

  it("a prompt in one project is invisible from another, and another project's token cannot read it", async () => {
    const register = `
import mlflow
mlflow.genai.register_prompt(name="secret", template="The launch code is {{code}}")
mlflow.genai.set_prompt_alias("secret", alias="production", version=1)
print(mlflow.genai.load_prompt("prompts:/secret@production").template)`;
    const a = await py(python, register, uri("team-a"), tokens["team-a"]!);
    expect(a.code, a.out).toBe(0);
    expect(a.stdout).toBe("The launch code is {{code}}");
    // From team-b, with team-b's token: not there (and team-b may have its own "secret").
    const look = `
import mlflow
print([p.name for p in mlflow.genai.search_prompts()])
try:
    mlflow.genai.load_prompt("prompts:/secret@production")
    print("LOADED")
except Exception as e:
    print("REFUSED", type(e).__name__)`;
    const b = await py(python, look, uri("team-b"), tokens["team-b"]!);
    expect(b.code, b.out).toBe(0);
    expect(b.stdout).toBe("[]\nREFUSED MlflowException");
    // team-b's token at team-a's URI: refused outright.
    const cross = await py(python, look, uri("team-a"), tokens["team-b"]!);
    expect(cross.code, cross.out).not.toBe(0);
    expect(cross.out).toMatch(/403|PERMISSION_DENIED|not a member|may not/i);
    const listed = await loom.cli(["get", "prompts", "-p", "team-b"]);
    expect(listed.stdout).not.toMatch(/secret/);
    expect((await loom.cli(["get", "prompts", "-p", "team-a"])).stdout).toMatch(/secret\s+1\s+production=1/);
  }, 120_000);

  it("traces: a traced function with a child span, manual spans, search by tag, time, state and name, get_trace with inputs and outputs, tags, delete", async () => {
    const r = await py(python, "test/fixtures/tracking/traces_suite.py", loom.url, loom.token, {
      SUFFIX: "root",
    });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/OK 22 checks/);
  }, 180_000);

  it("a trace in one project is invisible from another, by search and by id, and another project's token cannot read it", async () => {
    const write = `
import mlflow
exp = mlflow.set_experiment("secret-traces")
@mlflow.trace
def f(x):
    mlflow.update_current_trace(tags={"secret": "yes"})
    return x * 2
f(21)
mlflow.flush_trace_async_logging()
print(mlflow.get_last_active_trace_id(), exp.experiment_id)`;
    const a = await py(python, write, uri("team-a"), tokens["team-a"]!);
    expect(a.code, a.out).toBe(0);
    const [traceId, expId] = a.stdout.split("\n").at(-1)!.split(" ");
    const look = `
import mlflow
print(len(mlflow.search_traces(locations=["${expId}"], filter_string="tags.secret = 'yes'", return_type="list")))
print(mlflow.get_trace("${traceId}") is None)`;
    const own = await py(python, look, uri("team-a"), tokens["team-a"]!);
    expect(own.stdout.split("\n").slice(-2), own.out).toEqual(["1", "False"]);
    const other = await py(python, look, uri("team-b"), tokens["team-b"]!);
    expect(other.code, other.out).toBe(0);
    expect(other.stdout.split("\n").slice(-2), other.out).toEqual(["0", "True"]);
    const cross = await py(python, look, uri("team-a"), tokens["team-b"]!);
    expect(cross.code, cross.out).not.toBe(0);
    expect(cross.out).toMatch(/403|PERMISSION_DENIED|not a member|may not/i);
  }, 120_000);
});

describe("MLflow traces past loom up --trace-retention are deleted", () => {
  const loom = new LoomProcess(["--trace-retention", "2s"]);
  let python = "";
  beforeAll(async () => {
    python = mlflowPython();
    await loom.start();
  }, 300_000);
  afterAll(() => loom.stop());

  it("a trace older than the retention is deleted: its record and its spans", async () => {
    const write = `
import mlflow
exp = mlflow.set_experiment("short-lived")
with mlflow.start_span(name="once") as s:
    s.set_inputs({"a": 1})
mlflow.flush_trace_async_logging()
print(mlflow.get_last_active_trace_id(), exp.experiment_id)`;
    const w = await py(python, write, loom.url, loom.token);
    expect(w.code, w.out).toBe(0);
    const [traceId, expId] = w.stdout.split("\n").at(-1)!.split(" ");
    const get = () => loom.api("GET", `/api/3.0/mlflow/traces/${traceId}`);
    const spans = join(loom.dataDir, "artifacts", "default", expId!, "traces", traceId!);
    // The sweep runs every second or so: wait for it (no bound on how long it may take here).
    let status = (await get()).status;
    while (status === 200) {
      await new Promise((r) => setTimeout(r, 500));
      status = (await get()).status;
    }
    expect(status).toBe(404);
    expect(existsSync(spans)).toBe(false);
  }, 120_000);
});

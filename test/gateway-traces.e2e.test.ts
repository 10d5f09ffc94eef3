import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT } from "./helpers.js";
import { genaiPython, mlflowPython, py } from "./tracking-client.js";

/**
 * Gateway-recorded traces on a real `loom up`: InferenceServices of the built-in runtime
 * (loom-tinygpt), one with `spec.tracing: true` and one without, called with the official openai
 * client under an API key; the official MLflow client then finds the traced requests with
 * search_traces (by the key's name, the service and time) and reads their prompt, completion,
 * tokens and revision. The time from an answer's end to its trace being found is logged, never
 * asserted (a loaded 2-core machine decides it).
 */

const BASE = "/apis/loom.dev/v1alpha1";

describe("gateway-recorded traces (spec.tracing) read back with the MLflow client", () => {
  const loom = new LoomProcess();
  const modelDir = mkdtempSync(join(tmpdir(), "loom-gwtrace-model-"));
  chmodSync(modelDir, 0o755);
  let python = "";
  let genai = ""; // the client with openai, for genai.evaluate's predict_fn
  let key = ""; // API key "tracer" of project default
  let otherToken = ""; // an editor of project "other"
  const uri = (project: string) => `${loom.url}/mlflow/projects/${project}`;

  async function create(name: string, spec: Record<string, unknown>): Promise<void> {
    const r = await loom.api("POST", `${BASE}/projects/default/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name },
      spec: { model: modelDir, runtime: "loom-tinygpt", ...spec },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }

  async function ready(name: string): Promise<void> {
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const r = await loom.api("GET", `${BASE}/projects/default/inferenceservices/${name}`);
      if ((r.body as { status?: { ready?: number } }).status?.ready) return;
      await sleep(200);
    }
    throw new Error(`${name} never became ready\n${loom.log.slice(-3000)}`);
  }

  /**
   * The fixture started and connected before the requests: it says READY, the test sends its
   * requests, then tells it what to look for on its stdin.
   */
  function startReader(env: Record<string, string>) {
    const child = spawn(python, [join(ROOT, "test/fixtures/tracking/gateway_traces.py")], {
      env: { ...process.env, MLFLOW_TRACKING_URI: uri("default"), MLFLOW_TRACKING_TOKEN: loom.token, ...env },
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    return {
      ready: async () => {
        while (!out.includes("READY")) {
          if (child.exitCode !== null) throw new Error(out);
          await sleep(50);
        }
      },
      tell: async (v: unknown) => {
        child.stdin.end(`${JSON.stringify(v)}\n`);
        return { code: await exited, out };
      },
    };
  }

  beforeAll(async () => {
    python = mlflowPython();
    genai = genaiPython();
    const train = spawnSync(
      "/usr/bin/python3",
      ["examples/pretrain/train.py", "--steps", "20", "--checkpoint-every", "20", "--corpus-chars", "50000"],
      {
        cwd: ROOT,
        env: { ...process.env, LOOM_CHECKPOINT_DIR: modelDir },
        encoding: "utf8",
        timeout: 120_000,
      },
    );
    expect(train.status, train.stderr).toBe(0);
    await loom.start();
    const project = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: other}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: project })).code).toBe(0);
    const k = await loom.cli(["apikey", "create", "tracer", "-p", "default"]);
    expect(k.code, k.stderr).toBe(0);
    key = k.stdout.trim().split(/\s+/).at(-1)!;
    const t = await loom.cli(["token", "create", "dev-other", "-p", "other", "--role", "editor"]);
    expect(t.code, t.stderr).toBe(0);
    otherToken = t.stdout.trim();
    await create("traced", { tracing: true });
    await create("plain", {});
    await Promise.all([ready("traced"), ready("plain")]);
  }, 400_000);
  afterAll(async () => {
    // Replicas outlive `loom up` by design (re-adopted at its next start): delete them, or the
    // two tinygpt servers stay running after the test.
    await loom.cli(["delete", "isvc", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  it("a traced service's chat requests (plain and streamed) are found by key name, service and time, with prompt, completion, tokens, latency and revision; an untraced service records nothing; another project cannot see them", async () => {
    const openai = new OpenAI({ baseURL: `${loom.url}/v1`, apiKey: key });
    const reader = startReader({ SERVICE: "traced", CALLER: "tracer" });
    await reader.ready();
    const t0 = Date.now() - 1;
    const plainChat = await openai.chat.completions.create({
      model: "traced",
      messages: [{ role: "user", content: "Mira found the" }],
      max_tokens: 6,
      seed: 1,
    });
    const text = plainChat.choices[0]!.message.content ?? "";
    expect(plainChat.usage?.completion_tokens).toBeGreaterThan(0);
    let streamed = "";
    const stream = await openai.chat.completions.create({
      model: "traced",
      messages: [{ role: "user", content: "The tide log said" }],
      max_tokens: 6,
      seed: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
    const ended = Date.now();
    // The untraced service, called the same way, just before the search.
    await openai.chat.completions.create({
      model: "plain",
      messages: [{ role: "user", content: "untraced" }],
      max_tokens: 2,
    });
    const r = await reader.tell({
      t0,
      ended,
      expect: [
        { content: "Mira found the", text, streamed: false },
        { content: "The tide log said", text: streamed, streamed: true },
      ],
    });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/OK 27 checks/);
    console.log(
      `[gateway traces] found by search_traces ${/FOUND_AFTER_MS (\d+)/.exec(r.out)?.[1]} ms after the answer ended (loaded machine)`,
    );
    const expId = /EXPERIMENT (\d+)/.exec(r.out)![1]!;
    const traceId = /TRACE (\S+)/.exec(r.out)![1]!;

    // The untraced service: no experiment, no trace anywhere in the project.
    const none = await py(
      python,
      `
import mlflow, time
time.sleep(0.5)
print(mlflow.get_experiment_by_name("isvc/plain") is None)
print(len(mlflow.search_traces(locations=["${expId}"], filter_string="tags.\`loom.service\` = 'plain'", return_type="list")))`,
      uri("default"),
      loom.token,
    );
    expect(none.stdout.split("\n").slice(-2), none.out).toEqual(["True", "0"]);

    // Another project: its own URI sees nothing of it; default's URI refuses its token.
    const look = `
import mlflow
print(len(mlflow.search_traces(locations=["${expId}"], return_type="list")))
print(mlflow.get_trace("${traceId}") is None)`;
    const other = await py(python, look, uri("other"), otherToken);
    expect(other.code, other.out).toBe(0);
    expect(other.stdout.split("\n").slice(-2), other.out).toEqual(["0", "True"]);
    const cross = await py(python, look, uri("default"), otherToken);
    expect(cross.code, cross.out).not.toBe(0);
    expect(cross.out).toMatch(/403|PERMISSION_DENIED|not a member|may not/i);
  }, 240_000);

  it("mlflow.genai.evaluate: predict_fn calls the service through the openai client, custom scorers judge it; the run's metrics, its traces and their assessments read back; another project can neither read nor add assessments", async () => {
    const r = await py(genai, "test/fixtures/tracking/evaluate_suite.py", uri("default"), loom.token, {
      MODEL: "traced",
      OPENAI_BASE_URL: `${loom.url}/v1`,
      OPENAI_API_KEY: key,
    });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/OK \d+ checks/);
    console.log(
      `[genai.evaluate] 3 rows, 3 scorers: ${/EVALUATE_S (\S+)/.exec(r.out)?.[1]} s (loaded machine)`,
    );
    const traceId = /TRACE (\S+)/.exec(r.out)![1]!;
    const attack = `
import mlflow
mlflow.log_feedback(trace_id="${traceId}", name="forged", value=False)`;
    // With its own project's URI the trace does not exist; with default's, its token is refused.
    const own = await py(genai, attack, uri("other"), otherToken);
    expect(own.code, own.out).not.toBe(0);
    expect(own.out).toMatch(/not found|RESOURCE_DOES_NOT_EXIST/i);
    const cross = await py(genai, attack, uri("default"), otherToken);
    expect(cross.code, cross.out).not.toBe(0);
    expect(cross.out).toMatch(/403|PERMISSION_DENIED|not a member|may not/i);
    const names = await py(
      genai,
      `import mlflow\nprint(sorted(a.name for a in mlflow.get_trace("${traceId}").info.assessments))`,
      uri("default"),
      loom.token,
    );
    expect(names.stdout.split("\n").at(-1), names.out).toBe("['length', 'mentions', 'short', 'word']");
  }, 300_000);
});

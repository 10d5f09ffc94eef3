import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findProcessesByEnv } from "../src/platforms/embedded/procfs.js";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Zero-configuration access to the project's models (issue 20, point 3) on a real `loom up`: a
 * TrainingJob's and a Workspace's `openai.OpenAI()` (the official Python client, no arguments)
 * reaches the project's InferenceService through the gateway with a key Loom gives them as a
 * file; the key reaches no other project's service, is in no process's initial environment nor
 * in describe, events or logs, and is refused once the workload has ended or stopped.
 */
const BASE = "/apis/loom.dev/v1alpha1";
const OPENAI_PY = "openai==3.57.0";
const PY_VENV = join(homedir(), ".cache", "loom", "test-envs", OPENAI_PY.replace("==", "-"));

/** The official Python client, pinned, in the venv serving.e2e.test.ts shares (cached across runs). */
function openaiVenv(): string {
  if (!existsSync(join(PY_VENV, ".ready"))) {
    const python = join(PY_VENV, "bin", "python");
    for (const cmd of [
      ["python3", "-m", "venv", PY_VENV],
      [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", OPENAI_PY],
      ["touch", join(PY_VENV, ".ready")],
    ]) {
      const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 600_000 });
      if (r.status !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.error ?? ""}${r.stdout}${r.stderr}`);
    }
  }
  return PY_VENV;
}

/**
 * What the workload runs: the one-liner (OpenAI() with no arguments), then a call to the
 * other project's service, whether the key is in this process's initial environment or a child's,
 * and the key's digest (the test finds the key file by it; the key itself is never printed).
 */
const ASK = `
import hashlib, os, subprocess
from openai import OpenAI, APIStatusError
print("reply:", repr(OpenAI().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8).choices[0].message.content))
try:
    OpenAI(max_retries=0).chat.completions.create(model="other/theirs", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    print("cross: 200")
except APIStatusError as e:
    print("cross:", e.status_code)
key = open(os.environ["LOOM_OPENAI_KEY_FILE"]).read().strip()
print("initial-env:", key in open("/proc/self/environ", encoding="latin1").read())
print("child-env:", subprocess.run(["sh", "-c", 'echo "\${OPENAI_API_KEY:-unset}"'], capture_output=True, text=True).stdout.strip())
print("base:", os.environ["OPENAI_BASE_URL"])
print("digest:", hashlib.sha256(key.encode()).hexdigest())
`;

/** Every model key file Loom wrote for a workload (under its private HOME), by the key's digest. */
function keysOnDisk(dataDir: string): Map<string, string> {
  const out = new Map<string, string>();
  const root = join(dataDir, "workloads");
  for (const uid of readdirSync(root)) {
    const file = join(root, uid, "home", ".loom", "openai-key");
    if (!existsSync(file)) continue;
    const key = readFileSync(file, "utf8").trim();
    out.set(createHash("sha256").update(key).digest("hex"), key);
  }
  return out;
}

describe("model access from workloads (embedded)", () => {
  const loom = new LoomProcess();
  const modelDir = mkdtempSync(join(tmpdir(), "loom-modelaccess-model-"));
  chmodSync(modelDir, 0o755);
  let venv = "";

  const chat = async (key: string, model = "tiny") =>
    (
      await fetch(`${loom.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 1 }),
      })
    ).status;

  async function until(what: string, pred: () => Promise<boolean>, ms = 60_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await pred())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${loom.log.slice(-3000)}`);
      await sleep(100);
    }
  }

  async function isvc(name: string, project: string, min: number): Promise<void> {
    const r = await loom.api("POST", `${BASE}/projects/${project}/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name },
      spec: { model: modelDir, runtime: "loom-tinygpt", replicas: { min, max: 1 } },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }

  /** The lines `label: value` the workload printed. */
  const fields = (log: string) =>
    Object.fromEntries(
      [...log.matchAll(/^(reply|cross|initial-env|child-env|base|digest): (.*)$/gm)].map((m) => [m[1], m[2]]),
    );

  beforeAll(async () => {
    venv = openaiVenv();
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
    const other = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: other}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: other })).code).toBe(0);
    await isvc("tiny", "default", 1);
    await isvc("theirs", "other", 0);
    await until("tiny Ready", async () => {
      const r = await loom.api("GET", `${BASE}/projects/default/inferenceservices/tiny`);
      return (r.body as { status?: { phase?: string } }).status?.phase === "Ready";
    });
  }, 900_000);

  afterAll(async () => {
    await loom.cli(["delete", "ws", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.cli(["delete", "isvc", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.cli(["delete", "isvc", "--all", "-p", "other", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
    rmSync(modelDir, { recursive: true, force: true });
  }, 120_000);

  it("a TrainingJob's OpenAI() just works, for its project only; the key is a file nowhere else, refused once the job ends", async () => {
    // The job waits for `go` before it ends, so the test can look at its processes meanwhile.
    const script = `${ASK}\nimport time\nwhile not os.path.exists(os.path.join(os.environ["LOOM_WORKLOAD_DIR"], "go")): time.sleep(0.1)\n`;
    const job = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: asks}
spec:
  command: ${JSON.stringify(["python3", "-c", script])}
  python: {venv: ${venv}}
`;
    const applied = await loom.cli(["apply", "-f", "-"], { input: job });
    expect(applied.code, applied.stderr).toBe(0);
    let log = "";
    await until(
      "the job's digest line",
      async () => {
        const l = await loom.cli(["logs", "tj", "asks", "--worker", "0"]);
        log = l.stdout + l.stderr;
        const phase = (await loom.job("asks")).status?.phase;
        if (phase === "Failed") throw new Error(`job failed: ${log}`);
        return log.includes("digest:");
      },
      180_000,
    );
    const out = fields(log);
    console.log(`job: ${JSON.stringify({ ...out, digest: undefined })}`);
    expect(out.reply, log).toMatch(/^['"].*['"]$/s);
    expect(["403", "404"], log).toContain(out.cross);
    expect(out["initial-env"]).toBe("False");
    expect(out["child-env"]).toBe("unset");
    expect(out.base).toMatch(/^http:\/\/[\d.]+:\d+\/v1$/);
    const key = keysOnDisk(loom.dataDir).get(out.digest!)!;
    expect(key).toMatch(/^sk-loom-/);
    // The key works from here too (the same project), and is listed as the job's.
    expect(await chat(key)).toBe(200);
    expect([403, 404]).toContain(await chat(key, "other/theirs"));
    const keys = await loom.cli(["apikey", "list", "-p", "default"]);
    expect(keys.stdout).toContain("trainingjob/asks");
    // In no process's initial environment, nor in what Loom shows of the job.
    const procs = findProcessesByEnv("LOOM_WORKLOAD", "asks");
    expect(procs.length).toBeGreaterThan(0);
    for (const p of procs) {
      expect(p.env.get("LOOM_OPENAI_KEY_FILE")).toMatch(/\/\.loom\/openai-key$/);
      expect(readFileSync(`/proc/${p.pid}/environ`, "latin1")).not.toContain(key);
    }
    const describe = await loom.cli(["describe", "tj/asks"]);
    expect(describe.code, describe.stderr).toBe(0);
    const shown = describe.stdout + JSON.stringify(await loom.job("asks")) + log + loom.log;
    expect(shown).not.toContain(key);
    const uid = (await loom.job("asks")).metadata.uid;
    writeFileSync(join(loom.dataDir, "workloads", uid, "work", "go"), "");
    await loom.waitFor("asks", (j) => j.status?.phase === "Succeeded", 60_000);
    await until("the job's key refused", async () => (await chat(key)) === 401);
    expect((await loom.cli(["apikey", "list", "-p", "default"])).stdout).not.toContain("trainingjob/asks");
  }, 300_000);

  it("a Workspace's OpenAI() just works too, keeps its persistent home, and its key dies when it stops", async () => {
    const ws = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: asker}
spec:
  ide: none
  python: {venv: ${venv}}
  command: ${JSON.stringify(["sh", "-c", 'python3 -c "$ASK" > reply.txt 2>&1; exec python3 -m http.server $PORT --bind 127.0.0.1'])}
  env: {ASK: ${JSON.stringify(ASK)}}
`;
    const applied = await loom.cli(["apply", "-f", "-"], { input: ws });
    expect(applied.code, applied.stderr).toBe(0);
    type Ws = { status?: { phase?: string; replica?: { host?: string; port?: number } } };
    let w: Ws = {};
    await until(
      "the workspace Running",
      async () => {
        w = (await loom.api("GET", `${BASE}/projects/default/workspaces/asker`)).body as Ws;
        return w.status?.phase === "Running";
      },
      180_000,
    );
    // Served from the persistent home (its cwd and HOME), where the reply was written.
    const res = await fetch(`http://${w.status!.replica!.host}:${w.status!.replica!.port}/reply.txt`);
    expect(res.status).toBe(200);
    const text = await res.text();
    const out = fields(text);
    console.log(`workspace: ${JSON.stringify({ ...out, digest: undefined })}`);
    expect(out.reply, text).toMatch(/^['"].*['"]$/s);
    expect(["403", "404"], text).toContain(out.cross);
    expect(out["initial-env"]).toBe("False");
    expect(out["child-env"]).toBe("unset");
    const key = keysOnDisk(loom.dataDir).get(out.digest!)!;
    expect(key).toMatch(/^sk-loom-/);
    expect(await chat(key)).toBe(200);
    const describe = await loom.cli(["describe", "ws/asker"]);
    expect(describe.stdout + loom.log).not.toContain(key);
    for (const p of findProcessesByEnv("LOOM_WORKLOAD", "asker"))
      expect(readFileSync(`/proc/${p.pid}/environ`, "latin1")).not.toContain(key);
    expect((await loom.cli(["stop", "ws/asker"])).code).toBe(0);
    await until("the workspace's key refused", async () => (await chat(key)) === 401);
  }, 300_000);
});

import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findProcessesByEnv } from "../src/platforms/embedded/procfs.js";
import { alive, LoomProcess, ROOT } from "./helpers.js";

/**
 * Serving end to end on the embedded platform: InferenceServices of the built-in runtime
 * (loom-tinygpt, a tiny pretrained checkpoint) behind the gateway on Loom's port, reached with
 * the official OpenAI clients (Node and Python), scaled from and to zero, split between revisions,
 * rolled out and cut down under load, and kept to their project by API keys. Timings are
 * measured and logged, never asserted: a 2-core machine under other load decides them.
 */

const BASE = "/apis/loom.dev/v1alpha1";
/** The official Python client, pinned, in a venv cached across runs (like the MLflow one). */
const OPENAI_PY = "openai==3.57.0";
const PY_VENV = join(homedir(), ".cache", "loom", "test-envs", OPENAI_PY.replace("==", "-"));

interface Replica {
  id: string;
  uid: string;
  host?: string;
  port?: number;
  ready: boolean;
}
interface Isvc {
  metadata: { name: string; generation: number };
  spec: Record<string, unknown>;
  status?: {
    phase?: string;
    ready?: number;
    desired?: number;
    latestReadyRevision?: string;
    traffic?: { revision: string; percent: number }[];
    revisions?: { name: string; desired: number; ready: number; replicas?: Replica[] }[];
    scaleEvents?: { revision: string; from: number; to: number; reason: string }[];
  };
}

function pythonClient(): string {
  const python = join(PY_VENV, "bin", "python");
  if (!existsSync(join(PY_VENV, ".ready"))) {
    for (const cmd of [
      ["python3", "-m", "venv", PY_VENV],
      [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", OPENAI_PY],
      ["touch", join(PY_VENV, ".ready")],
    ]) {
      const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 600_000 });
      if (r.status !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.error ?? ""}${r.stdout}${r.stderr}`);
    }
  }
  return python;
}

/** The revision of a replica id NAME-N-rK. */
const revisionOf = (replica: string | null) => replica?.replace(/-r\d+$/, "") ?? "?";

describe("serving: InferenceServices behind the gateway (embedded)", () => {
  const loom = new LoomProcess();
  const modelDir = mkdtempSync(join(tmpdir(), "loom-serving-model-"));
  // Replicas run sandboxed as their project's uid: the model they are lent must be readable by it.
  chmodSync(modelDir, 0o755);
  let key = ""; // an API key of project default
  let tinyKey = ""; // one limited to the service "tiny"
  let otherKey = ""; // one of project "other"

  const isvcPath = (name: string, project = "default") =>
    `${BASE}/projects/${project}/inferenceservices/${name}`;

  async function create(name: string, spec: Record<string, unknown>, project = "default"): Promise<void> {
    const r = await loom.api("POST", `${BASE}/projects/${project}/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name },
      spec: { model: modelDir, runtime: "loom-tinygpt", ...spec },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }

  async function patch(name: string, spec: Record<string, unknown>): Promise<void> {
    const res = await fetch(`${loom.url}${isvcPath(name)}`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${loom.token}`, "content-type": "application/merge-patch+json" },
      body: JSON.stringify({ spec }),
    });
    expect(res.status, await res.text()).toBe(200);
  }

  async function get(name: string, project = "default"): Promise<Isvc> {
    const r = await loom.api("GET", isvcPath(name, project));
    if (r.status !== 200) throw new Error(`get ${name}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as Isvc;
  }

  async function waitIsvc(
    name: string,
    pred: (s: Isvc) => boolean,
    timeoutMs = 60_000,
    project = "default",
  ): Promise<Isvc> {
    const deadline = Date.now() + timeoutMs;
    let last: Isvc | undefined;
    while (Date.now() < deadline) {
      last = await get(name, project);
      if (pred(last)) return last;
      await sleep(100);
    }
    throw new Error(
      `timed out waiting for ${name}: ${JSON.stringify(last?.status, null, 1)}\n${loom.log.slice(-3000)}`,
    );
  }

  async function remove(name: string): Promise<void> {
    await loom.api("DELETE", isvcPath(name));
  }

  /** One completion through the gateway; the status and the replica that answered. */
  async function complete(
    model: string,
    opts: { apiKey?: string; maxTokens?: number; stream?: boolean } = {},
  ): Promise<{ status: number; replica: string | null; bytes: number; error?: string }> {
    let bytes = 0;
    try {
      const res = await fetch(`${loom.url}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${opts.apiKey ?? key}`, "content-type": "application/json" },
        body: JSON.stringify({
          model,
          prompt: "Mira found the",
          max_tokens: opts.maxTokens ?? 4,
          ...(opts.stream ? { stream: true } : {}),
        }),
        // A request the gateway never finishes is a failure to report, not a hang of the test.
        signal: AbortSignal.timeout(45_000),
      });
      // Bytes of an answer that began (status 200); an error response counts as none.
      const began = res.status === 200;
      if (began) bytes = 1;
      const reader = res.body!.getReader();
      let text = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (began) bytes += value.length;
        text += Buffer.from(value).toString();
      }
      if (opts.stream && res.status === 200 && !text.includes("data: [DONE]"))
        return { status: -1, replica: res.headers.get("x-loom-replica"), bytes, error: "stream cut off" };
      return {
        status: res.status,
        replica: res.headers.get("x-loom-replica"),
        bytes,
        ...(res.status === 200 ? {} : { error: text }),
      };
    } catch (err) {
      return { status: -1, replica: null, bytes, error: String((err as Error).cause ?? err) };
    }
  }

  /** `n` clients sending completions in a loop until `stop` says so. */
  function load(
    model: string,
    n: number,
    opts: { stream?: (client: number) => boolean; maxTokens?: number } = {},
  ): {
    stop: () => Promise<
      { stream: boolean; status: number; replica: string | null; bytes: number; error?: string }[]
    >;
  } {
    let stopped = false;
    const results: {
      stream: boolean;
      status: number;
      replica: string | null;
      bytes: number;
      error?: string;
    }[] = [];
    const clients = Array.from({ length: n }, async (_, i) => {
      const stream = opts.stream?.(i) ?? false;
      while (!stopped)
        results.push({ stream, ...(await complete(model, { stream, maxTokens: opts.maxTokens })) });
    });
    return {
      stop: async () => {
        stopped = true;
        await Promise.all(clients);
        return results;
      },
    };
  }

  const replicaProcesses = (service: string) =>
    findProcessesByEnv("LOOM_WORKLOAD", service).filter(
      (p) =>
        p.env.get("LOOM_WORKLOAD_KIND") === "InferenceService" && p.env.get("LOOM_PROJECT") === "default",
    );

  beforeAll(async () => {
    // A tiny pretrained checkpoint (ckpt.pt): the runtime serves it as the base model.
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
    const keys = await Promise.all([
      loom.cli(["apikey", "create", "app", "-p", "default"]),
      loom.cli(["apikey", "create", "tiny-only", "-p", "default", "--service", "tiny"]),
      loom.cli(["apikey", "create", "theirs", "-p", "other"]),
    ]);
    for (const k of keys) expect(k.code, k.stderr).toBe(0);
    [key, tinyKey, otherKey] = keys.map((k) => k.stdout.trim()) as [string, string, string];
    await create("tiny", { replicas: { min: 1, max: 1 } });
    await waitIsvc("tiny", (s) => s.status?.phase === "Ready");
  }, 120_000);

  afterAll(async () => {
    await loom.cli(["delete", "isvc", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.cli(["delete", "isvc", "--all", "-p", "other", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
    rmSync(modelDir, { recursive: true, force: true });
  }, 60_000);

  it("the official openai npm client: chat, completions, streaming with usage, models, 404 and 401", async () => {
    const client = new OpenAI({ baseURL: `${loom.url}/v1`, apiKey: key, maxRetries: 0 });
    const chat = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 8,
      temperature: 0,
    });
    expect(chat.object).toBe("chat.completion");
    expect(chat.choices[0]!.message.role).toBe("assistant");
    expect(chat.choices[0]!.message.content).toHaveLength(8);
    expect(chat.usage).toMatchObject({ completion_tokens: 8 });

    const completion = await client.completions.create({
      model: "tiny",
      prompt: "Mira found the",
      max_tokens: 6,
    });
    expect(completion.object).toBe("text_completion");
    expect(completion.choices[0]!.text).toHaveLength(6);
    expect(completion.usage?.prompt_tokens).toBe(14);

    // "PROJECT/NAME" reaches the same service.
    const qualified = await client.completions.create({ model: "default/tiny", prompt: "a", max_tokens: 1 });
    expect(qualified.choices[0]!.text).toHaveLength(1);

    const stream = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "tell me a story" }],
      max_tokens: 10,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.choices.length) text += chunk.choices[0]!.delta.content ?? "";
      else usage = chunk.usage;
    }
    expect(text).toHaveLength(10);
    expect(chunks).toBeGreaterThanOrEqual(12); // role, 10 characters, finish, usage
    expect(usage).toMatchObject({ completion_tokens: 10 });

    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    expect(models).toContain("tiny");

    const unknown = await client.chat.completions
      .create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect((unknown as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found");

    const badKey = await new OpenAI({ baseURL: `${loom.url}/v1`, apiKey: "not-a-key", maxRetries: 0 }).models
      .list()
      .catch((e: unknown) => e);
    expect(badKey).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((badKey as InstanceType<typeof OpenAI.AuthenticationError>).code).toBe("invalid_api_key");

    // No key at all: 401 in OpenAI's format.
    const none = await fetch(`${loom.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "x" }] }),
    });
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { type: string; code: string } }).error).toMatchObject({
      type: "authentication_error",
      code: "missing_api_key",
    });
  });

  it("the official openai Python client: chat, streaming with usage, models list", async () => {
    const python = pythonClient();
    const r = spawnSync(python, [join(ROOT, "test/fixtures/serving/openai_client.py")], {
      encoding: "utf8",
      env: { ...process.env, OPENAI_BASE_URL: `${loom.url}/v1`, OPENAI_API_KEY: key, MODEL: "tiny" },
      timeout: 60_000,
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout.trim().split("\n").at(-1)).toBe("OK");
    const checks = Object.fromEntries(
      r.stdout
        .trim()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { check: string })
        .map((c) => [c.check, c]),
    ) as Record<string, Record<string, unknown>>;
    expect(checks.chat).toMatchObject({ finish_reason: "length", completion_tokens: 8 });
    expect(checks.chat!.content).toHaveLength(8);
    expect(checks.stream).toMatchObject({ completion_tokens: 12 });
    expect(checks.stream!.text).toHaveLength(12);
    expect(checks.models!.ids).toContain("tiny");
    expect(checks.unknown).toMatchObject({ status: 404, error: "NotFoundError" });
  });

  it("scales from zero, back to zero, and takes a burst of 200 from zero without an error", async () => {
    await create("scale0", {
      replicas: { min: 0, max: 3 },
      autoscaling: { scaleToZeroAfter: "10s", scaleDownDelay: "5s" },
    });
    // A new revision proves itself ready once, then goes to zero when idle.
    await waitIsvc("scale0", (s) => s.status?.phase === "Ready");
    const t0 = Date.now();
    await waitIsvc("scale0", (s) => s.status?.phase === "ScaledToZero", 60_000);
    console.log(
      `scale0: ready → ScaledToZero in ${((Date.now() - t0) / 1000).toFixed(1)} s (scaleToZeroAfter 10s)`,
    );
    for (let i = 0; i < 100 && replicaProcesses("scale0").length > 0; i++) await sleep(100);
    expect(replicaProcesses("scale0")).toEqual([]);

    // One request from zero: held, a replica starts, it answers.
    const started = Date.now();
    const first = await complete("scale0");
    const coldMs = Date.now() - started;
    expect(first.status, first.error).toBe(200);
    expect(first.replica).toMatch(/^scale0-1-r\d+$/);
    console.log(`scale0: first request from zero answered in ${coldMs} ms`);

    // Idle again: back to zero after scaleToZeroAfter.
    const idleFrom = Date.now();
    await waitIsvc("scale0", (s) => s.status?.phase === "ScaledToZero" && s.status.desired === 0, 60_000);
    console.log(`scale0: back to zero ${((Date.now() - idleFrom) / 1000).toFixed(1)} s after the request`);
    for (let i = 0; i < 100 && replicaProcesses("scale0").length > 0; i++) await sleep(100);
    expect(replicaProcesses("scale0")).toEqual([]);

    // A burst of 200 concurrent requests from zero: all answered.
    let maxReplicas = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const s = await get("scale0");
        maxReplicas = Math.max(maxReplicas, s.status?.ready ?? 0);
        await sleep(200);
      }
    })();
    const burstStart = Date.now();
    const results = await Promise.all(
      Array.from({ length: 200 }, () => complete("scale0", { maxTokens: 8 })),
    );
    const burstMs = Date.now() - burstStart;
    const statuses: Record<string, number> = {};
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    const answeredBy = new Set(results.map((r) => r.replica));
    // The autoscaler may still be adding replicas the burst asked for.
    await sleep(3000);
    watching = false;
    await watcher;
    const after = await get("scale0");
    const events = (after.status?.scaleEvents ?? []).map((e) => `${e.from}→${e.to} (${e.reason})`);
    console.log(
      `scale0: burst of 200 from zero in ${burstMs} ms; statuses ${JSON.stringify(statuses)}; answered by ${answeredBy.size} replica(s); ` +
        `scaled to ${Math.max(maxReplicas, after.status?.ready ?? 0)} ready (desired now ${after.status?.desired}); scale events: ${events.join(", ")}`,
    );
    expect(statuses).toEqual({ 200: 200 });
    // describe shows the scale decisions and why.
    const described = (await loom.cli(["describe", "isvc", "scale0"])).stdout;
    expect(described).toMatch(/Scale events:\n\s+AGE\s+REVISION\s+FROM\s+TO\s+REASON/);
    expect(described).toMatch(/scale0-1\s+0\s+1\s+autoscaler: scale from zero/);
    expect(described).toMatch(/scale0-1\s+1\s+0\s+autoscaler: no requests for \d+ s/);
    expect(Math.max(...(after.status?.scaleEvents ?? []).map((e) => e.to))).toBeGreaterThanOrEqual(2);
    await remove("scale0");
  }, 150_000);

  it("splits traffic 90/10 between a revision and its canary", async () => {
    await create("canary", { replicas: { min: 1, max: 1 } });
    await waitIsvc("canary", (s) => s.status?.latestReadyRevision === "canary-1");
    // A change of env makes revision 2; the spec keeps 90% on revision 1.
    await patch("canary", {
      env: { CANARY: "1" },
      traffic: [
        { revision: "canary-1", percent: 90 },
        { revision: "latest", percent: 10 },
      ],
    });
    const ready = await waitIsvc(
      "canary",
      (s) => s.status?.latestReadyRevision === "canary-2" && (s.status.ready ?? 0) >= 2,
    );
    expect(ready.status?.traffic).toEqual([
      { revision: "canary-1", percent: 90 },
      { revision: "canary-2", percent: 10 },
    ]);
    const counts: Record<string, number> = {};
    let failed = 0;
    const queue = Array.from({ length: 1000 }, (_, i) => i);
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (queue.pop() !== undefined) {
          const r = await complete("canary", { maxTokens: 1 });
          if (r.status !== 200) failed++;
          const rev = revisionOf(r.replica);
          counts[rev] = (counts[rev] ?? 0) + 1;
        }
      }),
    );
    console.log(`canary: 1000 requests by revision ${JSON.stringify(counts)}`);
    expect(failed).toBe(0);
    expect(Math.abs((counts["canary-1"] ?? 0) - 900)).toBeLessThanOrEqual(30);
    expect(Math.abs((counts["canary-2"] ?? 0) - 100)).toBeLessThanOrEqual(30);
    await remove("canary");
  }, 90_000);

  it("rolls out a new revision under steady load without a failed request", async () => {
    await create("roll", { replicas: { min: 1, max: 1 } });
    await waitIsvc("roll", (s) => s.status?.phase === "Ready");
    const traffic = load("roll", 8, { maxTokens: 8 });
    await sleep(2000);
    const changedAt = Date.now();
    await patch("roll", { env: { ROLLOUT: "2" } });
    // The new revision serves and the old one's replicas are gone.
    await waitIsvc(
      "roll",
      (s) =>
        s.status?.latestReadyRevision === "roll-2" &&
        (s.status.revisions ?? []).every((r) => r.name === "roll-2" || (r.replicas ?? []).length === 0),
    );
    const switchedMs = Date.now() - changedAt;
    for (let i = 0; i < 100 && findProcessesByEnv("LOOM_REVISION", "roll-1").length > 0; i++)
      await sleep(100);
    expect(findProcessesByEnv("LOOM_REVISION", "roll-1")).toEqual([]);
    await sleep(2000);
    const results = await traffic.stop();
    const byRevision: Record<string, number> = {};
    for (const r of results) byRevision[revisionOf(r.replica)] = (byRevision[revisionOf(r.replica)] ?? 0) + 1;
    const failed = results.filter((r) => r.status !== 200);
    console.log(
      `rollout: ${results.length} requests (${JSON.stringify(byRevision)}), ${failed.length} failed; roll-2 serving alone ${switchedMs} ms after the change`,
    );
    expect(failed, JSON.stringify(failed.slice(0, 5))).toEqual([]);
    expect(byRevision["roll-1"]).toBeGreaterThan(0);
    expect(byRevision["roll-2"]).toBeGreaterThan(0);
    // Once switched, everything goes to roll-2.
    const last = results.slice(-16);
    expect(last.every((r) => revisionOf(r.replica) === "roll-2")).toBe(true);
    await remove("roll");
  }, 90_000);

  it("loses no request that had not started streaming when a replica is killed", async () => {
    await create("kill", { replicas: { min: 3, max: 3 } });
    const s = await waitIsvc("kill", (x) => x.status?.ready === 3);
    const victim = s.status!.revisions![0]!.replicas![1]!.id;
    // The replica's process group: the runtime's wrapper shell leads it, the server is in it.
    const procs = findProcessesByEnv("LOOM_REPLICA", victim);
    expect(procs.length, `no process for ${victim}`).toBeGreaterThan(0);
    // Half the clients stream (failures allowed only after bytes arrived), half do not.
    const traffic = load("kill", 8, { stream: (i) => i % 2 === 0, maxTokens: 24 });
    await sleep(1500);
    for (const p of procs) {
      try {
        process.kill(-p.pid, "SIGKILL");
      } catch {} // not a group leader
    }
    for (let i = 0; i < 50 && procs.some((p) => alive(p.pid)); i++) await sleep(20);
    expect(procs.filter((p) => alive(p.pid))).toEqual([]);
    const killedAt = Date.now();
    // Replaced: three ready again, the victim not among them.
    await waitIsvc(
      "kill",
      (x) => x.status?.ready === 3 && !(x.status.revisions?.[0]?.replicas ?? []).some((r) => r.id === victim),
    );
    const replacedMs = Date.now() - killedAt;
    await sleep(1000);
    const results = await traffic.stop();
    const failed = results.filter((r) => r.status !== 200);
    const beforeBytes = failed.filter((r) => !r.stream || r.bytes === 0);
    const midStream = failed.filter((r) => r.stream && r.bytes > 0);
    console.log(
      `kill: ${results.length} requests (${results.filter((r) => r.stream).length} streamed), ${failed.length} failed: ` +
        `${beforeBytes.length} before any byte or non-streamed, ${midStream.length} mid-stream; replaced in ${replacedMs} ms`,
    );
    expect(beforeBytes, JSON.stringify(beforeBytes.slice(0, 5))).toEqual([]);
    await remove("kill");
  }, 180_000);

  it("keeps API keys to their project, their services, and the gateway", async () => {
    await create("theirs", { replicas: { min: 0, max: 1 } }, "other");
    await waitIsvc("theirs", (s) => s.status?.revisions?.length === 1, 30_000, "other");
    const asKey = async (apiKey: string, model: string) => {
      const res = await fetch(`${loom.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 1 }),
      });
      return { status: res.status, body: (await res.json()) as { error?: { type: string; code: string } } };
    };
    // Project default's key: other's service is not reachable by its full name nor by its short one.
    const cross = await asKey(key, "other/theirs");
    expect([403, 404]).toContain(cross.status);
    expect(cross.body.error?.type).toMatch(/permission_error|invalid_request_error/);
    const short = await asKey(key, "theirs");
    expect(short.status).toBe(404);
    expect(short.body.error?.code).toBe("model_not_found");
    // And other's key cannot reach default's.
    const back = await asKey(otherKey, "default/tiny");
    expect([403, 404]).toContain(back.status);
    expect(back.body.error).toBeDefined();
    // The models list shows each key its own project's services only.
    const list = async (apiKey: string) => {
      const res = await fetch(`${loom.url}/v1/models`, { headers: { authorization: `Bearer ${apiKey}` } });
      return ((await res.json()) as { data: { id: string }[] }).data.map((m) => m.id);
    };
    expect(await list(otherKey)).toEqual(["theirs"]);
    expect(await list(key)).not.toContain("theirs");
    expect(await list(tinyKey)).toEqual(["tiny"]);

    // A key for --service tiny: tiny yes, another service of the same project no.
    expect((await asKey(tinyKey, "tiny")).status).toBe(200);
    await create("other-svc", { replicas: { min: 0, max: 1 } });
    await waitIsvc("other-svc", (s) => s.status?.revisions?.length === 1);
    const denied = await asKey(tinyKey, "other-svc");
    expect(denied.status).toBe(403);
    expect(denied.body.error?.type).toBe("permission_error");

    // No API key reaches Loom's API or MLflow.
    for (const [method, path, body] of [
      ["GET", `${BASE}/projects/default/inferenceservices`, undefined],
      ["GET", `${BASE}/projects/default/trainingjobs`, undefined],
      ["POST", `${BASE}/projects/default/apikeys`, { name: "escalate" }],
      ["POST", "/api/2.0/mlflow/experiments/search", {}],
      ["POST", "/mlflow/projects/default/api/2.0/mlflow/experiments/search", {}],
      ["GET", "/api/2.0/mlflow/registered-models/search", undefined],
    ] as const) {
      const r = await loom.api(method, path, body, key);
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(403);
    }
    await remove("other-svc");
  }, 60_000);

  it("per-endpoint routes reach any path of a service's runtime, with the same keys", async () => {
    const at = (path: string, apiKey?: string, init: RequestInit = {}) =>
      fetch(`${loom.url}${path}`, {
        ...init,
        headers: { ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}), ...(init.headers ?? {}) },
      });
    const health = await at("/serving/default/tiny/health", key);
    expect(health.status).toBe(200);
    expect(health.headers.get("x-loom-replica")).toBeTruthy();
    // The runtime's own paths, methods and bodies pass as they are.
    const models = await at("/serving/default/tiny/v1/models?x=1", key);
    expect(((await models.json()) as { data: { id: string }[] }).data.length).toBeGreaterThan(0);
    const completion = await at("/serving/default/tiny/v1/completions", key, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "hello", max_tokens: 2 }),
    });
    expect(completion.status).toBe(200);
    expect(((await completion.json()) as { choices: unknown[] }).choices).toHaveLength(1);
    // Keys: none, another project's, or one for another service.
    const none = await at("/serving/default/tiny/health");
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe("missing_api_key");
    expect((await at("/serving/default/tiny/health", otherKey)).status).toBe(403);
    expect((await at("/serving/default/nothing/health", key)).status).toBe(404);
    const bare = await at("/serving/default", key);
    expect(bare.status).toBe(400);
    expect(((await bare.json()) as { error: { message: string } }).error.message).toMatch(
      /use \/serving\/PROJECT\/SERVICE\/PATH/,
    );
  }, 60_000);

  it("loom get isvc, describe isvc and chat", async () => {
    const get = await loom.cli(["get", "isvc"]);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout).toMatch(/NAME\s+PHASE\s+READY\s+DESIRED\s+LATEST/);
    expect(get.stdout).toMatch(/tiny\s+Ready\s+1\s+1\s+tiny-1/);

    const described = await loom.cli(["describe", "isvc", "tiny"]);
    expect(described.code, described.stderr).toBe(0);
    console.log(described.stdout);
    expect(described.stdout).toMatch(/Revisions:\n\s+NAME\s+DESIRED\s+READY/);
    expect(described.stdout).toMatch(/tiny-1 \(latest ready\)\s+1\s+1/);
    expect(described.stdout).toMatch(/Traffic:\n\s+REVISION\s+PERCENT\n\s+tiny-1\s+100%/);
    expect(described.stdout).toMatch(/Replicas:\n\s+ID\s+REVISION\s+READY\s+ADDRESS/);
    // The host's loopback, or the replica's own network link where it has one (netns.ts).
    expect(described.stdout).toMatch(/tiny-1-r0\s+tiny-1\s+true\s+(127\.0\.0\.1|198\.1[89]\.\d+\.\d+):\d+/);
    expect(described.stdout).toMatch(/Scale events:/);
    expect(described.stdout).toMatch(/ReplicaReady/);

    const chat = await loom.cli(["chat", "tiny", "hello", "--max-tokens", "12"]);
    expect(chat.code, chat.stderr).toBe(0);
    expect(chat.stdout.replace(/\n$/, "")).toHaveLength(12);
  });
});

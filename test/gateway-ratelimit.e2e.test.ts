import type { ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * API keys' rate limits on a real `loom up` and a `loom gateway` replica following it, over real
 * HTTP and the openai client: 429 with Retry-After in OpenAI's shape, a tokens-per-minute budget
 * counted from responses' usage, a requests-per-minute budget shared by both gateways, and the
 * gateway replica's /metrics showing a project's token only that project's series.
 */
const BASE = "/apis/loom.dev/v1alpha1";

describe("API key rate limits across gateway replicas", () => {
  const loom = new LoomProcess();
  let replica: { proc: ChildProcess; url: string } | undefined;

  async function startGateway(): Promise<{ proc: ChildProcess; url: string }> {
    const tokenFile = join(loom.home, "gateway-token");
    writeFileSync(tokenFile, loom.token);
    const g = loom.cliBackground(["gateway", "--api", loom.url, "--token-file", tokenFile, "--port", "0"]);
    for (let i = 0; i < 200; i++) {
      const url = /serving at (\S+),/.exec(g.output())?.[1];
      if (url && (await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200)
        return { proc: g.proc, url };
      if (g.proc.exitCode !== null) break;
      await sleep(100);
    }
    throw new Error(`loom gateway did not start: ${g.output()}`);
  }

  async function apikey(name: string, body: Record<string, unknown>, project = "default"): Promise<string> {
    const r = await loom.api("POST", `${BASE}/projects/${project}/apikeys`, { name, ...body });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return (r.body as { key: string }).key;
  }

  const complete = async (url: string, key: string) => {
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "echo", prompt: "hi", max_tokens: 1 }),
    });
    const body = (await res.json()) as { error?: { type: string; code: string; message: string } };
    return { status: res.status, retryAfter: res.headers.get("retry-after"), body };
  };

  beforeAll(async () => {
    await loom.start();
    const r = await loom.api("POST", `${BASE}/projects/default/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name: "echo" },
      spec: {
        model: ROOT,
        // 2 tokens a completion (usage 1 + 1), answered at once.
        runtime: {
          command: ["python3", join(ROOT, "test/fixtures/serving/slow_server.py")],
          env: { SLOW_SECONDS: "0" },
        },
        replicas: { min: 1, max: 1 },
        readiness: { path: "/health", timeoutSeconds: 30 },
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const warm = await apikey("warm", {});
    let s = 0;
    for (let i = 0; i < 600 && s !== 200; i++) {
      s = (await complete(loom.url, warm)).status;
      if (s !== 200) await sleep(100);
    }
    expect(s).toBe(200);
    replica = await startGateway();
  }, 120_000);

  afterAll(async () => {
    replica?.proc.kill("SIGTERM");
    await loom.cli(["delete", "isvc", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  }, 60_000);

  it("refuses a malformed rateLimit when the key is created", async () => {
    for (const rateLimit of [{ requestsPerMinute: 0 }, { requestsPerMinute: 1.5 }, { perHour: 3 }, "10"]) {
      const r = await loom.api("POST", `${BASE}/projects/default/apikeys`, { name: "bad", rateLimit });
      expect(r.status).toBe(400);
      expect(JSON.stringify(r.body)).toMatch(/rateLimit must be/);
    }
  });

  it("tokens per minute: counted from each response's usage; the openai client sees a RateLimitError", async () => {
    const key = await apikey("tpm", { rateLimit: { tokensPerMinute: 6 } });
    const client = new OpenAI({ baseURL: `${replica!.url}/v1`, apiKey: key, maxRetries: 0 });
    // 2 tokens each: three fit, the fourth finds the budget spent.
    for (let i = 0; i < 3; i++) {
      const c = await client.completions.create({ model: "echo", prompt: "hi", max_tokens: 1 });
      expect(c.usage?.total_tokens).toBe(2);
    }
    const err = await client.completions
      .create({ model: "echo", prompt: "hi", max_tokens: 1 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.code).toBe("rate_limit_exceeded");
    expect(e.type).toBe("rate_limit_error");
    expect(e.message).toMatch(/6 tokens per minute/);
    expect(Number(e.headers?.get?.("retry-after"))).toBeGreaterThanOrEqual(1);
  }, 60_000);

  it("requests per minute: one budget for both gateways", async () => {
    const limit = 20;
    const key = await apikey("rpm", { rateLimit: { requestsPerMinute: limit } });
    // Loom's own gateway alone: exactly the limit, then 429 with Retry-After.
    let atLoom = 0;
    let refused = await complete(loom.url, key);
    while (refused.status === 200) {
      atLoom++;
      refused = await complete(loom.url, key);
    }
    expect(atLoom).toBe(limit);
    expect(refused.status).toBe(429);
    expect(Number(refused.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(refused.body.error).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
    // The replica learns of those within a report (each second); until then it may admit a few
    // of its own. Without sharing it would admit all 20.
    let atReplica = 0;
    let last = 0;
    for (let i = 0; i < 40; i++) {
      last = (await complete(replica!.url, key)).status;
      if (last !== 200) break;
      atReplica++;
      await sleep(250);
    }
    console.log(
      `rate limit ${limit}/min: Loom's gateway admitted ${atLoom}, then the replica ${atReplica} more`,
    );
    expect(last).toBe(429);
    expect(atReplica).toBeLessThan(limit);
    // And back: what the replica admitted counts at Loom's gateway too.
    expect((await complete(loom.url, key)).status).toBe(429);
  }, 60_000);

  it("the replica's /metrics: a token is needed, and a project's token sees only its project", async () => {
    const other = await loom.api("POST", `${BASE}/projects`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "other" },
      spec: {},
    });
    expect([201, 409]).toContain(other.status);
    const otherKey = await apikey("other", {}, "other");
    expect((await fetch(`${replica!.url}/metrics`)).status).toBe(401);
    const all = await (
      await fetch(`${replica!.url}/metrics`, { headers: { authorization: `Bearer ${loom.token}` } })
    ).text();
    expect(all).toContain('project="default"');
    const res = await fetch(`${replica!.url}/metrics`, { headers: { authorization: `Bearer ${otherKey}` } });
    expect(res.status).toBe(200);
    const mine = await res.text();
    expect(mine).not.toContain('project="default"');
    expect(mine).not.toContain('service="echo"');
  }, 30_000);
});

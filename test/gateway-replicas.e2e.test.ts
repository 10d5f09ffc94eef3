import type { ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Several gateways, one autoscaler: `loom gateway` processes (what the loom-gateway Deployment
 * runs on Kubernetes; one of them with two workers on one port) follow a real `loom up`. Each carries part of the load; Loom's
 * own gateway must scale on the sum, and a request at zero replicas held by either one must
 * wake the service.
 */
const BASE = "/apis/loom.dev/v1alpha1";

describe("gateway replicas share one autoscaler", () => {
  const loom = new LoomProcess();
  const gateways: { proc: ChildProcess; url: string }[] = [];
  let key = "";

  async function startGateway(
    args: string[] = ["--port", "0"],
  ): Promise<{ proc: ChildProcess; url: string }> {
    const tokenFile = join(loom.home, "gateway-token");
    writeFileSync(tokenFile, loom.token);
    const g = loom.cliBackground(["gateway", "--api", loom.url, "--token-file", tokenFile, ...args]);
    for (let i = 0; i < 200; i++) {
      const url = /serving at (\S+),/.exec(g.output())?.[1];
      // With --workers, the primary speaks before its workers listen.
      if (url && (await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200)
        return { proc: g.proc, url };
      if (g.proc.exitCode !== null) break;
      await sleep(100);
    }
    throw new Error(`loom gateway did not start: ${g.output()}`);
  }

  async function freePort(): Promise<number> {
    const s = createServer();
    await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
    const port = (s.address() as AddressInfo).port;
    await new Promise<void>((resolve) => s.close(() => resolve()));
    return port;
  }

  const status = async () =>
    (await loom.api("GET", `${BASE}/projects/default/inferenceservices/slow`)).body as {
      status?: { desired?: number; ready?: number };
    };

  const complete = async (url: string) => {
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "slow", prompt: "hi", max_tokens: 1 }),
    });
    await res.arrayBuffer();
    return res.status;
  };

  beforeAll(async () => {
    await loom.start();
    const k = await loom.cli(["apikey", "create", "app", "-p", "default"]);
    expect(k.code, k.stderr).toBe(0);
    key = k.stdout.trim();
    const r = await loom.api("POST", `${BASE}/projects/default/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name: "slow" },
      spec: {
        model: ROOT,
        runtime: {
          command: ["python3", join(ROOT, "test/fixtures/serving/slow_server.py")],
          env: { SLOW_SECONDS: "1" },
        },
        replicas: { min: 0, max: 4 },
        autoscaling: { targetConcurrency: 1, scaleDownDelay: "1s", scaleToZeroAfter: "4s" },
        readiness: { path: "/health", timeoutSeconds: 30 },
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    // One gateway, and one of two worker processes sharing a port: three reporters in all.
    gateways.push(
      await startGateway(),
      await startGateway(["--workers", "2", "--port", String(await freePort())]),
    );
  }, 120_000);

  afterAll(async () => {
    for (const g of gateways) g.proc.kill("SIGTERM");
    await loom.cli(["delete", "isvc", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  }, 60_000);

  it("serves keys and models like Loom's own port, and refuses what is not the gateway's", async () => {
    const [a] = gateways;
    expect((await fetch(`${a!.url}/healthz`)).status).toBe(200);
    const models = await fetch(`${a!.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    expect(((await models.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toEqual(["slow"]);
    const none = await fetch(`${a!.url}/v1/completions`, { method: "POST", body: "{}" });
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe("missing_api_key");
    const bad = await fetch(`${a!.url}/v1/models`, { headers: { authorization: "Bearer sk-loom-nope" } });
    expect(bad.status).toBe(401);
    // A project API key cannot use the control routes on Loom's API either.
    const control = await loom.api("GET", "/gateway/v1/endpoints", undefined, key);
    expect(control.status).toBe(403);
  }, 30_000);

  it("a request held at another gateway wakes a service at zero", async () => {
    let s = await status();
    for (let i = 0; i < 300 && (s.status?.desired !== 0 || s.status?.ready !== 0); i++) {
      await sleep(100);
      s = await status();
    }
    expect(s.status).toMatchObject({ desired: 0, ready: 0 });
    expect(await complete(gateways[1]!.url)).toBe(200);
  }, 60_000);

  it("scales on the load of both gateways, then back to zero", async () => {
    // Two clients on each gateway, each request 1 s: 4 in flight in all, target 1 per replica.
    // Loom's own port carries nothing, so only the reports can make it want more than 1.
    let stop = false;
    const statuses: number[] = [];
    const clients = gateways.flatMap((g) =>
      [0, 1].map(async () => {
        while (!stop) statuses.push(await complete(g.url));
      }),
    );
    let most = 0;
    for (let i = 0; i < 150 && most < 4; i++) {
      await sleep(200);
      most = Math.max(most, (await status()).status?.desired ?? 0);
    }
    stop = true;
    await Promise.all(clients);
    console.log(`gateways: ${statuses.length} requests, most desired replicas ${most}`);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(most).toBe(4);
    // Reports stop when the load does: the service goes back to zero.
    let desired = most;
    for (let i = 0; i < 300 && desired !== 0; i++) {
      await sleep(200);
      desired = (await status()).status?.desired ?? -1;
    }
    expect(desired).toBe(0);
  }, 120_000);

  it("a tracing service's chat requests through the gateway nodes are recorded, found with search_traces; a key cannot report traces, nor anyone for a service that does not trace", async () => {
    const r = await loom.api("POST", `${BASE}/projects/default/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name: "traced" },
      spec: {
        model: ROOT,
        tracing: true,
        runtime: {
          command: ["python3", join(ROOT, "test/fixtures/serving/slow_server.py")],
          env: { SLOW_SECONDS: "0" },
        },
        replicas: { min: 1, max: 1 },
        readiness: { path: "/health", timeoutSeconds: 30 },
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const chat = async (url: string, content: string) => {
      const res = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "traced", messages: [{ role: "user", content }] }),
      });
      await res.arrayBuffer();
      return res.status;
    };
    // Each node follows the endpoint table: the first 200 says it knows the service (and that it traces).
    for (const g of gateways) {
      let code = 0;
      for (let i = 0; i < 300 && code !== 200; i++) {
        code = await chat(g.url, "warm-up");
        if (code !== 200) await sleep(200);
      }
      expect(code).toBe(200);
    }
    for (const [i, g] of gateways.entries()) expect(await chat(g.url, `from gateway ${i}`)).toBe(200);

    const mlflow = `${loom.url}/mlflow/projects/default/api`;
    const headers = { authorization: `Bearer ${loom.token}`, "content-type": "application/json" };
    type Found = { request_preview?: string; tags: Record<string, string> };
    let found: Found[] = [];
    for (let i = 0; i < 150 && found.length < gateways.length; i++) {
      const exp = await fetch(`${mlflow}/2.0/mlflow/experiments/get-by-name?experiment_name=isvc%2Ftraced`, {
        headers,
      });
      if (exp.status === 200) {
        const id = ((await exp.json()) as { experiment: { experiment_id: string } }).experiment.experiment_id;
        const search = await fetch(`${mlflow}/3.0/mlflow/traces/search`, {
          method: "POST",
          headers,
          body: JSON.stringify({
            locations: [{ type: "MLFLOW_EXPERIMENT", mlflow_experiment: { experiment_id: id } }],
            filter: "tags.`loom.caller` = 'app'",
            max_results: 100,
          }),
        });
        const traces = ((await search.json()) as { traces?: Found[] }).traces ?? [];
        found = traces.filter((t) => t.request_preview?.includes("from gateway"));
      }
      if (found.length < gateways.length) await sleep(200);
    }
    expect(found.map((t) => /from gateway \d/.exec(t.request_preview!)?.[0]).sort()).toEqual(
      gateways.map((_, i) => `from gateway ${i}`),
    );
    for (const t of found)
      expect(t.tags).toMatchObject({ "loom.service": "traced", "loom.caller": "app", "loom.status": "200" });
    // The model version is the API's to say (a node's table has none): filled in on receipt.
    expect(found.map((t) => t.tags["loom.model"]).every(Boolean), JSON.stringify(found)).toBe(true);

    const item = {
      project: "default",
      service: "slow",
      revision: "slow-1",
      caller: "forged",
      status: 200,
      startedMs: Date.now(),
      endedMs: Date.now(),
      complete: true,
      request: [0, 2],
      response: [2, 2],
    };
    const report = { gateway: "forger", items: [item], data: Buffer.from("{}{}").toString("base64") };
    // A project API key is not a gateway's credential.
    expect((await loom.api("POST", "/gateway/v1/traces", report, key)).status).toBe(403);
    // A service without spec.tracing records nothing, whoever reports it.
    const untraced = await loom.api("POST", "/gateway/v1/traces", report);
    expect(untraced.status).toBe(200);
    expect(untraced.body).toEqual({ recorded: 0, refused: 1 });
    // A body outside the report's bytes is refused, not read.
    const forged = { ...report, items: [{ ...item, service: "traced", response: [2, 4096] }] };
    const outside = await loom.api("POST", "/gateway/v1/traces", forged);
    expect(outside.status, JSON.stringify(outside.body)).toBe(400);
  }, 120_000);
});

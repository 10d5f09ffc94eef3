import { Agent, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import Fastify from "fastify";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { closeUpstreams, deadPort, listen } from "../../test/upstreams.js";
import {
  type EndpointDirectory,
  Gateway,
  type GatewayOptions,
  promptPrefix,
  type ReplicaEndpoint,
  type ScaleTarget,
  type ServiceEndpoint,
} from "./gateway.js";

/**
 * The gateway in front of real node:http upstreams on 127.0.0.1. No latency assertions: ordering
 * and counts only, with generous waits, so a busy two-core machine cannot make these flake.
 */

const gateways: Gateway[] = [];
const clientAgent = new Agent({ keepAlive: true, maxSockets: 64 });

afterEach(async () => {
  for (const g of gateways.splice(0)) g.close();
  await closeUpstreams();
});

async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const replica = (id: string, port: number, ready = true): ReplicaEndpoint => ({
  id,
  host: "127.0.0.1",
  port,
  ready,
});

function service(
  revisions: ServiceEndpoint["revisions"],
  extra: Partial<ServiceEndpoint> = {},
): ServiceEndpoint {
  return {
    project: "team",
    service: "llama",
    revisions,
    autoscaling: { minReplicas: 0, maxReplicas: 5, targetConcurrency: 4 },
    ...extra,
  };
}

/** A gateway on its own port, with a mutable directory and a recording scaler. */
async function setup(endpoint: ServiceEndpoint, options: GatewayOptions = {}, random?: () => number) {
  const state = { endpoint };
  const directory: EndpointDirectory = {
    resolve: (model) => (model === "llama" ? state.endpoint : undefined),
  };
  const scaled: { target: ScaleTarget; n: number; reason: string }[] = [];
  const registry = new Registry();
  const gw = new Gateway(
    {
      directory,
      scaler: { setDesired: (target, n, reason) => void scaled.push({ target, n, reason }) },
      registry,
      random,
    },
    options,
  );
  gateways.push(gw);
  const port = await listen((req, res) => {
    void gw.handle(req, res, {
      authorize: () => req.headers["x-deny"] === undefined,
    });
  });
  return {
    gw,
    port,
    scaled,
    registry,
    state,
    setEndpoint(ep: ServiceEndpoint) {
      state.endpoint = ep;
      gw.update(ep);
    },
    async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
      const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
      const vals = (m?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
      return vals
        .filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))
        .reduce((a, v) => a + v.value, 0);
    },
  };
}

interface Reply {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
}

function post(port: number, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/v1/chat/completions",
        headers: { "content-type": "application/json", ...headers },
        agent: clientAgent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(typeof body === "string" ? body : JSON.stringify(body));
  });
}

const chat = { model: "llama", messages: [{ role: "user", content: "hi" }] };

describe("Gateway", () => {
  it("spreads slow requests by least outstanding", async () => {
    const held: { name: string; res: ServerResponse }[] = [];
    const ports = await Promise.all(
      ["a", "b", "c"].map((name) =>
        listen((req, res) => {
          req.resume();
          held.push({ name, res });
        }),
      ),
    );
    const t = await setup(
      service([{ name: "v1", weight: 100, replicas: ports.map((p, i) => replica(`r${i}`, p)) }]),
    );
    const replies = Array.from({ length: 6 }, () => post(t.port, chat));
    await until(() => held.length === 6, "six requests upstream");
    const per = ["a", "b", "c"].map((n) => held.filter((h) => h.name === n).length);
    expect(per).toEqual([2, 2, 2]);
    expect(await t.metric("loom_gateway_in_flight_requests")).toBe(6);
    for (const h of held) h.res.end("ok");
    const rs = await Promise.all(replies);
    expect(rs.every((r) => r.status === 200)).toBe(true);
    // The client can see the end a moment before the gateway's bookkeeping runs.
    await expect.poll(() => t.metric("loom_gateway_in_flight_requests")).toBe(0);
    await expect.poll(() => t.metric("loom_gateway_requests_total", { code: "200", revision: "v1" })).toBe(6);
  });

  it("retries a dead replica's requests on another and ejects it", async () => {
    const dead = await deadPort();
    let served = 0;
    const live = await listen((req, res) => {
      req.resume();
      served++;
      res.end("ok");
    });
    // random() = 0 picks the first of equally loaded replicas: the dead one, until it is ejected.
    const t = await setup(
      service([{ name: "v1", weight: 1, replicas: [replica("dead", dead), replica("live", live)] }]),
      { ejection: { consecutiveFailures: 3, baseEjectionMs: 60_000 } },
      () => 0,
    );
    for (let i = 0; i < 10; i++) {
      const r = await post(t.port, chat);
      expect(r.status).toBe(200);
      expect(r.headers["x-loom-replica"]).toBe("live");
    }
    expect(served).toBe(10);
    expect(await t.metric("loom_gateway_retries_total", { reason: "ECONNREFUSED" })).toBe(3);
    expect(await t.metric("loom_gateway_replica_ejections_total")).toBe(1);
  });

  it("sends a request whose revision's replicas all fail before answering to another revision in traffic", async () => {
    const live = await listen((req, res) => {
      req.resume();
      res.end("from v2");
    });
    // Smooth weighted round robin gives the first request to v1, the heavier one: its only
    // replica is gone, as during a rollout that stops it while v2 takes the traffic.
    const t = await setup(
      service([
        { name: "v1", weight: 90, replicas: [replica("old", await deadPort())] },
        { name: "v2", weight: 10, replicas: [replica("new", live)] },
      ]),
    );
    const r = await post(t.port, chat);
    expect(r.status).toBe(200);
    expect(r.body).toBe("from v2");
    expect(r.headers["x-loom-replica"]).toBe("new");
  });

  it("passes server-sent events through chunk by chunk", async () => {
    let release!: () => void;
    const clientSawFirst = new Promise<void>((r) => {
      release = r;
    });
    const events: string[] = [];
    const up = await listen(async (req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.write('data: {"choices":[{"delta":{"content":"Hel"}}],"usage":null}\n\n');
      events.push("upstream sent first");
      // A buffering proxy would deadlock here: the client never sees the first chunk.
      await Promise.race([clientSawFirst, sleep(15_000)]);
      events.push("upstream sends last");
      res.write('data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}\n\n');
      res.end("data: [DONE]\n\n");
    });
    const t = await setup(service([{ name: "v1", weight: 1, replicas: [replica("r0", up)] }]));
    const body = await new Promise<string>((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port: t.port, method: "POST", path: "/v1/chat/completions", agent: clientAgent },
        (res) => {
          expect(res.headers["content-type"]).toBe("text/event-stream");
          let text = "";
          res.on("data", (c: Buffer) => {
            if (!text) {
              events.push("client got first");
              release();
            }
            text += c.toString();
          });
          res.on("end", () => resolve(text));
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify({ ...chat, stream: true }));
    });
    expect(events).toEqual(["upstream sent first", "client got first", "upstream sends last"]);
    expect(body).toContain("[DONE]");
    await expect.poll(() => t.metric("loom_gateway_tokens_total", { kind: "prompt" })).toBe(9);
    expect(await t.metric("loom_gateway_tokens_total", { kind: "completion" })).toBe(2);
  });

  it("aborts the upstream request when the client disconnects", async () => {
    let upstreamGot = false;
    let upstreamClosed = false;
    const up = await listen((req, res) => {
      req.resume();
      upstreamGot = true;
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: 1\n\n");
      res.on("close", () => {
        upstreamClosed = true;
      });
    });
    const t = await setup(service([{ name: "v1", weight: 1, replicas: [replica("r0", up)] }]));
    const req = request({
      host: "127.0.0.1",
      port: t.port,
      method: "POST",
      path: "/v1/chat/completions",
      agent: false,
    });
    req.on("error", () => {});
    req.on("response", (res) => res.once("data", () => req.destroy()));
    req.end(JSON.stringify(chat));
    await until(() => upstreamGot, "the upstream to get the request");
    await until(() => upstreamClosed, "the upstream request to be aborted");
    await expect.poll(() => t.metric("loom_gateway_requests_total", { code: "499" })).toBe(1);
    expect(await t.metric("loom_gateway_in_flight_requests")).toBe(0);
  });

  it("holds a request at zero replicas, scales from zero, and releases it when a replica is ready", async () => {
    const up = await listen((req, res) => {
      req.resume();
      res.end("warm now");
    });
    const cold = service([{ name: "v1", weight: 1, replicas: [] }]);
    const t = await setup(cold);
    const reply = post(t.port, chat);
    await until(() => t.gw.activator.depth("team/llama/v1") === 1, "the request to be held");
    expect(t.scaled).toEqual([
      {
        target: { project: "team", service: "llama", revision: "v1" },
        n: 1,
        reason: expect.stringMatching(/scale from zero/),
      },
    ]);
    // A replica that is not ready yet releases nothing.
    t.setEndpoint(service([{ name: "v1", weight: 1, replicas: [replica("r0", up, false)] }]));
    await sleep(20);
    expect(t.gw.activator.depth("team/llama/v1")).toBe(1);
    t.setEndpoint(service([{ name: "v1", weight: 1, replicas: [replica("r0", up)] }]));
    const r = await reply;
    expect(r.status).toBe(200);
    expect(r.body).toBe("warm now");
    expect(await t.metric("loom_gateway_activator_wait_seconds", { result: "released" })).toBeGreaterThan(0);
  });

  it("refuses with an OpenAI-format 503 when the hold queue is full", async () => {
    const t = await setup(service([{ name: "v1", weight: 1, replicas: [] }]), { activator: { capacity: 1 } });
    const first = post(t.port, chat);
    await until(() => t.gw.activator.depth("team/llama/v1") === 1, "the first request to be held");
    const r = await post(t.port, chat);
    expect(r.status).toBe(503);
    expect(r.headers["content-type"]).toBe("application/json");
    expect(Number(r.headers["retry-after"])).toBeGreaterThan(0);
    const e = JSON.parse(r.body).error;
    expect(e).toMatchObject({ type: "server_error", code: "model_overloaded", param: null });
    expect(e.message).toMatch(/model 'llama' is starting/);
    t.gw.close();
    expect((await first).status).toBe(503);
  });

  it("splits 90/10 between revisions over 1,000 requests", async () => {
    const hits = { stable: 0, canary: 0 };
    const mk = (name: keyof typeof hits) =>
      listen((req, res) => {
        req.resume();
        hits[name]++;
        res.end(name);
      });
    const [s, c] = await Promise.all([mk("stable"), mk("canary")]);
    const t = await setup(
      service([
        { name: "stable", weight: 90, replicas: [replica("s0", s)] },
        { name: "canary", weight: 10, replicas: [replica("c0", c)] },
      ]),
    );
    let next = 0;
    const worker = async () => {
      while (next < 1000) {
        next++;
        expect((await post(t.port, chat)).status).toBe(200);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(hits.stable + hits.canary).toBe(1000);
    expect(Math.abs(hits.canary - 100)).toBeLessThanOrEqual(30);
    await expect
      .poll(() => t.metric("loom_gateway_requests_total", { revision: "canary" }))
      .toBe(hits.canary);
  });

  it("answers unknown models with 404, forbidden ones with 403 and bad bodies with 400, OpenAI-style", async () => {
    const t = await setup(service([{ name: "v1", weight: 1, replicas: [] }]));
    const unknown = await post(t.port, { model: "gpt-9" });
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body).error).toMatchObject({
      type: "invalid_request_error",
      code: "model_not_found",
      param: "model",
    });
    const denied = await post(t.port, chat, { "x-deny": "1" });
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body).error.type).toBe("permission_error");
    expect((await post(t.port, "{not json")).status).toBe(400);
    const noModel = await post(t.port, { messages: [] });
    expect(noModel.status).toBe(400);
    expect(JSON.parse(noModel.body).error.param).toBe("model");
    // None of these reached the activator.
    expect(t.scaled).toEqual([]);
  });

  it("a held request for a deleted service gets a 404", async () => {
    const t = await setup(service([{ name: "v1", weight: 1, replicas: [] }]));
    const reply = post(t.port, chat);
    await until(() => t.gw.activator.depth("team/llama/v1") === 1, "the request to be held");
    t.gw.remove("team", "llama");
    const r = await reply;
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error.code).toBe("model_not_found");
  });

  it("releases a held request on the tick even if update() was never called", async () => {
    const up = await listen((req, res) => {
      req.resume();
      res.end("ok");
    });
    const t = await setup(service([{ name: "v1", weight: 1, replicas: [] }]));
    const reply = post(t.port, chat);
    await until(() => t.gw.activator.depth("team/llama/v1") === 1, "the request to be held");
    await t.gw.tick(); // still cold: nothing happens
    expect(t.gw.activator.depth("team/llama/v1")).toBe(1);
    // Change the directory only, as an integrator that missed an update() would.
    t.state.endpoint = service([{ name: "v1", weight: 1, replicas: [replica("r0", up)] }]);
    await t.gw.tick();
    expect((await reply).status).toBe(200);
  });

  it("turns autoscaler decisions into Scaler calls on tick", async () => {
    const up = await listen((req, res) => {
      req.resume();
      res.end("ok");
    });
    let now = 1_000_000;
    const scaled: number[] = [];
    const ep = service([{ name: "v1", weight: 1, replicas: [replica("r0", up)] }], {
      autoscaling: { minReplicas: 0, maxReplicas: 3, targetConcurrency: 1, scaleToZeroAfterMs: 30_000 },
    });
    const gw = new Gateway({
      directory: { resolve: () => ep },
      scaler: { setDesired: (_t, n) => void scaled.push(n) },
      registry: new Registry(),
      now: () => now,
    });
    gateways.push(gw);
    gw.update(ep);
    await gw.tick();
    now += 31_000;
    await gw.tick();
    expect(scaled).toEqual([1, 0]);
  });

  it("several gateways: followers report their load, the deciding one scales on the sum", async () => {
    let now = 1_000_000;
    const ep = service([{ name: "v1", weight: 1, replicas: [replica("r0", 1)] }], {
      autoscaling: { minReplicas: 0, maxReplicas: 10, targetConcurrency: 1 },
    });
    const decided: number[] = [];
    const leader = new Gateway({
      directory: { resolve: () => ep },
      scaler: { setDesired: (_t, n) => void decided.push(n) },
      registry: new Registry(),
      now: () => now,
    });
    const woken: number[] = [];
    const follower = new Gateway(
      {
        directory: { resolve: () => ep },
        scaler: { setDesired: (_t, n) => void woken.push(n) },
        registry: new Registry(),
        now: () => now,
      },
      { autoscale: false },
    );
    gateways.push(leader, follower);
    leader.update(ep);
    follower.update(ep);
    // Two followers each carry 3 requests, reporting every second for 10 s (longer than the
    // 6 s panic window); the leader carries none itself.
    for (let s = 0; s < 10; s++) {
      now += 1000;
      for (const source of ["gw-a", "gw-b"])
        leader.recordRemote(source, {
          project: "team",
          service: "llama",
          revision: "v1",
          concurrency: 3,
          held: 0,
        });
    }
    await leader.tick();
    expect(decided.at(-1)).toBe(6);
    // A follower decides nothing on its tick.
    await follower.tick();
    expect(woken).toEqual([]);
    // Its report is the time-weighted average over the window: nothing in flight here.
    expect(follower.takeReport()).toEqual([]);
    // Reports that stop coming are forgotten.
    now += 6000;
    await leader.tick();
    now += 61_000;
    await leader.tick();
    expect(decided.at(-1)).toBeLessThan(6);
  });

  it("a follower reports the load it carried, then one zero, then nothing", async () => {
    const up = await listen((req, res) => {
      req.resume();
      setTimeout(() => res.end('{"ok":true}'), 100);
    });
    const t = await setup(service([{ name: "v1", weight: 1, replicas: [replica("r0", up)] }]), {
      autoscale: false,
    });
    t.gw.update(t.state.endpoint);
    t.gw.takeReport(); // start a window
    const r = await post(t.port, { model: "llama", messages: [] });
    expect(r.status).toBe(200);
    const [busy] = t.gw.takeReport();
    expect(busy).toMatchObject({ project: "team", service: "llama", revision: "v1", held: 0 });
    expect(busy!.concurrency).toBeGreaterThan(0);
    expect(busy!.concurrency).toBeLessThanOrEqual(1);
    expect(t.gw.takeReport()).toEqual([
      { project: "team", service: "llama", revision: "v1", concurrency: 0, held: 0 },
    ]);
    expect(t.gw.takeReport()).toEqual([]);
    // A follower decides nothing itself.
    await t.gw.tick();
    expect(t.scaled).toEqual([]);
  });

  it("works behind Fastify with a hijacked reply and a buffered body", async () => {
    const up = await listen(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ echo: JSON.parse(Buffer.concat(chunks).toString()).model }));
    });
    const ep = service([{ name: "v1", weight: 1, replicas: [replica("r0", up)] }]);
    const gw = new Gateway({
      directory: { resolve: (m) => (m === "llama" ? ep : undefined) },
      scaler: { setDesired: () => {} },
      registry: new Registry(),
    });
    gateways.push(gw);
    const app = Fastify();
    await app.register(async (scope) => {
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
      scope.post("/v1/*", async (request, reply) => {
        reply.hijack();
        await gw.handle(request.raw, reply.raw, { body: request.body as Buffer });
      });
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    try {
      const port = (app.server.address() as AddressInfo).port;
      const r = await post(port, chat);
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toEqual({ echo: "llama" });
      expect((await post(port, { model: "nope" })).status).toBe(404);
    } finally {
      await app.close();
    }
  });

  it("sends requests sharing a prompt prefix to the same replica when affinity is on", async () => {
    const ports = await Promise.all(
      [0, 1, 2].map(() =>
        listen((req, res) => {
          req.resume();
          res.end("ok");
        }),
      ),
    );
    const t = await setup(
      service([{ name: "v1", weight: 1, replicas: ports.map((p, i) => replica(`r${i}`, p)) }], {
        affinity: { prefixChars: 40 },
      }),
    );
    const system = { role: "system", content: "You are a terse assistant that answers in French." };
    const seen = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const r = await post(t.port, {
        model: "llama",
        messages: [system, { role: "user", content: `q${i}` }],
      });
      seen.add(String(r.headers["x-loom-replica"]));
    }
    expect(seen.size).toBe(1);
  });

  it("extracts the affinity key from prompts and chat messages", () => {
    expect(promptPrefix({ prompt: "abcdef" }, 3)).toBe("abc");
    expect(promptPrefix({ prompt: ["xyz", "q"] }, 2)).toBe("xy");
    expect(promptPrefix({ messages: [{ content: "sys" }, { content: [{ type: "text" }] }] }, 100)).toBe(
      'sys\n[{"type":"text"}]\n',
    );
    expect(promptPrefix({}, 5)).toBeUndefined();
  });
});

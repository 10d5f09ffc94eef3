import { createServer, type IncomingMessage, request } from "node:http";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { closeUpstreams, deadPort, listen, listenOn } from "../../test/upstreams.js";
import type { Lease, Outcome, Replica } from "./balancer.js";
import { attachFront } from "./front.js";
import { type ForwardOptions, type ForwardResult, HttpForwarder, readBody } from "./proxy.js";

const proxies: HttpForwarder[] = [];

afterEach(async () => {
  for (const p of proxies.splice(0)) p.close();
  await closeUpstreams();
});

/** Hands out replicas in order, recording each release. */
function picker(replicas: Replica[]) {
  const outcomes: [string, Outcome][] = [];
  const pick = (tried: ReadonlySet<string>): Lease | undefined => {
    const r = replicas.find((x) => !tried.has(x.id));
    return r && { replica: r, release: (o) => outcomes.push([r.id, o]) };
  };
  return { pick, outcomes };
}

type Kind = "Node's http server" | "the hand-rolled front";
let kind: Kind = "Node's http server";

/** A front server that forwards everything with `opts`; reports each result. */
async function front(opts: Omit<ForwardOptions, "label" | "body"> & { buffer?: boolean }) {
  const proxy = new HttpForwarder();
  proxies.push(proxy);
  const results: ForwardResult[] = [];
  if (kind === "the hand-rolled front" && opts.buffer !== false) {
    const server = createServer((_req, res) => {
      res.statusCode = 500;
      res.end("the front did not claim this request");
    });
    attachFront(server, {
      claims: () => true,
      serve: (req, res, _auth, body) => {
        void proxy
          .forward(req, res, { ...opts, label: "model 'm'", body: body ?? Buffer.alloc(0) })
          .then((r) => results.push(r));
      },
    });
    return { port: await listenOn(server), results };
  }
  const port = await listen(async (req, res) => {
    const body = opts.buffer === false ? undefined : await readBody(req, 1024 * 1024);
    results.push(await proxy.forward(req, res, { ...opts, label: "model 'm'", body }));
  });
  return { port, results };
}

interface Reply {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
}

function call(
  port: number,
  init: { method?: string; path?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method: init.method ?? "POST",
        path: init.path ?? "/v1/chat/completions",
        headers: init.headers,
        agent: false,
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
    req.end(init.body ?? "");
  });
}

const rep = (id: string, port: number): Replica => ({ id, host: "127.0.0.1", port });

describe.each<Kind>(["Node's http server", "the hand-rolled front"])("HttpForwarder behind %s", (k) => {
  beforeEach(() => {
    kind = k;
  });

  it("forwards method, path and body; drops hop-by-hop headers and the caller's key", async () => {
    let seen:
      | { method?: string; url?: string; headers: IncomingMessage["headers"]; body: string }
      | undefined;
    const up = await listen(async (req, res) => {
      const body = (await readBody(req, 1e6))!.toString();
      seen = { method: req.method, url: req.url, headers: req.headers, body };
      res.writeHead(200, {
        "content-type": "application/json",
        "x-custom": "1",
        "keep-alive": "timeout=77",
        "x-loom-replica": "the runtime's own",
      });
      res.end('{"ok":true,"usage":{"prompt_tokens":3,"completion_tokens":4}}');
    });
    const { pick, outcomes } = picker([rep("a", up)]);
    const f = await front({ pick, setRequestHeaders: { "x-upstream-key": "k" } });
    const r = await call(f.port, {
      path: "/v1/chat/completions?x=1",
      headers: {
        authorization: "Bearer loom-secret",
        "content-type": "application/json",
        connection: "keep-alive, x-hop",
        "x-hop": "drop me",
        te: "trailers",
      },
      body: '{"model":"m"}',
    });
    expect(r.status).toBe(200);
    expect(r.body).toContain('"ok":true');
    expect(r.headers["x-custom"]).toBe("1");
    expect(r.headers["x-loom-replica"]).toBe("a");
    expect(r.headers["keep-alive"]).not.toBe("timeout=77");
    expect(seen!.method).toBe("POST");
    expect(seen!.url).toBe("/v1/chat/completions?x=1");
    expect(seen!.body).toBe('{"model":"m"}');
    expect(seen!.headers.authorization).toBeUndefined();
    expect(seen!.headers["x-hop"]).toBeUndefined();
    expect(seen!.headers.te).toBeUndefined();
    expect(seen!.headers["x-upstream-key"]).toBe("k");
    expect(seen!.headers["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen!.headers.host).toBe(`127.0.0.1:${up}`);
    expect(seen!.headers["content-length"]).toBe("13");
    expect(f.results[0]).toMatchObject({
      status: 200,
      replica: "a",
      attempts: 1,
      complete: true,
      usage: { promptTokens: 3, completionTokens: 4 },
    });
    expect(outcomes).toEqual([["a", "success"]]);
  });

  it("sets a replica's own headers over the service's (a fleet member's gateway and its key); never the caller's", async () => {
    const seen: IncomingMessage["headers"][] = [];
    const up = await listen((req, res) => {
      seen.push(req.headers);
      res.end("ok");
    });
    const member: Replica = {
      id: "m1/r",
      host: "127.0.0.1",
      port: up,
      headers: { authorization: "Bearer member-key" },
    };
    const { pick } = picker([member]);
    const f = await front({
      pick,
      setRequestHeaders: { authorization: "Bearer service-key", "x-upstream-key": "k" },
    });
    const r = await call(f.port, { headers: { authorization: "Bearer caller" }, body: "{}" });
    expect(r.status).toBe(200);
    expect(seen[0]!.authorization).toBe("Bearer member-key");
    expect(seen[0]!["x-upstream-key"]).toBe("k");
  });

  it("retries a refused connection on the next replica and reports the failure", async () => {
    const dead = await deadPort();
    const up = await listen((_req, res) => res.end("from b"));
    const { pick, outcomes } = picker([rep("a", dead), rep("b", up)]);
    const f = await front({ pick });
    const r = await call(f.port, { body: "{}" });
    expect(r.status).toBe(200);
    expect(r.body).toBe("from b");
    expect(f.results[0]).toMatchObject({ attempts: 2, replica: "b" });
    expect(outcomes).toEqual([
      ["a", "failure"],
      ["b", "success"],
    ]);
  });

  it("answers 502 in OpenAI's format when every replica refuses, and 503 when there is none", async () => {
    const { pick } = picker([rep("a", await deadPort()), rep("b", await deadPort())]);
    const f = await front({ pick });
    const r = await call(f.port, { body: "{}" });
    expect(r.status).toBe(502);
    const e = JSON.parse(r.body).error;
    expect(e).toMatchObject({ type: "server_error", code: "upstream_error", param: null });
    expect(e.message).toMatch(/model 'm' failed to answer \(ECONNREFUSED\)/);

    const none = await front({ pick: () => undefined });
    const r2 = await call(none.port, { body: "{}" });
    expect(r2.status).toBe(503);
    expect(r2.headers["retry-after"]).toBeDefined();
  });

  it("does not retry a streamed (unbuffered) body", async () => {
    const up = await listen((_req, res) => res.end("b"));
    const { pick } = picker([rep("a", await deadPort()), rep("b", up)]);
    const f = await front({ pick, buffer: false });
    const r = await call(f.port, { body: "{}" });
    expect(r.status).toBe(502);
    expect(f.results[0]!.attempts).toBe(1);
  });

  it("streams a request body through when not buffered", async () => {
    const up = await listen(async (req, res) => res.end(`got ${(await readBody(req, 1e6))!.length}`));
    const { pick } = picker([rep("a", up)]);
    const f = await front({ pick, buffer: false });
    const r = await call(f.port, { body: "x".repeat(100_000) });
    expect(r.body).toBe("got 100000");
  });

  it.each(["content-length", "chunked"])(
    "passes a 4 MB %s body intact to a client that reads slowly",
    async (framing) => {
      // Every byte differs from its neighbours, so a chunk overwritten by a later read (the
      // pool reuses one read buffer) or sent twice would show.
      const body = Buffer.alloc(4 * 1024 * 1024);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 8)) & 0xff;
      const up = await listen((_req, res) => {
        res.writeHead(200, framing === "chunked" ? {} : { "content-length": body.length });
        // Small pieces, one per turn of the event loop, so that they reach the gateway as reads
        // of their own: a piece written to a slow client can then still be queued while the
        // next read comes in.
        let at = 0;
        const next = () => {
          if (at >= body.length) {
            res.end();
            return;
          }
          res.write(body.subarray(at, at + 4096));
          at += 4096;
          setImmediate(next);
        };
        next();
      });
      const { pick } = picker([rep("a", up)]);
      const f = await front({ pick });
      const got = await new Promise<Buffer>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port: f.port, method: "POST", agent: false }, (res) => {
          const chunks: Buffer[] = [];
          // Nothing read at first, then slowly: the socket buffers fill, the gateway's writes
          // queue, and the upstream read pauses, again and again.
          res.pause();
          setTimeout(() => res.resume(), 300);
          res.on("data", (c: Buffer) => {
            chunks.push(c);
            res.pause();
            setTimeout(() => res.resume(), 1);
          });
          res.on("end", () => resolve(Buffer.concat(chunks)));
          res.on("error", reject);
        });
        req.on("error", reject);
        req.end("{}");
      });
      expect(got.length).toBe(body.length);
      expect(got.equals(body)).toBe(true);
      expect(f.results[0]).toMatchObject({ status: 200, complete: true });
    },
  );

  it("cuts the client off when the upstream resets after the headers", async () => {
    const up = await listen((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: 1\n\n");
      setTimeout(() => res.socket?.destroy(), 50);
    });
    const { pick, outcomes } = picker([rep("a", up)]);
    const f = await front({ pick });
    const err = await call(f.port, { body: "{}" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(f.results[0]).toMatchObject({ status: 200, complete: false });
    expect(outcomes).toEqual([["a", "failure"]]);
  });

  it("retries elsewhere when a replica dies between a non-streamed answer's head and its body", async () => {
    // Python's http.server (the built-in runtime) writes the head, then the body: a replica
    // killed in between must cost a retry, not the request (the client has nothing yet).
    const dies = await listen((_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": "11" });
      res.flushHeaders();
      setImmediate(() => res.socket?.destroy());
    });
    const up = await listen((_req, res) => res.end('{"from":"b"}'));
    const { pick, outcomes } = picker([rep("a", dies), rep("b", up)]);
    const f = await front({ pick });
    const r = await call(f.port, { body: "{}" });
    expect(r.status).toBe(200);
    expect(r.body).toBe('{"from":"b"}');
    expect(r.headers["x-loom-replica"]).toBe("b");
    expect(f.results[0]).toMatchObject({ status: 200, attempts: 2, replica: "b", complete: true });
    expect(outcomes).toEqual([
      ["a", "failure"],
      ["b", "success"],
    ]);
  });

  it("answers 504 when a non-streamed body never follows its head", async () => {
    const up = await listen((_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": "11" });
      res.flushHeaders(); // and nothing more
    });
    const { pick, outcomes } = picker([rep("a", up)]);
    const f = await front({ pick, responseTimeoutMs: 200 });
    const r = await call(f.port, { body: "{}" });
    expect(r.status).toBe(504);
    expect(JSON.parse(r.body).error.type).toBe("timeout_error");
    expect(outcomes).toEqual([["a", "failure"]]);
  });

  it("answers 504 when the upstream sends no headers in time, without retrying", async () => {
    const up = await listen(() => {
      // never answers
    });
    const up2 = await listen((_req, res) => res.end("late"));
    const { pick, outcomes } = picker([rep("a", up), rep("b", up2)]);
    const f = await front({ pick, responseTimeoutMs: 200 });
    const r = await call(f.port, { body: "{}" });
    expect(r.status).toBe(504);
    expect(JSON.parse(r.body).error.type).toBe("timeout_error");
    expect(outcomes).toEqual([["a", "failure"]]);
  });

  it("counts 5xx as a failure unless told not to, and passes the status through", async () => {
    const up = await listen((_req, res) => {
      res.statusCode = 500;
      res.end("boom");
    });
    const a = picker([rep("a", up)]);
    const f = await front({ pick: a.pick });
    expect((await call(f.port, { body: "{}" })).status).toBe(500);
    const b = picker([rep("a", up)]);
    const g = await front({ pick: b.pick, failOn5xx: false });
    await call(g.port, { body: "{}" });
    expect(a.outcomes).toEqual([["a", "failure"]]);
    expect(b.outcomes).toEqual([["a", "success"]]);
  });
});

describe("readBody", () => {
  it("refuses bodies over the limit by declared or actual size", async () => {
    const got: (number | undefined)[] = [];
    const port = await listen(async (req, res) => {
      got.push((await readBody(req, 10))?.length);
      res.end();
    });
    await call(port, { body: "12345" });
    await call(port, { body: "x".repeat(100) });
    await new Promise<void>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, method: "POST", agent: false }, (res) => {
        res.resume();
        res.on("end", resolve);
      });
      req.on("error", reject);
      req.write("x".repeat(8));
      req.end("x".repeat(8)); // chunked: no content-length
    });
    expect(got).toEqual([5, undefined, undefined]);
  });
});

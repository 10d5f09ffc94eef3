import { createServer, request, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { attachFront, type FastLane } from "./front.js";

const servers: Server[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

/**
 * A server whose lane claims POST /fast* and answers "fast <body>" (or what `serve` writes);
 * everything else reaches Node's handler, which answers "node <method> <url> <body>".
 */
async function start(serve?: FastLane["serve"]): Promise<{ port: number; server: Server }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => res.end(`node ${req.method} ${req.url} ${Buffer.concat(chunks).toString()}`));
  });
  attachFront(server, {
    claims: (method, url) => method === "POST" && url.startsWith("/fast"),
    serve:
      serve ??
      ((_req, res, auth, body) => {
        res.writeHead(200, ["content-type", "text/plain", "x-auth", auth ?? "-"]);
        res.end(`fast ${body?.toString() ?? ""}`);
      }),
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as AddressInfo).port, server };
}

/** Writes `parts` on one raw connection (pausing between them) and returns all it read. */
async function raw(port: number, parts: (string | number)[], waitMs = 150): Promise<string> {
  const s = connect(port, "127.0.0.1");
  let out = "";
  s.on("data", (d: Buffer) => {
    out += d.toString("latin1");
  });
  let closed = false;
  s.on("close", () => {
    closed = true;
  });
  await new Promise<void>((resolve) => s.once("connect", () => resolve()));
  for (const p of parts) {
    if (typeof p === "number") await new Promise((r) => setTimeout(r, p));
    else s.write(p);
  }
  const until = Date.now() + waitMs;
  while (!closed && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  s.destroy();
  return out;
}

const post = (path: string, body: string, extra = "") =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

describe("the gateway's front", () => {
  it("serves claimed requests itself and hands the connection to Node at the first other one", async () => {
    const { port } = await start();
    const out = await raw(port, [
      post("/fast", "a", "Authorization: Bearer k\r\n") +
        post("/fast", "bb") +
        post("/other", "ccc") +
        // Node keeps the connection: a claimed request after the hand-off is Node's too.
        post("/fast", "dddd"),
    ]);
    const bodies = out.split(/HTTP\/1\.1 200 OK\r\n/).slice(1);
    expect(bodies).toHaveLength(4);
    expect(bodies[0]).toContain("x-auth: Bearer k");
    expect(bodies[0]).toMatch(/transfer-encoding: chunked\r\n.*\r\n\r\n6\r\nfast a\r\n0\r\n\r\n$/s);
    expect(bodies[1]).toMatch(/fast bb\r\n0\r\n\r\n$/);
    expect(bodies[2]).toMatch(/node POST \/other ccc$/);
    expect(bodies[3]).toMatch(/node POST \/fast dddd$/);
  });

  it("waits for a head and a body that arrive in pieces", async () => {
    const { port } = await start();
    const whole = post("/fast", "hello world");
    const out = await raw(port, [whole.slice(0, 10), 30, whole.slice(10, 40), 30, whole.slice(40)]);
    expect(out).toContain("fast hello world");
  });

  it("hands Node what it does not take: a chunked upload, HTTP/1.0, a bad head, an oversized head", async () => {
    const { port } = await start();
    const chunked = await raw(port, [
      "POST /fast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ]);
    expect(chunked).toContain("node POST /fast abc");
    const old = await raw(port, ["POST /fast HTTP/1.0\r\nContent-Length: 1\r\n\r\nz"]);
    expect(old).toContain("node POST /fast z");
    const bad = await raw(port, ["POST /fast HTTP/1.1\r\nX-A : 1\r\n\r\n"]);
    expect(bad).toMatch(/^HTTP\/1\.1 400 Bad Request/);
    const huge = await raw(port, [`POST /fast HTTP/1.1\r\nX-A: ${"a".repeat(20_000)}\r\n\r\n`]);
    expect(huge).toMatch(/^HTTP\/1\.1 431/);
  });

  it("closes after the answer when the client asks, and says so", async () => {
    const { port } = await start();
    const out = await raw(port, [post("/fast", "x", "Connection: close\r\n") + post("/fast", "never")], 1000);
    expect(out).toContain("connection: close");
    expect(out).toContain("fast x");
    expect(out).not.toContain("never");
  });

  it("sends a body with a Content-Length as it is, not chunked", async () => {
    const { port } = await start((_req, res, _auth, body) => {
      res.writeHead(200, { "content-length": body?.length ?? 0 });
      res.end(body);
    });
    const out = await raw(port, [post("/fast", "abc")]);
    expect(out).toMatch(/content-length: 3\r\n(.*\r\n)*\r\nabc$/);
  });

  it("streams chunk by chunk with the head flushed at once (Node's client reads it)", async () => {
    let release: (() => void) | undefined;
    const { port } = await start((_req, res) => {
      res.writeHead(200, ["content-type", "text/event-stream"]);
      res.flushHeaders();
      res.write(Buffer.from("data: 1\n\n"));
      release = () => {
        res.write(Buffer.from("data: 2\n\n"));
        res.end();
      };
    });
    const seen: string[] = [];
    const done = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const r = request({ host: "127.0.0.1", port, method: "POST", path: "/fast" }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => {
          body += c.toString();
          seen.push(c.toString());
          if (seen.length === 1) release?.();
        });
        res.on("end", () => resolve({ status: res.statusCode!, body }));
      });
      r.on("error", reject);
      r.end("{}");
    });
    const r = await done;
    expect(r).toEqual({ status: 200, body: "data: 1\n\ndata: 2\n\n" });
    expect(seen[0]).toBe("data: 1\n\n");
  });

  it("tells the response when the client leaves before the answer", async () => {
    let closed = false;
    let onClosed: (() => void) | undefined;
    const gone = new Promise<void>((resolve) => {
      onClosed = resolve;
    });
    const { port } = await start((_req, res) => {
      res.on("close", () => {
        closed = !res.writableFinished;
        onClosed?.();
      });
    });
    await raw(port, [post("/fast", "x")], 50);
    await gone;
    expect(closed).toBe(true);
  });

  it("closes idle connections on server.close(), so close completes", async () => {
    const { port, server } = await start();
    const s = connect(port, "127.0.0.1");
    let got = "";
    s.on("data", (d: Buffer) => {
      got += d.toString();
    });
    const ended = new Promise<void>((resolve) => s.on("close", () => resolve()));
    s.write(post("/fast", "keep"));
    while (!got.includes("fast keep")) await new Promise((r) => setTimeout(r, 10));
    servers.splice(servers.indexOf(server), 1);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await ended;
  });
});

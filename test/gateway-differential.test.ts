import type { AddressInfo } from "node:net";
import { connect } from "node:net";
import Fastify, { type FastifyInstance, LogController } from "fastify";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Gateway, type ServiceEndpoint } from "../src/gateway/gateway.js";
import type { TokenInfo } from "../src/ports/store.js";
import { bearerAuthenticator } from "../src/server/authz.js";
import { installErrorHandler } from "../src/server/errors.js";
import { rewriteUrl } from "../src/server/guard.js";
import {
  openAIFastLane,
  refuseAmbiguousPath,
  refuseDuplicateHeaders,
  ServingDirectory,
  serverWith,
  servingRoutes,
} from "../src/server/serving.js";
import { closeUpstreams, listen } from "./upstreams.js";

/**
 * Two HTTP parsers, one decision. The same raw bytes go over TCP to (1) the gateway as it runs,
 * the hand-rolled front (src/gateway/front.ts) before Node's server, and (2) the same Fastify app
 * and routes on Node's own server with no front. Every case must end the same way on both: the
 * same statuses in the same order, the same service reached (so the same principal was used).
 * The attack: a project-A key then an admin token in a second Authorization header
 * reached B's service through the front, which took the last header where Node takes the first.
 */

const KEYS: Record<string, TokenInfo> = {
  "sk-a": { id: "ka", name: "a-key", role: "viewer", project: "a", apiKey: {} },
  "sk-b": { id: "kb", name: "b-key", role: "viewer", project: "b", apiKey: {} },
  adm: { id: "adm", name: "admin", role: "admin" },
};

async function gatewayApp(gateway: Gateway, directory: ServingDirectory, front: boolean) {
  const authenticate = bearerAuthenticator(async (t) => KEYS[t]);
  const app: FastifyInstance = Fastify({
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 8 * 1024 * 1024,
    // The one spelling of a path the router, the fast lane and the upstream see (lib/paths.ts).
    rewriteUrl,
    ...(front ? { serverFactory: serverWith(openAIFastLane({ gateway, directory }, authenticate)) } : {}),
  });
  installErrorHandler(app);
  // What `loom gateway` does (src/main/gatewaynode.ts): every route but /healthz needs a key.
  app.addHook("onRequest", async (req, reply) => {
    refuseDuplicateHeaders(req.raw, reply.raw);
    refuseAmbiguousPath(req);
    if (req.url === "/healthz") return;
    req.principal = await authenticate(req.headers.authorization);
  });
  app.get("/healthz", async () => ({ status: "ok" }));
  await servingRoutes(app, { gateway, directory });
  await app.listen({ host: "127.0.0.1", port: 0 });
  return { app, port: (app.server.address() as AddressInfo).port };
}

/** One request's bytes; CRLF line ends unless the case says otherwise. */
function req(
  o: {
    method?: string;
    target?: string;
    version?: string;
    headers?: [string, string][];
    body?: string;
    host?: boolean;
    auth?: string;
    close?: boolean;
    eol?: string;
    noLength?: boolean;
  } = {},
): string {
  const body = o.body ?? (o.method && o.method !== "POST" ? "" : '{"model":"echo","prompt":"hi"}');
  const eol = o.eol ?? "\r\n";
  const lines = [`${o.method ?? "POST"} ${o.target ?? "/v1/completions"} ${o.version ?? "HTTP/1.1"}`];
  if (o.host !== false) lines.push("Host: 127.0.0.1");
  if (o.auth !== undefined) lines.push(`Authorization: Bearer ${o.auth}`);
  for (const [n, v] of o.headers ?? []) lines.push(`${n}: ${v}`);
  if (!o.noLength && body) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  if (o.close) lines.push("Connection: close");
  return `${lines.join(eol)}${eol}${eol}${body}`;
}

const chat = (model: string) => JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] });
const A = "sk-a";

/**
 * /serving/ paths that can be read two ways (lib/paths.ts): Node's side refuses them (400, the
 * reason) before the key is read, and the front must leave them to it rather than answer 404/401.
 */
const AMBIGUOUS_SERVING: [string, string][] = [
  ["encoded slash %2F in the rest", "/serving/a/echo/x%2Fy"],
  ["encoded slash %2f in the project", "/serving/a%2fb/echo/x"],
  ["encoded backslash %5C", "/serving/a/echo/%5C..%5Cx"],
  ["encoded backslash %5c", "/serving/a/echo%5cx/y"],
  ["literal backslash", "/serving/a/echo/x\\y"],
  ["encoded NUL", "/serving/a/echo/x%00"],
  ["encoded control byte", "/serving/a/echo/%0d%0a"],
  ["'..' segment", "/serving/b/../a/echo/x"],
  ["'..' segment in the rest", "/serving/a/echo/../../b/echo/x"],
  ["encoded '..' segment", "/serving/a/echo/%2e%2e/x"],
  ["half-encoded '..' segment", "/serving/a/echo/.%2E/x"],
  ["'.' segment", "/serving/a/./echo/x"],
  ["empty segment", "/serving/a//echo/x"],
  ["double encoding %25", "/serving/a/echo/%252F"],
  ["truncated escape", "/serving/a/echo/x%2"],
];

/** The table: name → bytes. Every case closes its connection at the end (Connection: close or an error). */
const CASES: [string, string][] = [
  ["plain A key, own model", req({ auth: A, close: true })],
  ["A key, B's model", req({ auth: A, body: chat("b/echo"), target: "/v1/chat/completions", close: true })],
  [
    "admin, B's model",
    req({ auth: "adm", body: chat("b/echo"), target: "/v1/chat/completions", close: true }),
  ],
  ["no key", req({ close: true })],
  ["unknown key", req({ auth: "nope", close: true })],
  [
    "two Authorization: A key then admin, B's model (the issue's attack)",
    req({
      auth: A,
      headers: [["Authorization", "Bearer adm"]],
      body: chat("b/echo"),
      target: "/v1/chat/completions",
      close: true,
    }),
  ],
  [
    "two Authorization: admin then A key",
    req({ auth: "adm", headers: [["Authorization", "Bearer sk-a"]], body: chat("b/echo"), close: true }),
  ],
  ["two identical Authorization", req({ auth: A, headers: [["Authorization", `Bearer ${A}`]], close: true })],
  [
    "two Authorization, odd casing",
    req({ auth: A, headers: [["aUTHORIZATION", "Bearer adm"]], body: chat("b/echo"), close: true }),
  ],
  [
    "two Authorization, the first empty",
    req({
      headers: [
        ["Authorization", ""],
        ["Authorization", "Bearer adm"],
      ],
      close: true,
    }),
  ],
  ["Authorization in odd casing alone", req({ headers: [["AUTHORIZATION", `Bearer ${A}`]], close: true })],
  ["lower-case bearer scheme", req({ headers: [["authorization", `bearer ${A}`]], close: true })],
  [
    "two Content-Length, equal",
    req({
      auth: A,
      headers: [["Content-Length", String('{"model":"echo","prompt":"hi"}'.length)]],
      close: true,
    }),
  ],
  ["two Content-Length, different", req({ auth: A, headers: [["Content-Length", "3"]], close: true })],
  [
    "Content-Length with a sign",
    req({ auth: A, noLength: true, headers: [["Content-Length", "+30"]], close: true }),
  ],
  [
    "Content-Length in hex",
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${A}\r\nContent-Length: 0x1e\r\nConnection: close\r\n\r\n{"model":"echo","prompt":"hi"}`,
  ],
  ["two Host", req({ auth: A, headers: [["Host", "evil.example"]], close: true })],
  ["two Host, odd casing", req({ auth: A, headers: [["HOST", "127.0.0.1"]], close: true })],
  ["no Host", req({ auth: A, host: false, close: true })],
  ["HTTP/1.0 without Host", req({ auth: A, host: false, version: "HTTP/1.0" })],
  ["HTTP/1.0", req({ auth: A, version: "HTTP/1.0" })],
  ["obs-fold in a header", req({ auth: A, headers: [["X-A", "b\r\n c"]], close: true })],
  [
    "obs-fold continuing Authorization",
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n ${A}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
  ],
  ["space before the colon", req({ auth: A, headers: [["Authorization ", "Bearer adm"]], close: true })],
  ["bare LF line ends", req({ auth: A, eol: "\n", close: true })],
  [
    "a bare LF inside a header value",
    req({ auth: A, headers: [["X-A", "b\nAuthorization: Bearer adm"]], close: true }),
  ],
  ["a NUL in a header value", req({ auth: A, headers: [["X-A", "b\u0000c"]], close: true })],
  [
    "CL and TE: chunked (smuggling)",
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${A}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer adm\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
  ],
  [
    "TE: chunked (a valid chunked upload)",
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${A}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1e\r\n{"model":"echo","prompt":"hi"}\r\n0\r\n\r\n`,
  ],
  [
    "TE: gzip",
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${A}\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nxx`,
  ],
  ["TE: xchunked with CL", req({ auth: A, headers: [["Transfer-Encoding", "xchunked"]], close: true })],
  [
    "TE: chunked, gzip",
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${A}\r\nTransfer-Encoding: chunked, gzip\r\nConnection: close\r\n\r\n0\r\n\r\n`,
  ],
  [
    "two TE",
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${A}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nConnection: close\r\n\r\n0\r\n\r\n`,
  ],
  ["Expect: 100-continue", req({ auth: A, headers: [["Expect", "100-continue"]], close: true })],
  ["absolute-form target", req({ auth: A, target: "http://127.0.0.1/v1/completions", close: true })],
  [
    "absolute-form target, admin to B",
    req({ auth: "adm", target: "http://127.0.0.1/v1/chat/completions", body: chat("b/echo"), close: true }),
  ],
  ["percent-encoded path /v%31/", req({ auth: A, target: "/v%31/completions", close: true })],
  [
    "percent-encoded path /v1/c%68at/",
    req({ auth: A, target: "/v1/c%68at/completions", body: chat("echo"), close: true }),
  ],
  ["upper-case /V1/", req({ auth: A, target: "/V1/completions", close: true })],
  ["double slash", req({ auth: A, target: "/v1//completions", close: true })],
  ["trailing slash", req({ auth: A, target: "/v1/completions/", close: true })],
  ["dot segment", req({ auth: A, target: "/v1/x/../completions", close: true })],
  ["query string", req({ auth: A, target: "/v1/completions?x=1", close: true })],
  ["fragment", req({ auth: A, target: "/v1/completions#x", close: true })],
  ["lower-case method", req({ method: "post", auth: A, body: '{"model":"echo"}', close: true })],
  ["GET on a POST route", req({ method: "GET", auth: A, close: true })],
  ["/serving/ own service", req({ method: "GET", auth: A, target: "/serving/a/echo/x", close: true })],
  [
    "/serving/ B's service with A's key",
    req({ method: "GET", auth: A, target: "/serving/b/echo/x", close: true }),
  ],
  [
    "/serving/ percent-encoded project",
    req({ method: "GET", auth: A, target: "/serving/%61/echo/x", close: true }),
  ],
  ["/serving/ malformed escape", req({ method: "GET", auth: A, target: "/serving/%zz/echo/x", close: true })],
  [
    "/serving/ encoded slash in the service",
    req({ method: "GET", auth: A, target: "/serving/a/b%2Fecho/x", close: true }),
  ],
  ...AMBIGUOUS_SERVING.map(([name, target]): [string, string] => [
    `/serving/ ${name}`,
    req({ method: "GET", auth: A, target, close: true }),
  ]),
  [
    "/serving/ encoded slash, no key (refused before the key is read)",
    req({ method: "GET", target: "/serving/a/echo%2Fx", close: true }),
  ],
  [
    "/serving/ encoded slash, B's key",
    req({ method: "GET", auth: "sk-b", target: "/serving/a%2Fecho/x", close: true }),
  ],
  [
    "/serving/ encoded unreserved in the upstream path (served, canonical)",
    req({ method: "GET", auth: A, target: "/serving/a/%65cho/%7e", close: true }),
  ],
  [
    "/serving/ two Authorization",
    req({
      method: "GET",
      auth: A,
      headers: [["Authorization", "Bearer adm"]],
      target: "/serving/b/echo/x",
      close: true,
    }),
  ],
  [
    "unclaimed route with two Authorization",
    req({
      method: "GET",
      auth: A,
      headers: [["Authorization", "Bearer adm"]],
      target: "/v1/models",
      close: true,
    }),
  ],
  ["/healthz", req({ method: "GET", target: "/healthz", close: true })],
  ["pipelined: two valid", req({ auth: A }) + req({ auth: A, close: true })],
  [
    "pipelined: three, the last closes",
    req({ auth: A }) + req({ auth: "adm", body: chat("b/echo") }) + req({ auth: A, close: true }),
  ],
  [
    "pipelined: valid, two Authorization, valid",
    req({ auth: A }) +
      req({ auth: A, headers: [["Authorization", "Bearer adm"]], body: chat("b/echo") }) +
      req({ auth: A, close: true }),
  ],
  [
    "pipelined: claimed then unclaimed",
    req({ auth: A }) + req({ method: "GET", target: "/healthz", close: true }),
  ],
  [
    "pipelined: unclaimed then claimed",
    req({ method: "GET", target: "/healthz" }) + req({ auth: A, close: true }),
  ],
  ["pipelined: valid then no Host", req({ auth: A }) + req({ auth: A, host: false, close: true })],
  ["pipelined: valid then bare LF", req({ auth: A }) + req({ auth: A, eol: "\n", close: true })],
  [
    "pipelined: valid then CL+TE",
    req({ auth: A }) +
      req({ auth: A, headers: [["Transfer-Encoding", "chunked"]], body: "0\r\n\r\n", close: true }),
  ],
  [
    "pipelined: the first asks to close",
    req({ auth: A, close: true }) + req({ auth: "adm", body: chat("b/echo"), close: true }),
  ],
  ["a head over 16 KiB", req({ auth: A, headers: [["X-Big", "x".repeat(17 * 1024)]], close: true })],
];

/**
 * Cases where Node's parser reads pipelined bytes ahead of its answer: its 400 for a later,
 * malformed request (or for any data after `Connection: close`) cuts off the earlier request's
 * answer, and whether that earlier request reached its replica first depends on timing. The front
 * answers the earlier request, then hands the rest to Node, which refuses it. Compared for these:
 * nothing but the first, valid request (A's own model) is served by either, and Node refuses.
 */
const NODE_PARSES_AHEAD = new Set([
  "pipelined: valid then bare LF",
  "pipelined: valid then CL+TE",
  "pipelined: the first asks to close",
]);

interface Outcome {
  status: number;
  /** Which replica answered (the upstream writes it), or the OpenAI error code, or "". */
  what: string;
}

/** Sends `bytes` on a fresh connection and reads every response until the server closes it. */
function exchange(port: number, bytes: string): Promise<Outcome[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect(port, "127.0.0.1", () => s.write(Buffer.from(bytes, "latin1")));
    // A server that never closes is a finding too; the test's own timeout reports it.
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", () => {});
    s.on("close", () => {
      try {
        resolve(parseResponses(Buffer.concat(chunks)));
      } catch (err) {
        reject(err);
      }
    });
  });
}

function parseResponses(buf: Buffer): Outcome[] {
  const out: Outcome[] = [];
  let at = 0;
  while (at < buf.length) {
    const end = buf.indexOf("\r\n\r\n", at);
    if (end < 0) throw new Error(`a cut-off response head: ${buf.subarray(at).toString("latin1")}`);
    const head = buf.toString("latin1", at, end).split("\r\n");
    const status = Number(head[0]!.split(" ")[1]);
    const headers = new Map(
      head
        .slice(1)
        .map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]),
    );
    at = end + 4;
    let body = "";
    if (headers.get("transfer-encoding") === "chunked") {
      for (;;) {
        const lf = buf.indexOf("\r\n", at);
        const size = Number.parseInt(buf.toString("latin1", at, lf), 16);
        at = lf + 2;
        if (size === 0) {
          at = buf.indexOf("\r\n", at) + 2;
          break;
        }
        body += buf.toString("utf8", at, at + size);
        at += size + 2;
      }
    } else {
      const n = Number(headers.get("content-length") ?? (status === 100 ? 0 : buf.length - at));
      body = buf.toString("utf8", at, at + n);
      at += n;
    }
    if (status === 100) continue;
    let what = "";
    try {
      const json = JSON.parse(body) as { served_by?: string; error?: { code?: string } };
      what = json.served_by ?? json.error?.code ?? "";
    } catch {
      // Node's own 400s carry no JSON.
    }
    out.push({ status, what });
  }
  return out;
}

/**
 * The same answer: the same replica, or the same error code. Node's parser answers its own 400s
 * (a request it cannot frame) without a JSON body; the front answers a duplicate header, which
 * Node's parser refuses for Content-Length only, with OpenAI's error JSON. Both are a 400.
 */
function sameWhat(a: string, b: string): boolean {
  return a === b || a === "" || b === "" ? a === b || (!a.includes("/") && !b.includes("/")) : false;
}

describe("the fast front and Node's parser decide alike (differential)", () => {
  const gateways: Gateway[] = [];
  const apps: FastifyInstance[] = [];
  let withFront = 0;
  let nodeOnly = 0;

  beforeAll(async () => {
    const upstream = (name: string) =>
      listen((r, res) => {
        r.resume();
        r.on("end", () => {
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ served_by: name }));
        });
      });
    const directory = new ServingDirectory();
    const gateway = new Gateway(
      { directory, scaler: directory, registry: new Registry() },
      { autoscale: false },
    );
    gateways.push(gateway);
    directory.attach(gateway);
    const endpoint = (project: string, port: number): ServiceEndpoint => ({
      project,
      service: "echo",
      revisions: [
        {
          name: "echo-1",
          weight: 100,
          replicas: [{ id: `${project}-r0`, host: "127.0.0.1", port, ready: true }],
        },
      ],
      autoscaling: { minReplicas: 1, maxReplicas: 1, targetConcurrency: 4 },
    });
    directory.replaceAll([endpoint("a", await upstream("a/echo")), endpoint("b", await upstream("b/echo"))]);
    const front = await gatewayApp(gateway, directory, true);
    const node = await gatewayApp(gateway, directory, false);
    apps.push(front.app, node.app);
    withFront = front.port;
    nodeOnly = node.port;
  });

  afterAll(async () => {
    for (const a of apps) await a.close();
    for (const g of gateways) g.close();
    await closeUpstreams();
  });

  it(`gives the same outcome on ${CASES.length} raw requests`, { timeout: 300_000 }, async () => {
    const differ: string[] = [];
    const results: Record<string, Outcome[]> = {};
    for (const [name, bytes] of CASES) {
      const [front, node] = await Promise.all([exchange(withFront, bytes), exchange(nodeOnly, bytes)]);
      results[name] = front;
      const same = NODE_PARSES_AHEAD.has(name)
        ? [...front, ...node].every((o) => o.status >= 400 || o.what === "a/echo") &&
          front[0]?.what === "a/echo" &&
          node[node.length - 1]?.status === 400
        : front.length === node.length &&
          front.every((f, i) => f.status === node[i]!.status && sameWhat(f.what, node[i]!.what));
      if (!same) differ.push(`${name}: front ${JSON.stringify(front)} / node ${JSON.stringify(node)}`);
    }
    console.log(`gateway differential: ${CASES.length} cases ran, ${CASES.length - differ.length} agree`);
    expect(differ).toEqual([]);
    // And the decisions themselves: the attack is refused, nothing reaches B with A's key.
    expect(results["two Authorization: A key then admin, B's model (the issue's attack)"]).toEqual([
      { status: 400, what: "invalid_request" },
    ]);
    expect(results["plain A key, own model"]).toEqual([{ status: 200, what: "a/echo" }]);
    expect(results["admin, B's model"]).toEqual([{ status: 200, what: "b/echo" }]);
    expect(results["pipelined: valid, two Authorization, valid"]!.map((o) => o.status)).toEqual([200, 400]);
    // A path read two ways is a 400 on the front too, before the key is read.
    for (const [name] of AMBIGUOUS_SERVING)
      expect(results[`/serving/ ${name}`], name).toEqual([{ status: 400, what: "invalid_request" }]);
    expect(results["/serving/ encoded slash, no key (refused before the key is read)"]).toEqual([
      { status: 400, what: "invalid_request" },
    ]);
    expect(results["/serving/ encoded slash, B's key"]).toEqual([{ status: 400, what: "invalid_request" }]);
    expect(results["/serving/ encoded unreserved in the upstream path (served, canonical)"]).toEqual([
      { status: 200, what: "a/echo" },
    ]);
    for (const [name, outcomes] of Object.entries(results)) {
      // Only an admin token alone, in one Authorization header, may reach B.
      if (
        [
          "admin, B's model",
          "absolute-form target, admin to B",
          "pipelined: three, the last closes",
        ].includes(name)
      )
        continue;
      for (const o of outcomes) expect(o.what, name).not.toBe("b/echo");
    }
  });

  it("inject(), with no front and no server before the routes, refuses the same duplicates", async () => {
    const directory = new ServingDirectory();
    const gateway = new Gateway(
      { directory, scaler: directory, registry: new Registry() },
      { autoscale: false },
    );
    gateways.push(gateway);
    const app = Fastify();
    installErrorHandler(app);
    // A hook that, like a careless integrator's, authenticates from the first header only.
    app.addHook("onRequest", async (req) => {
      req.principal = KEYS.adm;
    });
    await servingRoutes(app, { gateway, directory });
    apps.push(app);
    for (const [name, headers] of [
      ["authorization", { authorization: ["Bearer sk-a", "Bearer adm"] }],
      ["host", { host: ["a", "b"] }],
    ] as const) {
      const r = await app.inject({
        method: "POST",
        url: "/v1/chat/completions",
        headers: headers as unknown as Record<string, string>,
        payload: chat("b/echo"),
      });
      expect(r.statusCode, name).toBe(400);
      expect(r.json().error.message).toContain(`more than one ${name} header`);
      expect(r.headers.connection).toBe("close");
    }
  });
});

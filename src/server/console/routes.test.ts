import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { FastifyInstance, InjectOptions } from "fastify";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type RouteApp, routeApp } from "../../../test/routeapp.js";
import type { OpenedDatabase } from "../../platforms/embedded/db.js";
import { SqliteEventRecorder } from "../../platforms/embedded/events.js";
import type { LocalRuntime } from "../../platforms/embedded/runtime.js";
import type { SqliteResourceStore } from "../../platforms/embedded/store.js";
import { SqliteTokenStore } from "../../platforms/embedded/tokens.js";
import { buildApp } from "../app.js";
import { parseCookies } from "./session.js";

const BASE = "/apis/loom.dev/v1alpha1";
const JOBS = `${BASE}/projects/default/trainingjobs`;
const HOST = "127.0.0.1:7000";
const job = (name: string) => ({
  apiVersion: "loom.dev/v1alpha1",
  kind: "TrainingJob",
  metadata: { name },
  spec: { command: ["true"] },
});

describe("console routes", () => {
  let r: RouteApp;
  let dir: string;
  let database: OpenedDatabase;
  let store: SqliteResourceStore;
  let runtime: LocalRuntime;
  let app: FastifyInstance;
  const tokens = { admin: "", viewer: "", key: "" };

  beforeEach(async () => {
    r = await routeApp({
      name: "console",
      deps: (_db, d) => {
        mkdirSync(join(d, "console", "assets"), { recursive: true });
        writeFileSync(
          join(d, "console", "index.html"),
          "<!doctype html><script type=module src=/assets/a-1.js></script>",
        );
        writeFileSync(join(d, "console", "assets", "a-1.js"), "console.log(1)");
        writeFileSync(join(d, "console", "assets", "a-1.js.gz"), gzipSync("console.log(1)"));
        return { console: { dir: join(d, "console") } };
      },
    });
    ({ app, store, runtime, database, dir, admin: tokens.admin } = r);
    tokens.viewer = (await r.tokens.create("v", "viewer", { project: "default" })).token;
    tokens.key = (await r.tokens.create("k", "viewer", { project: "default", apiKey: {} })).token;
  });

  afterEach(() => r.close());

  /** Logs in with a token; returns the Cookie header the browser would send afterwards and the CSRF value. */
  async function login(token: string): Promise<{ cookie: string; csrf: string }> {
    const res = await app.inject({
      method: "POST",
      url: "/console/login",
      headers: { host: HOST, origin: `http://${HOST}` },
      payload: { token },
    });
    expect(res.statusCode).toBe(200);
    const set = res.headers["set-cookie"] as string[];
    const cookie = set.map((c) => c.split(";")[0]).join("; ");
    return { cookie, csrf: parseCookies(cookie).get("loom_csrf")! };
  }

  function send(
    method: InjectOptions["method"],
    url: string,
    headers: Record<string, string>,
    payload?: unknown,
  ) {
    return app.inject({
      method,
      url,
      headers: { host: HOST, ...headers },
      ...(payload === undefined ? {} : { payload: payload as InjectOptions["payload"] }),
    });
  }

  it("serves index.html uncached and hashed assets for a year, precompressed, with a strict CSP", async () => {
    const index = await app.inject({ method: "GET", url: "/" });
    expect(index.statusCode).toBe(200);
    expect(index.headers["cache-control"]).toBe("no-cache");
    const csp = String(index.headers["content-security-policy"]);
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(index.headers["x-frame-options"]).toBe("DENY");
    const js = await app.inject({
      method: "GET",
      url: "/assets/a-1.js",
      headers: { "accept-encoding": "gzip, br" },
    });
    expect(js.headers["content-encoding"]).toBe("gzip");
    expect(js.headers["cache-control"]).toContain("immutable");
    const plain = await app.inject({ method: "GET", url: "/assets/a-1.js" });
    expect(plain.body).toBe("console.log(1)");
    expect((await app.inject({ method: "GET", url: "/assets/../index.html" })).statusCode).not.toBe(200);
    expect((await app.inject({ method: "GET", url: "/assets/nope.js" })).statusCode).toBe(404);
  });

  it("exchanges a token for an HttpOnly, SameSite=Strict cookie that the API then accepts", async () => {
    const res = await send("POST", "/console/login", { origin: `http://${HOST}` }, { token: tokens.admin });
    const set = res.headers["set-cookie"] as string[];
    expect(set[0]).toMatch(/^loom_console=.+; HttpOnly; SameSite=Strict; Path=\//);
    expect(set[0]).not.toContain("Secure"); // plain http here; https gets Secure
    expect(set[1]).not.toContain("HttpOnly"); // the CSRF cookie is the page's to read
    const { cookie } = await login(tokens.admin);
    const me = await send("GET", `${BASE}/whoami`, { cookie });
    expect(me.json()).toMatchObject({ name: "admin", role: "admin", canWrite: true, admin: true });
    expect((await send("GET", JOBS, { cookie })).statusCode).toBe(200);
    expect((await send("GET", JOBS, {})).statusCode).toBe(401);
  });

  it("refuses bad tokens, API keys and cross-site log-ins", async () => {
    expect((await send("POST", "/console/login", {}, { token: "nope" })).statusCode).toBe(401);
    expect((await send("POST", "/console/login", {}, { token: tokens.key })).statusCode).toBe(403);
    expect((await send("POST", "/console/login", {}, {})).statusCode).toBe(400);
    const forged = await send(
      "POST",
      "/console/login",
      { origin: "http://evil.example" },
      { token: tokens.admin },
    );
    expect(forged.statusCode).toBe(403);
    expect(forged.headers["set-cookie"]).toBeUndefined();
  });

  it("accepts a write with the CSRF header from its own origin", async () => {
    const { cookie, csrf } = await login(tokens.admin);
    const res = await send("POST", JOBS, { cookie, "x-loom-csrf": csrf, origin: `http://${HOST}` }, job("a"));
    expect(res.statusCode).toBe(201);
  });

  it("refuses a cross-site write: no CSRF header, a wrong one, or another origin (attack)", async () => {
    const { cookie, csrf } = await login(tokens.admin);
    const none = await send("POST", JOBS, { cookie, origin: `http://${HOST}` }, job("b"));
    expect(none.statusCode).toBe(403);
    expect(none.json().message).toContain("x-loom-csrf");
    expect((await send("POST", JOBS, { cookie, "x-loom-csrf": "guess" }, job("b"))).statusCode).toBe(403);
    // A workspace page on the same site (SameSite lets its requests carry the cookie) is another origin.
    const sibling = { cookie, "x-loom-csrf": csrf, origin: "http://nb--default.ws.localhost:7001" };
    expect((await send("POST", JOBS, sibling, job("b"))).statusCode).toBe(403);
    const site = { cookie, "x-loom-csrf": csrf, "sec-fetch-site": "cross-site" };
    expect((await send("DELETE", `${JOBS}/a`, site)).statusCode).toBe(403);
    expect((await send("GET", `${JOBS}/b`, { cookie })).statusCode).toBe(404); // nothing was made
  });

  it("refuses a read carried by the cookie from another origin: a same-site page's WebSocket (attack)", async () => {
    const { cookie } = await login(tokens.admin);
    const pf = `${JOBS}/a/portforward?port=8888`;
    const hijack = {
      cookie,
      origin: "http://nb--default.ws.localhost:7001",
      upgrade: "websocket",
      connection: "upgrade",
    };
    const res = await send("GET", pf, hijack);
    expect(res.statusCode).toBe(403);
    expect(res.json().message).toContain("only the console's own pages");
    expect((await send("GET", JOBS, { cookie, "sec-fetch-site": "same-site" })).statusCode).toBe(403);
    expect((await send("GET", JOBS, { cookie, "sec-fetch-site": "same-origin" })).statusCode).toBe(200);
  });

  it("holds a viewer's cookie to a viewer's rights: reads pass, a forged write is 403", async () => {
    const { cookie, csrf } = await login(tokens.viewer);
    const me = await send("GET", `${BASE}/whoami`, { cookie });
    expect(me.json()).toMatchObject({ role: "viewer", project: "default", canWrite: false, admin: false });
    expect((await send("GET", JOBS, { cookie })).statusCode).toBe(200);
    const write = await send(
      "POST",
      JOBS,
      { cookie, "x-loom-csrf": csrf, origin: `http://${HOST}` },
      job("c"),
    );
    expect(write.statusCode).toBe(403);
  });

  it("logs out by clearing both cookies", async () => {
    const res = await send("POST", "/console/logout", { origin: `http://${HOST}` });
    expect(res.statusCode).toBe(204);
    const set = res.headers["set-cookie"] as string[];
    expect(set.every((c) => c.includes("Max-Age=0"))).toBe(true);
  });

  it("says the console is not built rather than failing, when dist/console is missing", async () => {
    const bare = await buildApp({
      store,
      tokens: new SqliteTokenStore(database.db),
      events: new SqliteEventRecorder(database.db),
      runtime,
      metrics: new Registry(),
      log: pino({ level: "silent" }),
      version: "0.0.0-test",
      console: { dir: join(dir, "missing") },
      ensureDefaultProject: false,
    });
    const res = await bare.inject({ method: "GET", url: "/" });
    expect(res.body).toContain("npm run build");
    await bare.close();
  });
});

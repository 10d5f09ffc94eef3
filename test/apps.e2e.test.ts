import { copyFileSync, mkdirSync } from "node:fs";
import { type IncomingHttpHeaders, request } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Apps (issue 20) on a real `loom up`, with real app processes (test/fixtures/apps/counter.py:
 * stdlib Python that answers with its replica's pid and a per-session hit count, and echoes
 * WebSocket messages), reached through Loom's user-content origin by the Host each app's URL
 * names: scale from zero, each access mode and the attacks it fences, session affinity across
 * two replicas, a WebSocket, and the OpenAI routes never taking an App for a model.
 */
const BASE = "/apis/loom.dev/v1alpha1";

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

describe("apps", () => {
  const loom = new LoomProcess();
  let port = 0;
  let viewer = "";
  let outsider = "";
  let key = "";
  let otherKey = "";

  const hostOf = (name: string, project = "default") => `${name}--${project}.app.localhost:${port}`;

  function origin(path: string, opts: { host: string; cookie?: string; headers?: Record<string, string> }) {
    return new Promise<Reply>((ok, fail) => {
      const req = request(
        {
          host: "127.0.0.1",
          port,
          path,
          headers: { host: opts.host, ...(opts.cookie ? { cookie: opts.cookie } : {}), ...opts.headers },
        },
        (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () => ok({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on("error", fail);
      req.end();
    });
  }

  const app = async (name: string) =>
    (await loom.api("GET", `${BASE}/projects/default/apps/${name}`)).body as {
      status?: { phase?: string; ready?: number; desired?: number; url?: string };
    };

  async function waitApp(
    name: string,
    pred: (s: NonNullable<Awaited<ReturnType<typeof app>>["status"]>) => boolean,
  ) {
    const deadline = Date.now() + 120_000;
    let last: unknown;
    while (Date.now() < deadline) {
      const s = (await app(name)).status ?? {};
      last = s;
      if (pred(s)) return s;
      await sleep(200);
    }
    throw new Error(
      `app ${name} never got there; last status ${JSON.stringify(last)}\n${loom.log.slice(-3000)}`,
    );
  }

  async function token(name: string, role: string, project: string): Promise<string> {
    const r = await loom.api("POST", `${BASE}/tokens`, { name, role, project });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return (r.body as { token: string }).token;
  }

  async function apiKey(name: string, project: string): Promise<string> {
    const r = await loom.api("POST", `${BASE}/projects/${project}/apikeys`, { name });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return (r.body as { key: string }).key;
  }

  /** A session cookie (loom_app=…) for `name`, through the real one-time link. */
  async function sessionFor(bearer: string, name: string): Promise<string> {
    const link = await loom.api("POST", `${BASE}/projects/default/apps/${name}/login`, {}, bearer);
    expect(link.status, JSON.stringify(link.body)).toBe(200);
    const url = new URL((link.body as { url: string }).url);
    expect(url.hostname).toBe(`${name}--default.app.localhost`);
    const res = await origin(url.pathname + url.search, { host: url.host });
    expect(res.status, res.body).toBe(302);
    const cookie = String(res.headers["set-cookie"]);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).not.toMatch(/Domain=/i);
    return /loom_app=[^;]+/.exec(cookie)![0];
  }

  const manifest = (name: string, access: string, replicas: string, extra = "") =>
    `apiVersion: loom.dev/v1alpha1\nkind: App\nmetadata: {name: ${name}}\nspec:\n  framework: custom\n` +
    `  command: [python3, counter.py]\n  workingDir: ${join(loom.home, "code")}\n  access: ${access}\n` +
    `  replicas: ${replicas}\n${extra}`;

  beforeAll(async () => {
    await loom.start();
    mkdirSync(join(loom.home, "code"));
    copyFileSync(join(ROOT, "test/fixtures/apps/counter.py"), join(loom.home, "code", "counter.py"));
    const other = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: other}\nspec: {}\n";
    const apps = [
      manifest(
        "counter",
        "project",
        "{min: 0, max: 2}",
        "  autoscaling: {scaleToZeroAfter: 1, scaleDownDelay: 1, targetConcurrency: 100}\n",
      ),
      manifest("pair", "public", "{min: 2, max: 2}"),
      manifest("keyed", "apikey", "{min: 1, max: 1}"),
    ];
    const r = await loom.cli(["apply", "-f", "-"], { input: [other, ...apps].join("---\n") });
    expect(r.code, r.stderr).toBe(0);
    const s = await waitApp("pair", (x) => !!x.url);
    port = Number(new URL(s.url!).port);
    viewer = await token("viewer", "viewer", "default");
    outsider = await token("outsider", "editor", "other");
    key = await apiKey("k", "default");
    otherKey = await apiKey("k2", "other");
  }, 180_000);

  afterAll(async () => {
    await loom.cli(["delete", "app", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  it("scales a new app to zero, and the first request after zero waits for a replica and succeeds", async () => {
    await waitApp("counter", (s) => s.phase === "ScaledToZero" && s.desired === 0);
    const cookie = await sessionFor(viewer, "counter");
    const res = await origin("/", { host: hostOf("counter"), cookie });
    expect(res.status, res.body).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ hits: 1 });
    expect((await app("counter")).status?.phase).toBe("Ready");
  }, 180_000);

  it("access project: lets a viewer in, and refuses no cookie, another project's member, another app's cookie and cross-site requests", async () => {
    const mine = await sessionFor(viewer, "counter");
    expect((await origin("/", { host: hostOf("counter"), cookie: mine })).status).toBe(200);
    const none = await origin("/", { host: hostOf("counter") });
    expect(none.status).toBe(401);
    expect(none.body).toContain("loom open app/counter");
    // Another project's member cannot get a link at all.
    const link = await loom.api("POST", `${BASE}/projects/default/apps/counter/login`, {}, outsider);
    expect(link.status).toBe(403);
    // A session of another app (keyed) is not one of this app's.
    const theirs = await sessionFor(loom.token, "keyed");
    const moved = await origin("/", { host: hostOf("counter"), cookie: theirs });
    expect(moved.status, moved.body).toBe(403);
    // A workspace's cookie name means nothing here.
    expect((await origin("/", { host: hostOf("counter"), cookie: "loom_ws=anything" })).status).toBe(401);
    // A sibling site's page posting with the viewer's cookie (the browser would send it: Lax only stops cross-site POST from other sites).
    const csrf = await origin("/", {
      host: hostOf("counter"),
      cookie: mine,
      headers: {
        "sec-fetch-site": "same-site",
        "sec-fetch-mode": "cors",
        origin: `http://${hostOf("pair")}`,
      },
    });
    expect(csrf.status).toBe(403);
  }, 60_000);

  it("never forwards Loom's cookies or credentials to the app, nor lets the app set them", async () => {
    const mine = await sessionFor(viewer, "counter");
    const seen = await origin("/cookies", {
      host: hostOf("counter"),
      cookie: `${mine}; loom_app_affinity=abcdefghij; mine=1`,
    });
    expect(JSON.parse(seen.body)).toEqual({ cookie: "mine=1", authorization: null });
    const first = await origin("/", { host: hostOf("counter"), cookie: mine });
    const set = (first.headers["set-cookie"] ?? []).join("\n");
    expect(set).toMatch(/sid=/);
    expect(set).toMatch(/loom_app_affinity=/);
    expect(set).not.toMatch(/loom_app=forged/);
  }, 60_000);

  it("access apikey: takes the project's API key, refuses another project's, a member's token and none", async () => {
    await waitApp("keyed", (s) => (s.ready ?? 0) >= 1);
    const as = (bearer?: string) =>
      origin("/", { host: hostOf("keyed"), headers: bearer ? { authorization: `Bearer ${bearer}` } : {} });
    expect((await as(key)).status).toBe(200);
    expect((await as()).status).toBe(401);
    expect((await as(otherKey)).status).toBe(403);
    expect((await as(viewer)).status).toBe(403);
  }, 150_000);

  it("access public: anyone, and `loom get apps` and `describe` say so", async () => {
    await waitApp("pair", (s) => (s.ready ?? 0) >= 2);
    expect((await origin("/", { host: hostOf("pair") })).status).toBe(200);
    const got = await loom.cli(["get", "apps"]);
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout).toMatch(/^NAME\s+PHASE\s+ACCESS\s+READY\s+URL/m);
    expect(got.stdout).toMatch(/^pair\s+Ready\s+public\s+2\s+http:\/\/pair--default\.app\.localhost:\d+\//m);
    const described = await loom.cli(["describe", "app", "pair"]);
    expect(described.stdout).toMatch(/Access:\s+public: anyone/);
  }, 150_000);

  it("keeps a session on one replica across 20 requests with the affinity cookie, and spreads sessions over both", async () => {
    await waitApp("pair", (s) => (s.ready ?? 0) >= 2);
    let jar = "";
    const replicas = new Set<string>();
    for (let i = 1; i <= 20; i++) {
      const res = await origin("/", { host: hostOf("pair"), cookie: jar });
      expect(res.status, res.body).toBe(200);
      const body = JSON.parse(res.body) as { replica: string; hits: number };
      // The app's own per-session state survives: the count goes on, on the same replica.
      expect(body.hits).toBe(i);
      replicas.add(body.replica);
      for (const c of res.headers["set-cookie"] ?? [])
        jar = [jar, c.split(";")[0]].filter(Boolean).join("; ");
    }
    expect(replicas.size).toBe(1);
    const spread = new Set<string>();
    for (let i = 0; i < 30 && spread.size < 2; i++)
      spread.add(
        (JSON.parse((await origin("/", { host: hostOf("pair") })).body) as { replica: string }).replica,
      );
    expect(spread.size, `${[...spread]} ${JSON.stringify((await app("pair")).status)}`).toBe(2);
  }, 150_000);

  it("proxies a WebSocket through the app origin, behind the log-in", async () => {
    const mine = await sessionFor(viewer, "counter");
    const own = `http://${hostOf("counter")}`;
    expect(await wsEcho(port, hostOf("counter"), { cookie: mine, origin: own }, "hello")).toMatch(
      /^echo from [0-9a-f]{12}: hello$/,
    );
    // Without the session, or from another origin, the upgrade is refused.
    expect(await wsEcho(port, hostOf("counter"), { origin: own }, "x")).toMatch(/^HTTP\/1.1 401/);
    expect(
      await wsEcho(port, hostOf("counter"), { cookie: mine, origin: "http://evil.example" }, "x"),
    ).toMatch(/^HTTP\/1.1 403/);
  }, 150_000);

  it("never resolves an App as a model: model APPNAME is 404 and /v1/models does not list it", async () => {
    const res = await fetch(`${loom.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "pair", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("model_not_found");
    const models = await fetch(`${loom.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    expect(JSON.stringify(await models.json())).not.toContain("pair");
  });

  it("loom open app/NAME prints a one-time link to the app's origin; loom delete app removes it", async () => {
    const open = await loom.cli(["open", "app/keyed", "--no-browser"]);
    expect(open.code, open.stderr).toBe(0);
    expect(open.stdout).toMatch(/^http:\/\/keyed--default\.app\.localhost:\d+\/_loom\/login\?ticket=/);
    const del = await loom.cli(["delete", "app", "keyed", "--timeout", "30"]);
    expect(del.code, del.stderr).toBe(0);
    const deadline = Date.now() + 30_000;
    let status = 0;
    while (Date.now() < deadline && status !== 404) {
      status = (await origin("/", { host: hostOf("keyed"), headers: { authorization: `Bearer ${key}` } }))
        .status;
      await sleep(100);
    }
    expect(status).toBe(404);
  }, 60_000);
});

/**
 * One WebSocket exchange over a raw socket (RFC 6455, a short masked text frame): the echoed
 * text, or the status line of a refused upgrade.
 */
function wsEcho(port: number, host: string, headers: { cookie?: string; origin?: string }, text: string) {
  return new Promise<string>((ok, fail) => {
    const sock = connect(port, "127.0.0.1");
    let buf = Buffer.alloc(0);
    let upgraded = false;
    sock.on("error", fail);
    sock.on("connect", () => {
      sock.write(
        `GET /ws HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
          (headers.cookie ? `Cookie: ${headers.cookie}\r\n` : "") +
          (headers.origin ? `Origin: ${headers.origin}\r\n` : "") +
          "\r\n",
      );
    });
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!head.startsWith("HTTP/1.1 101")) {
          sock.destroy();
          return ok(head);
        }
        upgraded = true;
        buf = buf.subarray(end + 4);
        const payload = Buffer.from(text);
        const mask = Buffer.from([1, 2, 3, 4]);
        const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
        sock.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      }
      if (buf.length >= 2 && buf.length >= 2 + (buf[1]! & 0x7f)) {
        const reply = buf.subarray(2, 2 + (buf[1]! & 0x7f)).toString();
        sock.destroy();
        ok(reply);
      }
    });
  });
}

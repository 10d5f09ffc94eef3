import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Agent, createServer, type IncomingHttpHeaders, request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type EmbeddedServer, startEmbedded } from "../src/main/embedded.js";
import { type Browser, type BrowserContext, launchBrowser, screenshot } from "./browser.js";
import { LoomProcess } from "./helpers.js";
import { KernelSocket } from "./kernelsocket.js";
import { Upstream } from "./wsupstream.js";

/**
 * The workspaces' user-content origin (issue 19) on a real embedded server, with real upstream
 * servers published in its directory (as the workspace controller does), driven by real
 * Chromium: log-in by one-time link, the page, a WebSocket, an event stream and /proxy/P/ through
 * the origin; and every refusal, each tried as the attack it fences.
 */
const BASE = "/apis/loom.dev/v1alpha1";

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

describe("workspace origin", () => {
  let home: string;
  let server: EmbeddedServer;
  let browser: Browser;
  let python: ChildProcess;
  let pyPort = 0;
  const nb = new Upstream("nb");
  const nb2 = new Upstream("nb2");
  let editor = "";

  const host = (name: string, project = "default") =>
    `${name}--${project}.ws.localhost:${server.workspaces.port}`;
  const originOf = (name: string, project = "default") => `http://${host(name, project)}`;

  async function api(method: string, path: string, body?: unknown, token = server.adminToken) {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
  }

  async function tokenFor(name: string, role: string, project?: string): Promise<string> {
    const res = await api("POST", `${BASE}/tokens`, { name, role, ...(project ? { project } : {}) });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.token as string;
  }

  const login = (token: string, name = "nb", project = "default") =>
    api("POST", `${BASE}/projects/${project}/workspaces/${name}/login`, {}, token);

  /** A request to the origin with any Host (as curl --resolve would send). */
  function origin(path: string, opts: { host: string; cookie?: string; headers?: Record<string, string> }) {
    return new Promise<Reply>((ok, fail) => {
      const req = request(
        {
          host: "127.0.0.1",
          port: server.workspaces.port,
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

  /** A session cookie for `name`, through the real ticket exchange. */
  async function sessionFor(token: string, name = "nb"): Promise<string> {
    const link = await login(token, name);
    expect(link.status, JSON.stringify(link.body)).toBe(200);
    const url = new URL(link.body.url as string);
    const res = await origin(url.pathname + url.search, { host: url.host });
    expect(res.status, res.body).toBe(302);
    return /loom_ws=([^;]+)/.exec(String(res.headers["set-cookie"]))![1]!;
  }

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), "loom-wsorigin-"));
    server = await startEmbedded({
      dataDir: join(home, "data"),
      port: 0,
      log: pino({ level: "silent" }),
      controllers: false,
      sandbox: false,
      networkIsolation: false,
    });
    const site = join(home, "site");
    mkdirSync(site);
    writeFileSync(join(site, "hello.txt"), "served by python -m http.server\n");
    python = spawn("python3", ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", site], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    python.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 300 && !pyPort; i++) {
      pyPort = Number(/port (\d+)/.exec(out)?.[1] ?? 0);
      await sleep(50);
    }
    expect(pyPort, `python -m http.server did not start: ${out}`).toBeGreaterThan(0);
    const ref = (name: string) => ({ kind: "Workspace", project: "default", name, uid: `uid-${name}` });
    server.workspaces.directory.publish("default", "nb", {
      ref: ref("nb"),
      host: "127.0.0.1",
      port: await nb.start(),
      ports: [pyPort],
    });
    server.workspaces.directory.publish("default", "nb2", {
      ref: ref("nb2"),
      host: "127.0.0.1",
      port: await nb2.start(),
      ports: [],
    });
    // Published, but nothing listens there (a server still starting, or one that died).
    server.workspaces.directory.publish("default", "dead", {
      ref: ref("dead"),
      host: "127.0.0.1",
      port: 9,
      ports: [],
    });
    const other = { apiVersion: "loom.dev/v1alpha1", kind: "Project", metadata: { name: "other" }, spec: {} };
    expect((await api("POST", `${BASE}/projects`, other)).status).toBe(201);
    // Log-in needs the Workspace object; with no controllers running, what answers is what the
    // test published above (stopped: nothing published for it).
    for (const name of ["nb", "nb2", "dead", "stopped"]) {
      const ws = {
        apiVersion: "loom.dev/v1alpha1",
        kind: "Workspace",
        metadata: { name },
        spec: { ide: "none", command: ["python3", "-m", "http.server", "$PORT"] },
      };
      const made = await api("POST", `${BASE}/projects/default/workspaces`, ws);
      expect(made.status, JSON.stringify(made.body)).toBe(201);
    }
    editor = await tokenFor("ed", "editor", "default");
    browser = await launchBrowser();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    python?.kill("SIGTERM");
    await nb.close();
    await nb2.close();
    await server?.close();
    rmSync(home, { recursive: true, force: true });
  });

  describe("in Chromium", () => {
    let context: BrowserContext;
    beforeAll(async () => {
      context = await browser.newContext();
    });
    afterAll(async () => context?.close());

    it("the one-time link sets a host-only HttpOnly cookie and the workspace's page loads through Loom", async () => {
      const link = await login(editor);
      expect(link.status).toBe(200);
      const url = link.body.url as string;
      expect(url).toMatch(new RegExp(`^${originOf("nb")}/_loom/login\\?ticket=[\\w-]{20,}$`));
      const page = await context.newPage();
      await page.goto(url);
      expect(page.url()).toBe(`${originOf("nb")}/`);
      expect(await page.textContent("#who")).toBe("hello from nb");
      await screenshot(page, "workspace-origin-page");
      const cookies = await context.cookies(originOf("nb"));
      const session = cookies.find((c) => c.name === "loom_ws")!;
      expect(session).toMatchObject({
        domain: "nb--default.ws.localhost",
        path: "/",
        httpOnly: true,
        sameSite: "Lax",
      });
      // The page sees its own cookies, never Loom's.
      const visible = await page.evaluate(() => document.cookie);
      expect(visible).toContain("app=1");
      expect(visible).not.toContain("loom_ws");
      expect(server.workspaces.directory.lastActivity("default", "nb")).toBeInstanceOf(Date);
      await page.close();
    });

    it("a WebSocket echo, an event stream and /proxy/P/ work through the origin", async () => {
      const page = await context.newPage();
      await page.goto(`${originOf("nb")}/`);
      const echoed = await page.evaluate(
        () =>
          new Promise<string>((ok) => {
            const w = new WebSocket(`ws://${location.host}/echo`);
            w.onopen = () => w.send("6*7 = 42");
            w.onmessage = (e) => {
              ok(String(e.data));
              w.close();
            };
            w.onerror = () => ok("websocket failed");
          }),
      );
      expect(echoed).toBe("6*7 = 42");
      expect(nb.sockets).toContain("/echo");
      // The first event arrives while the stream is still open: nothing buffers it.
      const first = await page.evaluate(
        () =>
          new Promise<string>((ok) => {
            const es = new EventSource("/events");
            es.onmessage = (e) => {
              ok(String(e.data));
              es.close();
            };
            es.onerror = () => ok("event stream failed");
          }),
      );
      expect(first).toBe("one");
      nb.release();
      await page.goto(`${originOf("nb")}/proxy/${pyPort}/hello.txt`);
      expect(await page.textContent("body")).toContain("served by python -m http.server");
      await screenshot(page, "workspace-origin-proxy-port");
      await page.close();
    });

    it("a workspace's page cannot read the console's cookies nor reach the API or another workspace with them", async () => {
      await context.addCookies([
        { name: "console", value: "api-secret", url: server.url },
        { name: "console", value: "api-secret", url: server.url.replace("127.0.0.1", "localhost") },
      ]);
      const other = await context.newPage();
      await other.goto((await login(editor, "nb2")).body.url as string);
      expect(await other.textContent("#who")).toBe("hello from nb2");
      await other.close();
      const seenBefore = nb2.seen.length;
      const socketsBefore = nb2.sockets.length;

      const page = await context.newPage();
      await page.goto(`${originOf("nb")}/`);
      const attempts = await page.evaluate(
        async ({ api, sibling }) => {
          const tryFetch = (url: string, init: RequestInit) =>
            fetch(url, { credentials: "include", ...init }).then(
              async (r) => `read ${r.status}: ${await r.text()}`,
              () => "blocked",
            );
          const ws = await new Promise<string>((ok) => {
            const w = new WebSocket(`${sibling.replace("http", "ws")}/echo`);
            w.onopen = () => ok("opened");
            w.onerror = () => ok("blocked");
          });
          return {
            cookie: document.cookie,
            api: await tryFetch(`${api}/apis/loom.dev/v1alpha1/projects`, {}),
            siblingGet: await tryFetch(`${sibling}/headers`, {}),
            siblingPost: await tryFetch(`${sibling}/headers`, { method: "POST", body: "x" }),
            siblingNoCors: await fetch(`${sibling}/headers`, {
              mode: "no-cors",
              credentials: "include",
            }).then(
              (r) => `opaque ${r.type}`,
              () => "blocked",
            ),
            ws,
          };
        },
        { api: server.url, sibling: originOf("nb2") },
      );
      await screenshot(page, "workspace-origin-isolation");
      await page.close();
      expect(attempts.cookie).not.toContain("console");
      expect(attempts.cookie).not.toContain("loom_ws");
      expect(attempts.api).toBe("blocked");
      expect(attempts.siblingGet).toBe("blocked");
      expect(attempts.siblingPost).toBe("blocked");
      expect(attempts.ws).toBe("blocked");
      // Nothing the sibling's page sent reached nb2's server, with its cookie or without.
      expect(nb2.seen.length).toBe(seenBefore);
      expect(nb2.sockets.length).toBe(socketsBefore);
    });
  });

  it("the workspace gets neither Loom's cookie nor its Authorization, and is told X-Forwarded-*", async () => {
    const sid = await sessionFor(editor);
    const res = await origin("/headers", {
      host: host("nb"),
      cookie: `loom_ws=${sid}; theirs=1`,
      headers: { authorization: `Bearer ${editor}` },
    });
    expect(res.status).toBe(200);
    const seen = JSON.parse(res.body) as Record<string, string>;
    expect(seen.cookie).toBe("theirs=1");
    expect(seen.authorization).toBeUndefined();
    expect(seen["x-forwarded-host"]).toBe(host("nb"));
    expect(seen["x-forwarded-proto"]).toBe("http");
    expect(seen.host).toBe(host("nb"));
  });

  it("bytes either way on a WebSocket through the origin are the workspace's activity (idle culling), at most a touch a second", async () => {
    const sid = await sessionFor(editor);
    const dir = server.workspaces.directory;
    const last = () => dir.lastActivity("default", "nb")?.getTime() ?? 0;
    const socket = await KernelSocket.open(originOf("nb"), "/echo", `loom_ws=${sid}`);
    try {
      // Nothing but the socket's traffic from here on: no request, no new socket. Each step waits
      // past the one-a-second limit, then expects the record to move to at least its start.
      await sleep(1100);
      let since = Date.now();
      socket.send({ from: "browser" });
      await socket.next((m) => (m as unknown as { from?: string }).from === "browser", 10_000);
      await expect.poll(last, { timeout: 10_000 }).toBeGreaterThanOrEqual(since);
      // The workspace's side alone (a Jupyter ping, VS Code's keep-alive) counts as well.
      await sleep(1100);
      since = Date.now();
      nb.push(JSON.stringify({ from: "workspace" }));
      await socket.next((m) => (m as unknown as { from?: string }).from === "workspace", 10_000);
      await expect.poll(last, { timeout: 10_000 }).toBeGreaterThanOrEqual(since);
      // A chatty socket is not a write per frame: ten frames each way in half a second, a touch or two.
      await sleep(1100);
      const touches = vi.spyOn(dir, "touch");
      for (let i = 0; i < 10; i++) {
        socket.send({ burst: i });
        await sleep(50);
      }
      await socket.next((m) => (m as unknown as { burst?: number }).burst === 9, 10_000);
      expect(touches.mock.calls.length).toBeGreaterThan(0);
      expect(touches.mock.calls.length).toBeLessThanOrEqual(4);
      touches.mockRestore();
    } finally {
      await socket.close();
    }
  });

  it("keeps an idle keep-alive connection 75 s on the API and on the origin, not Node's 5 s: a request 7 s after the last goes on the same connection", async () => {
    const sid = await sessionFor(editor);
    const get = (agent: Agent, port: number, path: string, headers: Record<string, string>) =>
      new Promise<{ status: number; keepAlive?: string; reused: boolean }>((ok, fail) => {
        const req = request({ host: "127.0.0.1", port, path, headers, agent }, (res) => {
          res.resume();
          res.on("end", () =>
            ok({
              status: res.statusCode ?? 0,
              keepAlive: String(res.headers["keep-alive"]),
              reused: req.reusedSocket,
            }),
          );
        });
        req.on("error", fail);
        req.end();
      });
    const twice = async (port: number, path: string, headers: Record<string, string> = {}) => {
      // One socket, kept: a socket the server closes leaves the agent, and the next request
      // would then go on a new one (reused: false).
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const first = await get(agent, port, path, headers);
        expect(first).toMatchObject({ status: 200, keepAlive: "timeout=75" });
        // Past Node's default (5 s, plus the 1 s it allows), which clients idle for as long as
        // 5 s (httpx, Node's agent) race: the request sent as the server closes meets a closed socket.
        await sleep(7000);
        expect(await get(agent, port, path, headers)).toMatchObject({ status: 200, reused: true });
      } finally {
        agent.destroy();
      }
    };
    await Promise.all([
      twice(Number(new URL(server.url).port), "/healthz"),
      twice(server.workspaces.port, "/", { host: host("nb"), cookie: `loom_ws=${sid}` }),
    ]);
  }, 60_000);

  it("the log-in answer: HttpOnly, SameSite=Lax, Path=/, no Domain (host-only), then / ", async () => {
    const link = await login(editor);
    const url = new URL(link.body.url as string);
    const res = await origin(url.pathname + url.search, { host: url.host });
    expect(res.status).toBe(302);
    expect(res.headers.location).toBe("/");
    const cookie = String(res.headers["set-cookie"]);
    expect(cookie).toMatch(/^loom_ws=[\w-]{20,}; HttpOnly; SameSite=Lax; Path=\//);
    expect(cookie.toLowerCase()).not.toContain("domain");
  });

  describe("refusals", () => {
    it("no cookie, a forged one, or another workspace's session: refused before the workspace sees it", async () => {
      const before = nb.seen.length;
      const none = await origin("/", { host: host("nb") });
      expect(none.status).toBe(401);
      expect(none.body).toContain("loom open ws/nb -p default");
      expect((await origin("/", { host: host("nb"), cookie: "loom_ws=forged-value" })).status).toBe(401);
      const sid2 = await sessionFor(editor, "nb2");
      const moved = await origin("/", { host: host("nb"), cookie: `loom_ws=${sid2}` });
      expect(moved.status).toBe(403);
      expect(moved.body).toContain("another workspace");
      expect(nb.seen.length).toBe(before);
    });

    it("a ticket works once", async () => {
      const url = new URL((await login(editor)).body.url as string);
      expect((await origin(url.pathname + url.search, { host: url.host })).status).toBe(302);
      const again = await origin(url.pathname + url.search, { host: url.host });
      expect(again.status).toBe(401);
      expect(again.body).toContain("used already");
    });

    it("a ticket taken to another workspace's origin is refused (and burnt)", async () => {
      const url = new URL((await login(editor)).body.url as string);
      expect((await origin(url.pathname + url.search, { host: host("nb2") })).status).toBe(403);
      expect((await origin(url.pathname + url.search, { host: url.host })).status).toBe(401);
    });

    it("a viewer, another project's member, an API key and an unknown token get no link", async () => {
      const viewer = await tokenFor("v", "viewer", "default");
      const stranger = await tokenFor("s", "editor", "other");
      const key = await api("POST", `${BASE}/projects/default/apikeys`, { name: "k" });
      expect(key.status).toBe(201);
      for (const [who, token, why] of [
        ["viewer", viewer, /may read, not change/],
        ["other project", stranger, /reaches project other only/],
        ["API key", key.body.key as string, /inference gateway/],
      ] as const) {
        const res = await login(token);
        expect(res.status, who).toBe(403);
        expect(String(res.body.message), who).toMatch(why);
      }
      expect((await login("not-a-token")).status).toBe(401);
    });

    it("a workspace name that cannot name an origin is refused with what to do", async () => {
      const res = await login(editor, "a--b");
      expect(res.status).toBe(400);
      expect(String(res.body.message)).toContain("rename");
    });

    it("a revoked token's session is refused at the next request", async () => {
      const made = await api("POST", `${BASE}/tokens`, {
        name: "soon-gone",
        role: "editor",
        project: "default",
      });
      const sid = await sessionFor(made.body.token as string);
      expect((await origin("/", { host: host("nb"), cookie: `loom_ws=${sid}` })).status).toBe(200);
      expect((await api("DELETE", `${BASE}/tokens/${made.body.id}`)).status).toBe(204);
      let status = 200;
      for (let i = 0; i < 300 && status === 200; i++) {
        status = (await origin("/", { host: host("nb"), cookie: `loom_ws=${sid}` })).status;
        if (status === 200) await sleep(50); // the server trusts a verified token for at most 1 s
      }
      expect(status).toBe(401);
    });

    it("a WebSocket without a session is refused and never reaches the workspace", async () => {
      const before = nb.sockets.length;
      const status = await new Promise<number>((ok, fail) => {
        const req = request({
          host: "127.0.0.1",
          port: server.workspaces.port,
          path: "/echo",
          headers: {
            host: host("nb"),
            connection: "Upgrade",
            upgrade: "websocket",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version": "13",
          },
        });
        req.on("response", (res) => ok(res.statusCode ?? 0));
        req.on("upgrade", () => ok(101));
        req.on("error", fail);
        req.end();
      });
      expect(status).toBe(401);
      expect(nb.sockets.length).toBe(before);
    });

    it("hosts that name no workspace, ports it does not listen on, stopped and unanswering workspaces: pages that say what to do", async () => {
      const sid = await sessionFor(editor);
      const api = await origin("/", {
        host: `localhost:${server.workspaces.port}`,
        cookie: `loom_ws=${sid}`,
      });
      expect(api.status).toBe(404);
      expect(api.body).toContain("NAME--PROJECT.ws.localhost");
      const port = await origin("/proxy/22/", { host: host("nb"), cookie: `loom_ws=${sid}` });
      expect(port.status).toBe(404);
      expect(port.body).toContain(`listens on ${pyPort}`);
      const slash = await origin(`/proxy/${pyPort}`, { host: host("nb"), cookie: `loom_ws=${sid}` });
      expect(slash.status).toBe(308);
      expect(slash.headers.location).toBe(`/proxy/${pyPort}/`);
      const stoppedSid = await sessionFor(editor, "stopped");
      const stopped = await origin("/", { host: host("stopped"), cookie: `loom_ws=${stoppedSid}` });
      expect(stopped.status).toBe(503);
      expect(stopped.body).toContain("loom start ws/stopped -p default");
      const deadSid = await sessionFor(editor, "dead");
      const dead = await origin("/", { host: host("dead"), cookie: `loom_ws=${deadSid}` });
      expect(dead.status).toBe(502);
      expect(dead.body).toContain("nothing answers on port 9");
    });
  });
});

describe("loom up --workspace-port and loom open (the real CLI and server)", () => {
  const loomPort = async () => {
    const probe = createServer();
    await new Promise<void>((ok) => probe.listen(0, "127.0.0.1", ok));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((done) => probe.close(done));
    return port;
  };
  let wsPort = 0;
  let loom: LoomProcess;

  beforeAll(async () => {
    wsPort = await loomPort();
    loom = new LoomProcess(["--workspace-port", String(wsPort)]);
    await loom.start();
  }, 60_000);
  afterAll(async () => loom?.stop());

  it("loom open ws/NAME prints a one-time link to the workspace's own origin, which logs in once", async () => {
    const stopped =
      "apiVersion: loom.dev/v1alpha1\nkind: Workspace\nmetadata: {name: nb}\n" +
      'spec: {ide: none, command: [python3, -m, http.server, "$PORT"], stopped: true}\n';
    const applied = await loom.cli(["apply", "-f", "-"], { input: stopped });
    expect(applied.code, applied.stderr).toBe(0);
    const r = await loom.cli(["open", "ws/nb", "--no-browser"]);
    expect(r.code, r.stderr).toBe(0);
    const link = new URL(r.stdout.trim());
    expect(link.origin).toBe(`http://nb--default.ws.localhost:${wsPort}`);
    expect(link.origin).not.toBe(new URL(loom.url).origin);
    const get = (path: string, cookie?: string) =>
      new Promise<{ status: number; cookie?: string; body: string }>((ok, fail) => {
        const req = request(
          {
            host: "127.0.0.1",
            port: wsPort,
            path,
            headers: { host: link.host, ...(cookie ? { cookie } : {}) },
          },
          (res) => {
            let body = "";
            res.on("data", (d: Buffer) => (body += d.toString()));
            res.on("end", () =>
              ok({
                status: res.statusCode ?? 0,
                cookie: res.headers["set-cookie"]?.[0]?.split(";")[0],
                body,
              }),
            );
          },
        );
        req.on("error", fail);
        req.end();
      });
    const first = await get(link.pathname + link.search);
    expect(first.status).toBe(302);
    // Logged in; the workspace is stopped (nothing published): the page says how to start it.
    const page = await get("/", first.cookie);
    expect(page.status).toBe(503);
    expect(page.body).toContain("loom start ws/nb -p default");
    expect((await get(link.pathname + link.search)).status).toBe(401);
  });

  it("loom open refuses what is not a workspace", async () => {
    const r = await loom.cli(["open", "tj/x"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("ws/NAME");
  });
});

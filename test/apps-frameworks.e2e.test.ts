import { copyFileSync, mkdirSync } from "node:fs";
import { type IncomingHttpHeaders, request } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appsVenv } from "./appframeworks.js";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * `framework: gradio` and `framework: streamlit` Apps on a real `loom up`, with the real
 * packages (appframeworks.ts): Loom's commands start them on the replica's port at the root of
 * the app's own origin, and their pages, Gradio's /config and Streamlit's WebSocket
 * (/_stcore/stream) work through that origin.
 */
const BASE = "/apis/loom.dev/v1alpha1";

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

describe("apps: gradio and streamlit", () => {
  const loom = new LoomProcess();
  let port = 0;
  const hostOf = (name: string) => `${name}--default.app.localhost:${port}`;

  function origin(path: string, host: string, cookie?: string) {
    return new Promise<Reply>((ok, fail) => {
      const req = request(
        { host: "127.0.0.1", port, path, headers: { host, ...(cookie ? { cookie } : {}) } },
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

  async function ready(name: string) {
    const deadline = Date.now() + 240_000;
    let last: unknown;
    while (Date.now() < deadline) {
      const r = await loom.api("GET", `${BASE}/projects/default/apps/${name}`);
      const s = (r.body as { status?: { ready?: number; url?: string } }).status;
      last = s;
      if ((s?.ready ?? 0) >= 1 && s?.url) return s;
      await sleep(250);
    }
    throw new Error(`app ${name} never got ready: ${JSON.stringify(last)}\n${loom.log.slice(-4000)}`);
  }

  beforeAll(async () => {
    const venv = appsVenv();
    await loom.start();
    const code = join(loom.home, "code");
    mkdirSync(code);
    for (const f of ["gradio_app.py", "streamlit_app.py"])
      copyFileSync(join(ROOT, "test/fixtures/apps", f), join(code, f));
    const app = (name: string, framework: string, file: string, access: string) =>
      `apiVersion: loom.dev/v1alpha1\nkind: App\nmetadata: {name: ${name}}\nspec:\n  framework: ${framework}\n` +
      `  file: ${file}\n  workingDir: ${code}\n  python: {venv: ${venv}}\n  access: ${access}\n  replicas: {min: 1, max: 1}\n`;
    const r = await loom.cli(["apply", "-f", "-"], {
      input: [
        app("chat", "gradio", "gradio_app.py", "public"),
        app("compare", "streamlit", "streamlit_app.py", "project"),
      ].join("---\n"),
    });
    expect(r.code, r.stderr).toBe(0);
    port = Number(new URL((await ready("chat")).url!).port);
    await ready("compare");
  }, 600_000);

  afterAll(async () => {
    await loom.cli(["delete", "app", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  it("serves a Gradio app's page and /config at the root of its origin", async () => {
    const page = await origin("/", hostOf("chat"));
    expect(page.status).toBe(200);
    expect(page.body).toContain("loom-gradio-test");
    const config = await origin("/config", hostOf("chat"));
    expect(config.status, config.body).toBe(200);
    const json = JSON.parse(config.body) as { title?: string; root?: string };
    expect(JSON.stringify(json)).toContain("loom-gradio-test");
    // Links Gradio makes point at the app's origin, never at the replica's own address.
    expect(json.root ?? "").not.toMatch(/127\.0\.0\.1|198\.18\./);
  }, 60_000);

  it("serves a Streamlit app behind the log-in: its health, its page, and its WebSocket upgrades through the origin", async () => {
    const link = await loom.api("POST", `${BASE}/projects/default/apps/compare/login`, {});
    const url = new URL((link.body as { url: string }).url);
    const login = await origin(url.pathname + url.search, url.host);
    const cookie = /loom_app=[^;]+/.exec(String(login.headers["set-cookie"]))![0];
    expect((await origin("/_stcore/health", hostOf("compare"))).status).toBe(401);
    const health = await origin("/_stcore/health", hostOf("compare"), cookie);
    expect(health.status, health.body).toBe(200);
    expect(health.body).toBe("ok");
    expect((await origin("/", hostOf("compare"), cookie)).status).toBe(200);
    const head = await upgrade(port, hostOf("compare"), "/_stcore/stream", cookie);
    expect(head).toMatch(/^HTTP\/1.1 101/);
  }, 60_000);
});

/** An HTTP Upgrade to a WebSocket from the app's own page (Origin: the app's origin); the response head. */
function upgrade(port: number, host: string, path: string, cookie: string) {
  return new Promise<string>((ok, fail) => {
    const sock = connect(port, "127.0.0.1");
    let buf = "";
    sock.on("error", fail);
    sock.on("connect", () =>
      sock.write(
        `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://${host}\r\n` +
          `Cookie: ${cookie}\r\n\r\n`,
      ),
    );
    sock.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      sock.destroy();
      ok(buf.slice(0, end));
    });
  });
}

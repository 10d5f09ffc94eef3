import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { jupyterVenv } from "./jupyter.js";
import { KernelSocket } from "./kernelsocket.js";

/**
 * Idle culling (issue 19) of real JupyterLab workspaces on `loom up`: one left alone is stopped
 * with reason Idle and keeps its home; one whose kernel computes is spared although nothing
 * reaches it through Loom and Jupyter's own last_activity stands still (a kernel in
 * `time.sleep` sends nothing), as Kubeflow's culler spares a busy kernel. Everything goes through
 * the workspace origin with the session `loom open` logs in, as a browser would.
 */

interface Ws {
  metadata: { annotations?: Record<string, string> };
  status?: {
    phase?: string;
    url?: string;
    stoppedReason?: string;
    lastActivityTime?: string;
    conditions?: { type: string; reason?: string; message?: string }[];
  };
}

const PATH = "/apis/loom.dev/v1alpha1/projects/default/workspaces";
const TIMEOUT_S = 3;

describe("idle culling of JupyterLab workspaces (embedded)", () => {
  const s = new LoomProcess();
  afterAll(async () => {
    await s.cli(["delete", "ws", "--all", "--timeout", "30"]).catch(() => undefined);
    await s.stop();
  });

  async function ws(name: string): Promise<Ws> {
    const r = await s.api("GET", `${PATH}/${name}`);
    if (r.status !== 200) throw new Error(`get ws/${name}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as Ws;
  }

  async function waitFor(name: string, pred: (w: Ws) => boolean, ms: number): Promise<Ws> {
    const deadline = Date.now() + ms;
    let last: Ws | undefined;
    while (Date.now() < deadline) {
      last = await ws(name);
      if (pred(last)) return last;
      await sleep(200);
    }
    throw new Error(
      `ws/${name}: timed out; last status: ${JSON.stringify(last?.status)}\n${s.log.slice(-3000)}`,
    );
  }

  const running = (w: Ws) => w.status?.phase === "Running";

  /** The workspace's manifest; idleTimeout only once the test has set it up (see below). */
  const manifest = (venv: string, name: string, idle: boolean) => `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: ${name}}
spec: {ide: jupyter, python: {venv: ${venv}}${idle ? `, idleTimeout: ${TIMEOUT_S}s` : ""}}
`;

  /** A session on the workspace's origin: `loom open --no-browser`'s one-time link, followed. */
  async function login(w: Ws, name: string): Promise<Session> {
    const open = await s.cli(["open", `ws/${name}`, "--no-browser"]);
    expect(open.code, open.stderr).toBe(0);
    const link = new URL(open.stdout.trim());
    const res = await origin(w.status!.url!, "GET", link.pathname + link.search, {});
    expect(res.status, res.body).toBe(302);
    const session = /(loom_ws=[^;]+)/.exec(res.cookies.join("\n"))?.[1];
    expect(session).toBeTruthy();
    // JupyterLab's page sets the _xsrf cookie its writes must echo (Jupyter's XSRF check stays on).
    const lab = await origin(w.status!.url!, "GET", "/lab", { cookie: session! });
    expect(lab.status).toBe(200);
    const xsrf = /_xsrf=([^;]+)/.exec(lab.cookies.join("\n"))?.[1];
    expect(xsrf).toBeTruthy();
    return { url: w.status!.url!, cookie: `${session}; _xsrf=${xsrf}`, xsrf: decodeURIComponent(xsrf!) };
  }

  /** A write to Jupyter's REST API through the origin, as JupyterLab in a browser sends it. */
  async function write(sess: Session, method: string, path: string, body: unknown) {
    const res = await origin(
      sess.url,
      method,
      path,
      { cookie: sess.cookie, "x-xsrftoken": sess.xsrf, "content-type": "application/json" },
      JSON.stringify(body),
    );
    expect(res.status, res.body).toBeLessThan(300);
    return res.body ? (JSON.parse(res.body) as Record<string, unknown>) : {};
  }

  it("stops the idle workspace (home kept) and spares the one whose kernel runs", async () => {
    const venv = jupyterVenv();
    await s.start();
    // Applied without idleTimeout first: the setup below, done through the origin, must not race
    // a clock of a few seconds on a loaded machine. Adding idleTimeout later restarts nothing.
    for (const name of ["quiet", "computing"])
      expect((await s.cli(["apply", "-f", "-"], { input: manifest(venv, name, false) })).code).toBe(0);
    const idleWs = await waitFor("quiet", running, 240_000);
    const busyWs = await waitFor("computing", running, 240_000);

    // A file in the idle one's home, written through Jupyter's contents API.
    const idle = await login(idleWs, "quiet");
    await write(idle, "PUT", "/api/contents/kept.txt", {
      type: "file",
      format: "text",
      content: "still here",
    });
    const kept = join(s.dataDir, "homes", "default", "quiet", "kept.txt");
    expect(readFileSync(kept, "utf8")).toBe("still here");

    // The busy one: a kernel started through the REST API, told over its WebSocket to compute
    // for ten minutes; the socket is then closed, so Loom's proxy sees nothing more.
    const busy = await login(busyWs, "computing");
    const kernel = (await write(busy, "POST", "/api/kernels", { name: "python3" })) as { id: string };
    const session = randomBytes(8).toString("hex");
    const socket = await KernelSocket.open(
      busy.url,
      `/api/kernels/${kernel.id}/channels?session_id=${session}`,
      busy.cookie,
    );
    const msgId = socket.execute("import time; time.sleep(600)", session);
    await socket.next(
      (m) =>
        m.channel === "iopub" &&
        m.header.msg_type === "status" &&
        m.parent_header.msg_id === msgId &&
        m.content.execution_state === "busy",
      120_000,
    );
    await socket.close();

    for (const name of ["quiet", "computing"])
      expect((await s.cli(["apply", "-f", "-"], { input: manifest(venv, name, true) })).code).toBe(0);
    const culled = await waitFor("quiet", (w) => w.status?.phase === "Stopped", 120_000);
    expect(culled.status?.stoppedReason).toBe("Idle");
    expect(culled.metadata.annotations?.["loom.dev/idle-stopped"]).toBeTruthy();
    const ready = culled.status?.conditions?.find((c) => c.type === "Ready");
    expect(ready?.reason).toBe("Idle");
    expect(ready?.message).toMatch(
      /^stopped after \d+s without activity \(loom start ws\/NAME runs it again\); the home is kept$/,
    );
    const described = await s.cli(["describe", "ws/quiet"]);
    expect(described.stdout).toMatch(/Idle/);

    // The busy one outlives several idle timeouts after the last request through Loom
    // (the clock only makes the test wait longer on a slow machine, never fail).
    const quietSince = Date.now();
    while (Date.now() - quietSince < 5 * TIMEOUT_S * 1000) {
      const w = await ws("computing");
      expect(w.status?.phase, JSON.stringify(w.status)).toBe("Running");
      expect(w.metadata.annotations?.["loom.dev/idle-stopped"]).toBeUndefined();
      await sleep(500);
    }

    // Control: once the kernel stops computing, the same workspace is culled in its turn.
    await write(busy, "POST", `/api/kernels/${kernel.id}/interrupt`, {});
    const after = await waitFor("computing", (w) => w.status?.phase === "Stopped", 120_000);
    expect(after.status?.stoppedReason).toBe("Idle");

    // The culled workspace starts again on the same home (its idleTimeout lifted first by a merge
    // patch, which keeps the controller's mark, so it is not culled again before the test has
    // read the file).
    const lifted = await s.api("PATCH", `${PATH}/quiet`, { spec: { idleTimeout: null } });
    expect(lifted.status, JSON.stringify(lifted.body)).toBe(200);
    expect((await ws("quiet")).status?.phase).toBe("Stopped");
    expect((await s.cli(["start", "ws/quiet"])).stdout).toBe("workspace.loom.dev/quiet started\n");
    const back = await waitFor("quiet", running, 240_000);
    expect(back.status?.stoppedReason).toBeUndefined();
    expect(back.metadata.annotations?.["loom.dev/idle-stopped"]).toBeUndefined();
    const again = await login(back, "quiet");
    const file = await origin(again.url, "GET", "/api/contents/kept.txt", { cookie: again.cookie });
    expect(file.status).toBe(200);
    expect((JSON.parse(file.body) as { content: string }).content).toBe("still here");
  }, 1_200_000);
});

interface Session {
  url: string;
  cookie: string;
  xsrf: string;
}

/** A request to a workspace's origin (its status.url) with its Host, as a browser sends it. */
function origin(
  wsUrl: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string; cookies: string[] }> {
  const { host, port } = new URL(wsUrl);
  return new Promise((ok, fail) => {
    const req = request({ host: "127.0.0.1", port, method, path, headers: { host, ...headers } }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () =>
        ok({ status: res.statusCode ?? 0, body: text, cookies: res.headers["set-cookie"] ?? [] }),
      );
    });
    req.on("error", fail);
    req.end(body);
  });
}

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { jupyterVenv } from "./jupyter.js";
import { KernelSocket } from "./kernelsocket.js";

/**
 * A real JupyterLab workspace on `loom up`, started with Loom's flags (base URL /, no token, no
 * password), answering /api/status on its upstream port, its files in the persistent home. The
 * environment is built once (pip install jupyterlab: minutes) and kept between runs in
 * LOOM_TEST_JUPYTER_VENV (default: the machine's temp dir), then given as spec.python.venv.
 */

interface Ws {
  status?: {
    phase?: string;
    replica?: { host?: string; port?: number; ready: boolean };
    conditions?: { type: string; reason?: string; message?: string }[];
  };
}

describe("Workspace with JupyterLab (embedded)", () => {
  const s = new LoomProcess();
  afterAll(async () => {
    await s.cli(["delete", "ws", "--all", "--timeout", "30"]).catch(() => undefined);
    await s.stop();
  });

  it("JupyterLab answers /api/status with no token, and saves files in the home", async () => {
    const venv = jupyterVenv();
    await s.start();
    const yaml = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: nb}
spec: {ide: jupyter, python: {venv: ${venv}}}
`;
    const applied = Date.now();
    expect((await s.cli(["apply", "-f", "-"], { input: yaml })).code).toBe(0);
    let w: Ws | undefined;
    const deadline = Date.now() + 240_000;
    while (Date.now() < deadline) {
      w = (await s.api("GET", "/apis/loom.dev/v1alpha1/projects/default/workspaces/nb")).body as Ws;
      if (w.status?.phase === "Running" || w.status?.phase === "Failed") break;
      await sleep(100);
    }
    expect(w?.status?.phase, JSON.stringify(w?.status) + s.log.slice(-2000)).toBe("Running");
    // Reported, not asserted (the machine is shared): apply → Running with a warm environment.
    console.log(`JupyterLab workspace: apply → Running in ${((Date.now() - applied) / 1000).toFixed(1)}s`);
    const base = `http://${w!.status!.replica!.host}:${w!.status!.replica!.port}`;
    // The Host the workspace origin forwards: Jupyter must accept it (allow_remote_access).
    const headers = { host: "nb--default.ws.localhost:7471" };
    const status = await fetch(`${base}/api/status`, { headers });
    expect(status.status).toBe(200);
    expect(await status.json()).toHaveProperty("started");
    const lab = await fetch(`${base}/lab`, { headers });
    expect(lab.status).toBe(200);
    // Jupyter's XSRF check stays on (no token, yet a cross-site form cannot write): a write
    // carries the _xsrf cookie the page set, echoed in a header, as JupyterLab in a browser does.
    const xsrf = /_xsrf=([^;]+)/.exec(lab.headers.get("set-cookie") ?? "")?.[1];
    expect(xsrf).toBeTruthy();
    const refused = await fetch(`${base}/api/contents/nope.txt`, {
      method: "PUT",
      headers: { ...headers, "content-type": "application/json" },
      body: JSON.stringify({ type: "file", format: "text", content: "x" }),
    });
    expect(refused.status).toBe(403);
    const put = await fetch(`${base}/api/contents/hello.txt`, {
      method: "PUT",
      headers: {
        ...headers,
        "content-type": "application/json",
        cookie: `_xsrf=${xsrf}`,
        "x-xsrftoken": decodeURIComponent(xsrf!),
      },
      body: JSON.stringify({ type: "file", format: "text", content: "hi from jupyter" }),
    });
    expect(put.status).toBeLessThan(300);
    expect(readFileSync(join(s.dataDir, "homes", "default", "nb", "hello.txt"), "utf8")).toBe(
      "hi from jupyter",
    );
    // A JupyterLab terminal (POST /api/terminals, then its WebSocket): `python` is the
    // environment's, not "not found" (Jupyter's default login shell reset PATH in /etc/profile).
    const writeHeaders = {
      ...headers,
      "content-type": "application/json",
      cookie: `_xsrf=${xsrf}`,
      "x-xsrftoken": decodeURIComponent(xsrf!),
    };
    const term = await fetch(`${base}/api/terminals`, { method: "POST", headers: writeHeaders, body: "{}" });
    expect(term.status).toBeLessThan(300);
    const { name: terminal } = (await term.json()) as { name: string };
    const socket = await KernelSocket.open(
      base,
      `/terminals/websocket/${terminal}`,
      "",
      w!.status!.replica!.host,
    );
    socket.send(["stdin", "python -c \"import sys; print('PY', sys.prefix)\"\r"]);
    const printed = () =>
      socket
        .all()
        .filter((m): m is [string, string] => Array.isArray(m) && m[0] === "stdout")
        .map((m) => m[1])
        .join("");
    const deadline2 = Date.now() + 60_000;
    while (!/PY \S+/.test(printed()) && Date.now() < deadline2) await sleep(100);
    await socket.close();
    expect(printed()).toContain(`PY ${venv}`);
  }, 1_200_000);
});

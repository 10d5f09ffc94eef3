import { existsSync, readFileSync, statSync } from "node:fs";
import { request } from "node:http";
import { connect as connectTcp, createServer } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { findProcessesByEnv } from "../src/platforms/embedded/procfs.js";
import { LoomProcess } from "./helpers.js";

/**
 * A Workspace on a real `loom up`: one replica through the serving path, its persistent home the
 * working directory (writable in the sandbox), kept across stop/start and a server restart.
 * `ide: none` with Python's http.server: no environment to build.
 */

interface Ws {
  metadata: { uid: string };
  status?: {
    phase?: string;
    url?: string;
    stoppedReason?: string;
    ports?: { port: number; url?: string }[];
    replica?: { id: string; host?: string; port?: number; ready: boolean };
    conditions?: { type: string; reason?: string; message?: string }[];
  };
}

const PATH = "/apis/loom.dev/v1alpha1/projects/default/workspaces";

// Each start appends a line to a file in the working directory (the home), then serves it.
const MANIFEST = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: web}
spec:
  ide: none
  command: [sh, -c, 'date +%s%N >> starts.txt && exec python3 -m http.server $PORT --bind 127.0.0.1']
`;

describe("Workspace (embedded)", () => {
  const servers: LoomProcess[] = [new LoomProcess()];
  const first = servers[0]!;
  afterAll(async () => {
    const last = servers.at(-1)!;
    await last.cli(["delete", "ws", "--all", "--timeout", "30"]).catch(() => undefined);
    await last.stop();
    await first.stop();
  });

  async function ws(s: LoomProcess, name = "web"): Promise<Ws> {
    const r = await s.api("GET", `${PATH}/${name}`);
    if (r.status !== 200) throw new Error(`get ws/${name}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as Ws;
  }

  async function waitFor(s: LoomProcess, pred: (w: Ws) => boolean, ms = 60_000, name = "web"): Promise<Ws> {
    const deadline = Date.now() + ms;
    let last: Ws | undefined;
    while (Date.now() < deadline) {
      last = await ws(s, name).catch(() => undefined);
      if (last && pred(last)) return last;
      await sleep(100);
    }
    throw new Error(`timed out; last status: ${JSON.stringify(last?.status)}\n${s.log.slice(-3000)}`);
  }

  /** The home's starts.txt as the workspace's own server serves it. */
  async function starts(w: Ws): Promise<string[]> {
    const res = await fetch(`http://${w.status!.replica!.host}:${w.status!.replica!.port}/starts.txt`);
    expect(res.status).toBe(200);
    return (await res.text()).trim().split("\n");
  }

  const running = (w: Ws) => w.status?.phase === "Running" && !!w.status.replica?.ready;

  it("runs, stops (process gone, home kept), starts again, and survives a server restart", async () => {
    await first.start();
    expect((await first.cli(["apply", "-f", "-"], { input: MANIFEST })).stdout).toContain(
      "workspace.loom.dev/web created",
    );
    let w = await waitFor(first, running);
    // Its own origin: `loom up --port 0` (as here) puts it on a free port of its own.
    expect(w.status?.url).toMatch(/^http:\/\/web--default\.ws\.localhost:\d+\/$/);
    expect(new URL(w.status!.url!).port).not.toBe(new URL(first.url).port);
    expect(await starts(w)).toHaveLength(1);
    // The working directory is the persistent home in the data dir, written by the workspace.
    const file = join(first.dataDir, "homes", "default", "web", "starts.txt");
    expect(existsSync(file)).toBe(true);
    const owner = statSync(file).uid;

    const get = await first.cli(["get", "ws"]);
    expect(get.stdout).toMatch(/NAME\s+PHASE\s+IDE\s+URL\s+AGE/);
    expect(get.stdout).toMatch(/web\s+Running\s+none\s+http:\/\/web--default\.ws\.localhost/);
    const describe = await first.cli(["describe", "ws/web"]);
    expect(describe.code).toBe(0);
    expect(describe.stdout).toContain("web--default.ws.localhost");

    const replica = w.status!.replica!;
    const mine = (p: { env: Map<string, string> }) =>
      p.env.get("LOOM_INSTANCE") === readFileSync(join(first.dataDir, "instance-id"), "utf8").trim();
    expect(findProcessesByEnv("LOOM_REPLICA", replica.id).filter(mine).length).toBeGreaterThan(0);
    const stop = await first.cli(["stop", "ws/web"]);
    expect(stop.stdout).toBe("workspace.loom.dev/web stopped\n");
    w = await waitFor(first, (x) => x.status?.phase === "Stopped");
    expect(w.status?.stoppedReason).toBe("User");
    expect(w.status?.replica).toBeUndefined();
    // This server's processes only (its instance id): a replica's id repeats across runs.
    const instance = readFileSync(join(first.dataDir, "instance-id"), "utf8").trim();
    const left = findProcessesByEnv("LOOM_REPLICA", replica.id).filter(
      (p) => p.env.get("LOOM_INSTANCE") === instance,
    );
    expect(left).toEqual([]);
    await expect(fetch(`http://${replica.host}:${replica.port}/starts.txt`)).rejects.toThrow();

    expect((await first.cli(["start", "ws/web"])).stdout).toBe("workspace.loom.dev/web started\n");
    w = await waitFor(first, running);
    expect(await starts(w)).toHaveLength(2); // the same home: the first start's line is there
    expect(statSync(file).uid).toBe(owner);

    // A server restart: the replica is re-adopted, its home and its file still there.
    await first.kill("SIGTERM");
    const second = new LoomProcess([], first.home);
    servers.push(second);
    await second.start();
    w = await waitFor(second, running);
    expect((await starts(w)).length).toBeGreaterThanOrEqual(2);
  }, 180_000);

  it("servers the workspace starts (on 0.0.0.0 and on its own 127.0.0.1) appear in status.ports and answer at /proxy/P/", async () => {
    const s = servers.at(-1)!;
    if (!s.pid) await s.start(); // run alone (-t)
    const [extra, loop, echo] = (await distinctFreePorts(3)) as [number, number, number];
    // The second is bound to the workspace's own loopback (as Jupyter-started tools are): inside
    // its network namespace only the runtime's dial reaches it, not the replica's host:port. The
    // third, also on its loopback, takes WebSocket-style upgrades and echoes what follows.
    const yaml = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: two}
spec:
  ide: none
  env: {ECHO: ${JSON.stringify(UPGRADE_ECHO)}}
  command: [sh, -c, 'echo extra > extra.txt; python3 -m http.server ${extra} --bind 0.0.0.0 & python3 -m http.server ${loop} --bind 127.0.0.1 & python3 -c "$ECHO" ${echo} & exec python3 -m http.server $PORT --bind 127.0.0.1']
`;
    expect((await s.cli(["apply", "-f", "-"], { input: yaml })).code).toBe(0);
    // Polled every second while it runs: well within the bound once both servers listen.
    const w = await waitFor(
      s,
      (x) => running(x) && [extra, loop, echo].every((port) => x.status?.ports?.some((p) => p.port === port)),
      60_000,
      "two",
    );
    expect(w.status!.ports).toEqual(
      [extra, loop, echo]
        .sort((a, b) => a - b)
        .map((port) => ({ port, url: `${w.status!.url}proxy/${port}/` })),
    );
    // Published to the origin: a logged-in browser reaches both servers through it.
    const cookie = await sessionOn(s, "two");
    for (const port of [extra, loop]) {
      const res = await viaOrigin(w.status!.url!, `/proxy/${port}/extra.txt`, cookie);
      expect(res.status, `port ${port}: ${res.body}`).toBe(200);
      expect(res.body).toBe("extra\n");
      // The fences stay: no session cookie, no way in.
      expect((await viaOrigin(w.status!.url!, `/proxy/${port}/extra.txt`)).status).toBe(401);
    }
    // An upgrade (a WebSocket's) to the loopback-bound server: switched, then bytes both ways.
    const up = await upgradeVia(
      w.status!.url!,
      `/proxy/${echo}/socket`,
      cookie,
      "ping through the workspace",
    );
    expect(up.head).toMatch(/^HTTP\/1\.1 101 /);
    expect(up.echoed).toBe("ping through the workspace");
    expect((await upgradeVia(w.status!.url!, `/proxy/${echo}/socket`, undefined, "x")).head).toMatch(
      /^HTTP\/1\.1 401 /,
    );
    // A port not in status.ports is refused, even one the workspace could dial.
    let unlisted = await freePort();
    while ([extra, loop, echo].includes(unlisted)) unlisted = await freePort();
    const refused = await viaOrigin(w.status!.url!, `/proxy/${unlisted}/extra.txt`, cookie);
    expect(refused.status).toBe(404);
    expect(refused.body).toContain(`does not listen on port ${unlisted}`);
    // Loom's own API port is on the host, not in the workspace: not listed, not reachable.
    const api = await viaOrigin(w.status!.url!, `/proxy/${new URL(s.url).port}/apis`, cookie);
    expect(api.status).toBe(404);
  }, 120_000);

  it("idleTimeout: an idle workspace is culled (home kept, loom start brings it back); one in use is spared", async () => {
    const s = servers.at(-1)!;
    if (!s.pid) await s.start(); // run alone (-t)
    const yaml = (name: string, idle = "3s") => `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: ${name}}
spec:
  ide: none
  idleTimeout: ${idle}
  command: [sh, -c, 'date +%s%N >> starts.txt && exec python3 -m http.server $PORT --bind 127.0.0.1']
`;
    // A long idleTimeout until the busy one is in use: 3 s would race the test's own steps on a
    // loaded machine (the idle one culled before it was seen Running, the busy one before its
    // first request). Changing idleTimeout restarts nothing.
    for (const name of ["idle", "busy"])
      expect((await s.cli(["apply", "-f", "-"], { input: yaml(name, "1h") })).code).toBe(0);
    const busy = await waitFor(s, running, 60_000, "busy");
    await waitFor(s, running, 60_000, "idle");
    // The busy one is requested through its origin every second, as an open page would.
    const cookie = await sessionOn(s, "busy");
    let using = true;
    const use = (async () => {
      while (using) {
        const res = await viaOrigin(busy.status!.url!, "/starts.txt", cookie);
        expect(res.status).toBe(200);
        await sleep(1000);
      }
    })();
    for (const name of ["idle", "busy"])
      expect((await s.cli(["apply", "-f", "-"], { input: yaml(name) })).code).toBe(0);
    try {
      const culled = await waitFor(s, (x) => x.status?.phase === "Stopped", 60_000, "idle");
      expect(culled.status?.stoppedReason).toBe("Idle");
      const ready = culled.status?.conditions?.find((c) => c.type === "Ready");
      expect(ready?.reason).toBe("Idle");
      expect(ready?.message).toMatch(/stopped after \d+s without activity/);
      expect((await ws(s, "busy")).status?.phase).toBe("Running");
    } finally {
      using = false;
      await use;
    }
    const home = join(s.dataDir, "homes", "default", "idle", "starts.txt");
    expect(readFileSync(home, "utf8").trim().split("\n")).toHaveLength(1);
    // Not culled again before the test sees it back: idleTimeout lifted by a merge patch (it keeps
    // the controller's mark; an apply would replace the annotations and so start it by itself).
    expect((await s.api("PATCH", `${PATH}/idle`, { spec: { idleTimeout: "1h" } })).status).toBe(200);
    expect((await ws(s, "idle")).status?.phase).toBe("Stopped");
    expect((await s.cli(["start", "ws/idle"])).stdout).toBe("workspace.loom.dev/idle started\n");
    const back = await waitFor(s, running, 60_000, "idle");
    expect(back.status?.stoppedReason).toBeUndefined();
    expect(readFileSync(home, "utf8").trim().split("\n")).toHaveLength(2); // the same home
  }, 180_000);

  it("stop and start name workspaces only; a missing one says how to list them", async () => {
    const s = servers.at(-1)!;
    const wrongKind = await s.cli(["stop", "tj/x"]);
    expect(wrongKind.code).not.toBe(0);
    expect(wrongKind.stderr).toContain("loom stop works on workspaces");
    const missing = await s.cli(["start", "ws/nope"]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('workspace "nope" not found in project "default"');
  }, 60_000);

  it("ide: vscode is refused with what to do instead where the server has no code-server", async () => {
    const s = servers.at(-1)!;
    const yaml =
      "apiVersion: loom.dev/v1alpha1\nkind: Workspace\nmetadata: {name: code}\nspec: {ide: vscode}\n";
    expect((await s.cli(["apply", "-f", "-"], { input: yaml })).code).toBe(0);
    const deadline = Date.now() + 30_000;
    let last: Ws | undefined;
    while (Date.now() < deadline && last?.status?.phase !== "Failed") {
      last = (await s.api("GET", `${PATH}/code`)).body as Ws;
      await sleep(100);
    }
    expect(last?.status?.phase).toBe("Failed");
    expect(last?.status?.conditions?.find((c) => c.type === "Ready")?.message).toContain(
      "needs code-server on the server",
    );
  }, 60_000);
});

/**
 * A server for `python3 -c SCRIPT PORT` on the workspace's loopback: answers any request with
 * 101 Switching Protocols, then echoes every byte (what a WebSocket server does, minus framing).
 */
const UPGRADE_ECHO = `import socket, sys, threading
def serve(c):
    buf = b""
    while b"\\r\\n\\r\\n" not in buf:
        d = c.recv(4096)
        if not d: return c.close()
        buf += d
    c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n\\r\\n")
    rest = buf.split(b"\\r\\n\\r\\n", 1)[1]
    if rest: c.sendall(rest)
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

/** `n` different TCP ports nothing listens on now. */
async function distinctFreePorts(n: number): Promise<number[]> {
  const out: number[] = [];
  while (out.length < n) {
    const p = await freePort();
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

/**
 * An upgrade request through a workspace's origin, raw: the response head, then (if switched)
 * `message` sent and what came back.
 */
function upgradeVia(
  wsUrl: string,
  path: string,
  cookie: string | undefined,
  message: string,
): Promise<{ head: string; echoed: string }> {
  const { host, port } = new URL(wsUrl);
  return new Promise((ok, fail) => {
    const sock = connectTcp({ host: "127.0.0.1", port: Number(port) });
    let data = "";
    let head = "";
    sock.on("error", fail);
    sock.on("close", () => ok({ head: head || data, echoed: head ? data : "" }));
    sock.on("data", (d: Buffer) => {
      data += d.toString();
      if (!head && data.includes("\r\n\r\n")) {
        const at = data.indexOf("\r\n\r\n") + 4;
        head = data.slice(0, at);
        data = data.slice(at);
        if (head.startsWith("HTTP/1.1 101 ")) sock.write(message);
        else sock.end();
      }
      if (head.startsWith("HTTP/1.1 101 ") && data.length >= message.length) sock.end();
    });
    sock.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `${cookie ? `Cookie: ${cookie}\r\n` : ""}\r\n`,
    );
  });
}

/** A TCP port nothing listens on now (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => ok(port));
    });
    srv.on("error", fail);
  });
}

/** A GET on a workspace's origin (its status.url) with its Host, as a browser sends it. */
function viaOrigin(
  wsUrl: string,
  path: string,
  cookie?: string,
): Promise<{ status: number; body: string; cookie?: string }> {
  const { host, port } = new URL(wsUrl);
  return new Promise((ok, fail) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        headers: { host, ...(cookie ? { cookie } : {}) },
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () =>
          ok({
            status: res.statusCode ?? 0,
            body,
            cookie: /(loom_ws=[^;]+)/.exec(String(res.headers["set-cookie"] ?? ""))?.[1],
          }),
        );
      },
    );
    req.on("error", fail);
    req.end();
  });
}

/** A session cookie on workspace `name`'s origin, through the real log-in ticket. */
async function sessionOn(s: LoomProcess, name: string): Promise<string> {
  const link = await s.api("POST", `${PATH}/${name}/login`, {});
  if (link.status !== 200) throw new Error(`login: ${link.status} ${JSON.stringify(link.body)}`);
  const url = new URL((link.body as { url: string }).url);
  const res = await viaOrigin(url.origin, url.pathname + url.search);
  if (res.status !== 302 || !res.cookie) throw new Error(`ticket: ${res.status} ${res.body}`);
  return res.cookie;
}

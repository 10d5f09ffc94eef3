import { existsSync, readFileSync, statSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
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

  it("a second server the workspace starts appears in status.ports and answers at /proxy/P/", async () => {
    const s = servers.at(-1)!;
    if (!s.pid) await s.start(); // run alone (-t)
    const extra = await freePort();
    const yaml = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: two}
spec:
  ide: none
  command: [sh, -c, 'echo extra > extra.txt; python3 -m http.server ${extra} --bind 0.0.0.0 & exec python3 -m http.server $PORT --bind 127.0.0.1']
`;
    expect((await s.cli(["apply", "-f", "-"], { input: yaml })).code).toBe(0);
    // Polled every second while it runs: well within the bound once both servers listen.
    const w = await waitFor(
      s,
      (x) => running(x) && !!x.status?.ports?.some((p) => p.port === extra),
      60_000,
      "two",
    );
    expect(w.status!.ports).toEqual([{ port: extra, url: `${w.status!.url}proxy/${extra}/` }]);
    // Published to the origin: a logged-in browser reaches the second server through it.
    const cookie = await sessionOn(s, "two");
    const res = await viaOrigin(w.status!.url!, `/proxy/${extra}/extra.txt`, cookie);
    expect(res.status, res.body).toBe(200);
    expect(res.body).toBe("extra\n");
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

  it("ide: vscode is refused with what to do instead", async () => {
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
    expect(last?.status?.conditions?.find((c) => c.type === "Ready")?.message).toContain("Node.js 24");
  }, 60_000);
});

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

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { WorkspaceEndpoint } from "../../ports/workspaces.js";
import { ideActivity, touchOnTraffic } from "./activity.js";

/**
 * The Jupyter adapter of idle culling against a server answering as Jupyter Server 2 does (the
 * real one runs in test/workspace-cull.e2e.test.ts): what it reports as activity, and that it
 * never makes activity of its own.
 */
describe("ideActivity (Jupyter)", () => {
  let server: Server | undefined;
  const asked: string[] = [];
  afterEach(async () => {
    asked.length = 0;
    await new Promise((ok) => server?.close(ok));
    server = undefined;
  });

  const OLD = "2020-01-01T00:00:00.000000Z";

  async function jupyter(
    kernels: unknown,
    status: unknown = { last_activity: OLD },
  ): Promise<WorkspaceEndpoint> {
    server = createServer((req, res) => {
      asked.push(req.url ?? "");
      const body =
        req.url === "/api/status" ? status : req.url?.startsWith("/api/kernels") ? kernels : undefined;
      if (body === undefined) res.writeHead(404).end();
      else res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
    });
    await new Promise<void>((ok) => server!.listen(0, "127.0.0.1", ok));
    const { port } = server.address() as AddressInfo;
    return {
      ref: { kind: "Workspace", project: "p", name: "w", uid: "u" },
      host: "127.0.0.1",
      port,
      ports: [],
    };
  }

  it("a busy kernel is activity now, though Jupyter's last_activity is old (it sends nothing while it computes)", async () => {
    const ep = await jupyter([
      { id: "a", execution_state: "idle", last_activity: OLD },
      { id: "b", execution_state: "busy", last_activity: OLD },
    ]);
    const before = Date.now();
    const at = await ideActivity("jupyter", ep);
    expect(at!.getTime()).toBeGreaterThanOrEqual(before);
    // Asking must not count as activity in Jupyter: the kernel list is asked untracked.
    expect(asked).toEqual(["/api/status", "/api/kernels?no_track_activity=1"]);
  });

  it("idle (or no) kernels: Jupyter's own last_activity", async () => {
    const ep = await jupyter([{ id: "a", execution_state: "idle", last_activity: OLD }]);
    expect((await ideActivity("jupyter", ep))?.toISOString()).toBe("2020-01-01T00:00:00.000Z");
  });

  it("no usable answer, or another IDE: undefined (the proxy's record decides)", async () => {
    const ep = await jupyter({ message: "not a list" }, { nothing: true });
    expect(await ideActivity("jupyter", ep)).toBeUndefined();
    expect(await ideActivity("vscode", ep)).toBeUndefined();
    expect(await ideActivity("jupyter", { ...ep, port: 1 })).toBeUndefined();
  });

  it("code-server: /healthz's lastHeartbeat (which /healthz itself does not move), or undefined without one", async () => {
    const beat = Date.parse("2026-01-02T03:04:05.000Z");
    let answer: unknown = { status: "expired", lastHeartbeat: beat };
    server = createServer((req, res) => {
      asked.push(req.url ?? "");
      if (req.url === "/healthz")
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
      else res.writeHead(404).end();
    });
    await new Promise<void>((ok) => server!.listen(0, "127.0.0.1", ok));
    const ep: WorkspaceEndpoint = {
      ref: { kind: "Workspace", project: "p", name: "w", uid: "u" },
      host: "127.0.0.1",
      port: (server.address() as AddressInfo).port,
      ports: [],
    };
    expect((await ideActivity("vscode", ep))?.toISOString()).toBe("2026-01-02T03:04:05.000Z");
    answer = { status: "expired", lastHeartbeat: 0 };
    expect(await ideActivity("vscode", ep)).toBeUndefined();
    expect(asked).toEqual(["/healthz", "/healthz"]);
  });
});

describe("touchOnTraffic (a proxied WebSocket or tunnel)", () => {
  afterEach(() => vi.useRealTimers());

  it("touches on the first chunk either way, then at most once per interval, however many chunks", () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const [client, upstream] = [new PassThrough(), new PassThrough()];
    let touches = 0;
    touchOnTraffic([client, upstream], () => touches++, 1000);
    expect(touches).toBe(0); // opening is the caller's to count
    upstream.emit("data", Buffer.from("ping"));
    expect(touches).toBe(1);
    for (let i = 0; i < 50; i++) client.emit("data", Buffer.from("x"));
    vi.advanceTimersByTime(999);
    upstream.emit("data", Buffer.from("y"));
    expect(touches).toBe(1);
    vi.advanceTimersByTime(1);
    client.emit("data", Buffer.from("z"));
    expect(touches).toBe(2);
  });
});

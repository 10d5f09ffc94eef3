import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { ClientGoneError, GatewayError } from "./errors.js";
import { type EndpointDirectory, Gateway, type ScaleTarget, type ServiceEndpoint } from "./gateway.js";

/** The lease API (non-OpenAI traffic: App pages and WebSockets): hold, pick by key, in-flight count. */

const gateways: Gateway[] = [];
afterEach(() => {
  for (const g of gateways.splice(0)) g.close();
});

function setup(
  replicas: { id: string; port: number; ready: boolean }[],
  extra: Partial<ServiceEndpoint> = {},
) {
  const state: { endpoint: ServiceEndpoint } = {
    endpoint: {
      project: "team",
      service: "chat",
      revisions: [
        { name: "chat-app1", weight: 100, replicas: replicas.map((r) => ({ ...r, host: "127.0.0.1" })) },
      ],
      autoscaling: { minReplicas: 0, maxReplicas: 2, targetConcurrency: 1 },
      affinity: { prefixChars: 64, epsilon: 1e9 },
      ...extra,
    },
  };
  const directory: EndpointDirectory = {
    resolve: (name, project) =>
      name === "chat" && project === state.endpoint.project ? state.endpoint : undefined,
  };
  const scaled: { target: ScaleTarget; n: number }[] = [];
  const registry = new Registry();
  const gw = new Gateway(
    { directory, scaler: { setDesired: (target, n) => void scaled.push({ target, n }) }, registry },
    { activator: { timeoutMs: 2000 } },
  );
  gateways.push(gw);
  const publish = (next: ServiceEndpoint) => {
    state.endpoint = next;
    gw.update(next);
  };
  return { gw, state, scaled, publish, registry };
}

describe("Gateway.lease", () => {
  it("holds while no replica is ready, asks for a scale from zero, and leases the replica once it is ready", async () => {
    const { gw, state, scaled, publish } = setup([]);
    const pending = gw.lease("team", "chat", { affinityKey: "s1" });
    await new Promise((r) => setImmediate(r));
    expect(scaled.some((s) => s.n >= 1 && s.target.revision === "chat-app1")).toBe(true);
    publish({
      ...state.endpoint,
      revisions: [
        {
          name: "chat-app1",
          weight: 100,
          replicas: [{ id: "r0", host: "127.0.0.1", port: 9001, ready: true }],
        },
      ],
    });
    const l = await pending;
    expect(l).toMatchObject({ host: "127.0.0.1", port: 9001, replica: "r0", revision: "chat-app1" });
    l.release();
  });

  it("keeps one affinity key on one replica, however loaded, and spreads keys over replicas", async () => {
    const { gw } = setup([
      { id: "r0", port: 9001, ready: true },
      { id: "r1", port: 9002, ready: true },
    ]);
    const first = await gw.lease("team", "chat", { affinityKey: "session-a" });
    const held = [first];
    // Twenty more with the same key while the earlier ones are still open (WebSockets).
    for (let i = 0; i < 20; i++) held.push(await gw.lease("team", "chat", { affinityKey: "session-a" }));
    expect(new Set(held.map((l) => l.replica))).toEqual(new Set([first.replica]));
    for (const l of held) l.release();
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const l = await gw.lease("team", "chat", { affinityKey: `session-${i}` });
      seen.add(l.replica);
      l.release();
    }
    expect(seen).toEqual(new Set(["r0", "r1"]));
  });

  it("counts a lease in flight until it is released (once, however often release is called)", async () => {
    const { gw, registry } = setup([{ id: "r0", port: 9001, ready: true }]);
    const inFlight = async () => {
      const text = await registry.getSingleMetricAsString("loom_gateway_in_flight_requests");
      return Number(/revision="chat-app1"\} (\d+)/.exec(text)?.[1]);
    };
    const a = await gw.lease("team", "chat");
    const b = await gw.lease("team", "chat");
    expect(await inFlight()).toBe(2);
    a.release();
    a.release();
    expect(await inFlight()).toBe(1);
    b.release();
    expect(await inFlight()).toBe(0);
  });

  it("refuses an unknown service, and a name another project serves, with a 404", async () => {
    const { gw } = setup([{ id: "r0", port: 9001, ready: true }]);
    await expect(gw.lease("team", "nope")).rejects.toMatchObject({ httpStatus: 404 });
    const err = await gw.lease("other", "chat").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).httpStatus).toBe(404);
  });

  it("ends a hold when the client goes away, and times out with a 503 when no replica comes", async () => {
    const { gw } = setup([]);
    const ac = new AbortController();
    const gone = gw.lease("team", "chat", { signal: ac.signal });
    ac.abort();
    await expect(gone).rejects.toBeInstanceOf(ClientGoneError);
    const timeout = await gw.lease("team", "chat").catch((e: unknown) => e);
    expect((timeout as GatewayError).httpStatus).toBe(503);
  });
});

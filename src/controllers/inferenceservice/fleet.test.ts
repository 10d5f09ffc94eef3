import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { InferenceService, RevisionStatus } from "../../api/inferenceservice.js";
import { CLUSTER, INFERENCESERVICE, validateManifest } from "../../api/kinds.js";
import type { OpenedDatabase } from "../../platforms/embedded/db.js";
import { memoryStore } from "../../platforms/embedded/memorystore.js";
import type { MemberCluster } from "../../ports/fleet.js";
import type { Runtime } from "../../ports/runtime.js";
import { FleetReplicas, withFleetReplicas } from "./fleet.js";

// Fleet replicas over real stores: the control plane's SQLite store and a member's (the port
// does not say which platform a member is; test/fleet-serving.e2e runs a real `loom up` member).
// The member's own serving loop is played by this test: it writes the copy's ready count.

const opened: OpenedDatabase[] = [];
afterEach(async () => {
  for (const d of opened.splice(0)) await d.close();
});

async function storeOf() {
  const opening = await memoryStore();
  opened.push(opening.db);
  return opening;
}

async function world() {
  const cp = await storeOf();
  const m = await storeOf();
  let since: string | undefined;
  let active = true;
  let now = Date.parse("2026-12-07T12:00:00Z");
  const member: MemberCluster = {
    store: m.store,
    nodes: async () => [],
    probe: async () => ({ loom: "test" }),
    gateway: async (project) => ({
      host: "10.0.0.2",
      port: 7470,
      headers: { authorization: `Bearer key-of-${project}` },
    }),
    close: () => {},
  };
  const fleet = {
    active: () => active,
    member: (name: string) => (name === "m1" && since === undefined ? member : undefined),
    has: (name: string) => name === "m1" || name === "self",
    matching: () => ["self", "m1"],
    unreachableSince: (name: string) => (name === "m1" ? since : undefined),
  };
  const replicas = new FleetReplicas({
    fleet,
    store: cp.store,
    events: cp.events,
    log: pino({ level: "silent" }),
    now: () => new Date(now),
  });
  const { object } = validateManifest({
    apiVersion: "loom.dev/v1alpha1",
    kind: INFERENCESERVICE,
    metadata: { name: "echo", project: "default" },
    spec: { model: "/models/echo", clusters: ["self", "m1"], resources: { cpu: "100m" } },
  });
  const svc = (await cp.store.create(object)) as InferenceService;
  const rev: RevisionStatus = {
    name: "echo-1",
    generation: 1,
    desired: 2,
    ready: 0,
    replicas: [],
    createdAt: new Date(now).toISOString(),
    spec: { ...svc.spec, hash: "h" },
  };
  const locals: number[] = [];
  const local = async (r: RevisionStatus) => {
    locals.push(r.desired);
    r.applied = r.desired;
    r.replicas = Array.from({ length: r.desired }, (_, i) => ({
      id: `echo-1-r${i}`,
      uid: `u${i}`,
      host: "127.0.0.1",
      port: 9000 + i,
      ready: true,
      startedAt: new Date(now).toISOString(),
    }));
  };
  return {
    cp,
    m,
    replicas,
    svc,
    rev,
    local,
    locals,
    alone: () => {
      active = false;
    },
    lose: () => {
      since = new Date(now).toISOString();
    },
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe("FleetReplicas", () => {
  it("makes each replica waiting work for the queue; runs self's share here and the member's as its copy there", async () => {
    const w = await world();
    await w.replicas.converge(w.svc, w.rev, w.local);
    const { pending } = w.replicas.external();
    expect(pending.map((p) => p.clusters)).toEqual([
      ["self", "m1"],
      ["self", "m1"],
    ]);
    expect(pending[0]).toMatchObject({ project: "default", placement: "spread", pods: [{ cpuMillis: 100 }] });
    w.replicas.bind(pending[0]!.id, [{ pod: 0, node: "host-1", gpus: [] }]);
    w.replicas.bind(pending[1]!.id, [{ pod: 0, node: "m1/node-0", gpus: [] }]);
    // Placed in the member: held there as far as the queue counts (self's are the platform's own).
    expect(w.replicas.external().running.map((r) => r.placements[0]!.node)).toEqual(["m1/node-0"]);

    expect(await w.replicas.converge(w.svc, w.rev, w.local)).toBe(true);
    expect(w.locals.at(-1)).toBe(1);
    const copy = (await w.m.store.get(INFERENCESERVICE, "default", "echo")) as InferenceService;
    expect(copy.metadata.labels?.["loom.dev/fleet-uid"]).toBe(w.svc.metadata.uid);
    expect(copy.spec.replicas).toEqual({ min: 1, max: 1 });
    expect(copy.spec.clusters).toBeUndefined();
    const remote = w.rev.replicas!.find((r) => r.cluster === "m1")!;
    expect(remote).toMatchObject({ host: "10.0.0.2", port: 7470, ready: false, node: "m1/node-0" });
    expect(w.replicas.headers("m1", "default")).toEqual({ authorization: "Bearer key-of-default" });

    // The member's loop reports its replica ready: so is the fleet's.
    await w.m.store.updateStatus({ ...copy, status: { ready: 1 } } as never);
    expect(await w.replicas.converge(w.svc, w.rev, w.local)).toBe(false);
    expect(w.rev.ready).toBe(2);

    // Scaled to one: waiting replicas go first, then the newest (the member's here); its copy goes.
    w.rev.desired = 1;
    await w.replicas.converge(w.svc, w.rev, w.local);
    expect(w.rev.replicas!.map((r) => r.cluster ?? "self")).toEqual(["self"]);
    await expect(w.m.store.get(INFERENCESERVICE, "default", "echo")).rejects.toThrow(/not found/i);
  });

  it("says why a replica waits once per reason", async () => {
    const w = await world();
    w.rev.desired = 1;
    await w.replicas.converge(w.svc, w.rev, w.local);
    const id = w.replicas.external().pending[0]!.id;
    await w.replicas.explain(id, "limit: cpu 250m");
    await w.replicas.explain(id, "limit: cpu 250m");
    const events = await w.cp.events.listFor({ kind: INFERENCESERVICE, project: "default", name: "echo" });
    expect(events.filter((e) => e.reason === "ReplicaPending").map((e) => e.count)).toEqual([1]);
  });

  it("places a lost member's replicas again once its clusterLostTimeout has passed", async () => {
    const w = await world();
    await w.cp.store.create(
      validateManifest({
        apiVersion: "loom.dev/v1alpha1",
        kind: CLUSTER,
        metadata: { name: "m1" },
        spec: { kubeconfigSecret: { name: "k" }, clusterLostTimeout: "3s", api: "loom" },
      }).object,
    );
    w.rev.desired = 1;
    await w.replicas.converge(w.svc, w.rev, w.local);
    w.replicas.bind(w.replicas.external().pending[0]!.id, [{ pod: 0, node: "m1/node-0", gpus: [] }]);
    await w.replicas.converge(w.svc, w.rev, w.local);
    w.lose();
    w.advance(1000);
    await w.replicas.converge(w.svc, w.rev, w.local);
    expect(w.replicas.external().running).toHaveLength(1); // not yet: 1 s of 3
    w.advance(3000);
    await w.replicas.converge(w.svc, w.rev, w.local);
    expect(w.replicas.external().pending).toHaveLength(1);
    const events = await w.cp.events.listFor({ kind: INFERENCESERVICE, project: "default", name: "echo" });
    expect(events.map((e) => e.reason)).toContain("ClusterLost");
  });

  it("routes the admission's calls for fleet replicas to them, others to the platform", async () => {
    const w = await world();
    await w.replicas.converge(w.svc, w.rev, w.local);
    const bound: string[] = [];
    const runtime = {
      external: () => ({ pending: [], running: [] }),
      bindExternal: async (id: string) => {
        bound.push(id);
      },
      nodes: async () => [],
    } as unknown as Runtime;
    const wrapped = withFleetReplicas(runtime, w.replicas);
    expect(wrapped.external!().pending).toHaveLength(2);
    await wrapped.bindExternal!("default/echo-1-r0", []);
    await wrapped.bindExternal!(wrapped.external!().pending[0]!.id, [{ pod: 0, node: "host", gpus: [] }]);
    expect(bound).toEqual(["default/echo-1-r0"]);
    expect(wrapped.external!().pending).toHaveLength(1);
    expect(await wrapped.nodes()).toEqual([]);
  });

  it("with no other member registered, a replica for self is placed on this platform's nodes as they are", async () => {
    const w = await world();
    w.rev.desired = 1;
    await w.replicas.converge(w.svc, w.rev, w.local);
    expect(w.replicas.external().pending[0]!.clusters).toEqual(["self", "m1"]);
    w.alone();
    expect(w.replicas.external().pending[0]!.clusters).toBeUndefined();
    w.replicas.bind(w.replicas.external().pending[0]!.id, [{ pod: 0, node: "host-1", gpus: [] }]);
    await w.replicas.converge(w.svc, w.rev, w.local);
    expect(w.locals.at(-1)).toBe(1);
  });
});

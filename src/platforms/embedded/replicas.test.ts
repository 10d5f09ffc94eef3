import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RevisionSpec, WorkloadRef } from "../../ports/runtime.js";
import type { EventRef } from "../../ports/store.js";
import { EmbeddedRuntime } from "./platform.js";
import { LocalRevisions } from "./replicas.js";
import { LocalRuntime } from "./runtime.js";

/**
 * LocalRevisions over real processes: a few lines of Python answer /health and report the
 * devices they were given. No timing assertions: every wait polls with a generous deadline.
 */

const log = pino({ level: "silent" });

const SERVER = [
  "/usr/bin/python3",
  "-c",
  [
    "import http.server, os",
    "class H(http.server.BaseHTTPRequestHandler):",
    "    def do_GET(self):",
    "        body = ('devices=' + os.environ.get('CUDA_VISIBLE_DEVICES', '') + ' replica=' + os.environ['LOOM_REPLICA']).encode()",
    "        self.send_response(200); self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)",
    "    def log_message(self, *a): pass",
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()",
  ].join("\n"),
];

async function until<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Recorded {
  reason: string;
  message: string;
}

describe("LocalRevisions (embedded service replicas)", () => {
  let dataDir: string;
  let instanceId: string;
  let opened: EmbeddedRuntime[];
  let events: Recorded[];
  const service: WorkloadRef = { kind: "InferenceService", project: "team", name: "echo", uid: randomUUID() };

  function open(): EmbeddedRuntime {
    const processes = new LocalRuntime({
      dataDir,
      instanceId,
      cpuMillis: 4000,
      memoryBytes: 8 * 2 ** 30,
      gpus: ["0", "1"],
      log,
      pollMs: 50,
    });
    const replicas = new LocalRevisions({
      runtime: processes,
      events: {
        record: async (_ref: EventRef, _type, reason, message) => void events.push({ reason, message }),
        listFor: async () => [],
      },
      log,
      stateDir: join(dataDir, "revisions"),
      node: "local",
      drainMs: 50,
      graceSeconds: 2,
    });
    const runtime = new EmbeddedRuntime(processes, replicas);
    opened.push(runtime);
    return runtime;
  }

  function revision(replicas: number, gpu = 0): RevisionSpec {
    return {
      service,
      revision: "echo-1",
      replicas,
      worker: {
        command: SERVER,
        env: {},
        allocation: { node: "", cpuMillis: 0, memoryBytes: 0, gpus: gpu >= 1 ? ["gpu-0"] : [] },
      },
      port: 8080,
      readinessPath: "/health",
      readinessTimeoutSeconds: 30,
      ...(gpu ? { gpu } : {}),
    };
  }

  const observe = (rt: EmbeddedRuntime) => rt.serving.observeRevision(service, "echo-1");
  const readyCount = async (rt: EmbeddedRuntime) =>
    (await observe(rt)).replicas.filter((r) => r.ready).length;

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), "loom-replicas-"));
    instanceId = randomUUID();
    opened = [];
    events = [];
  });

  afterEach(async () => {
    const rt = opened.at(-1);
    if (rt) {
      await rt.serving.deleteRevision(service, "echo-1");
      await until(async () => (await rt.list()).length === 0);
    }
    for (const r of opened) await r.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("starts replicas that ask for nothing at once, probes them ready, and scales down the newest", async () => {
    const rt = open();
    const changed: string[] = [];
    rt.onChange((ref) => changed.push(ref.name));
    await rt.serving.applyRevision(revision(2));
    expect(rt.external().pending).toEqual([]);
    await until(async () => (await readyCount(rt)) === 2);
    const replicas = (await observe(rt)).replicas;
    expect(replicas.map((r) => r.id).sort()).toEqual(["echo-1-r0", "echo-1-r1"]);
    const body = await (await fetch(`http://${replicas[0]!.host}:${replicas[0]!.port}/health`)).text();
    expect(body).toBe(`devices= replica=${replicas[0]!.id}`);
    expect(changed).toEqual(expect.arrayContaining(["echo-1-r0", "echo-1-r1"]));
    expect(events.filter((e) => e.reason === "ReplicaReady")).toHaveLength(2);

    await rt.serving.applyRevision(revision(1));
    // Out of the observed set at once (the gateway stops routing), stopped after the drain.
    expect((await observe(rt)).replicas.map((r) => r.id)).toEqual(["echo-1-r0"]);
    await until(async () => (await rt.list()).length === 1);
  }, 60_000);

  it("queues replicas that ask for a GPU for the scheduler, starts a bound one on its devices, and requeues a preempted one", async () => {
    const rt = open();
    let capacityCalls = 0;
    rt.onCapacityChange(() => capacityCalls++);
    // Tolerations reach the scheduler as on Kubernetes (the machine has no taints to match).
    const tolerations = [{ key: "dedicated", operator: "Exists" as const }];
    const spec = revision(1, 1);
    await rt.serving.applyRevision({ ...spec, worker: { ...spec.worker, tolerations } });
    const pending = rt.external().pending;
    expect(pending).toEqual([
      expect.objectContaining({
        id: "team/echo-1-r0",
        project: "team",
        preemptible: true,
        pods: [expect.objectContaining({ gpu: 1 })],
        tolerations,
      }),
    ]);
    expect(capacityCalls).toBeGreaterThan(0);
    expect((await observe(rt)).replicas).toEqual([]);

    await rt.explainExternal("team/echo-1-r0", "InsufficientCapacity", "gpu: requested 1, free 0");
    await rt.explainExternal("team/echo-1-r0", "InsufficientCapacity", "gpu: requested 1, free 0");
    expect(events.filter((e) => e.reason === "ReplicaPending")).toEqual([
      { reason: "ReplicaPending", message: "replica team/echo-1-r0 waits: gpu: requested 1, free 0" },
    ]);

    await rt.bindExternal("team/echo-1-r0", [{ pod: 0, node: "local", gpus: [{ device: "1", share: 1 }] }]);
    expect(rt.external()).toEqual({
      pending: [],
      running: [
        expect.objectContaining({
          id: "team/echo-1-r0",
          placements: [expect.objectContaining({ node: "local" })],
        }),
      ],
    });
    await until(async () => (await readyCount(rt)) === 1);
    const [r] = (await observe(rt)).replicas;
    expect(r?.gpus).toEqual([{ device: "1", share: 1 }]);
    expect(await (await fetch(`http://${r!.host}:${r!.port}/health`)).text()).toBe(
      "devices=1 replica=echo-1-r0",
    );

    await rt.preemptExternal("team/echo-1-r0", "reclaimed for research/claim");
    expect(
      events.some(
        (e) => e.reason === "Preempted" && /replica echo-1-r0 of echo-1 stops: reclaimed/.test(e.message),
      ),
    ).toBe(true);
    // The stopping one still holds its GPU until it exits; a new one waits for a place.
    const ext = rt.external();
    expect(ext.running).toEqual([expect.objectContaining({ id: "team/echo-1-r0", stopping: true })]);
    expect(ext.pending.map((w) => w.id)).toEqual(["team/echo-1-r1"]);
    // Its service is told why nothing runs while the replacement waits (a workspace says so)…
    expect(await observe(rt)).toEqual({ replicas: [], preempted: "reclaimed for research/claim" });
    await until(() => rt.external().running.length === 0);
    // …until a replica starts again.
    await rt.bindExternal("team/echo-1-r1", [{ pod: 0, node: "local", gpus: [{ device: "1", share: 1 }] }]);
    const again = await observe(rt);
    expect(again.preempted).toBeUndefined();
    expect(again.replicas.map((x) => x.id)).toEqual(["echo-1-r1"]);
    await rt.serving.deleteRevision(revision(1, 1).service, "echo-1");
    await until(() => rt.external().running.length === 0);
  }, 60_000);

  it("a non-preemptible revision's replicas (a workspace's) are never offered for reclaim", async () => {
    const rt = open();
    await rt.serving.applyRevision({ ...revision(1, 1), preemptible: false });
    expect(rt.external().pending).toEqual([expect.objectContaining({ preemptible: false })]);
    await rt.serving.deleteRevision(service, "echo-1");
  }, 60_000);

  it("replaces a replica whose process dies", async () => {
    const rt = open();
    await rt.serving.applyRevision(revision(1));
    await until(async () => (await readyCount(rt)) === 1);
    const [first] = (await observe(rt)).replicas;
    const ref: WorkloadRef = { kind: "InferenceService", project: "team", name: first!.id, uid: first!.uid! };
    const pid = (await rt.observe(ref))?.workers[0]?.pid;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid!, "SIGKILL");
    await until(async () => {
      const now = (await observe(rt)).replicas;
      return now.length === 1 && now[0]!.uid !== first!.uid && now[0]!.ready;
    });
    expect(events.some((e) => e.reason === "ReplicaExited" && e.message.includes(first!.id))).toBe(true);
  }, 60_000);

  it("re-adopts running replicas after a restart of Loom, and deletes a revision whole", async () => {
    const before = open();
    await before.serving.applyRevision(revision(1));
    await until(async () => (await readyCount(before)) === 1);
    const [r] = (await observe(before)).replicas;
    await before.close();

    const after = open();
    await until(async () => (await readyCount(after)) === 1);
    const [again] = (await observe(after)).replicas;
    expect(again).toEqual(expect.objectContaining({ id: r!.id, uid: r!.uid, port: r!.port }));
    expect(await after.serving.listRevisions()).toEqual([{ service, revision: "echo-1" }]);

    await after.serving.deleteRevision(service, "echo-1");
    expect((await observe(after)).replicas).toEqual([]);
    await until(async () => (await after.list()).length === 0);
    await until(async () => (await after.serving.listRevisions()).length === 0);
  }, 60_000);
});

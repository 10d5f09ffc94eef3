import { PassThrough, Readable } from "node:stream";
import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AlreadyExistsError, ConflictError, NotFoundError } from "../../api/errors.js";
import type { GangSpec, WorkloadRef } from "../../ports/runtime.js";
import type { KubeClient, RequestOptions } from "./client.js";
import { KubernetesRuntime } from "./runtime.js";

/**
 * Every request the runtime sends, recorded against a fake API server and compared with a
 * snapshot taken before the runtime was split into modules: pods, labels, annotations, field
 * managers and patches must stay byte-for-byte what existing clusters already hold.
 */

type Answer = (method: string, path: string, opts: RequestOptions) => unknown;

class FakeApi {
  readonly calls: string[] = [];
  readonly watches = new Map<string, PassThrough>();
  private rv = 100;
  constructor(private readonly answer: Answer) {}

  client(): KubeClient {
    return {
      request: async (method: string, path: string, opts: RequestOptions = {}) => {
        this.calls.push(`${method} ${path} ${JSON.stringify(opts)}`);
        const a = this.answer(method, path, opts);
        if (a instanceof Error) throw a;
        if (a !== undefined) return a;
        if (method === "POST" && path.endsWith("/pods")) {
          const body = opts.body as { metadata: Record<string, unknown> };
          return { ...body, kind: "Pod", metadata: { ...body.metadata, resourceVersion: String(++this.rv) } };
        }
        if (method === "DELETE" && path.includes("/pods/"))
          return {
            kind: "Pod",
            metadata: { name: path.split("/").pop(), resourceVersion: String(++this.rv) },
          };
        return {};
      },
      stream: async (path: string, query: RequestOptions["query"], signal?: AbortSignal) => {
        this.calls.push(`STREAM ${path} ${JSON.stringify(query)}`);
        if (query?.watch) {
          const s = new PassThrough();
          signal?.addEventListener("abort", () => s.end());
          this.watches.set(path, s);
          return s;
        }
        return Readable.from(["2026-01-02T03:04:05.000000000Z hello\n"]);
      },
    } as unknown as KubeClient;
  }

  /** The recorded calls, with wall-clock timestamps made stable. */
  text(): string {
    return this.calls.join("\n").replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g, "<now>");
  }
}

const log = pino({ level: "silent" });
const job: WorkloadRef = { kind: "TrainingJob", project: "team-a", name: "train", uid: "uid-1" };
const source: WorkloadRef = { kind: "TrainingJob", project: "team-a", name: "pretrain", uid: "uid-0" };

function gang(attempt: number): GangSpec {
  return {
    ref: job,
    attempt,
    workers: [0, 1].map((index) => ({
      index,
      image: "trainer:1",
      annotations: { "prometheus.io/scrape": "true" },
      command: ["python", "train.py"],
      env: { MASTER_ADDR: "train-0.train", RANK: String(index) },
      workingDir: "/work",
      allocation: { node: `node-${index}`, cpuMillis: 2000, memoryBytes: 2 ** 30, gpus: ["node-0/gpu-0"] },
      terminationGracePeriodSeconds: 45,
    })),
    checkpoint: { size: "5Gi", storageClassName: "fast" },
    initCheckpoint: { ref: source, checkpoint: { claimName: "pretrain-ckpt" } },
  };
}

const pod = (name: string, labels: Record<string, string>, extra: Record<string, unknown> = {}) => ({
  kind: "Pod",
  metadata: { name, namespace: "loom-team-a", labels, resourceVersion: "10", creationTimestamp: "t0" },
  ...extra,
});
const workerLabels = (attempt: number, worker: number) => ({
  "app.kubernetes.io/managed-by": "loom",
  "loom.dev/project": "team-a",
  "loom.dev/workload": "train",
  "loom.dev/workload-kind": "TrainingJob",
  "loom.dev/workload-uid": "uid-1",
  "loom.dev/attempt": String(attempt),
  "loom.dev/worker-index": String(worker),
});
const node = (name: string, extra: Record<string, string> = {}) => ({
  metadata: { name, resourceVersion: "5", labels: { "loom.dev/node-pool": "a100", ...extra } },
  status: {
    allocatable: { cpu: "32", memory: "256Gi", pods: "110", "nvidia.com/gpu": "8" },
    conditions: [{ type: "Ready", status: "True" }],
  },
});

let runtime: KubernetesRuntime | undefined;
afterEach(async () => {
  await runtime?.close();
  runtime = undefined;
});

describe("KubernetesRuntime's requests", () => {
  it("gangs without the watch: start, observe, stop, release, list, logs", async () => {
    const earlier = [
      pod("train-a1-w0", workerLabels(1, 0), {
        status: {
          phase: "Failed",
          containerStatuses: [{ name: "worker", state: { terminated: { exitCode: 137, finishedAt: "t9" } } }],
        },
      }),
      pod("train-a1-w1", workerLabels(1, 1), { status: { phase: "Succeeded" } }),
    ];
    let pods: unknown[] = earlier;
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path.endsWith("/pods")) return { items: pods };
      if (path.endsWith("/binding") && path.includes("w1")) return new ConflictError("bound");
      if (method === "DELETE" && path.endsWith("/services/train")) return new NotFoundError("gone");
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log, defaultImage: "img:default" });
    const observed = await runtime.observe(job);
    await runtime.start(gang(2));
    pods = [
      pod("train-a2-w0", workerLabels(2, 0), { status: { phase: "Running", startTime: "t1" } }),
      pod("train-a2-w1", workerLabels(2, 1), { status: { phase: "Pending" } }),
    ];
    await expect(runtime.start(gang(3))).rejects.toThrow(/still has live pods/);
    await runtime.start(gang(1)); // an older attempt: nothing to do
    const again = await runtime.observe(job);
    const stopped = await runtime.stop(job, 30);
    await runtime.release(job);
    const listed = await runtime.list();
    const logs = await runtime.logs(job, { worker: 1, follow: true });
    const activity = await runtime.lastActivity(job);
    const endpoints = await runtime.endpoints(job, 2, 2, 2);
    expect({ observed, again, stopped, listed, activity, endpoints, logs: !!logs }).toMatchSnapshot();
    expect(api.text()).toMatchSnapshot();
  });

  it("a gang handed a tracking token: its Secret is written before any pod, no pod carries the token, release deletes it", async () => {
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path.endsWith("/pods")) return { items: [] };
      if (method === "DELETE" && path.endsWith("/services/train")) return new NotFoundError("gone");
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log, defaultImage: "img:default" });
    const spec = gang(1);
    for (const w of spec.workers) w.env = { ...w.env, MLFLOW_TRACKING_TOKEN: "tok-123456789" };
    await runtime.start(spec);
    await runtime.release(job);
    const secret = api.calls.findIndex((c) =>
      c.startsWith("PATCH /api/v1/namespaces/loom-team-a/secrets/train-credentials"),
    );
    const firstPod = api.calls.findIndex((c) => c.startsWith("POST /api/v1/namespaces/loom-team-a/pods"));
    expect(secret).toBeGreaterThanOrEqual(0);
    expect(secret).toBeLessThan(firstPod);
    const podBodies = api.calls.filter((c) => c.startsWith("POST ") && c.includes("/pods "));
    expect(podBodies).toHaveLength(2);
    for (const body of podBodies) {
      expect(body).not.toContain("tok-123456789");
      expect(body).toContain('"secretName":"train-credentials"');
    }
    expect(api.calls[secret]).toContain(Buffer.from("tok-123456789").toString("base64"));
    expect(api.calls).toContainEqual(
      expect.stringMatching(/^DELETE \/api\/v1\/namespaces\/loom-team-a\/secrets\/train-credentials /),
    );
  });

  it("a gang of one is created on its node (no binding); a larger gang is bound once every pod exists", async () => {
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path.endsWith("/pods")) return { items: [] };
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log, defaultImage: "img:default" });
    const two = gang(1);
    const one: GangSpec = { ...two, workers: two.workers.slice(0, 1), initCheckpoint: undefined };
    await runtime.start(one);
    const created = api.calls.filter((c) => c.startsWith("POST /api/v1/namespaces/loom-team-a/pods "));
    expect(created).toHaveLength(1);
    expect(created[0]).toContain('"nodeName":"node-0"');
    expect(api.calls.filter((c) => c.includes("/binding"))).toEqual([]);

    // Two workers: created unbound, so neither can start before the whole gang exists.
    api.calls.length = 0;
    await runtime.start({ ...two, initCheckpoint: undefined, attempt: 2 });
    const pods = api.calls.filter((c) => c.startsWith("POST /api/v1/namespaces/loom-team-a/pods "));
    expect(pods).toHaveLength(2);
    for (const p of pods) expect(p).not.toContain("nodeName");
    const firstBind = api.calls.findIndex((c) => c.includes("/binding"));
    expect(firstBind).toBeGreaterThan(api.calls.lastIndexOf(pods[1]!));
    expect(api.calls.filter((c) => c.includes("/binding"))).toHaveLength(2);
  });

  it("a single worker on a share of a GPU, and a start that meets its own earlier writes", async () => {
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path.endsWith("/pods")) return { items: [] };
      if (method === "POST" && path.endsWith("/pods")) return new AlreadyExistsError("exists");
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log });
    const spec: GangSpec = {
      ref: job,
      attempt: 1,
      workers: [
        {
          index: 0,
          command: ["python", "-c", "pass"],
          env: {},
          allocation: {
            node: "node-0",
            cpuMillis: 0,
            memoryBytes: 0,
            gpus: ["node-0/gpu-3"],
            gpuShare: 0.25,
          },
        },
      ],
    };
    await runtime.start(spec);
    await expect(runtime.start({ ...spec, initCheckpoint: { ref: source } })).rejects.toThrow(/emptyDir/);
    expect(api.text()).toMatchSnapshot();
  });

  it("projects, nodes and serving revisions", async () => {
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path === "/api/v1/nodes")
        return {
          items: [
            node("node-b", { "nvidia.com/gpu.product": "A100", "nvidia.com/gpu.memory": "81920" }),
            node("node-a"),
            { ...node("node-c"), spec: { unschedulable: true } },
          ],
        };
      if (method === "GET" && path.endsWith("/pods"))
        return {
          items: [
            {
              metadata: { name: "rev-1-abc", namespace: "loom-team-a" },
              spec: { containers: [{ ports: [{ containerPort: 9000 }] }] },
              status: { podIP: "10.0.0.5", startTime: "t2", conditions: [{ type: "Ready", status: "True" }] },
            },
            { metadata: { name: "rev-1-old", namespace: "loom-team-a", deletionTimestamp: "t3" }, spec: {} },
          ],
        };
      if (method === "DELETE" && path === "/api/v1/namespaces/loom-team-b") return new NotFoundError("gone");
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log, defaultImage: "img:default" });
    const service: WorkloadRef = { kind: "InferenceService", project: "team-a", name: "chat", uid: "uid-s" };
    await runtime.ensureProject({
      name: "team-a",
      members: [
        { user: "alice", role: "admin" },
        { group: "ml", role: "viewer" },
      ],
      limit: { cpu: 64, gpu: 8 },
    });
    await runtime.removeProject("team-b");
    const nodes = await runtime.nodes();
    await runtime.serving!.applyRevision({
      service,
      revision: "chat-00001",
      replicas: 2,
      worker: {
        image: "server:2",
        annotations: { a: "b" },
        command: ["serve"],
        env: { MODEL: "m" },
        workingDir: "/srv",
        allocation: { node: "", cpuMillis: 500, memoryBytes: 2 ** 31, gpus: ["x", "y"] },
      },
      port: 9000,
      readinessPath: "/healthz",
      readinessTimeoutSeconds: 61,
    });
    await runtime.serving!.applyRevision({
      service,
      revision: "chat-00002",
      replicas: 0,
      worker: {
        command: ["serve"],
        env: {},
        allocation: { node: "", cpuMillis: 0, memoryBytes: 0, gpus: [] },
      },
      port: 8080,
      readinessPath: "/",
      readinessTimeoutSeconds: 1,
    });
    const revision = await runtime.serving!.observeRevision(service, "chat-00001");
    await runtime.serving!.deleteRevision(service, "chat-00001");
    expect({ nodes, revision }).toMatchSnapshot();
    expect(api.text()).toMatchSnapshot();
  });

  it("a worker's pod events wake its job only when what the job sees of it changes", async () => {
    let created = { metadata: {} as Record<string, unknown> };
    const api = new FakeApi((method, path, opts) => {
      if (method === "GET" && (path === "/api/v1/pods" || path === "/api/v1/nodes"))
        return { metadata: { resourceVersion: "50" }, items: path.endsWith("nodes") ? [node("node-0")] : [] };
      if (method === "POST" && path.endsWith("/pods")) {
        // As kube-apiserver answers a create: the pod Pending.
        created = opts.body as typeof created;
        return {
          ...created,
          kind: "Pod",
          metadata: { ...created.metadata, resourceVersion: "101" },
          status: { phase: "Pending" },
        };
      }
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log });
    const changed: string[] = [];
    runtime.onChange((ref) => changed.push(ref.name));
    await runtime.watchPods();
    const one: GangSpec = { ...gang(1), workers: gang(1).workers.slice(0, 1), initCheckpoint: undefined };
    await runtime.start({ ...one, checkpoint: undefined });
    let rv = 200;
    const send = (type: string, extra: Record<string, unknown> = {}, meta: Record<string, unknown> = {}) =>
      api.watches
        .get("/api/v1/pods")!
        .write(
          `${JSON.stringify({ type, object: { ...created, kind: "Pod", metadata: { ...created.metadata, resourceVersion: String(++rv), ...meta }, ...extra } })}\n`,
        );
    const running = { phase: "Running", startTime: "t1" };
    send("ADDED", { status: { phase: "Pending" } }); // the echo of the runtime's own create: it observed the pod as it wrote it
    send("MODIFIED", {
      status: { phase: "Pending", conditions: [{ type: "PodScheduled", status: "True" }] },
    });
    send("MODIFIED", { status: { ...running } }); // started: news
    send("MODIFIED", { status: { ...running, podIP: "10.0.0.9" } }); // an address: nothing for the job
    send("MODIFIED", {
      status: {
        phase: "Succeeded",
        startTime: "t1",
        containerStatuses: [{ name: "worker", state: { terminated: { exitCode: 0, finishedAt: "t2" } } }],
      },
    });
    send("DELETED", { status: { phase: "Succeeded" } });
    // Every event has been handled once the last one (the pod gone) shows.
    await vi.waitFor(async () => expect(await runtime!.observe(job)).toBeUndefined());
    expect(changed).toEqual(["train", "train", "train"]); // started, succeeded, gone
  });

  it("a start withdraws the gang's capacity request beside making its pods, and binds none before the withdrawal and the caller's write", async () => {
    const demand = (i: number) =>
      pod(`train-capacity-${i}`, {
        "app.kubernetes.io/managed-by": "loom",
        "loom.dev/workload": "train",
        "app.kubernetes.io/component": "capacity-request",
        "loom.dev/capacity-for": "uid-1",
      });
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path === "/api/v1/pods")
        return { metadata: { resourceVersion: "50" }, items: [demand(0), demand(1)] };
      if (method === "GET" && path === "/api/v1/nodes")
        return { metadata: { resourceVersion: "50" }, items: [node("node-0"), node("node-1")] };
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log, nodeAutoscaling: true });
    await runtime.watchPods();
    api.calls.length = 0;
    await runtime.start({ ...gang(1), checkpoint: undefined, initCheckpoint: undefined });
    const verbs = api.calls.map((c) => c.split(" ").slice(0, 2).join(" "));
    const deletes = verbs.filter((v) => v.startsWith("DELETE") && v.includes("-capacity-"));
    expect(deletes).toEqual([
      "DELETE /api/v1/namespaces/loom-team-a/pods/train-capacity-0",
      "DELETE /api/v1/namespaces/loom-team-a/pods/train-capacity-1",
    ]);
    // Side by side: the deletes, the Service's apply and the unbound worker pods go out together
    // (none waits for another's answer), and no pod is bound before all of them have answered.
    expect(verbs.indexOf(deletes[1]!)).toBeLessThan(verbs.findIndex((v) => v.includes("/services/")));
    expect(verbs.filter((v) => v === "POST /api/v1/namespaces/loom-team-a/pods")).toHaveLength(2);
    expect(verbs.findIndex((v) => v.endsWith("/binding"))).toBeGreaterThan(
      verbs.lastIndexOf("POST /api/v1/namespaces/loom-team-a/pods"),
    );

    // A gang that asked for nothing: no delete, and no walk over the cluster's pods.
    api.calls.length = 0;
    await runtime.start({
      ...gang(1),
      ref: { ...job, name: "other", uid: "uid-2" },
      checkpoint: undefined,
      initCheckpoint: undefined,
    });
    expect(api.calls.filter((c) => c.startsWith("DELETE") || c.startsWith("GET"))).toEqual([]);
  });

  it("makes a gang's pods beside the caller's write, binds them once it is done, and leaves none if it fails", async () => {
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path === "/api/v1/pods")
        return { metadata: { resourceVersion: "50" }, items: [] };
      if (method === "GET" && path === "/api/v1/nodes")
        return { metadata: { resourceVersion: "50" }, items: [node("node-0"), node("node-1")] };
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log });
    await runtime.watchPods();
    const spec = { ...gang(1), checkpoint: undefined, initCheckpoint: undefined };
    api.calls.length = 0;
    let finalizer!: () => void;
    const held = new Promise<void>((ok) => {
      finalizer = ok;
    });
    const started = runtime.start(spec, held);
    await new Promise((ok) => setTimeout(ok, 20));
    const verbs = () => api.calls.map((c) => c.split(" ").slice(0, 2).join(" "));
    // Made while the write is under way, and not bound: unbound, none can run.
    expect(verbs().filter((v) => v === "POST /api/v1/namespaces/loom-team-a/pods")).toHaveLength(2);
    expect(verbs().filter((v) => v.endsWith("/binding"))).toEqual([]);
    finalizer();
    await started;
    expect(verbs().filter((v) => v.endsWith("/binding"))).toHaveLength(2);

    // The caller's write fails (the job went): nothing bound, and the unbound pods go.
    const other = { ...spec, ref: { ...job, name: "gone", uid: "uid-9" } };
    api.calls.length = 0;
    await expect(runtime.start(other, Promise.reject(new Error("the job is gone")))).rejects.toThrow(
      "the job is gone",
    );
    expect(verbs().filter((v) => v.endsWith("/binding"))).toEqual([]);
    expect(verbs().filter((v) => v.startsWith("DELETE"))).toEqual([
      "DELETE /api/v1/namespaces/loom-team-a/pods/gone-a1-w0",
      "DELETE /api/v1/namespaces/loom-team-a/pods/gone-a1-w1",
    ]);

    // A gang of one is created on its node: only once the write is done, and not at all if it fails.
    const one = { ...spec, ref: { ...job, name: "solo", uid: "uid-8" }, workers: spec.workers.slice(0, 1) };
    api.calls.length = 0;
    await expect(runtime.start(one, Promise.reject(new Error("conflict")))).rejects.toThrow("conflict");
    expect(api.calls).toEqual([]);
  });

  it("with the watch: external pods, binding, explanations, events, own writes", async () => {
    const external = (name: string, extra: Record<string, unknown>) => ({
      kind: "Pod",
      metadata: {
        name,
        namespace: "loom-team-a",
        resourceVersion: "7",
        creationTimestamp: `t-${name}`,
        labels: { "loom.dev/gang": "g", "loom.dev/node-pool": "a100" },
        annotations: { "loom.dev/gang-size": "2" },
      },
      spec: {
        schedulerName: "loom",
        priority: 5,
        containers: [{ resources: { requests: { cpu: "1", memory: "1Gi", "nvidia.com/gpu": "1" } } }],
        initContainers: [{ resources: { requests: { cpu: "3", memory: "512Mi" } } }],
      },
      ...extra,
    });
    const listed = [
      external("g-1", {}),
      external("g-0", {}),
      {
        ...external("lonely", {}),
        metadata: { name: "lonely", namespace: "other", resourceVersion: "7", annotations: {} },
      },
      {
        ...external("held", {}),
        metadata: { name: "held", namespace: "default", resourceVersion: "7", creationTimestamp: "t4" },
        spec: {
          schedulerName: "default-scheduler",
          nodeName: "node-a",
          containers: [{ resources: { requests: { "nvidia.com/gpu": "2" } } }],
        },
      },
      pod("train-a1-w0", workerLabels(1, 0), { spec: { nodeName: "node-a" }, status: { phase: "Running" } }),
      {
        ...external("done", {}),
        metadata: { name: "done", namespace: "loom-team-a", resourceVersion: "7" },
        status: { phase: "Succeeded" },
      },
    ];
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path === "/api/v1/pods")
        return { metadata: { resourceVersion: "50" }, items: listed };
      if (method === "GET" && path === "/api/v1/nodes")
        return { metadata: { resourceVersion: "50" }, items: [node("node-a"), node("node-b")] };
      if (path.includes("/lonely/status")) return new NotFoundError("gone");
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log });
    const changed: WorkloadRef[] = [];
    let capacity = 0;
    runtime.onChange((ref) => changed.push(ref));
    runtime.onCapacityChange(() => capacity++);
    await runtime.watchPods();
    const afterSync = { changed: changed.length, capacity };
    const work = runtime.external();
    await runtime.bindExternal("gang:loom-team-a/g", [
      { pod: 0, node: "node-b", gpus: [] },
      { pod: 1, node: "node-b", gpus: [] },
    ]);
    await runtime.explainExternal("pod:other/lonely", "Unschedulable", "no room");
    await runtime.explainExternal("pod:other/lonely", "Unschedulable", "no room");
    const afterBind = runtime.external();
    const nodes = await runtime.nodes();
    const refs = await runtime.list();

    // A start while watching: its own writes count before the watch shows them.
    const two: GangSpec = { ...gang(2), checkpoint: { claimName: "mine" }, initCheckpoint: undefined };
    await expect(runtime.start(two)).rejects.toThrow(/still has live pods/);
    const podsPath = "/api/v1/pods";
    const send = (type: string, object: unknown) =>
      api.watches.get(podsPath)!.write(`${JSON.stringify({ type, object })}\n`);
    send("DELETED", listed[4]);
    send("MODIFIED", { ...listed[0], spec: { ...(listed[0] as { spec: object }).spec, nodeName: "node-b" } });
    send("DELETED", listed[2]);
    // The three events have arrived once the last (a pod not Loom's, gone) has told capacity.
    await vi.waitFor(() => expect(capacity).toBe(afterSync.capacity + 2));
    const events = { changed, capacity };
    await runtime.start(two);
    const seen = await runtime.observe(job);
    await runtime.start(two); // a retry: nothing new is created
    expect({ afterSync, work, afterBind, nodes, refs, events, seen }).toMatchSnapshot();
    expect(api.text()).toMatchSnapshot();
  });
});

describe("a serving revision's tolerations", () => {
  it("go on its pods, and its waiting pods reach Loom's scheduler with them", async () => {
    const tolerations = [
      { key: "dedicated", operator: "Equal" as const, value: "serving", effect: "NoSchedule" as const },
    ];
    const waiting = {
      kind: "Pod",
      metadata: {
        name: "chat-1-abc",
        namespace: "loom-team-a",
        resourceVersion: "7",
        creationTimestamp: "t0",
        labels: { "loom.dev/component": "model" },
      },
      spec: {
        schedulerName: "loom",
        tolerations,
        containers: [{ resources: { requests: { cpu: "100m", memory: "64Mi" } } }],
      },
    };
    const api = new FakeApi((method, path) => {
      if (method === "GET" && path === "/api/v1/pods")
        return { metadata: { resourceVersion: "50" }, items: [waiting] };
      if (method === "GET" && path === "/api/v1/nodes")
        return { metadata: { resourceVersion: "50" }, items: [node("node-a")] };
      return undefined;
    });
    runtime = new KubernetesRuntime({ client: api.client(), log });
    const service: WorkloadRef = { kind: "InferenceService", project: "team-a", name: "chat", uid: "uid-s" };
    await runtime.serving!.applyRevision({
      service,
      revision: "chat-1",
      replicas: 1,
      worker: {
        command: ["serve"],
        env: {},
        allocation: { node: "", cpuMillis: 100, memoryBytes: 64 * 2 ** 20, gpus: [] },
        tolerations,
      },
      port: 8080,
      readinessPath: "/health",
      readinessTimeoutSeconds: 30,
    });
    const deployment = api.calls.find((c) => c.includes("/deployments/chat-1"))!;
    const body = JSON.parse(deployment.slice(deployment.indexOf("{"))) as {
      body: { spec: { template: { spec: { tolerations?: unknown } } } };
    };
    expect(body.body.spec.template.spec.tolerations).toEqual(tolerations);

    await runtime.watchPods();
    expect(runtime.external().pending).toEqual([
      expect.objectContaining({ id: "pod:loom-team-a/chat-1-abc", project: "team-a", tolerations }),
    ]);
  });
});

/**
 * API benchmark: Loom's embedded server against etcd (the store behind kube-apiserver) and against
 * kube-apiserver + etcd (TrainingJobs as custom resources), the same workload over loopback in the
 * same run. Run with `npm run bench:api`; see bench/README.md.
 *
 * The load generator runs in a worker thread so that it never shares an event loop with the
 * in-process Loom server; the main thread only hosts the server (or waits, while etcd runs).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { Agent, request as httpRequest, type IncomingMessage, type RequestOptions } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { arch, availableParallelism, homedir, platform, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { BenchCluster, kubeTarget, versionsOf } from "./cluster.js";

const OBJECTS = Number(process.env.LOOM_BENCH_OBJECTS ?? 10_000);
/** Objects for the embedded run (controllers on); the same count as the others by default. */
const EMBEDDED_OBJECTS = Number(process.env.LOOM_BENCH_EMBEDDED_OBJECTS ?? 10_000);
const CONCURRENCY = 32;
/** Which runs to do; all by default. */
const RUNS = (process.env.LOOM_BENCH_RUNS ?? "embedded,api,etcd,kube").split(",").map((r) => r.trim());
const LIST_REPEATS = 3;
const WATCH_RATE = 500;
const WATCH_SECONDS = 4;
/** Paced writes never have more than this many outstanding; a slot that finds the cap reached is skipped. */
const MAX_OUTSTANDING = 256;
/**
 * The runs (not a first-time build of etcd or Kubernetes) must end by then; a watchdog stops them
 * otherwise. A run takes about a minute, kube-apiserver's about two.
 */
const DEADLINE_MS = 8 * 60_000;
/** The namespace of project "default" on Kubernetes, where the kube-apiserver run keeps its objects. */
const KUBE_NAMESPACE = "loom-default";
const PROJECT = "default";
const ETCD_DIR = join(homedir(), ".cache", "loom", "etcd");
const ETCD_BIN = join(ETCD_DIR, "etcd");
const ETCD_MODULE = "go.etcd.io/etcd/server/v3";
const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const RESULTS_FILE = join(BENCH_DIR, "RESULTS.md");

// ---------------------------------------------------------------------------------------------
// Shared types (main thread ↔ worker)

type Json = Record<string, unknown>;

/** Client-certificate TLS material for HTTPS (kube-apiserver's admin kubeconfig). */
interface Tls {
  ca?: string;
  cert?: string;
  key?: string;
}

interface Target {
  peer: "loom" | "etcd" | "kube";
  objects: number;
  url: string;
  token?: string;
  tls?: Tls;
  /** etcd: an object as Loom stored it at create; etcd's values are the same bytes, renamed. */
  template?: Json;
  /** Loom only: wait until the admission controller has marked every object Pending. */
  settle: boolean;
}

interface Figures {
  objects: number;
  createPerSec: number;
  /** ms from the last create's response until every object had its controller status write. */
  settleMs?: number;
  getPerSec: number;
  listMs: number[];
  listBytes: number;
  updatePerSec: number;
  updateConflicts: number;
  watch: {
    offered: number;
    sent: number;
    skipped: number;
    conflicts: number;
    matched: number;
    achievedRate: number;
    eventP50: number;
    eventP99: number;
    eventMax: number;
    writeP50: number;
    writeP99: number;
  };
  objectBytes: number;
  /** Loom: object 0 as created (status left out), the template for etcd's values. */
  createdSample?: Json;
  /** Loom embedded: reconciles per controller over the whole run, from /metrics. */
  reconciles?: Record<string, { count: number; seconds: number }>;
}

type WorkerMessage = { type: "done"; figures: Figures } | { type: "error"; message: string };

// ---------------------------------------------------------------------------------------------
// HTTP client: node:http (node:https for kube-apiserver) with keep-alive, a fixed socket pool,
// bodies read as strings.

interface HttpResult {
  status: number;
  body: string;
}

class Client {
  private readonly agent: Agent;
  private readonly base: URL;
  private readonly https: boolean;

  constructor(
    url: string,
    private readonly headers: Record<string, string>,
    maxSockets: number,
    private readonly tls: Tls = {},
  ) {
    this.base = new URL(url);
    this.https = this.base.protocol === "https:";
    const opts = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets };
    this.agent = this.https ? new HttpsAgent({ ...opts, ...tls }) : new Agent(opts);
  }

  private request(opts: RequestOptions, onResponse: (res: IncomingMessage) => void) {
    const base = { host: this.base.hostname, port: this.base.port, ...opts };
    // agent: false (a stream's own connection) needs the TLS material on the request itself.
    return this.https ? httpsRequest({ ...base, ...this.tls }, onResponse) : httpRequest(base, onResponse);
  }

  send(method: string, path: string, body?: string): Promise<HttpResult> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { ...this.headers };
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = Buffer.byteLength(body);
      }
      const req = this.request({ method, path, agent: this.agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  /** A long-lived streaming request on its own connection; onLine gets each newline-terminated line. */
  stream(
    method: string,
    path: string,
    body: string | undefined,
    onLine: (line: string) => void,
  ): Promise<() => void> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { ...this.headers };
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = Buffer.byteLength(body);
      }
      const req = this.request({ method, path, agent: false, headers }, (res) => {
        if (res.statusCode !== 200) {
          reject(new Error(`watch ${path}: HTTP ${res.statusCode}`));
          res.resume();
          return;
        }
        res.setEncoding("utf8");
        let buf = "";
        res.on("data", (chunk: string) => {
          buf += chunk;
          let nl = buf.indexOf("\n");
          while (nl >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.trim()) onLine(line);
            nl = buf.indexOf("\n");
          }
        });
        res.on("error", () => undefined);
        resolve(() => req.destroy());
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// The two peers behind one interface. Each call returns the new resourceVersion / mod_revision.

interface Peer {
  create(i: number): Promise<number>;
  /** Reads object i, remembers it for the later update, returns its revision. */
  get(i: number): Promise<number>;
  list(): Promise<{ count: number; bytes: number; pending: number }>;
  /** Compare-and-swap update from the given revision; undefined on a conflict. */
  update(i: number, rv: number, iteration: number): Promise<number | undefined>;
  /** Opens a watch of every object after fromRv; resolves once the stream is live. */
  watch(fromRv: number, onEvent: (name: string, rv: number) => void): Promise<() => void>;
  close(): void;
}

const objectName = (i: number) => `bench-${String(i).padStart(5, "0")}`;

function expect(res: HttpResult, status: number, what: string): void {
  if (res.status !== status)
    throw new Error(`${what}: HTTP ${res.status} (expected ${status}): ${res.body.slice(0, 300)}`);
}

/** A TrainingJob that can never be admitted (10000 CPUs), so it stays Pending and spawns nothing. */
function manifest(i: number): Json {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: {
      name: objectName(i),
      labels: { "app.kubernetes.io/part-of": "loom-bench", team: "research" },
    },
    spec: {
      command: [
        "python",
        "-m",
        "train",
        "--config",
        "configs/llama-3-8b-lora.yaml",
        "--output",
        "/data/runs",
      ],
      env: { BENCH_ITERATION: "0", WANDB_MODE: "offline" },
      resources: { cpu: 10000, memory: "16Gi" },
    },
  };
}

interface LoomObject {
  metadata: { name: string; resourceVersion: string };
  spec: { env: Record<string, string> };
  status?: { phase?: string };
}

class LoomPeer implements Peer {
  private readonly client: Client;
  private readonly base = `/apis/loom.dev/v1alpha1/projects/${PROJECT}/trainingjobs`;
  readonly objects: (LoomObject | undefined)[] = [];
  private readonly headers: Record<string, string>;

  constructor(private readonly target: Target) {
    this.headers = { authorization: `Bearer ${target.token}` };
    this.client = new Client(target.url, this.headers, CONCURRENCY);
  }

  async create(i: number): Promise<number> {
    const res = await this.client.send("POST", this.base, JSON.stringify(manifest(i)));
    expect(res, 201, `create ${objectName(i)}`);
    return Number((JSON.parse(res.body) as LoomObject).metadata.resourceVersion);
  }

  async get(i: number): Promise<number> {
    const res = await this.client.send("GET", `${this.base}/${objectName(i)}`);
    expect(res, 200, `get ${objectName(i)}`);
    const obj = JSON.parse(res.body) as LoomObject;
    this.objects[i] = obj;
    return Number(obj.metadata.resourceVersion);
  }

  async getRaw(i: number): Promise<LoomObject> {
    const res = await this.client.send("GET", `${this.base}/${objectName(i)}`);
    expect(res, 200, `get ${objectName(i)}`);
    return JSON.parse(res.body) as LoomObject;
  }

  async list(): Promise<{ count: number; bytes: number; pending: number }> {
    const res = await this.client.send("GET", this.base);
    expect(res, 200, "list");
    const items = (JSON.parse(res.body) as { items: LoomObject[] }).items;
    return {
      count: items.length,
      bytes: Buffer.byteLength(res.body),
      pending: items.filter((o) => o.status?.phase === "Pending").length,
    };
  }

  async update(i: number, rv: number, iteration: number): Promise<number | undefined> {
    const obj = this.objects[i];
    if (!obj) throw new Error(`update ${objectName(i)} before get`);
    const body: LoomObject = {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: String(rv) },
      spec: { ...obj.spec, env: { ...obj.spec.env, BENCH_ITERATION: String(iteration) } },
    };
    const res = await this.client.send("PUT", `${this.base}/${objectName(i)}`, JSON.stringify(body));
    if (res.status === 409) return undefined;
    expect(res, 200, `update ${objectName(i)}`);
    const updated = JSON.parse(res.body) as LoomObject;
    this.objects[i] = updated;
    return Number(updated.metadata.resourceVersion);
  }

  /** Reconcile counts and time per controller, summed over results, from Loom's /metrics. */
  async reconciles(): Promise<Record<string, { count: number; seconds: number }>> {
    const res = await this.client.send("GET", "/metrics");
    expect(res, 200, "metrics");
    const out: Record<string, { count: number; seconds: number }> = {};
    const re = /^loom_reconcile_duration_seconds_(sum|count)\{controller="([^"]+)",result="[^"]+"\} (\S+)$/gm;
    for (const m of res.body.matchAll(re)) {
      const name = m[2]!;
      const entry = out[name] ?? { count: 0, seconds: 0 };
      out[name] = entry;
      if (m[1] === "sum") entry.seconds += Number(m[3]);
      else entry.count += Number(m[3]);
    }
    return out;
  }

  watch(fromRv: number, onEvent: (name: string, rv: number) => void): Promise<() => void> {
    const client = new Client(this.target.url, this.headers, 1);
    return client.stream("GET", `${this.base}?watch=1&resourceVersion=${fromRv}`, undefined, (line) => {
      const e = JSON.parse(line) as { type: string; object: LoomObject };
      if (e.type === "ERROR") throw new Error(`watch ended: ${line}`);
      onEvent(e.object.metadata.name, Number(e.object.metadata.resourceVersion));
    });
  }

  close(): void {
    this.client.close();
  }
}

/**
 * kube-apiserver with TrainingJobs as custom resources (Loom's CRDs), over HTTPS with the admin
 * client certificate: create (POST), get, list (one unpaginated GET of the collection), update
 * (PUT with metadata.resourceVersion; 409 on a conflict), watch (GET ?watch=1 from a revision).
 * The same calls Loom's kube store makes, without Loom in between.
 */
class KubePeer implements Peer {
  private readonly client: Client;
  private readonly base = `/apis/loom.dev/v1alpha1/namespaces/${KUBE_NAMESPACE}/trainingjobs`;
  private readonly objects: (LoomObject | undefined)[] = [];

  constructor(private readonly target: Target) {
    this.client = new Client(target.url, { accept: "application/json" }, CONCURRENCY, target.tls);
  }

  async create(i: number): Promise<number> {
    const res = await this.client.send("POST", this.base, JSON.stringify(manifest(i)));
    expect(res, 201, `create ${objectName(i)}`);
    return Number((JSON.parse(res.body) as LoomObject).metadata.resourceVersion);
  }

  async get(i: number): Promise<number> {
    const res = await this.client.send("GET", `${this.base}/${objectName(i)}`);
    expect(res, 200, `get ${objectName(i)}`);
    const obj = JSON.parse(res.body) as LoomObject;
    this.objects[i] = obj;
    return Number(obj.metadata.resourceVersion);
  }

  async list(): Promise<{ count: number; bytes: number; pending: number }> {
    const res = await this.client.send("GET", this.base);
    expect(res, 200, "list");
    const items = (JSON.parse(res.body) as { items: LoomObject[] }).items;
    return { count: items.length, bytes: Buffer.byteLength(res.body), pending: 0 };
  }

  async update(i: number, rv: number, iteration: number): Promise<number | undefined> {
    const obj = this.objects[i];
    if (!obj) throw new Error(`update ${objectName(i)} before get`);
    const body: LoomObject = {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: String(rv) },
      spec: { ...obj.spec, env: { ...obj.spec.env, BENCH_ITERATION: String(iteration) } },
    };
    const res = await this.client.send("PUT", `${this.base}/${objectName(i)}`, JSON.stringify(body));
    if (res.status === 409) return undefined;
    expect(res, 200, `update ${objectName(i)}`);
    const updated = JSON.parse(res.body) as LoomObject;
    this.objects[i] = updated;
    return Number(updated.metadata.resourceVersion);
  }

  watch(fromRv: number, onEvent: (name: string, rv: number) => void): Promise<() => void> {
    const client = new Client(this.target.url, { accept: "application/json" }, 1, this.target.tls);
    return client.stream("GET", `${this.base}?watch=1&resourceVersion=${fromRv}`, undefined, (line) => {
      const e = JSON.parse(line) as { type: string; object: LoomObject };
      if (e.type === "ERROR") throw new Error(`watch ended: ${line}`);
      if (e.type === "BOOKMARK") return;
      onEvent(e.object.metadata.name, Number(e.object.metadata.resourceVersion));
    });
  }

  close(): void {
    this.client.close();
  }
}

interface EtcdKv {
  key: string;
  value?: string;
  mod_revision: string;
}
interface EtcdHeader {
  revision: string;
}

const b64 = (s: string) => Buffer.from(s).toString("base64");
const unb64 = (s: string) => Buffer.from(s, "base64").toString("utf8");

/**
 * etcd through its JSON gRPC gateway, used the way kube-apiserver uses etcd: one key per object
 * under /registry/<group>/<resource>/<namespace>/<name>, create as a transaction that requires
 * the key to be absent, update as a transaction comparing mod_revision (and reading the current
 * value on a conflict, as GuaranteedUpdate does), list as a prefix range, watch of the prefix.
 */
class EtcdPeer implements Peer {
  private readonly client: Client;
  private readonly prefix = `/registry/loom.dev/trainingjobs/${PROJECT}/`;
  private readonly objects: (Json | undefined)[] = [];
  private readonly template: Json;

  constructor(private readonly target: Target) {
    this.client = new Client(target.url, {}, CONCURRENCY);
    this.template = target.template ?? fallbackTemplate();
  }

  private key(i: number): string {
    return this.prefix + objectName(i);
  }

  private value(template: Json, i: number): Json {
    const meta = template.metadata as Json;
    return {
      ...template,
      metadata: { ...meta, name: objectName(i), uid: randomUUID(), resourceVersion: "" },
    };
  }

  async create(i: number): Promise<number> {
    const key = b64(this.key(i));
    const value = b64(JSON.stringify(this.value(this.template, i)));
    const res = await this.client.send(
      "POST",
      "/v3/kv/txn",
      JSON.stringify({
        compare: [{ key, target: "MOD", result: "EQUAL", mod_revision: "0" }],
        success: [{ request_put: { key, value } }],
      }),
    );
    expect(res, 200, `create ${objectName(i)}`);
    const out = JSON.parse(res.body) as { header: EtcdHeader; succeeded?: boolean };
    if (!out.succeeded) throw new Error(`create ${objectName(i)}: key already exists`);
    return Number(out.header.revision);
  }

  async get(i: number): Promise<number> {
    const res = await this.client.send("POST", "/v3/kv/range", JSON.stringify({ key: b64(this.key(i)) }));
    expect(res, 200, `get ${objectName(i)}`);
    const kv = (JSON.parse(res.body) as { kvs?: EtcdKv[] }).kvs?.[0];
    if (!kv?.value) throw new Error(`get ${objectName(i)}: not found`);
    this.objects[i] = JSON.parse(unb64(kv.value)) as Json;
    return Number(kv.mod_revision);
  }

  async list(): Promise<{ count: number; bytes: number; pending: number }> {
    const res = await this.client.send(
      "POST",
      "/v3/kv/range",
      JSON.stringify({ key: b64(this.prefix), range_end: b64(prefixEnd(this.prefix)) }),
    );
    expect(res, 200, "list");
    const kvs = (JSON.parse(res.body) as { kvs?: EtcdKv[] }).kvs ?? [];
    const items = kvs.map((kv) => JSON.parse(unb64(kv.value ?? "")) as Json);
    return { count: items.length, bytes: Buffer.byteLength(res.body), pending: 0 };
  }

  async update(i: number, rv: number, iteration: number): Promise<number | undefined> {
    const obj = this.objects[i];
    if (!obj) throw new Error(`update ${objectName(i)} before get`);
    const spec = obj.spec as { env: Record<string, string> };
    const next = { ...obj, spec: { ...spec, env: { ...spec.env, BENCH_ITERATION: String(iteration) } } };
    const key = b64(this.key(i));
    const res = await this.client.send(
      "POST",
      "/v3/kv/txn",
      JSON.stringify({
        compare: [{ key, target: "MOD", result: "EQUAL", mod_revision: String(rv) }],
        success: [{ request_put: { key, value: b64(JSON.stringify(next)) } }],
        failure: [{ request_range: { key } }],
      }),
    );
    expect(res, 200, `update ${objectName(i)}`);
    const out = JSON.parse(res.body) as { header: EtcdHeader; succeeded?: boolean };
    if (!out.succeeded) return undefined;
    this.objects[i] = next;
    return Number(out.header.revision);
  }

  watch(fromRv: number, onEvent: (name: string, rv: number) => void): Promise<() => void> {
    const client = new Client(this.target.url, {}, 1);
    let created: () => void = () => undefined;
    const live = new Promise<void>((resolve) => {
      created = resolve;
    });
    const body = JSON.stringify({
      create_request: {
        key: b64(this.prefix),
        range_end: b64(prefixEnd(this.prefix)),
        start_revision: String(fromRv + 1),
      },
    });
    const stop = client.stream("POST", "/v3/watch", body, (line) => {
      const msg = JSON.parse(line) as {
        result?: { created?: boolean; events?: { kv: EtcdKv }[] };
        error?: unknown;
      };
      if (msg.error) throw new Error(`watch failed: ${line}`);
      if (msg.result?.created) created();
      for (const e of msg.result?.events ?? []) {
        // Decoded like an informer would, so the client does the same work as for Loom's events.
        JSON.parse(unb64(e.kv.value ?? ""));
        onEvent(unb64(e.kv.key).slice(this.prefix.length), Number(e.kv.mod_revision));
      }
    });
    return stop.then(async (s) => {
      await live;
      return s;
    });
  }

  close(): void {
    this.client.close();
  }
}

function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/** Used only if no Loom run produced a sample object. */
function fallbackTemplate(): Json {
  const m = manifest(0);
  return {
    ...m,
    metadata: {
      ...(m.metadata as Json),
      project: PROJECT,
      uid: randomUUID(),
      resourceVersion: "",
      generation: 1,
      creationTimestamp: new Date().toISOString(),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The workload (runs in the worker thread)

async function pool(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) {
        const i = next++;
        await fn(i);
      }
    }),
  );
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (peer: string, msg: string) => console.log(`  [${peer}] ${msg}`);

async function runWorkload(target: Target): Promise<Figures> {
  const OBJECTS = target.objects;
  const peer =
    target.peer === "loom"
      ? new LoomPeer(target)
      : target.peer === "kube"
        ? new KubePeer(target)
        : new EtcdPeer(target);
  const label = target.peer;
  const rvs = new Array<number>(OBJECTS).fill(0);
  let maxRv = 0;
  const seen = (rv: number) => {
    if (rv > maxRv) maxRv = rv;
    return rv;
  };
  try {
    let t = performance.now();
    await pool(OBJECTS, CONCURRENCY, async (i) => {
      rvs[i] = seen(await peer.create(i));
    });
    const createMs = performance.now() - t;
    say(label, `create ${OBJECTS} objects: ${(createMs / 1000).toFixed(2)} s`);

    let settleMs: number | undefined;
    let createdSample: Json | undefined;
    if (target.settle && peer instanceof LoomPeer) {
      // The admission controller writes status.phase=Pending (and a condition) on every job.
      t = performance.now();
      const last = OBJECTS - 1;
      for (;;) {
        if ((await peer.getRaw(last)).status?.phase === "Pending") {
          const l = await peer.list();
          if (l.pending === OBJECTS) break;
        }
        if (performance.now() - t > 120_000)
          throw new Error("the controllers did not mark every job Pending within 120 s");
        await sleep(50);
      }
      settleMs = performance.now() - t;
      say(
        label,
        `controllers marked all ${OBJECTS} Pending ${(settleMs / 1000).toFixed(2)} s after the last create`,
      );
    }

    t = performance.now();
    await pool(OBJECTS, CONCURRENCY, async (i) => {
      rvs[i] = seen(await peer.get(i));
    });
    const getMs = performance.now() - t;
    say(label, `get ${OBJECTS} objects: ${(getMs / 1000).toFixed(2)} s`);
    if (peer instanceof LoomPeer) {
      const { status: _status, ...created } = peer.objects[0] as unknown as Json;
      createdSample = created;
    }

    const listMs: number[] = [];
    let listBytes = 0;
    for (let k = 0; k < LIST_REPEATS; k++) {
      t = performance.now();
      const l = await peer.list();
      listMs.push(performance.now() - t);
      listBytes = l.bytes;
      if (l.count !== OBJECTS) throw new Error(`list returned ${l.count} objects, expected ${OBJECTS}`);
    }
    say(label, `list ${OBJECTS} objects ×${LIST_REPEATS}: ${listMs.map((x) => x.toFixed(0)).join(", ")} ms`);

    let conflicts = 0;
    t = performance.now();
    await pool(OBJECTS, CONCURRENCY, async (i) => {
      const rv = await peer.update(i, rvs[i]!, 1);
      if (rv === undefined) conflicts++;
      else rvs[i] = seen(rv);
    });
    const updateMs = performance.now() - t;
    say(label, `update ${OBJECTS} objects: ${(updateMs / 1000).toFixed(2)} s (${conflicts} conflicts)`);

    // Watch latency: paced updates of distinct objects, matched to events by name + revision.
    const arrivals = new Map<string, number>();
    const stop = await peer.watch(maxRv, (name, rv) => arrivals.set(`${name}@${rv}`, performance.now()));
    const total = WATCH_RATE * WATCH_SECONDS;
    const writes: { key: string; sent: number; done: number }[] = [];
    const inflight: Promise<void>[] = [];
    let watchConflicts = 0;
    let outstanding = 0;
    let skipped = 0;
    let sentCount = 0;
    const start = performance.now();
    const interval = 1000 / WATCH_RATE;
    let k = 0;
    while (k < total) {
      const now = performance.now();
      while (k < total && start + k * interval <= now) {
        const slot = k++;
        if (outstanding >= MAX_OUTSTANDING) {
          skipped++;
          continue;
        }
        const i = sentCount++ % OBJECTS;
        const sent = performance.now();
        outstanding++;
        inflight.push(
          peer.update(i, rvs[i]!, 2 + slot).then((rv) => {
            outstanding--;
            // Only when objects are reused (fewer objects than paced writes) and a write is slower than a lap.
            if (rv === undefined) {
              watchConflicts++;
              return;
            }
            rvs[i] = rv;
            writes.push({ key: `${objectName(i)}@${rv}`, sent, done: performance.now() });
          }),
        );
      }
      await sleep(Math.max(0, start + k * interval - performance.now()));
    }
    await Promise.all(inflight);
    const achievedRate = writes.length / ((performance.now() - start) / 1000);
    // Give the last events a moment to arrive.
    const waitUntil = performance.now() + 5000;
    while (performance.now() < waitUntil && writes.some((w) => !arrivals.has(w.key))) await sleep(20);
    stop();
    const eventLat: number[] = [];
    const writeLat: number[] = [];
    for (const w of writes) {
      writeLat.push(w.done - w.sent);
      const at = arrivals.get(w.key);
      if (at !== undefined) eventLat.push(at - w.sent);
    }
    eventLat.sort((a, b) => a - b);
    writeLat.sort((a, b) => a - b);
    const watch = {
      offered: total,
      sent: sentCount,
      skipped,
      conflicts: watchConflicts,
      matched: eventLat.length,
      achievedRate,
      eventP50: percentile(eventLat, 50),
      eventP99: percentile(eventLat, 99),
      eventMax: eventLat[eventLat.length - 1] ?? Number.NaN,
      writeP50: percentile(writeLat, 50),
      writeP99: percentile(writeLat, 99),
    };
    say(
      label,
      `watch: ${watch.matched}/${sentCount} events (${skipped} of ${total} paced slots skipped: ${MAX_OUTSTANDING} outstanding), ${achievedRate.toFixed(0)} writes/s; ` +
        `send→event p50 ${watch.eventP50.toFixed(2)} ms, p99 ${watch.eventP99.toFixed(2)} ms`,
    );
    if (watch.matched < writes.length)
      throw new Error(`only ${watch.matched} of ${writes.length} watch events arrived`);

    const reconciles = target.settle && peer instanceof LoomPeer ? await peer.reconciles() : undefined;
    return {
      objects: OBJECTS,
      reconciles,
      createPerSec: OBJECTS / (createMs / 1000),
      settleMs,
      getPerSec: OBJECTS / (getMs / 1000),
      listMs,
      listBytes,
      updatePerSec: OBJECTS / (updateMs / 1000),
      updateConflicts: conflicts,
      watch,
      objectBytes: Math.round(listBytes / OBJECTS),
      createdSample,
    };
  } finally {
    peer.close();
  }
}

async function workerMain(): Promise<void> {
  try {
    const figures = await runWorkload(workerData as Target);
    parentPort!.postMessage({ type: "done", figures } satisfies WorkerMessage);
  } catch (err) {
    parentPort!.postMessage({
      type: "error",
      message: err instanceof Error ? (err.stack ?? err.message) : String(err),
    } satisfies WorkerMessage);
  }
}

// ---------------------------------------------------------------------------------------------
// Main thread: servers, peer setup, report

const cleanups: (() => void | Promise<void>)[] = [];

async function cleanupAll(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (err) {
      console.error(`cleanup failed: ${String(err)}`);
    }
  }
}

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function runInWorker(target: Target): Promise<Figures> {
  return new Promise((resolve, reject) => {
    // Workers do not inherit tsx's loader from `node --import tsx`: register it, then load this file.
    const tsxApi = import.meta.resolve("tsx/esm/api");
    const boot = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); });`;
    const worker = new Worker(boot, { eval: true, workerData: target });
    let settled = false;
    worker.on("message", (m: WorkerMessage) => {
      settled = true;
      if (m.type === "done") resolve(m.figures);
      else reject(new Error(m.message));
      void worker.terminate();
    });
    worker.on("error", (err) => {
      if (!settled) reject(err);
      settled = true;
    });
    worker.on("exit", (code) => {
      if (!settled) reject(new Error(`load generator exited with code ${code}`));
      settled = true;
    });
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === "object" ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

async function runLoom(mode: "embedded" | "api-only", objects: number): Promise<Figures> {
  const { createLogger } = await import("../src/lib/log.js");
  const log = createLogger("warn");
  const dataDir = tempDir("loom-bench-");
  let server: { url: string; adminToken: string; close(): Promise<void> };
  const { startEmbedded } = await import("../src/main/embedded.js");
  // API only: the same composition root without the controllers, so their cost shows separately.
  server = await startEmbedded({
    dataDir,
    port: 0,
    log,
    resyncMs: 3_600_000,
    controllers: mode === "embedded",
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await server.close();
  };
  cleanups.push(close);
  try {
    return await runInWorker({
      peer: "loom",
      objects,
      url: server.url,
      token: server.adminToken,
      settle: mode === "embedded",
    });
  } finally {
    await close();
  }
}

interface EtcdInfo {
  available: boolean;
  version?: string;
  note: string;
}

function etcdVersion(): string | undefined {
  const out = spawnSync(ETCD_BIN, ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (out.status !== 0) return undefined;
  const v = /etcd Version: (\S+)/.exec(out.stdout)?.[1];
  const go = /Go Version: (\S+)/.exec(out.stdout)?.[1];
  return v ? `${v}${go ? ` (${go})` : ""}` : undefined;
}

/** Finds etcd at ~/.cache/loom/etcd/etcd, building it from the Go module proxy if missing. */
function ensureEtcd(): EtcdInfo {
  if (!RUNS.includes("etcd"))
    return { available: false, note: `skipped (LOOM_BENCH_RUNS=${RUNS.join(",")})` };
  if (existsSync(ETCD_BIN)) {
    const version = etcdVersion();
    if (version) return { available: true, version, note: `etcd ${version} from ${ETCD_BIN}` };
    return {
      available: false,
      note: `${ETCD_BIN} exists but \`etcd --version\` failed; delete it to rebuild`,
    };
  }
  const go = spawnSync("go", ["version"], { encoding: "utf8" });
  if (go.status !== 0)
    return { available: false, note: `etcd not found at ${ETCD_BIN} and no Go toolchain to build it` };
  console.log(
    `etcd not found at ${ETCD_BIN}; building it with ${go.stdout.trim()} (one time, a few minutes):`,
  );
  mkdirSync(ETCD_DIR, { recursive: true });
  const started = performance.now();
  const run = (args: string[], timeoutMs: number) => {
    console.log(`  $ (cd ${ETCD_DIR} && go ${args.join(" ")})`);
    return spawnSync("go", args, {
      cwd: ETCD_DIR,
      encoding: "utf8",
      timeout: timeoutMs,
      stdio: ["ignore", "pipe", "pipe"],
    });
  };
  if (!existsSync(join(ETCD_DIR, "go.mod"))) {
    const init = run(["mod", "init", "loom-bench-etcd"], 30_000);
    if (init.status !== 0)
      return { available: false, note: `go mod init failed: ${init.stderr.trim().slice(0, 300)}` };
  }
  const versions = run(["list", "-m", "-versions", ETCD_MODULE], 60_000);
  const stable = (versions.stdout.trim().split(/\s+/).slice(1) ?? []).filter((v) =>
    /^v3\.(6|7)\.\d+$/.test(v),
  );
  const pick = stable[stable.length - 1];
  if (versions.status !== 0 || !pick) {
    return {
      available: false,
      note: `could not list ${ETCD_MODULE} versions: ${versions.stderr.trim().slice(0, 300)}`,
    };
  }
  const get = run(["get", `${ETCD_MODULE}@${pick}`], 300_000);
  if (get.status !== 0)
    return {
      available: false,
      note: `go get ${ETCD_MODULE}@${pick} failed: ${get.stderr.trim().slice(-300)}`,
    };
  const build = run(["build", "-o", "etcd", ETCD_MODULE], 900_000);
  if (build.status !== 0)
    return { available: false, note: `go build of etcd ${pick} failed: ${build.stderr.trim().slice(-300)}` };
  const secs = ((performance.now() - started) / 1000).toFixed(0);
  const version = etcdVersion();
  if (!version) return { available: false, note: `built ${ETCD_BIN} but it does not run` };
  console.log(`  built etcd ${version} in ${secs} s`);
  return { available: true, version, note: `etcd ${version}, built from the Go module proxy in ${secs} s` };
}

interface KubeInfo {
  available: boolean;
  kubernetes?: string;
  version?: string;
  note: string;
}

/** The test control plane's binaries (test/k8s/build.sh builds what is missing; not timed). */
async function ensureKube(): Promise<KubeInfo> {
  if (!RUNS.includes("kube"))
    return { available: false, note: `skipped (LOOM_BENCH_RUNS=${RUNS.join(",")})` };
  try {
    const v = versionsOf(await BenchCluster.binDir());
    return {
      available: true,
      kubernetes: v.kubernetes,
      version: `Kubernetes ${v.kubernetes}, etcd ${v.etcd}`,
      note: v.line,
    };
  } catch (err) {
    return {
      available: false,
      note: `the Kubernetes test control plane could not be built: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}`,
    };
  }
}

async function startEtcd(): Promise<{ url: string; stop(): Promise<void> }> {
  const dir = tempDir("loom-bench-etcd-");
  const [client, peer, http] = [await freePort(), await freePort(), await freePort()];
  const clientUrl = `http://127.0.0.1:${client}`;
  const httpUrl = `http://127.0.0.1:${http}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  // etcd's defaults otherwise, fsync of the WAL included; the JSON gateway on its own HTTP port,
  // as etcd recommends over sharing the gRPC port.
  const args = [
    "--name=bench",
    `--data-dir=${join(dir, "data")}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-client-http-urls=${httpUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=bench=${peerUrl}`,
    "--log-level=warn",
  ];
  const logFile = join(dir, "etcd.log");
  writeFileSync(logFile, "");
  const child: ChildProcess = spawn(ETCD_BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
  const logs: string[] = [];
  child.stderr!.on("data", (c: Buffer) => {
    logs.push(c.toString());
    if (logs.length > 200) logs.shift();
  });
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  const stop = async () => {
    if (exited) return;
    child.kill("SIGTERM");
    const deadline = Date.now() + 5000;
    while (!exited && Date.now() < deadline) await sleep(50);
    if (!exited) child.kill("SIGKILL");
  };
  cleanups.push(stop);
  const probe = new Client(httpUrl, {}, 1);
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (exited) throw new Error(`etcd exited at start: ${logs.join("").slice(-500)}`);
      try {
        const res = await probe.send("GET", "/health");
        if (res.status === 200 && res.body.includes('"true"')) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline)
        throw new Error(`etcd did not become healthy in 20 s: ${logs.join("").slice(-500)}`);
      await sleep(100);
    }
  } finally {
    probe.close();
  }
  return { url: httpUrl, stop };
}

function machine(): { line: string; cpus: string; model: string; memGiB: string; node: string } {
  const nproc = spawnSync("nproc", { encoding: "utf8" });
  const cpus = nproc.status === 0 ? nproc.stdout.trim() : String(availableParallelism());
  let model = "unknown CPU";
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? model;
  } catch {
    // not Linux
  }
  const memGiB = (totalmem() / 2 ** 30).toFixed(1);
  const line = `${cpus} CPUs (nproc), ${model}, ${memGiB} GiB memory, Node ${process.version}, ${platform()}/${arch()}`;
  return { line, cpus, model, memGiB, node: process.version };
}

const fmt = (x: number | undefined, digits = 0) =>
  x === undefined || Number.isNaN(x)
    ? "—"
    : x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Row {
  metric: string;
  digits: number;
  value: (f: Figures) => number | undefined;
  /** The row depends on the object count, so columns with different counts get no ratio. */
  perCount?: boolean;
}

const ROWS: Row[] = [
  { metric: `create (objects/s, ${CONCURRENCY} in flight)`, digits: 0, value: (f) => f.createPerSec },
  { metric: "get (objects/s)", digits: 0, value: (f) => f.getPerSec },
  {
    metric: `list all objects (ms, median of ${LIST_REPEATS})`,
    digits: 0,
    value: (f) => median(f.listMs),
    perCount: true,
  },
  { metric: "update with revision check (objects/s)", digits: 0, value: (f) => f.updatePerSec },
  {
    metric: `paced writes completed (per s, ${WATCH_RATE}/s offered)`,
    digits: 0,
    value: (f) => f.watch.achievedRate,
  },
  { metric: "watch: write sent → event, p50 (ms)", digits: 2, value: (f) => f.watch.eventP50 },
  { metric: "watch: write sent → event, p99 (ms)", digits: 2, value: (f) => f.watch.eventP99 },
  { metric: "paced write latency, p50 (ms)", digits: 2, value: (f) => f.watch.writeP50 },
  { metric: "paced write latency, p99 (ms)", digits: 2, value: (f) => f.watch.writeP99 },
];

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "—";
  return `${(a / b).toFixed(2)}×`;
}

interface Outcome {
  figures?: Figures;
  error?: string;
}

interface Column {
  name: string;
  objects: number;
  outcome: Outcome;
}

/** A markdown table, padded the way Biome formats markdown (bench/ is under `npm run lint`). */
function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(3, h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const cell = (text: string, c: number) => (c === 0 ? text.padEnd(widths[c]!) : text.padStart(widths[c]!));
  const line = (cells: string[]) => `| ${cells.map(cell).join(" | ")} |`;
  const rule = `| ${widths.map((w, c) => (c === 0 ? "-".repeat(w) : `${"-".repeat(w - 1)}:`)).join(" | ")} |`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

/** One column per run, then each Loom run ÷ each peer (etcd, kube-apiserver). */
function table(cols: Column[], peers: { column: Column; short: string }[]): string {
  const loomCols = cols.filter((c) => !peers.some((p) => p.column === c));
  const pairs = peers.flatMap((p) => loomCols.map((c) => ({ loom: c, peer: p })));
  const head = (c: Column) => `${c.name} (${fmt(c.objects)} objects)`;
  const header = ["metric", ...cols.map(head), ...pairs.map((p) => `${p.loom.name} ÷ ${p.peer.short}`)];
  const rows: string[][] = [];
  for (const r of ROWS) {
    const v = (c: Column) => (c.outcome.figures ? r.value(c.outcome.figures) : undefined);
    const cells = cols.map((c) => fmt(v(c), r.digits));
    const ratios = pairs.map(({ loom, peer }) =>
      r.perCount && loom.objects !== peer.column.objects ? "—" : ratio(v(loom), v(peer.column)),
    );
    rows.push([r.metric, ...cells, ...ratios]);
  }
  const bytes = (c: Column) => (c.outcome.figures ? fmt(c.outcome.figures.objectBytes) : "—");
  rows.push(["list response bytes per object", ...cols.map(bytes), ...pairs.map(() => "")]);
  return markdownTable(header, rows);
}

function appendResults(section: string): void {
  if (!existsSync(RESULTS_FILE)) {
    writeFileSync(
      RESULTS_FILE,
      "# Benchmark results\n\nEach run appends a section: date, machine, figures and the peer measured in the same " +
        "run. bench/README.md says what is measured and how.\n",
    );
  }
  appendFileSync(RESULTS_FILE, `\n${section}\n`);
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const began = performance.now();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      void cleanupAll().finally(() => process.exit(130));
    });
  }
  const m = machine();
  console.log(`bench:api — TrainingJobs over loopback HTTP keep-alive, ${CONCURRENCY} requests in flight`);
  console.log(`machine: ${m.line}`);

  const etcdInfo = ensureEtcd();
  console.log(`peer: ${etcdInfo.available ? etcdInfo.note : `none — ${etcdInfo.note}`}`);
  const kubeInfo = await ensureKube();
  console.log(`peer: ${kubeInfo.available ? kubeInfo.note : `none — ${kubeInfo.note}`}`);
  // Started after a first-time build of etcd or Kubernetes, which is not part of the bench's budget.
  const watchdog = setTimeout(() => {
    console.error(`bench:api took longer than ${DEADLINE_MS / 1000} s; stopping`);
    void cleanupAll().finally(() => process.exit(2));
  }, DEADLINE_MS);
  watchdog.unref();

  const outcome = async (name: string, fn: () => Promise<Figures>): Promise<Outcome> => {
    console.log(`${name}:`);
    const t = performance.now();
    try {
      const figures = await fn();
      console.log(`  done in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      return { figures };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      console.log(`  FAILED: ${message}`);
      return { error: message.split("\n")[0] };
    } finally {
      await cleanupAll();
    }
  };
  const skipped = (what: string): Outcome => ({ error: `skipped (LOOM_BENCH_RUNS has no ${what})` });

  const loom = RUNS.includes("embedded")
    ? await outcome(`Loom embedded server, controllers on, ${EMBEDDED_OBJECTS} objects`, () =>
        runLoom("embedded", EMBEDDED_OBJECTS),
      )
    : skipped("embedded");
  const api = RUNS.includes("api")
    ? await outcome(`Loom store + API, controllers off, ${OBJECTS} objects`, () =>
        runLoom("api-only", OBJECTS),
      )
    : skipped("api");
  let etcd: Outcome = { error: etcdInfo.note };
  if (etcdInfo.available) {
    etcd = await outcome(`etcd ${etcdInfo.version}, ${OBJECTS} objects`, async () => {
      const server = await startEtcd();
      return runInWorker({
        peer: "etcd",
        objects: OBJECTS,
        url: server.url,
        settle: false,
        template: api.figures?.createdSample ?? loom.figures?.createdSample,
      });
    });
  }

  let kube: Outcome = { error: kubeInfo.note };
  if (kubeInfo.available) {
    kube = await outcome(`kube-apiserver + etcd (${kubeInfo.version}), ${OBJECTS} objects`, async () => {
      const cluster = await BenchCluster.start(1, (c) => cleanups.push(() => c.stop()));
      await cluster.installLoomCrds();
      await cluster.kubectlOk(["create", "namespace", KUBE_NAMESPACE]);
      const t = await kubeTarget(cluster.kubeconfig);
      return runInWorker({
        peer: "kube",
        objects: OBJECTS,
        url: t.server,
        tls: { ca: t.ca, cert: t.cert, key: t.key },
        settle: false,
      });
    });
  }

  const etcdName = etcdInfo.available ? `etcd ${etcdInfo.version?.split(" ")[0]}` : "etcd (not run)";
  const kubeName = kubeInfo.available
    ? `kube-apiserver ${kubeInfo.kubernetes} + etcd`
    : "kube-apiserver + etcd (not run)";
  const cols: Column[] = [
    { name: "Loom embedded", objects: EMBEDDED_OBJECTS, outcome: loom },
    { name: "Loom API only", objects: OBJECTS, outcome: api },
    { name: etcdName, objects: OBJECTS, outcome: etcd },
    { name: kubeName, objects: OBJECTS, outcome: kube },
  ];
  const tbl = table(cols, [
    { column: cols[2]!, short: "etcd" },
    { column: cols[3]!, short: "kube-apiserver" },
  ]);
  const notes: string[] = [
    "Ratios are Loom ÷ peer: above 1× is better for Loom on throughput rows, below 1× on latency rows.",
    `Loom embedded is the real \`startEmbedded\` server with its controllers: every TrainingJob asks for 10000 CPUs, ` +
      `so the admission loop marks it Pending (one status write and one event per job) and nothing is spawned. ` +
      `It runs ${fmt(EMBEDDED_OBJECTS)} objects.`,
    `Loom API only is the same startEmbedded with controllers: false (store, API and HTTP server only).`,
  ];
  const lf = loom.figures;
  if (lf?.settleMs !== undefined) {
    const rc = Object.entries(lf.reconciles ?? {})
      .map(([name, r]) => `${name} ${fmt(r.count)} reconciles, ${fmt(r.seconds, 1)} s`)
      .join("; ");
    notes.push(
      `Loom embedded: all ${fmt(lf.objects)} jobs were Pending ${fmt(lf.settleMs / 1000, 2)} s after the last create; ` +
        `controllers over the run: ${rc || "no metrics"}.`,
    );
  }
  for (const c of cols) {
    const o = c.outcome;
    if (o.error) notes.push(`${c.name}: ${o.error}`);
    else if (o.figures) {
      const w = o.figures.watch;
      notes.push(
        `${c.name}: list runs ${o.figures.listMs.map((x) => fmt(x)).join(" / ")} ms ` +
          `(${fmt(o.figures.listBytes / 2 ** 20, 1)} MiB); ${o.figures.updateConflicts} update conflicts; ` +
          `watch: ${w.matched} of ${w.sent} paced writes seen, ${w.skipped} of ${w.offered} slots skipped ` +
          `(${MAX_OUTSTANDING} outstanding), slowest event ${fmt(w.eventMax, 1)} ms.`,
      );
      if (w.achievedRate < 0.95 * WATCH_RATE)
        notes.push(
          `${c.name} completed ${fmt(w.achievedRate)} of the ${WATCH_RATE} paced writes offered per second: it ` +
            "could not keep up, so its paced latencies include the wait behind earlier writes (queueing), not " +
            "only the time of one write.",
        );
    }
  }
  if (etcdInfo.available) {
    notes.push(
      "etcd runs with its defaults, so it fsyncs its WAL on every commit batch; Loom's SQLite runs WAL with " +
        "synchronous=NORMAL (no fsync per commit: a commit survives a crash of the process, not a power loss). " +
        "etcd is driven through its JSON gRPC gateway (HTTP, then gRPC inside etcd), which kube-apiserver does not " +
        "use (it speaks gRPC); its values are the JSON objects Loom API only stored (renamed), base64 in transit, hence the larger list bytes. Creates and updates " +
        "are transactions on mod_revision, as kube-apiserver issues them.",
    );
  }
  if (kubeInfo.available) {
    notes.push(
      `kube-apiserver + etcd is a private control plane from test/k8s/up.sh (${kubeInfo.note}; 1 kwok node), ` +
        `with Loom's CRDs and the namespace ${KUBE_NAMESPACE}; no operator. TrainingJobs are custom resources, driven ` +
        "over HTTPS with the admin client certificate (Loom and etcd are plain HTTP on loopback), so each request " +
        "also pays for TLS, x509 authentication, RBAC, API Priority and Fairness, admission, and the CRD's " +
        "structural schema (validation, defaulting, pruning) before etcd. Its etcd runs with --unsafe-no-fsync " +
        "(set by the test cluster), like Loom's SQLite without fsync per commit and unlike the etcd column, which " +
        "fsyncs. The cluster's controller-manager (its garbage collector and quota controllers watch every " +
        "resource, TrainingJobs included), scheduler and kwok run beside it on the same cores.",
    );
  }
  notes.push(
    "The load generator (a worker thread), Loom (the bench's main thread), etcd and the control plane (child " +
      "processes, one peer at a time) share the " +
      `machine's ${m.cpus} cores. Watch latency runs from the moment a paced write is sent to the moment its ` +
      "event (matched by name and revision) is parsed off the watch stream.",
  );

  console.log("");
  console.log(tbl);
  console.log("");
  for (const n of notes) console.log(`- ${n}`);

  const date = startedAt.toISOString().replace("T", " ").slice(0, 16);
  const section = [
    `## ${date} UTC — bench:api`,
    "",
    `- Machine: ${m.cpus} CPUs (nproc), ${m.model}, ${m.memGiB} GiB memory, Node ${m.node}, ${platform()}/${arch()}`,
    `- Peer: ${etcdInfo.available ? etcdInfo.note : `not run — ${etcdInfo.note}`}`,
    `- Peer: ${kubeInfo.available ? `kube-apiserver + etcd: ${kubeInfo.note}` : `kube-apiserver + etcd not run — ${kubeInfo.note}`}`,
    `- Workload: create, get, list, update of TrainingJobs with ${CONCURRENCY} requests in flight; then ` +
      `${WATCH_RATE} updates/s for ${WATCH_SECONDS} s against an open watch. Whole run: ` +
      `${fmt((performance.now() - began) / 1000)} s.`,
    "",
    tbl,
    "",
    ...notes.map((n) => `- ${n}`),
  ].join("\n");
  appendResults(section);
  console.log(`\nappended to ${RESULTS_FILE}`);
  process.exitCode = loom.error && api.error ? 1 : 0;
}

if (isMainThread) {
  main()
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    })
    .finally(() => cleanupAll().finally(() => process.exit()));
} else {
  void workerMain();
}

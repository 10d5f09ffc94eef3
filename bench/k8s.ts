/**
 * Kubernetes benchmark: TrainingJobs through Loom's operator against plain batch/v1 Jobs, on one
 * real control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok with 100 fake
 * nodes) in the same run. Run with `npm run bench:k8s`; see bench/README.md.
 *
 * Every API request is attributed: the bench counts its own, kube-apiserver counts all of them
 * (apiserver_request_total), and FlowSchemas created for the run give the operator, the job
 * controller and the scheduler their own API Priority and Fairness counters.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { appendFileSync, createWriteStream, existsSync, readFileSync, writeFileSync } from "node:fs";
import { arch, availableParallelism, loadavg, platform, totalmem } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseAllDocuments } from "yaml";
import { BenchCluster, cpuSeconds, KubeHttp, kubeTarget, ROOT, samples } from "./cluster.js";
import { num } from "./report.js";

const JOBS = num(process.env.LOOM_BENCH_K8S_JOBS, 1000);
const NODES = num(process.env.LOOM_BENCH_K8S_NODES, 100);
/** The whole bench (after a first-time build of the binaries) stops by then: a watchdog enforces it. */
const BUDGET_MS = num(process.env.LOOM_BENCH_K8S_BUDGET_S, 840) * 1000;
/** After all jobs finished, how long each run watches the controllers at rest (one 30 s resync fits). */
const IDLE_MS = num(process.env.LOOM_BENCH_K8S_IDLE_S, 35) * 1000;
const RUNS = (process.env.LOOM_BENCH_K8S_RUNS ?? "loom,jobs").split(",").map((r) => r.trim());
const CREATE_CONCURRENCY = 16;
const COMPLETE_AFTER = "5s";
const SCRAPE_MS = 250;
/** The idle cluster is measured this long before the runs, for its background request rate. */
const BACKGROUND_MS = 15_000;
const PROGRESS_MS = 5000;
/** Kept back from the Loom run for the baseline, both idle windows and teardown. */
const JOBS_RESERVE_MS = 240_000;
const TEARDOWN_MS = 60_000;
/** The operator's ServiceAccount, as deploy/operator.yaml runs it (a bearer token, not a client certificate). */
const OPERATOR_SA = { namespace: "loom-system", name: "loom-operator" };
const LOOM_NS = "loom-default";
const JOBS_NS = "loom-bench-jobs";
const RESULTS_FILE = join(ROOT, "bench", "RESULTS.md");
const NODE_POD_CAPACITY = 110;

const began = performance.now();
const elapsed = () => performance.now() - began;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const secs = (ms: number | undefined, digits = 1) => (ms === undefined ? "—" : (ms / 1000).toFixed(digits));
const log = (msg: string) => console.log(`[${secs(elapsed(), 0).padStart(4)} s] ${msg}`);
const objectName = (i: number) => `bench-${String(i).padStart(5, "0")}`;

// ---------------------------------------------------------------------------------------------
// Cleanup and watchdog

const cleanups: (() => void | Promise<void>)[] = [];
let cleaning: Promise<void> | undefined;
function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error(`cleanup failed: ${String(err)}`);
      }
    }
  })();
  return cleaning;
}

// ---------------------------------------------------------------------------------------------
// Attribution: FlowSchemas that give each client of interest its own APF counters

interface Actor {
  id: string;
  title: string;
  subject: Record<string, unknown>;
  /** The priority level the client would get from the default FlowSchemas, so APF treats it the same. */
  priorityLevel: string;
  resources: string[];
}

const ACTORS: Actor[] = [
  {
    id: "op",
    title: "Loom operator",
    subject: { kind: "ServiceAccount", serviceAccount: OPERATOR_SA },
    // The operator is a ServiceAccount: the default "service-accounts" schema → workload-low.
    priorityLevel: "workload-low",
    resources: [
      "trainingjobs",
      "trainingjobs/status",
      "projects",
      "projects/status",
      "pods",
      "services",
      "events",
      "nodes",
      "namespaces",
    ],
  },
  {
    id: "jc",
    title: "job controller",
    subject: { kind: "ServiceAccount", serviceAccount: { namespace: "kube-system", name: "job-controller" } },
    priorityLevel: "workload-high",
    resources: ["jobs", "jobs/status", "pods", "events"],
  },
  {
    id: "sched",
    title: "kube-scheduler",
    subject: { kind: "User", user: { name: "system:kube-scheduler" } },
    priorityLevel: "workload-high",
    resources: ["pods", "pods/binding", "events"],
  },
];
const VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"];

function flowSchemas(): { name: string; actor: string; detail: string; manifest: object }[] {
  const out: { name: string; actor: string; detail: string; manifest: object }[] = [];
  const schema = (name: string, actor: Actor, precedence: number, rules: object) => ({
    apiVersion: "flowcontrol.apiserver.k8s.io/v1",
    kind: "FlowSchema",
    metadata: { name, labels: { "app.kubernetes.io/part-of": "loom-bench" } },
    spec: {
      priorityLevelConfiguration: { name: actor.priorityLevel },
      matchingPrecedence: precedence,
      distinguisherMethod: { type: "ByUser" },
      rules: [{ subjects: [actor.subject], ...rules }],
    },
  });
  for (const actor of ACTORS) {
    for (const resource of actor.resources) {
      for (const verb of VERBS) {
        const name = `loom-bench-${actor.id}-${resource.replace("/", ".")}-${verb}`;
        out.push({
          name,
          actor: actor.id,
          detail: `${verb.toUpperCase()} ${resource}`,
          manifest: schema(name, actor, 60, {
            resourceRules: [
              {
                verbs: [verb],
                apiGroups: ["*"],
                resources: [resource],
                clusterScope: true,
                namespaces: ["*"],
              },
            ],
          }),
        });
      }
    }
    const name = `loom-bench-${actor.id}-other`;
    out.push({
      name,
      actor: actor.id,
      detail: "other",
      manifest: schema(name, actor, 61, {
        resourceRules: [
          { verbs: ["*"], apiGroups: ["*"], resources: ["*"], clusterScope: true, namespaces: ["*"] },
        ],
        nonResourceRules: [{ verbs: ["*"], nonResourceURLs: ["*"] }],
      }),
    });
  }
  return out;
}
const SCHEMAS = flowSchemas();
const SCHEMA_BY_NAME = new Map(SCHEMAS.map((s) => [s.name, s]));

// ---------------------------------------------------------------------------------------------
// Snapshots of the API server's counters and every component's CPU time

interface Snapshot {
  at: number;
  requestTotal: number;
  /** "VERB resource[/subresource] code" → count, from apiserver_request_total. */
  byRequest: Map<string, number>;
  /** flow_schema → dispatched requests. */
  flows: Map<string, number>;
  /** flow_schema → requests API Priority and Fairness rejected (429). */
  rejected: Map<string, number>;
  /** "VERB resource" → seconds kube-apiserver spent on such requests, and their count (no watches). */
  serverSeconds: Map<string, number>;
  serverCount: Map<string, number>;
  cpu: Map<string, number>;
  benchRequests: number;
  /** The operator's reconciles by controller, and "CONTROLLER resync" for those of resyncs. */
  reconciles: Map<string, number>;
}

interface Ctx {
  cluster: BenchCluster;
  http: KubeHttp;
  operator?: OperatorProcess;
}

async function snapshot(ctx: Ctx): Promise<Snapshot> {
  // Counted before it is sent: the scrape itself lands in the window that this snapshot opens.
  const benchRequests = ctx.http.requests;
  const cpu = new Map<string, number>();
  for (const [name, pid] of ctx.cluster.pids()) {
    const s = cpuSeconds(pid);
    if (s !== undefined) cpu.set(name, s);
  }
  if (ctx.operator) {
    const s = cpuSeconds(ctx.operator.pid);
    if (s !== undefined) cpu.set("loom operator", s);
  }
  const self = process.cpuUsage();
  cpu.set("bench (this process)", (self.user + self.system) / 1e6);
  const reconciles = ctx.operator
    ? await reconcileCounts(ctx.operator.metricsUrl)
    : new Map<string, number>();
  const res = await ctx.http.send("GET", "/metrics");
  if (res.status !== 200) throw new Error(`kube-apiserver /metrics: HTTP ${res.status}`);
  const byRequest = new Map<string, number>();
  let requestTotal = 0;
  for (const s of samples(res.body, "apiserver_request_total")) {
    requestTotal += s.value;
    const l = s.labels;
    const resource = l.resource
      ? `${l.resource}${l.subresource ? `/${l.subresource}` : ""}`
      : l.subresource || "-";
    const key = `${l.verb} ${resource} ${l.code}`;
    byRequest.set(key, (byRequest.get(key) ?? 0) + s.value);
  }
  const flows = new Map<string, number>();
  for (const s of samples(res.body, "apiserver_flowcontrol_dispatched_requests_total")) {
    const fs = s.labels.flow_schema ?? "";
    flows.set(fs, (flows.get(fs) ?? 0) + s.value);
  }
  const rejected = new Map<string, number>();
  for (const s of samples(res.body, "apiserver_flowcontrol_rejected_requests_total")) {
    const fs = s.labels.flow_schema ?? "";
    rejected.set(fs, (rejected.get(fs) ?? 0) + s.value);
  }
  const serverSeconds = new Map<string, number>();
  const serverCount = new Map<string, number>();
  for (const [suffix, into] of [
    ["_sum", serverSeconds],
    ["_count", serverCount],
  ] as const) {
    for (const s of samples(res.body, `apiserver_request_duration_seconds${suffix}`)) {
      const l = s.labels;
      if (l.verb === "WATCH" || l.verb === "CONNECT") continue;
      const key = `${l.verb} ${l.resource ? `${l.resource}${l.subresource ? `/${l.subresource}` : ""}` : l.subresource || "-"}`;
      into.set(key, (into.get(key) ?? 0) + s.value);
    }
  }
  return {
    at: performance.now(),
    requestTotal,
    byRequest,
    flows,
    rejected,
    serverSeconds,
    serverCount,
    cpu,
    benchRequests,
    reconciles,
  };
}

/** The operator's reconciles so far, by controller ("CONTROLLER resync": those of resyncs); empty if it does not answer. */
async function reconcileCounts(metricsUrl: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const text = await fetch(`${metricsUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })
    .then((r) => r.text())
    .catch(() => "");
  const add = (k: string, v: number) => out.set(k, (out.get(k) ?? 0) + v);
  for (const m of samples(text, "loom_reconcile_duration_seconds_count"))
    add(m.labels.controller ?? "?", m.value);
  for (const m of samples(text, "loom_reconcile_resyncs_total"))
    add(`${m.labels.controller ?? "?"} resync`, m.value);
  return out;
}

interface WindowStats {
  ms: number;
  /** Every request kube-apiserver served in the window, less the bench's own. */
  requests: number;
  benchRequests: number;
  /** Per client group (see clientGroups). */
  byClient: Map<string, number>;
  /** actor id → "VERB resource" → count. */
  byActorDetail: Map<string, Map<string, number>>;
  /** Answers with code ≥ 400: "VERB resource code" → count. */
  errors: Map<string, number>;
  rejected: Map<string, number>;
  serverSeconds: Map<string, number>;
  serverCount: Map<string, number>;
  cpu: Map<string, number>;
  reconciles: Map<string, number>;
}

function diffMap(a: Map<string, number>, b: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d !== 0) out.set(k, d);
  }
  return out;
}

function windowStats(a: Snapshot, b: Snapshot): WindowStats {
  const benchRequests = b.benchRequests - a.benchRequests;
  const flows = diffMap(a.flows, b.flows);
  const byActorDetail = new Map<string, Map<string, number>>();
  const byClient = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (const [fs, n] of flows) {
    const schema = SCHEMA_BY_NAME.get(fs);
    if (schema) {
      const actor = ACTORS.find((x) => x.id === schema.actor)!;
      add(byClient, actor.title, n);
      const detail = byActorDetail.get(actor.id) ?? new Map<string, number>();
      byActorDetail.set(actor.id, detail);
      add(detail, schema.detail, n);
    } else if (fs === "exempt") {
      // The admin identity: kwok (it runs with the admin kubeconfig) and this bench.
      add(byClient, "kwok (fake kubelets)", n - benchRequests);
    } else if (fs === "kube-controller-manager" || fs === "kube-system-service-accounts") {
      add(byClient, "other controller-manager controllers", n);
    } else add(byClient, "other", n);
  }
  const errors = new Map<string, number>();
  for (const [k, n] of diffMap(a.byRequest, b.byRequest))
    if (Number(k.split(" ").at(-1)) >= 400) errors.set(k, n);
  return {
    ms: b.at - a.at,
    requests: b.requestTotal - a.requestTotal - benchRequests,
    benchRequests,
    byClient,
    byActorDetail,
    errors,
    rejected: diffMap(a.rejected, b.rejected),
    serverSeconds: diffMap(a.serverSeconds, b.serverSeconds),
    serverCount: diffMap(a.serverCount, b.serverCount),
    cpu: diffMap(a.cpu, b.cpu),
    reconciles: diffMap(a.reconciles, b.reconciles),
  };
}

// ---------------------------------------------------------------------------------------------
// The operator, as its own process (as in a cluster), and its /metrics

interface OperatorProcess {
  pid: number;
  metricsUrl: string;
  logFile: string;
  stop(): Promise<void>;
}

async function startOperatorProcess(kubeconfig: string, logFile: string): Promise<OperatorProcess> {
  const child: ChildProcess = spawn(
    process.execPath,
    [join(ROOT, "bin/loom.js"), "operator", "--kubeconfig", kubeconfig, "--metrics-port", "0"],
    { env: { ...process.env, LOOM_LOG_LEVEL: "warn" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  const logStream = createWriteStream(logFile);
  child.stderr!.pipe(logStream);
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  const stop = async () => {
    if (exited) return;
    child.kill("SIGTERM");
    const deadline = Date.now() + 10_000;
    while (!exited && Date.now() < deadline) await sleep(50);
    if (!exited) child.kill("SIGKILL");
    while (!exited) await sleep(20);
  };
  cleanups.push(stop);
  const metricsUrl = await new Promise<string>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`the operator did not start in 60 s: ${out}`)), 60_000);
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /metrics at (\S+)\/metrics/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      const errText = existsSync(logFile) ? readFileSync(logFile, "utf8").slice(-1500) : "";
      reject(new Error(`the operator exited with ${code}: ${errText}`));
    });
  });
  return { pid: child.pid!, metricsUrl, logFile, stop };
}

/** Scrapes the operator's /metrics every SCRAPE_MS: the work queue depth per controller. */
class QueueScraper {
  readonly peak = new Map<string, number>();
  latest = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  scrapes = 0;

  constructor(private readonly url: string) {}

  start(): void {
    const tick = async () => {
      try {
        // A busy operator answers late: a stale sample is dropped rather than held for seconds.
        const res = await fetch(`${this.url}/metrics`, { signal: AbortSignal.timeout(SCRAPE_MS * 4) });
        const text = await res.text();
        this.scrapes++;
        const now = new Map<string, number>();
        for (const s of samples(text, "loom_workqueue_depth")) {
          const c = s.labels.controller ?? "?";
          now.set(c, s.value);
          if (s.value > (this.peak.get(c) ?? 0)) this.peak.set(c, s.value);
        }
        this.latest = now;
      } catch {
        // the operator is stopping
      }
      if (this.timer) this.timer = setTimeout(() => void tick(), SCRAPE_MS);
    };
    this.timer = setTimeout(() => void tick(), 0);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

interface ReconcileFigures {
  byController: Map<string, { ok: number; conflict: number; error: number; seconds: number }>;
}

async function reconcileFigures(url: string): Promise<ReconcileFigures> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const byController = new Map<string, { ok: number; conflict: number; error: number; seconds: number }>();
  const get = (c: string) => {
    const e = byController.get(c) ?? { ok: 0, conflict: 0, error: 0, seconds: 0 };
    byController.set(c, e);
    return e;
  };
  for (const s of samples(text, "loom_reconcile_duration_seconds_count")) {
    const e = get(s.labels.controller ?? "?");
    const r = s.labels.result as "ok" | "conflict" | "error";
    if (r in e) e[r] += s.value;
  }
  for (const s of samples(text, "loom_reconcile_duration_seconds_sum"))
    get(s.labels.controller ?? "?").seconds += s.value;
  return { byController };
}

/** Warnings and errors in the operator's log, grouped by message. */
function operatorLogSummary(file: string): { total: number; groups: [string, number][] } {
  if (!existsSync(file)) return { total: 0, groups: [] };
  const groups = new Map<string, number>();
  let total = 0;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    let key: string;
    try {
      const e = JSON.parse(line) as {
        level?: number;
        msg?: string;
        component?: string;
        err?: { message?: string } | string;
      };
      if ((e.level ?? 0) < 40) continue;
      const errMsg = typeof e.err === "string" ? e.err : (e.err?.message ?? "");
      key = `${e.level === 40 ? "WARN" : "ERROR"} ${e.component ?? ""}: ${e.msg ?? ""}${errMsg ? ` (${errMsg.split("\n")[0]!.slice(0, 160)})` : ""}`;
    } catch {
      key = `(not JSON) ${line.slice(0, 160)}`;
    }
    total++;
    groups.set(key, (groups.get(key) ?? 0) + 1);
  }
  return { total, groups: [...groups].sort((a, b) => b[1] - a[1]) };
}

// ---------------------------------------------------------------------------------------------
// Tracking every job: created, running (controller), pod running, finished

interface JobTrack {
  created?: number;
  /** Loom only: status.admission was written by the admission loop. */
  admitted?: number;
  running?: number;
  podRunning?: number;
  done?: number;
  failed?: number;
  node?: string;
  /** First seen bound to its node, and first seen Succeeded or Failed: the pod's time on the node. */
  onNode?: number;
  podEnd?: number;
}

class Tracker {
  readonly jobs = new Map<string, JobTrack>();
  private waiter: (() => void) | undefined;
  createErrors: string[] = [];
  podsFailed = 0;

  constructor(readonly total: number) {}

  private get(name: string): JobTrack {
    let t = this.jobs.get(name);
    if (!t) {
      t = {};
      this.jobs.set(name, t);
    }
    return t;
  }

  created(name: string, at: number): void {
    this.get(name).created = at;
  }

  workload(name: string, state: WorkloadState): void {
    const t = this.get(name);
    const now = performance.now();
    if (state.admitted && t.admitted === undefined) t.admitted = now;
    if ((state.running || state.done) && t.running === undefined) t.running = now;
    if (state.done && t.done === undefined) t.done = now;
    if (state.failed && t.failed === undefined) t.failed = now;
    if (this.finished() === this.total) this.waiter?.();
  }

  pod(workload: string | undefined, pod: KubePod): void {
    if (!workload) return;
    const t = this.get(workload);
    const now = performance.now();
    if (pod.spec?.nodeName) {
      t.node = pod.spec.nodeName;
      t.onNode ??= now;
    }
    const phase = pod.status?.phase;
    if ((phase === "Succeeded" || phase === "Failed") && t.podEnd === undefined) t.podEnd = now;
    if ((phase === "Running" || phase === "Succeeded") && t.podRunning === undefined)
      t.podRunning = performance.now();
    if (phase === "Failed" && t.podRunning === undefined) this.podsFailed++;
  }

  count(pred: (t: JobTrack) => boolean): number {
    let n = 0;
    for (const t of this.jobs.values()) if (pred(t)) n++;
    return n;
  }

  finished(): number {
    return this.count((t) => t.done !== undefined || t.failed !== undefined);
  }

  /** Resolves when every job succeeded or failed, or at the deadline (performance.now() time). */
  wait(deadline: number): Promise<boolean> {
    if (this.finished() === this.total) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve(false);
      }, deadline - performance.now());
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve(true);
      };
    });
  }

  /** ms from t0 until every job had reached `field`; undefined unless all did. */
  allBy(field: "admitted" | "running" | "podRunning" | "done", t0: number): number | undefined {
    let max = 0;
    let n = 0;
    for (const t of this.jobs.values()) {
      const v = t[field];
      if (v === undefined) continue;
      n++;
      if (v > max) max = v;
    }
    return n === this.total ? max - t0 : undefined;
  }

  /** Per-job latency from its create's response to `field`, sorted. */
  latencies(field: "podRunning" | "done"): number[] {
    const out: number[] = [];
    for (const t of this.jobs.values()) {
      const v = t[field];
      if (v !== undefined && t.created !== undefined) out.push(v - t.created);
    }
    return out.sort((a, b) => a - b);
  }

  /** Nodes used, and the most pods one node held at the same time (bound and not yet finished). */
  nodes(): { used: number; maxPods: number; overCapacity: number } {
    const steps = new Map<string, [number, number][]>();
    for (const t of this.jobs.values()) {
      if (!t.node || t.onNode === undefined) continue;
      const s = steps.get(t.node) ?? [];
      steps.set(t.node, s);
      s.push([t.onNode, 1]);
      if (t.podEnd !== undefined) s.push([t.podEnd, -1]);
    }
    const peaks: number[] = [];
    for (const s of steps.values()) {
      // Ends before starts at the same instant.
      s.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      let now = 0;
      let peak = 0;
      for (const [, d] of s) {
        now += d;
        peak = Math.max(peak, now);
      }
      peaks.push(peak);
    }
    return {
      used: steps.size,
      maxPods: Math.max(0, ...peaks),
      overCapacity: peaks.filter((c) => c > NODE_POD_CAPACITY).length,
    };
  }
}

interface KubePod {
  metadata: { name: string; labels?: Record<string, string>; resourceVersion?: string };
  spec?: { nodeName?: string };
  status?: { phase?: string };
}

interface KubeListMeta {
  metadata: { resourceVersion: string };
}

// ---------------------------------------------------------------------------------------------
// The two workloads

function trainingJob(i: number): object {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: {
      name: objectName(i),
      labels: { "app.kubernetes.io/part-of": "loom-bench" },
      annotations: { "loom.dev/kwok-complete-after": COMPLETE_AFTER },
    },
    spec: { command: ["true"], resources: { cpu: "100m", memory: "64Mi" } },
  };
}

/** A plain Job with what Loom's pod has: same annotation, requests, restricted security context. */
function batchJob(i: number): object {
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name: objectName(i), labels: { "app.kubernetes.io/part-of": "loom-bench" } },
    spec: {
      backoffLimit: 0,
      template: {
        metadata: { annotations: { "loom.dev/kwok-complete-after": COMPLETE_AFTER } },
        spec: {
          restartPolicy: "Never",
          enableServiceLinks: false,
          automountServiceAccountToken: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 1000,
            runAsGroup: 1000,
            seccompProfile: { type: "RuntimeDefault" },
          },
          containers: [
            {
              name: "worker",
              image: "python:3.11-slim",
              command: ["true"],
              resources: { requests: { cpu: "100m", memory: "64Mi" }, limits: { memory: "64Mi" } },
              securityContext: {
                allowPrivilegeEscalation: false,
                capabilities: { drop: ["ALL"] },
                runAsNonRoot: true,
                seccompProfile: { type: "RuntimeDefault" },
              },
            },
          ],
        },
      },
    },
  };
}

interface WorkloadState {
  admitted?: boolean;
  running: boolean;
  done: boolean;
  failed: boolean;
}

interface Workload {
  name: string;
  namespace: string;
  collection: string;
  manifest: (i: number) => object;
  /** Label on the pods naming the workload they belong to. */
  podLabel: string;
  state(obj: Record<string, unknown>): WorkloadState;
}

const LOOM_WORKLOAD: Workload = {
  name: "Loom TrainingJobs",
  namespace: LOOM_NS,
  collection: `/apis/loom.dev/v1alpha1/namespaces/${LOOM_NS}/trainingjobs`,
  manifest: trainingJob,
  podLabel: "loom.dev/workload",
  state(obj) {
    const status = obj.status as { phase?: string; admission?: unknown } | undefined;
    const phase = status?.phase;
    return {
      admitted: status?.admission !== undefined,
      running: phase === "Running",
      done: phase === "Succeeded",
      failed: phase === "Failed",
    };
  },
};

const JOBS_WORKLOAD: Workload = {
  name: "batch/v1 Jobs",
  namespace: JOBS_NS,
  collection: `/apis/batch/v1/namespaces/${JOBS_NS}/jobs`,
  manifest: batchJob,
  podLabel: "batch.kubernetes.io/job-name",
  state(obj) {
    const s = (obj.status ?? {}) as {
      active?: number;
      succeeded?: number;
      ready?: number;
      conditions?: { type: string; status: string }[];
    };
    const cond = (type: string) => s.conditions?.some((c) => c.type === type && c.status === "True") ?? false;
    return {
      running: (s.active ?? 0) > 0 || (s.succeeded ?? 0) > 0,
      done: cond("Complete"),
      failed: cond("Failed"),
    };
  },
};

interface RunFigures {
  workload: Workload;
  jobs: number;
  createMs: number;
  createErrors: string[];
  admitted?: number;
  running?: number;
  podRunning?: number;
  done?: number;
  reached: { running: number; podRunning: number; done: number; failed: number };
  podLatency: number[];
  doneLatency: number[];
  nodes: { used: number; maxPods: number; overCapacity: number };
  podsFailed: number;
  window: WindowStats;
  idle?: WindowStats;
  peakQueue?: Map<string, number>;
  reconciles?: ReconcileFigures;
  timedOut: boolean;
  timeline: Sample5s[];
}

/** Progress every PROGRESS_MS: counts, the operator's queues, and CPU use of the busiest processes. */
interface Sample5s {
  t: number;
  created: number;
  running: number;
  podRunning: number;
  done: number;
  queues: string;
  /** Percent of one core over the interval, per process. */
  cpu: Map<string, number>;
}

const TIMELINE_CPU = ["kube-apiserver", "etcd", "loom operator", "kube-controller-manager", "kwok"];

function cpuNow(ctx: Ctx): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, pid] of ctx.cluster.pids()) {
    const s = cpuSeconds(pid);
    if (s !== undefined && TIMELINE_CPU.includes(name)) out.set(name, s);
  }
  const op = ctx.operator ? cpuSeconds(ctx.operator.pid) : undefined;
  if (op !== undefined) out.set("loom operator", op);
  return out;
}

async function pool(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

async function runWorkload(
  ctx: Ctx,
  w: Workload,
  deadline: number,
  scraper?: QueueScraper,
): Promise<RunFigures> {
  const { http } = ctx;
  const tracker = new Tracker(JOBS);
  // Watches open before the measured window, so their own requests stay outside it.
  const listRv = (await http.json<KubeListMeta>("GET", `${w.collection}?limit=1`)).metadata.resourceVersion;
  const stopJobs = await http.watch<
    { metadata: { name: string; resourceVersion?: string } } & Record<string, unknown>
  >(w.collection, listRv, (type, obj) => {
    if (type !== "DELETED") tracker.workload(obj.metadata.name, w.state(obj));
  });
  const podsPath = `/api/v1/namespaces/${w.namespace}/pods`;
  const podRv = (await http.json<KubeListMeta>("GET", `${podsPath}?limit=1`)).metadata.resourceVersion;
  const stopPods = await http.watch<KubePod>(podsPath, podRv, (type, pod) => {
    if (type !== "DELETED") tracker.pod(pod.metadata.labels?.[w.podLabel], pod);
  });
  try {
    const before = await snapshot(ctx);
    const t0 = performance.now();
    scraper?.start();
    const timeline: Sample5s[] = [];
    let lastCpu = cpuNow(ctx);
    let lastAt = performance.now();
    const progress = setInterval(() => {
      const now = performance.now();
      const cpuAbs = cpuNow(ctx);
      const cpu = new Map<string, number>();
      for (const [k, v] of cpuAbs) cpu.set(k, (100 * (v - (lastCpu.get(k) ?? v))) / ((now - lastAt) / 1000));
      lastCpu = cpuAbs;
      lastAt = now;
      const sample: Sample5s = {
        t: now - t0,
        created: tracker.count((t) => t.created !== undefined),
        running: tracker.count((t) => t.running !== undefined),
        podRunning: tracker.count((t) => t.podRunning !== undefined),
        done: tracker.count((t) => t.done !== undefined),
        queues: scraper ? [...scraper.latest].map(([c, d]) => `${c} ${d}`).join(", ") : "",
        cpu,
      };
      timeline.push(sample);
      const cpuText = [...cpu].map(([k, v]) => `${k} ${v.toFixed(0)}%`).join(", ");
      log(
        `  ${secs(sample.t, 0)} s: created ${sample.created}, running ${sample.running}, pods running ${sample.podRunning}, ` +
          `succeeded ${sample.done}, failed ${tracker.count((t) => t.failed !== undefined)}` +
          `${sample.queues ? ` · queues ${sample.queues}` : ""} · CPU ${cpuText}`,
      );
    }, PROGRESS_MS);
    let createMs = 0;
    try {
      await pool(JOBS, CREATE_CONCURRENCY, async (i) => {
        const res = await http.send("POST", w.collection, w.manifest(i));
        if (res.status === 201) tracker.created(objectName(i), performance.now());
        else if (tracker.createErrors.length < 5)
          tracker.createErrors.push(`HTTP ${res.status}: ${res.body.slice(0, 200)}`);
      });
      createMs = performance.now() - t0;
      log(`  created ${JOBS} in ${secs(createMs)} s`);
      const all = await tracker.wait(deadline);
      if (!all) log(`  deadline reached: ${tracker.finished()} of ${JOBS} finished`);
    } finally {
      clearInterval(progress);
    }
    const atDone = await snapshot(ctx);
    const window = windowStats(before, atDone);
    let idle: WindowStats | undefined;
    const idleMs = Math.min(IDLE_MS, deadline + 45_000 - performance.now());
    if (idleMs >= 10_000) {
      log(`  watching the controllers at rest for ${secs(idleMs, 0)} s`);
      await sleep(idleMs);
      idle = windowStats(atDone, await snapshot(ctx));
    }
    scraper?.stop();
    return {
      workload: w,
      jobs: JOBS,
      createMs,
      createErrors: tracker.createErrors,
      admitted: w === LOOM_WORKLOAD ? tracker.allBy("admitted", t0) : undefined,
      running: tracker.allBy("running", t0),
      podRunning: tracker.allBy("podRunning", t0),
      done: tracker.allBy("done", t0),
      reached: {
        running: tracker.count((t) => t.running !== undefined),
        podRunning: tracker.count((t) => t.podRunning !== undefined),
        done: tracker.count((t) => t.done !== undefined),
        failed: tracker.count((t) => t.failed !== undefined),
      },
      podLatency: tracker.latencies("podRunning"),
      doneLatency: tracker.latencies("done"),
      nodes: tracker.nodes(),
      podsFailed: tracker.podsFailed,
      window,
      idle,
      timedOut: tracker.finished() < JOBS,
      timeline,
    };
  } finally {
    stopJobs();
    stopPods();
  }
}

// ---------------------------------------------------------------------------------------------
// Setup

async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(250);
  }
}

/**
 * The operator's identity as deploy/operator.yaml gives it: a ServiceAccount bound to the
 * least-privilege ClusterRole, authenticating with a bearer token (the job controller, its peer,
 * is a ServiceAccount too). A client certificate instead cost kube-apiserver a chain
 * verification on every request (4.5% of its CPU in a profile of the Loom run); a token's
 * review is cached.
 */
async function operatorIdentity(cluster: BenchCluster): Promise<{ kubeconfig: string; notes: string[] }> {
  const notes: string[] = [];
  const docs = parseAllDocuments(readFileSync(join(ROOT, "deploy/operator.yaml"), "utf8")).map(
    (d) => d.toJS() as { kind?: string; metadata?: { name?: string } },
  );
  const role = docs.find((d) => d.kind === "ClusterRole");
  if (!role) throw new Error("deploy/operator.yaml has no ClusterRole");
  await cluster.kubectlOk(["apply", "-f", "-"], JSON.stringify(role));
  const { namespace, name } = OPERATOR_SA;
  await cluster.kubectlOk(["create", "namespace", namespace]);
  await cluster.kubectlOk(["create", "serviceaccount", name, "-n", namespace]);
  await cluster.kubectlOk([
    "create",
    "clusterrolebinding",
    `loom-bench-${name}`,
    `--clusterrole=${role.metadata?.name}`,
    `--serviceaccount=${namespace}:${name}`,
  ]);
  const token = (await cluster.kubectlOk(["create", "token", name, "-n", namespace, "--duration=2h"])).trim();
  const admin = await kubeTarget(cluster.kubeconfig);
  const kubeconfig = join(cluster.state, "loom-operator.kubeconfig");
  const ca = admin.ca ? { "certificate-authority-data": Buffer.from(admin.ca).toString("base64") } : {};
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "bench", cluster: { server: admin.server, ...ca } }],
      users: [{ name, user: { token } }],
      contexts: [{ name: "bench", context: { cluster: "bench", user: name } }],
      "current-context": "bench",
    }),
    { mode: 0o600 },
  );
  return { kubeconfig, notes };
}

async function installFlowSchemas(cluster: BenchCluster): Promise<void> {
  const list = { apiVersion: "v1", kind: "List", items: SCHEMAS.map((s) => s.manifest) };
  await cluster.kubectlOk(["apply", "-f", "-"], JSON.stringify(list));
}

/** Loom's own API client (one TLS connection per request) against a keep-alive agent: sequential GETs. */
async function clientProbe(
  kubeconfig: string,
  http: KubeHttp,
  n = 200,
): Promise<{ loomMs: number; keepAliveMs: number }> {
  const { KubeClient } = await import("../src/platforms/kubernetes/client.js");
  const client = KubeClient.fromKubeconfig(kubeconfig);
  const path = "/api/v1/namespaces/default";
  let t = performance.now();
  for (let i = 0; i < n; i++) await client.request("GET", path);
  const loomMs = (performance.now() - t) / n;
  t = performance.now();
  for (let i = 0; i < n; i++) await http.json("GET", path);
  const keepAliveMs = (performance.now() - t) / n;
  return { loomMs, keepAliveMs };
}

// ---------------------------------------------------------------------------------------------
// Report

function machine(): { cpus: string; model: string; memGiB: string } {
  const nproc = spawnSync("nproc", { encoding: "utf8" });
  const cpus = nproc.status === 0 ? nproc.stdout.trim() : String(availableParallelism());
  let model = "unknown CPU";
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? model;
  } catch {
    // not Linux
  }
  return { cpus, model, memGiB: (totalmem() / 2 ** 30).toFixed(1) };
}

const fmt = (x: number | undefined, digits = 0) =>
  x === undefined || !Number.isFinite(x)
    ? "—"
    : x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

function percentile(sorted: number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "—";
  return `${(a / b).toFixed(2)}×`;
}

/** A markdown table, padded the way Biome formats markdown. */
function markdownTable(header: string[], rows: string[][]): string {
  // A "|" inside a cell would end it.
  header = header.map((h) => h.replaceAll("|", "/"));
  rows = rows.map((r) => r.map((t) => t.replaceAll("|", "/")));
  const widths = header.map((h, c) => Math.max(3, h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const cell = (text: string, c: number) => (c === 0 ? text.padEnd(widths[c]!) : text.padStart(widths[c]!));
  const line = (cells: string[]) => `| ${cells.map(cell).join(" | ")} |`;
  const rule = `| ${widths.map((w, c) => (c === 0 ? "-".repeat(w) : `${"-".repeat(w - 1)}:`)).join(" | ")} |`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

const CONTROLLER_CPU: Record<string, string[]> = {
  "Loom TrainingJobs": ["loom operator"],
  "batch/v1 Jobs": ["kube-controller-manager", "kube-scheduler"],
};
const CONTROLLER_CLIENTS: Record<string, string[]> = {
  "Loom TrainingJobs": ["Loom operator"],
  "batch/v1 Jobs": ["job controller", "kube-scheduler"],
};

/** CPU of these processes in the window after all finished, in percent of one core. */
function idlePct(f: RunFigures, names: string[]): number | undefined {
  if (!f.idle) return undefined;
  return (100 * sumOf(f.idle.cpu, names)) / (f.idle.ms / 1000);
}

function sumOf(m: Map<string, number>, keys: string[]): number {
  return keys.reduce((s, k) => s + (m.get(k) ?? 0), 0);
}

/** The operator's reconciles of one controller in the run's window, less those of resyncs (undefined: not scraped). */
function reconcilesOf(f: RunFigures, controller: string): number | undefined {
  const all = f.window.reconciles.get(controller);
  if (all === undefined) return undefined;
  return all - (f.window.reconciles.get(`${controller} resync`) ?? 0);
}

function mainTable(
  loom: RunFigures | undefined,
  jobs: RunFigures | undefined,
  backgroundPerSec: number,
): string {
  type Row = [string, number | undefined, number | undefined, number];
  const per = (f: RunFigures | undefined, v: (f: RunFigures) => number | undefined) => (f ? v(f) : undefined);
  const perJob = (f: RunFigures, n: number) => n / f.jobs;
  const rows: Row[] = [
    [
      `create ${fmt(JOBS)} objects, ${CREATE_CONCURRENCY} in flight (s)`,
      per(loom, (f) => f.createMs / 1000),
      per(jobs, (f) => f.createMs / 1000),
      1,
    ],
    ["all admitted by Loom's admission loop (s)", per(loom, (f) => sec(f.admitted)), undefined, 1],
    [
      "all Running by controller status (s after first create)",
      per(loom, (f) => f.running && f.running / 1000),
      per(jobs, (f) => f.running && f.running / 1000),
      1,
    ],
    [
      "all pods Running on kwok nodes (s)",
      per(loom, (f) => f.podRunning && f.podRunning / 1000),
      per(jobs, (f) => f.podRunning && f.podRunning / 1000),
      1,
    ],
    [
      "all Succeeded (s)",
      per(loom, (f) => f.done && f.done / 1000),
      per(jobs, (f) => f.done && f.done / 1000),
      1,
    ],
    [
      "jobs finished per second",
      per(loom, (f) => f.done && f.jobs / (f.done / 1000)),
      per(jobs, (f) => f.done && f.jobs / (f.done / 1000)),
      1,
    ],
    [
      "create → pod Running, p50 (s)",
      per(loom, (f) => sec(percentile(f.podLatency, 50))),
      per(jobs, (f) => sec(percentile(f.podLatency, 50))),
      2,
    ],
    [
      "create → pod Running, p99 (s)",
      per(loom, (f) => sec(percentile(f.podLatency, 99))),
      per(jobs, (f) => sec(percentile(f.podLatency, 99))),
      2,
    ],
    [
      "create → Succeeded, p50 (s)",
      per(loom, (f) => sec(percentile(f.doneLatency, 50))),
      per(jobs, (f) => sec(percentile(f.doneLatency, 50))),
      2,
    ],
    [
      "create → Succeeded, p99 (s)",
      per(loom, (f) => sec(percentile(f.doneLatency, 99))),
      per(jobs, (f) => sec(percentile(f.doneLatency, 99))),
      2,
    ],
    [
      "API requests per job, all clients but the bench",
      per(loom, (f) => perJob(f, f.window.requests)),
      per(jobs, (f) => perJob(f, f.window.requests)),
      1,
    ],
    [
      "API requests per job, all but the bench, less the idle cluster's background",
      per(loom, (f) => perJob(f, f.window.requests - (backgroundPerSec * f.window.ms) / 1000)),
      per(jobs, (f) => perJob(f, f.window.requests - (backgroundPerSec * f.window.ms) / 1000)),
      1,
    ],
    [
      "API requests per job, the controllers (Loom: operator; Jobs: job controller + scheduler)",
      per(loom, (f) => perJob(f, sumOf(f.window.byClient, CONTROLLER_CLIENTS[f.workload.name]!))),
      per(jobs, (f) => perJob(f, sumOf(f.window.byClient, CONTROLLER_CLIENTS[f.workload.name]!))),
      1,
    ],
    [
      "controller CPU per job, ms (Loom: operator; Jobs: controller-manager + scheduler)",
      per(loom, (f) => perJob(f, 1000 * sumOf(f.window.cpu, CONTROLLER_CPU[f.workload.name]!))),
      per(jobs, (f) => perJob(f, 1000 * sumOf(f.window.cpu, CONTROLLER_CPU[f.workload.name]!))),
      1,
    ],
    [
      "Loom reconciles per job in the window: trainingjob, less resyncs",
      per(loom, (f) => {
        const n = reconcilesOf(f, "trainingjob");
        return n === undefined ? undefined : perJob(f, n);
      }),
      undefined,
      1,
    ],
    [
      "Loom reconciles per job in the window: admission cycles",
      per(loom, (f) => {
        const n = reconcilesOf(f, "admission");
        return n === undefined ? undefined : perJob(f, n);
      }),
      undefined,
      2,
    ],
    [
      "kube-apiserver + etcd CPU per job (ms)",
      per(loom, (f) => perJob(f, 1000 * sumOf(f.window.cpu, ["kube-apiserver", "etcd"]))),
      per(jobs, (f) => perJob(f, 1000 * sumOf(f.window.cpu, ["kube-apiserver", "etcd"]))),
      1,
    ],
    [
      "controller requests per minute in the window after all finished",
      per(
        loom,
        (f) => f.idle && (60_000 * sumOf(f.idle.byClient, CONTROLLER_CLIENTS[f.workload.name]!)) / f.idle.ms,
      ),
      per(
        jobs,
        (f) => f.idle && (60_000 * sumOf(f.idle.byClient, CONTROLLER_CLIENTS[f.workload.name]!)) / f.idle.ms,
      ),
      0,
    ],
    [
      "CPU after all finished, % of a core: the controller",
      per(loom, (f) => f.idle && idlePct(f, CONTROLLER_CPU[f.workload.name]!)),
      per(jobs, (f) => f.idle && idlePct(f, CONTROLLER_CPU[f.workload.name]!)),
      0,
    ],
    [
      "CPU after all finished, % of a core: kube-apiserver + etcd",
      per(loom, (f) => f.idle && idlePct(f, ["kube-apiserver", "etcd"])),
      per(jobs, (f) => f.idle && idlePct(f, ["kube-apiserver", "etcd"])),
      0,
    ],
    ["nodes used", per(loom, (f) => f.nodes.used), per(jobs, (f) => f.nodes.used), 0],
    [
      `most pods on one node at once (capacity ${NODE_POD_CAPACITY})`,
      per(loom, (f) => f.nodes.maxPods),
      per(jobs, (f) => f.nodes.maxPods),
      0,
    ],
  ];
  const header = [
    "metric",
    `Loom operator (${fmt(loom?.jobs ?? JOBS)} TrainingJobs)`,
    `batch/v1 Jobs (${fmt(jobs?.jobs ?? JOBS)})`,
    "Loom ÷ Jobs",
  ];
  const body = rows.map(([m, a, b, d]) => [m, fmt(a, d), fmt(b, d), ratio(a, b)]);
  if (loom?.peakQueue) {
    const q = [...loom.peakQueue].map(([c, d]) => `${c} ${fmt(d)}`).join(", ");
    body.push(["peak reconcile queue depth (Loom, per controller)", q || "0", "—", ""]);
  }
  return markdownTable(header, body);
}

function sec(ms: number | undefined): number | undefined {
  return ms === undefined ? undefined : ms / 1000;
}

function clientTable(runs: RunFigures[]): string {
  const clients = new Set<string>();
  for (const r of runs) for (const k of r.window.byClient.keys()) clients.add(k);
  const header = ["API requests per job, by client", ...runs.map((r) => r.workload.name)];
  const rows = [...clients]
    .sort()
    .map((c) => [c, ...runs.map((r) => fmt((r.window.byClient.get(c) ?? 0) / r.jobs, 1))]);
  rows.push([
    "all but the bench (apiserver_request_total)",
    ...runs.map((r) => fmt(r.window.requests / r.jobs, 1)),
  ]);
  rows.push([
    "the bench itself (creates, watches, scrapes), total",
    ...runs.map((r) => fmt(r.window.benchRequests)),
  ]);
  return markdownTable(header, rows);
}

function detailTable(run: RunFigures, actorIds: string[]): string {
  const merged = new Map<string, number>();
  const idle = new Map<string, number>();
  for (const id of actorIds) {
    const title = ACTORS.find((a) => a.id === id)!.title;
    for (const [k, v] of run.window.byActorDetail.get(id) ?? []) merged.set(`${title}: ${k}`, v);
    for (const [k, v] of run.idle?.byActorDetail.get(id) ?? []) idle.set(`${title}: ${k}`, v);
  }
  for (const k of idle.keys()) if (!merged.has(k)) merged.set(k, 0);
  const rows = [...merged]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => [k, fmt(v), fmt(v / run.jobs, 2), run.idle ? fmt(idle.get(k) ?? 0) : "—"]);
  const idleHead = run.idle ? `after all finished (${secs(run.idle.ms, 0)} s)` : "after all finished";
  return markdownTable(
    [`${run.workload.name}: requests by verb and resource`, "total", "per job", idleHead],
    rows,
  );
}

function cpuTable(runs: RunFigures[]): string {
  const names = new Set<string>();
  for (const r of runs) for (const k of r.window.cpu.keys()) names.add(k);
  const header = [
    "CPU seconds in the window",
    ...runs.map((r) => `${r.workload.name} (${secs(r.window.ms)} s wall)`),
  ];
  const rows = [...names].sort().map((n) => [n, ...runs.map((r) => fmt(r.window.cpu.get(n), 1))]);
  rows.push([
    "all of the above",
    ...runs.map((r) =>
      fmt(
        [...r.window.cpu.values()].reduce((a, b) => a + b, 0),
        1,
      ),
    ),
  ]);
  return markdownTable(header, rows);
}

/** Where kube-apiserver's request time went in the window: the request kinds that took the most. */
function serverTimeTable(run: RunFigures, top = 10): string {
  const rows = [...run.window.serverSeconds]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, sec]) => {
      const n = run.window.serverCount.get(k) ?? 0;
      return [k, fmt(n), fmt(n ? (1000 * sec) / n : undefined, 1), fmt(sec, 1)];
    });
  return markdownTable(
    [`${run.workload.name}: kube-apiserver time by request (all clients)`, "requests", "mean ms", "total s"],
    rows,
  );
}

/** The run's progress every 15 s (every third sample) and at its end. */
function timelineTable(run: RunFigures): string {
  const rows = run.timeline.filter((_, i) => i % 3 === 2 || i === run.timeline.length - 1);
  const header = [
    `${run.workload.name}: time since first create`,
    "created",
    "Running (status)",
    "pods Running",
    "Succeeded",
    "CPU % of a core: apiserver / etcd / controller / kwok",
    ...(rows.some((r) => r.queues) ? ["operator queues"] : []),
  ];
  const controller = run.workload === LOOM_WORKLOAD ? "loom operator" : "kube-controller-manager";
  const pct = (r: Sample5s, k: string) => (r.cpu.has(k) ? r.cpu.get(k)!.toFixed(0) : "—");
  return markdownTable(
    header,
    rows.map((r) => [
      `${secs(r.t, 0)} s`,
      fmt(r.created),
      fmt(r.running),
      fmt(r.podRunning),
      fmt(r.done),
      ["kube-apiserver", "etcd", controller, "kwok"].map((k) => pct(r, k)).join(" / "),
      ...(rows.some((x) => x.queues) ? [r.queues] : []),
    ]),
  );
}

function appendResults(section: string): void {
  if (!existsSync(RESULTS_FILE)) {
    writeFileSync(
      RESULTS_FILE,
      "# Benchmark results\n\nEach run appends a section: date, machine, figures and the peer measured in the same run.\n",
    );
  }
  appendFileSync(RESULTS_FILE, `\n${section}\n`);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const startedAt = new Date();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      void cleanupAll().finally(() => process.exit(130));
    });
  }
  const m = machine();
  const load = loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");
  console.log(
    `bench:k8s — ${JOBS} TrainingJobs (Loom operator) against ${JOBS} batch/v1 Jobs on ${NODES} kwok nodes`,
  );
  console.log(
    `machine: ${m.cpus} CPUs, ${m.model}, ${m.memGiB} GiB, Node ${process.version}; load average ${load}`,
  );

  // A first-time build of the binaries (tens of minutes) is not part of the budget.
  try {
    await BenchCluster.binDir();
  } catch (err) {
    console.error(`bench:k8s cannot run: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
    return;
  }
  const budgetStart = performance.now();
  const hardStop = budgetStart + BUDGET_MS;
  const watchdog = setTimeout(() => {
    console.error(`bench:k8s ran past its ${BUDGET_MS / 1000} s budget; stopping everything`);
    void cleanupAll().finally(() => process.exit(2));
  }, BUDGET_MS);
  watchdog.unref();

  log(`starting a private control plane with ${NODES} kwok nodes`);
  const cluster = await BenchCluster.start(NODES, (c) => cleanups.push(() => c.stop()));
  const versions = cluster.versions();
  log(`cluster up (${versions.line}); state ${cluster.state}`);
  const http = new KubeHttp(await kubeTarget(cluster.kubeconfig), CREATE_CONCURRENCY + 4);
  cleanups.push(() => http.close());
  const ctx: Ctx = { cluster, http };
  const notes: string[] = [];

  await cluster.installLoomCrds();
  const identity = await operatorIdentity(cluster);
  notes.push(...identity.notes);
  await installFlowSchemas(cluster);
  log(`installed Loom's CRDs, the operator's RBAC and ${SCHEMAS.length} FlowSchemas for attribution`);

  const probe = await clientProbe(cluster.kubeconfig, http);
  log(
    `client probe: Loom's KubeClient ${probe.loomMs.toFixed(2)} ms per GET, keep-alive ${probe.keepAliveMs.toFixed(2)} ms`,
  );

  // What the cluster does on its own (kwok's node leases for NODES nodes, controller-manager
  // resyncs): subtracted, per second of each window, in the "less background" row.
  const bgBefore = await snapshot(ctx);
  await sleep(BACKGROUND_MS);
  const background = windowStats(bgBefore, await snapshot(ctx));
  const backgroundPerSec = background.requests / (background.ms / 1000);
  log(`background: ${backgroundPerSec.toFixed(1)} requests/s with nothing running`);

  let loom: RunFigures | undefined;
  let jobs: RunFigures | undefined;
  const operatorLog = join(cluster.state, "loom-operator.log");
  let logSummary: ReturnType<typeof operatorLogSummary> | undefined;
  if (RUNS.includes("loom")) {
    const operator = await startOperatorProcess(identity.kubeconfig, operatorLog);
    ctx.operator = operator;
    await waitFor(
      `namespace ${LOOM_NS}`,
      60_000,
      async () => (await http.send("GET", `/api/v1/namespaces/${LOOM_NS}`)).status === 200,
    );
    // Pods cannot be created before the namespace's default ServiceAccount exists.
    await waitFor(
      `${LOOM_NS}'s default ServiceAccount`,
      60_000,
      async () =>
        (await http.send("GET", `/api/v1/namespaces/${LOOM_NS}/serviceaccounts/default`)).status === 200,
    );
    log(`operator running (pid ${operator.pid}, metrics ${operator.metricsUrl}); namespace ${LOOM_NS} ready`);
    const scraper = new QueueScraper(operator.metricsUrl);
    const deadline = hardStop - JOBS_RESERVE_MS - TEARDOWN_MS;
    log(`Loom run: ${JOBS} TrainingJobs (deadline in ${secs(deadline - performance.now(), 0)} s)`);
    loom = await runWorkload(ctx, LOOM_WORKLOAD, deadline, scraper);
    loom.peakQueue = scraper.peak;
    loom.reconciles = await reconcileFigures(operator.metricsUrl).catch(() => undefined);
    // Stopped before the baseline, so that its resyncs do not load the API server during it.
    await operator.stop();
    ctx.operator = undefined;
    logSummary = operatorLogSummary(operatorLog);
    log(`Loom run done; operator stopped (${logSummary.total} warnings/errors in its log)`);
  }
  if (RUNS.includes("jobs")) {
    await cluster.kubectlOk(["create", "namespace", JOBS_NS]);
    // The same Pod Security labels as a Loom project namespace: the restricted profile is enforced.
    await cluster.kubectlOk([
      "label",
      "namespace",
      JOBS_NS,
      "pod-security.kubernetes.io/enforce=restricted",
      "pod-security.kubernetes.io/enforce-version=latest",
      "pod-security.kubernetes.io/warn=restricted",
      "pod-security.kubernetes.io/audit=restricted",
    ]);
    await waitFor(
      `${JOBS_NS}'s default ServiceAccount`,
      60_000,
      async () =>
        (await http.send("GET", `/api/v1/namespaces/${JOBS_NS}/serviceaccounts/default`)).status === 200,
    );
    const deadline = hardStop - IDLE_MS - TEARDOWN_MS;
    log(`baseline: ${JOBS} batch/v1 Jobs (deadline in ${secs(deadline - performance.now(), 0)} s)`);
    jobs = await runWorkload(ctx, JOBS_WORKLOAD, deadline);
  }

  const runs = [loom, jobs].filter((r): r is RunFigures => r !== undefined);
  const tbl = mainTable(loom, jobs, backgroundPerSec);
  const clients = clientTable(runs);
  const cpu = cpuTable(runs);
  const details = [
    ...(loom ? [detailTable(loom, ["op"])] : []),
    ...(jobs ? [detailTable(jobs, ["jc", "sched"])] : []),
    ...runs.map((r) => serverTimeTable(r)),
    ...runs.map(timelineTable),
  ];

  notes.unshift(
    "Ratios are Loom ÷ Jobs: below 1× is better for Loom on time, request and CPU rows.",
    `Method: the bench creates every object through the API (admin client certificate, HTTPS keep-alive, ${CREATE_CONCURRENCY} in flight) and follows them with two watches (workload objects and pods), opened before the measured window. "Running by controller status" is the TrainingJob's status.phase Running (or Succeeded) for Loom, and status.active > 0 (or succeeded) for a Job; both are set once the pod exists. "Pods Running" is the pod's phase from kwok. The window runs from the first create until every job has finished.`,
    "Requests: kube-apiserver's apiserver_request_total before and after the window, less the requests the bench sent in it (it counts its own). Per client: the bench installs FlowSchemas (with the priority level each client gets by default) that match the operator's ServiceAccount, the job controller's ServiceAccount and the scheduler, one per verb and resource, and reads apiserver_flowcontrol_dispatched_requests_total; kwok uses the admin identity, so its figure is the exempt schema's count less the bench's own.",
    `Background: with nothing running, the cluster served ${backgroundPerSec.toFixed(1)} requests/s (kwok renewing the leases of ${NODES} nodes, controller-manager and scheduler housekeeping), measured for ${BACKGROUND_MS / 1000} s before the runs; it counts into every window in proportion to its length (mostly in kwok's row), so a longer run pays more of it, and one row subtracts it.`,
    `CPU: utime + stime from /proc of each component (and the operator's process), before and after the window. Everything shares the machine's ${m.cpus} cores.`,
    `The operator runs as its own process (\`loom operator\`, pino at warn) with the ClusterRole from deploy/operator.yaml, bound to its ServiceAccount (loom-system/loom-operator, a bearer token, as deploy/operator.yaml runs it; runs before 2026-12-07 used a client-certificate user), and is stopped after its run; the Jobs baseline runs afterwards in a fresh namespace (${JOBS_NS}, Pod Security restricted enforced, like ${LOOM_NS}) on the same cluster, with Loom's finished TrainingJobs, pods and Services still stored.`,
    `Each pod carries loom.dev/kwok-complete-after: ${COMPLETE_AFTER}, so kwok ends it ${COMPLETE_AFTER} after it runs: ${COMPLETE_AFTER} of every create → Succeeded time is the simulated job itself.`,
    `Loom's API client (src/platforms/kubernetes/client.ts) measured alone before the runs: ${probe.loomMs.toFixed(2)} ms per sequential GET, against ${probe.keepAliveMs.toFixed(2)} ms with a plain keep-alive agent (${(probe.loomMs / probe.keepAliveMs).toFixed(2)}×).`,
  );
  for (const r of runs) {
    const parts = [
      `${r.workload.name}: ${r.reached.done} of ${r.jobs} succeeded, ${r.reached.failed} failed`,
      r.timedOut
        ? `the run hit its deadline (${r.reached.running} running, ${r.reached.podRunning} pods running)`
        : "",
      r.createErrors.length ? `create errors: ${r.createErrors.join("; ")}` : "",
      r.podsFailed ? `${r.podsFailed} pods Failed` : "",
    ].filter(Boolean);
    notes.push(`${parts.join("; ")}.`);
    if (r.window.errors.size) {
      const errs = [...r.window.errors]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 6)
        .map(([k, v]) => `${k} ×${fmt(v)}`);
      notes.push(
        `${r.workload.name}: answers ≥ 400 from kube-apiserver in the window (verb resource code): ${errs.join(", ")}.`,
      );
    }
    if (r.window.rejected.size) {
      const rej = [...r.window.rejected].map(([k, v]) => `${k} ×${fmt(v)}`);
      notes.push(
        `${r.workload.name}: API Priority and Fairness rejected requests (flow schema): ${rej.join(", ")}.`,
      );
    }
    if (r.nodes.overCapacity)
      notes.push(
        `${r.workload.name}: ${r.nodes.overCapacity} node(s) got more than their ${NODE_POD_CAPACITY}-pod capacity (at most ${r.nodes.maxPods} pods on one node): kwok runs them, a real kubelet would reject the excess (OutOfpods).`,
      );
  }
  if (loom?.reconciles) {
    const rc = [...loom.reconciles.byController]
      .map(
        ([c, e]) =>
          `${c} ${fmt(e.ok)} ok / ${fmt(e.conflict)} conflict / ${fmt(e.error)} error, ${fmt(e.seconds, 1)} s in all ` +
          `(${fmt((1000 * e.seconds) / Math.max(1, e.ok + e.conflict + e.error))} ms each)`,
      )
      .join("; ");
    notes.push(`Loom reconciles over the operator's life (start, run, idle window): ${rc}.`);
  }
  if (logSummary) {
    const top = logSummary.groups.slice(0, 5).map(([k, v]) => `${k} ×${v}`);
    notes.push(
      logSummary.total
        ? `Operator log: ${logSummary.total} warnings/errors; most frequent: ${top.join("; ")}.`
        : "Operator log: no warnings or errors.",
    );
  }

  console.log("");
  console.log(tbl);
  console.log("");
  console.log(clients);
  console.log("");
  console.log(cpu);
  for (const d of details) console.log(`\n${d}`);
  console.log("");
  for (const n of notes) console.log(`- ${n}`);

  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
  const date = startedAt.toISOString().replace("T", " ").slice(0, 16);
  const section = [
    `## ${date} UTC — bench:k8s`,
    "",
    `- Machine: ${m.cpus} CPUs (nproc), ${m.model}, ${m.memGiB} GiB memory, Node ${process.version}, ${platform()}/${arch()}; load average at start ${load}`,
    `- Versions: Loom ${pkg.version}; ${versions.line}`,
    `- Workload: ${fmt(JOBS)} TrainingJobs, then ${fmt(JOBS)} batch/v1 Jobs, on ${NODES} kwok nodes; 1 worker, 100m CPU, 64Mi each. Whole bench: ${fmt((performance.now() - budgetStart) / 1000)} s (budget ${BUDGET_MS / 1000} s).`,
    "",
    tbl,
    "",
    clients,
    "",
    cpu,
    ...details.flatMap((d) => ["", d]),
    "",
    ...notes.map((n) => `- ${n}`),
  ].join("\n");
  appendResults(section);
  console.log(`\nappended to ${RESULTS_FILE}`);
  process.exitCode = runs.length > 0 && runs.every((r) => !r.timedOut) ? 0 : 1;
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanupAll().finally(() => process.exit()));

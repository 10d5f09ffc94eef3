/**
 * bench:fleet — capacity that grows and spans clusters (issue 23), each part against its peer in
 * the same run:
 *   (a) a gang's arrival → all its pods bound, on an empty 8-GPU kwok node pool that Karpenter
 *       (its kwok provider) grows: Loom's operator with --node-autoscaling (stand-in pending pods
 *       for the whole gang) vs a plain indexed batch/v1 Job scheduled by kube-scheduler, same
 *       requests, alternating; NodeClaims per gang and how far apart they were created;
 *   (b) dispatch across members: a TrainingJob submitted to the control plane (`loom up`) →
 *       its copy created in member a (→ Running there), vs the same job admitted on the control
 *       plane's own platform (`self`), and vs the same job submitted straight to member a;
 *   (c) failover: 100 jobs running in member a, a's kube-apiserver killed → all 100 admitted to
 *       member b (and Running there), with clusterLostTimeout as the knob, against MultiKueue's
 *       documented default workerLostTimeout of 15 minutes.
 * Clusters are private (/tmp/k8s-benchfleet-*: karp, a, b), stopped and removed at the end.
 * Appends a dated section to bench/RESULTS.md (LOOM_BENCH_APPEND=0: print it only).
 * Knobs: LOOM_BENCH_RUNS (gangs per side, 5), LOOM_BENCH_DISPATCH_RUNS (10),
 * LOOM_BENCH_FAILOVER_JOBS (100), LOOM_BENCH_LOST_TIMEOUT ("30s"), LOOM_BENCH_PARTS (a,b,c).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { LoomProcess, ROOT } from "../test/helpers.js";
import { operatorCluster, ownState, startOperator, type TestCluster } from "../test/k8s/cluster.js";
import { type AuditedRequest, readAudit, stepOf, writeAuditPolicy } from "./audit.js";
import { KubeHttp, kubeTarget } from "./cluster.js";
import {
  cleanupAll,
  cleanups,
  failedPart,
  fmt,
  loadNow,
  loomCommit,
  machineLine,
  markdownTable,
  median,
  num,
  type PartResult,
  partsSection,
  printParts,
  publishResults,
  ratio,
  sleep,
} from "./report.js";

// Every cluster of this bench lives beside this prefix (ownState appends "-karp", "-a", "-b").
process.env.LOOM_K8S_STATE = process.env.LOOM_BENCH_FLEET_STATE ?? "/tmp/k8s-benchfleet";
const RUNS = num(process.env.LOOM_BENCH_RUNS, 5);
const DISPATCH_RUNS = num(process.env.LOOM_BENCH_DISPATCH_RUNS, 10);
const FAILOVER_JOBS = num(process.env.LOOM_BENCH_FAILOVER_JOBS, 100);
const LOST_TIMEOUT = process.env.LOOM_BENCH_LOST_TIMEOUT ?? "30s";
const PARTS = (process.env.LOOM_BENCH_PARTS ?? "a,b,c").split(",");
const POOL = "gpu-8";
const NS = "loom-default";
/** MultiKueue's default workerLostTimeout (kueue apis/config/v1beta1/defaults.go, PR #1681). */
const MULTIKUEUE_LOST_S = 15 * 60;

const log = (msg: string) => console.log(`[bench:fleet ${new Date().toISOString().slice(11, 19)}] ${msg}`);
// biome-ignore lint/suspicious/noExplicitAny: objects as the API servers return them
type Obj = Record<string, any>;

/** Polls until `probe` gives a value (or throws after `ms`). */
async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, ms = 300_000) {
  const deadline = performance.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A private cluster's teardown: its processes (Karpenter included, in its pids file), its dirs. */
function downLater(suffix: string): void {
  const state = ownState(suffix);
  cleanups.push(() => {
    execFileSync("bash", [join(ROOT, "test/k8s/down.sh")], {
      env: { ...process.env, LOOM_K8S_STATE: state },
      stdio: "ignore",
    });
    rmSync(state, { recursive: true, force: true });
    rmSync(`${state}.lock`, { force: true });
  });
}

/** Lists a collection, then watches it; `on` gets every object with the time it was seen. */
async function watchAll(http: KubeHttp, path: string, on: (type: string, o: Obj, at: number) => void) {
  const list = await http.json<{ metadata: { resourceVersion: string }; items: Obj[] }>("GET", path);
  for (const o of list.items) on("ADDED", o, performance.now());
  const stop = await http.watch<Obj>(path, list.metadata.resourceVersion, (t, o) =>
    on(t, o, performance.now()),
  );
  cleanups.push(stop);
}

function kubectlOk(cluster: TestCluster, args: string[], input?: string): string {
  const r = cluster.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

// ---------------------------------------------------------------------------------------------
// (a) gang arrival → all pods bound, with Karpenter growing the pool

const nodePool = `apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: ${POOL}}
spec:
  template:
    metadata:
      labels: {loom.dev/node-pool: ${POOL}, nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
    spec:
      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}
      requirements:
        - {key: node.kubernetes.io/instance-type, operator: In, values: [gpu-8x-amd64-linux]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
      expireAfter: Never
  # The bench empties the pool itself between gangs (deletes the NodeClaims): no consolidation
  # may take a node away in the middle of a measurement.
  disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 1h, budgets: [{nodes: "100%"}]}
  limits: {nvidia.com/gpu: "64"}
`;

const loomGang = (name: string) => `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ${name}}
spec:
  command: [python, train.py]
  workers: 2
  nodePool: ${POOL}
  resources: {cpu: "1", memory: 1Gi, gpu: 8}
`;

/** The same two pods as a plain indexed Job, left to kube-scheduler. */
const plainGang = (name: string) =>
  JSON.stringify({
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name, namespace: "bench-jobs" },
    spec: {
      completionMode: "Indexed",
      completions: 2,
      parallelism: 2,
      template: {
        spec: {
          restartPolicy: "Never",
          nodeSelector: { "loom.dev/node-pool": POOL },
          containers: [
            {
              name: "worker",
              image: "python",
              command: ["python", "train.py"],
              resources: {
                requests: { cpu: "1", memory: "1Gi", "nvidia.com/gpu": "8" },
                limits: { "nvidia.com/gpu": "8" },
              },
            },
          ],
        },
      },
    },
  });

/** Whose requests part (a) counts: Loom's operator; kube-scheduler and the Job controller. */
const CLIENTS = {
  loom: ["system:serviceaccount:loom-system:loom-operator"],
  job: ["system:kube-scheduler", "system:serviceaccount:kube-system:job-controller"],
};

/**
 * Each side's requests per gang once its last new node was registered: from kube-apiserver's
 * answer to the node write that the bench then saw as the node's last step (Karpenter's removal of
 * its unregistered taint) until the bench began deleting the gang. Per step (verb and resource):
 * requests per gang, and when the first was received and the last answered, in ms after that
 * write (medians over the gangs).
 */
function afterRegistration(
  audit: AuditedRequest[],
  windows: { side: "loom" | "job"; name: string; usable: number; bound: number; end: number }[],
): { table: string; note: string } {
  const nodeWrites = audit.filter(
    (r) => r.resource === "nodes" && (r.verb === "patch" || r.verb === "update"),
  );
  type Step = { count: number; first: number; last: number };
  const perGang: { side: "loom" | "job"; steps: Map<string, Step>; total: number; beforeBound: number }[] =
    [];
  for (const w of windows) {
    // The last node write the bench can have seen (it sees a write after the answer).
    const registered = nodeWrites.filter((r) => r.completed <= w.usable + 1).at(-1)?.completed ?? w.usable;
    const mine = audit.filter(
      (r) => CLIENTS[w.side].includes(r.user) && r.received >= registered && r.received <= w.end,
    );
    const steps = new Map<string, Step>();
    for (const r of mine) {
      const s = steps.get(stepOf(r)) ?? { count: 0, first: Number.POSITIVE_INFINITY, last: 0 };
      s.count++;
      s.first = Math.min(s.first, r.received - registered);
      s.last = Math.max(s.last, r.completed - registered);
      steps.set(stepOf(r), s);
    }
    perGang.push({
      side: w.side,
      steps,
      total: mine.length,
      beforeBound: mine.filter((r) => r.completed <= w.bound).length,
    });
  }
  const names = [...new Set(perGang.flatMap((g) => [...g.steps.keys()]))].sort(
    (a, b) => stepAt(a) - stepAt(b) || a.localeCompare(b),
  );
  function stepAt(step: string): number {
    return median(perGang.flatMap((g) => (g.steps.has(step) ? [g.steps.get(step)!.first] : []))) ?? 0;
  }
  const cell = (side: "loom" | "job", step: string) => {
    const gangs = perGang.filter((g) => g.side === side);
    const had = gangs.flatMap((g) => (g.steps.has(step) ? [g.steps.get(step)!] : []));
    if (had.length === 0) return "—";
    const n = median(gangs.map((g) => g.steps.get(step)?.count ?? 0));
    return `${fmt(n)} · ${fmt(median(had.map((s) => s.first)))} → ${fmt(median(had.map((s) => s.last)))}`;
  };
  const total = (side: "loom" | "job", k: "total" | "beforeBound") =>
    fmt(median(perGang.filter((g) => g.side === side).map((g) => g[k])));
  const table = markdownTable(
    [
      "after the last node registered: requests per gang · first received → last answered (ms)",
      "Loom operator",
      "kube-scheduler + Job controller",
    ],
    [
      ...names.map((step) => [step, cell("loom", step), cell("job", step)]),
      ["all requests (median per gang)", total("loom", "total"), total("job", "total")],
      ["… answered before both pods were bound", total("loom", "beforeBound"), total("job", "beforeBound")],
    ],
  );
  const gangs = windows.length;
  const note = `Requests: kube-apiserver's audit log (Metadata level, every request but watches from the operator's ServiceAccount, kube-scheduler and the Job controller, and every Node write), ${gangs} gang(s) with a registration seen. Time 0 is the API server's answer to the node write the bench then saw as the last new node's registration; the window ends when the bench begins deleting the gang, so each side's own writes after the bind (Loom: the job's status and its event) are in it. Times are the API server's, so they hold what each round trip cost on this loaded machine.`;
  return { table, note };
}

async function partAutoscale(): Promise<PartResult> {
  // kube-apiserver's audit log: the requests each side sent once the last node was registered.
  const policyDir = mkdtempSync(join(tmpdir(), "loom-benchfleet-audit-"));
  cleanups.push(() => rmSync(policyDir, { recursive: true, force: true }));
  process.env.LOOM_K8S_AUDIT_POLICY = writeAuditPolicy(policyDir, [...CLIENTS.loom, ...CLIENTS.job]);
  const { cluster, operatorKubeconfig } = operatorCluster("karp", { nodes: 1 });
  delete process.env.LOOM_K8S_AUDIT_POLICY;
  downLater("karp");
  const state = ownState("karp");
  execFileSync("bash", [join(ROOT, "test/k8s/karpenter.sh"), "up"], {
    env: { ...process.env, LOOM_K8S_STATE: state },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const karpVersion = /KARPENTER_VERSION=(\S+)/.exec(
    readFileSync(join(ROOT, "test/k8s/karpenter.sh"), "utf8"),
  )?.[1];
  kubectlOk(cluster, ["apply", "-f", "-"], nodePool);
  kubectlOk(cluster, ["wait", "--for=condition=Ready", `nodepool/${POOL}`, "--timeout=120s"]);
  cluster.kubectl(["create", "namespace", "bench-jobs"]);
  const operator = startOperator(operatorKubeconfig, ["--node-autoscaling"]);
  cleanups.push(() => operator.stop());
  await operator.ready;
  await until("namespace loom-default", () =>
    cluster.kubectl(["get", "ns", NS]).code === 0 ? true : undefined,
  );

  const http = new KubeHttp(await kubeTarget(cluster.kubeconfig), 4);
  cleanups.push(() => http.close());
  /** Worker pods (not Loom's stand-ins) by uid: their labels and when first seen bound. */
  const pods = new Map<string, { labels: Obj; boundAt?: number }>();
  await watchAll(http, "/api/v1/pods", (_t, p, at) => {
    if (p.metadata.labels?.["loom.dev/capacity-for"]) return;
    const seen: { labels: Obj; boundAt?: number } = pods.get(p.metadata.uid) ?? {
      labels: p.metadata.labels ?? {},
    };
    if (p.spec?.nodeName && seen.boundAt === undefined) seen.boundAt = at;
    pods.set(p.metadata.uid, seen);
  });
  const claims = new Map<string, number>();
  await watchAll(http, "/apis/karpenter.sh/v1/nodeclaims", (t, c, at) => {
    if (t === "ADDED" && !claims.has(c.metadata.name)) claims.set(c.metadata.name, at);
  });
  /** Pool nodes by name: when first seen Ready, and when also free of Karpenter's unregistered taint. */
  const readyAt = new Map<string, number>();
  const usableAt = new Map<string, number>();
  await watchAll(http, `/api/v1/nodes?labelSelector=loom.dev%2Fnode-pool%3D${POOL}`, (_t, n, at) => {
    const ready = (n.status?.conditions ?? []).some((c: Obj) => c.type === "Ready" && c.status === "True");
    if (ready && !readyAt.has(n.metadata.name)) readyAt.set(n.metadata.name, at);
    const registering = (n.spec?.taints ?? []).some((t: Obj) => t.key === "karpenter.sh/unregistered");
    if (ready && !registering && !usableAt.has(n.metadata.name)) usableAt.set(n.metadata.name, at);
  });
  const poolNodes = () =>
    kubectlOk(cluster, ["get", "nodes", "-l", `loom.dev/node-pool=${POOL}`, "-o", "name"]).trim();

  type Key = "ms" | "claims" | "spread" | "claimed" | "afterReady" | "afterUsable" | "podSpread";
  const rows: Record<Key, number>[] = [];
  const sideOf: string[] = [];
  /** Per gang, epoch ms: the last node seen usable, both pods bound, the bench's delete begun. */
  const epoch = (at: number) => performance.timeOrigin + at;
  const windows: { side: "loom" | "job"; name: string; usable: number; bound: number; end: number }[] = [];
  for (let run = 0; run < RUNS; run++) {
    for (const side of run % 2 === 0 ? ["loom", "job"] : ["job", "loom"]) {
      const name = `${side}-${run}`;
      const [key, value] = side === "loom" ? ["loom.dev/workload", name] : ["job-name", name];
      const t0 = performance.now();
      if (side === "loom") kubectlOk(cluster, ["apply", "-n", NS, "-f", "-"], loomGang(name));
      else kubectlOk(cluster, ["apply", "-f", "-"], plainGang(name));
      const bound = await until(`${name}: both pods bound`, () => {
        const at = [...pods.values()].filter((p) => p.labels[key] === value && p.boundAt !== undefined);
        return at.length >= 2 ? at.map((p) => p.boundAt!) : undefined;
      }).then((at) => ({ first: Math.min(...at), last: Math.max(...at) }));
      const made = [...claims.values()].filter((at) => at >= t0);
      const ready = [...readyAt.values()].filter((at) => at >= t0);
      const usable = [...usableAt.values()].filter((at) => at >= t0);
      sideOf.push(side);
      rows.push({
        ms: bound.last - t0,
        podSpread: bound.last - bound.first,
        claims: made.length,
        spread: made.length ? Math.max(...made) - Math.min(...made) : Number.NaN,
        claimed: made.length ? Math.max(...made) - t0 : Number.NaN,
        afterReady: ready.length ? bound.last - Math.max(...ready) : Number.NaN,
        afterUsable: usable.length ? bound.last - Math.max(...usable) : Number.NaN,
      });
      log(`(a) ${name}: arrival → both pods bound ${fmt(bound.last - t0)} ms, ${made.length} NodeClaim(s)`);
      if (usable.length)
        windows.push({
          side: side as "loom" | "job",
          name,
          usable: epoch(Math.max(...usable)),
          bound: epoch(bound.last),
          end: Date.now(),
        });
      // Empty the pool for the next gang (not timed).
      if (side === "loom")
        kubectlOk(cluster, ["delete", "trainingjobs.loom.dev", name, "-n", NS, "--timeout=120s"]);
      else
        kubectlOk(cluster, [
          "delete",
          "job",
          name,
          "-n",
          "bench-jobs",
          "--cascade=foreground",
          "--timeout=120s",
        ]);
      kubectlOk(cluster, ["delete", "nodeclaims", "--all", "--timeout=180s"]);
      await until("the pool empty", () => (poolNodes() === "" ? true : undefined));
    }
  }
  const of = (side: string, k: keyof (typeof rows)[number]) =>
    median(rows.filter((_, i) => sideOf[i] === side).map((r) => r[k]));
  const [lm, jm] = [of("loom", "ms"), of("job", "ms")];
  await sleep(2_500); // the audit log is written in batches of at most a second
  const requests = afterRegistration(readAudit(join(state, "logs/audit.log")), windows);
  return {
    heading: "(a) A 2×8-GPU gang's arrival → both pods bound, Karpenter growing an empty pool",
    blocks: [
      markdownTable(
        [`median of ${RUNS}`, "Loom operator + Karpenter", "kube-scheduler + Karpenter", "Loom ÷ Job"],
        [
          ["arrival → both pods bound (ms)", fmt(lm), fmt(jm), ratio(lm, jm)],
          [
            "arrival → last NodeClaim created (ms)",
            fmt(of("loom", "claimed")),
            fmt(of("job", "claimed")),
            ratio(of("loom", "claimed"), of("job", "claimed")),
          ],
          [
            "last new node Ready → both pods bound (ms)",
            fmt(of("loom", "afterReady")),
            fmt(of("job", "afterReady")),
            ratio(of("loom", "afterReady"), of("job", "afterReady")),
          ],
          [
            "last new node registered (taint gone) → both bound (ms)",
            fmt(of("loom", "afterUsable")),
            fmt(of("job", "afterUsable")),
            ratio(of("loom", "afterUsable"), of("job", "afterUsable")),
          ],
          ["first → second pod bound (ms)", fmt(of("loom", "podSpread")), fmt(of("job", "podSpread")), "—"],
          ["NodeClaims per gang", fmt(of("loom", "claims")), fmt(of("job", "claims")), "—"],
          ["first → last NodeClaim created (ms)", fmt(of("loom", "spread")), fmt(of("job", "spread")), "—"],
        ],
      ),
      requests.table,
    ],
    notes: [
      `Goal: Loom ≤ 1× kube-scheduler's: ${lm !== undefined && jm !== undefined && lm <= jm ? "met" : "NOT met"} (${ratio(lm, jm)}).`,
      `Each run: ${RUNS} gangs per side, alternating which goes first; the pool (NodePool ${POOL}, kwok instance type gpu-8x-amd64-linux: 8 GPU, 32 CPU) is empty at each arrival (the bench deletes the NodeClaims between gangs, untimed). Karpenter ${karpVersion} built from sigs.k8s.io/karpenter/kwok (test/k8s/karpenter.sh: batch idle 1 s, max 3 s), a host process.`,
      "Loom: a TrainingJob of 2 workers × 8 GPU; `loom operator --node-autoscaling` puts one pending stand-in pod per worker (PodScheduled=False, Unschedulable) for the whole gang, and binds the workers itself once the nodes are Ready. Peer: a batch/v1 indexed Job, 2 pods with the same requests and a node selector for the pool, bound by kube-scheduler. Bound = the pod seen with spec.nodeName on the bench's watch.",
      `Where the sides differ: Karpenter's part (arrival → NodeClaims, then nodes Ready and registered) is the same machinery for both; after the last node is registered (Karpenter removes its karpenter.sh/unregistered taint) kube-scheduler binds pods that already exist and wait (${fmt(of("job", "afterUsable"))} ms), while Loom places the gang on the node event, then in one round trip holds the job's finalizer, deletes its stand-ins, applies its headless Service and creates its worker pods unbound, side by side, and in a second binds them (${fmt(of("loom", "afterUsable"))} ms); the table above names each request.`,
      requests.note,
      "Not the cluster-autoscaler (the issue's anchor): the Go module proxy answers 403 for k8s.io/autoscaler/cluster-autoscaler, so it cannot be built here; Karpenter is the node autoscaler both sides use.",
    ],
    workload: `(a) ${RUNS} 2×8-GPU gangs per side on an empty Karpenter pool`,
    ok: lm !== undefined && jm !== undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// (b) and (c): a control plane (`loom up`) with two kwok members, each with its own operator

interface Fleet {
  cp: LoomProcess;
  members: Record<
    string,
    { cluster: TestCluster; http: KubeHttp; jobs: Map<string, { seenAt: number; runningAt?: number }> }
  >;
}

async function startFleet(): Promise<Fleet> {
  const members: Fleet["members"] = {};
  for (const name of ["a", "b"]) {
    const own = operatorCluster(name, { nodes: 2 });
    downLater(name);
    const operator = startOperator(own.operatorKubeconfig);
    cleanups.push(() => operator.stop());
    await operator.ready;
    const http = new KubeHttp(await kubeTarget(own.cluster.kubeconfig), 8);
    cleanups.push(() => http.close());
    const jobs = new Map<string, { seenAt: number; runningAt?: number }>();
    await watchAll(http, "/apis/loom.dev/v1alpha1/trainingjobs", (t, j, at) => {
      if (t === "DELETED") return;
      const seen = jobs.get(j.metadata.name) ?? { seenAt: at };
      if (j.status?.phase === "Running" && seen.runningAt === undefined) seen.runningAt = at;
      jobs.set(j.metadata.name, seen);
    });
    members[name] = { cluster: own.cluster, http, jobs };
  }
  const cp = new LoomProcess();
  cleanups.push(() => cp.stop());
  await cp.start();
  for (const name of ["a", "b"]) {
    const r = await cp.cli(["apply", "-f", "-", "--kubeconfig-file", members[name]!.cluster.kubeconfig], {
      input: `apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: ${name}}\nspec: {clusterLostTimeout: "${LOST_TIMEOUT}"}\n`,
    });
    if (r.code !== 0) throw new Error(`registering member ${name}: ${r.stderr}`);
  }
  await until("members a and b Ready", async () => {
    const out = (await cp.cli(["get", "clusters"])).stdout;
    return /^a\s+Ready/m.test(out) && /^b\s+Ready/m.test(out) ? true : undefined;
  });
  return { cp, members };
}

const JOBS = "/apis/loom.dev/v1alpha1/projects/default/trainingjobs";
const smallJob = (name: string, clusters: string[]) => ({
  apiVersion: "loom.dev/v1alpha1",
  kind: "TrainingJob",
  metadata: { name },
  spec: {
    command: ["sleep", "3600"],
    workers: 1,
    resources: { cpu: "100m", memory: "64Mi" },
    ...(clusters.length ? { clusters } : {}),
  },
});

async function submit(cp: LoomProcess, body: Obj): Promise<void> {
  const r = await cp.api("POST", JOBS, body);
  if (r.status >= 300) throw new Error(`submit ${body.metadata.name}: ${r.status} ${JSON.stringify(r.body)}`);
}

async function partDispatch(f: Fleet): Promise<PartResult> {
  const a = f.members.a!;
  const cpJob = async (name: string) => {
    const r = await f.cp.api("GET", `${JOBS}/${name}`);
    return r.status === 200 ? (r.body as Obj) : undefined;
  };
  const rows: { side: string; first: number; running: number }[] = [];
  const sides = ["fleet", "self", "direct"];
  for (let run = 0; run < DISPATCH_RUNS; run++) {
    for (let s = 0; s < sides.length; s++) {
      const side = sides[(run + s) % sides.length]!;
      const name = `d-${side}-${run}`;
      const t0 = performance.now();
      let first: number;
      let running: number;
      if (side === "fleet") {
        await submit(f.cp, smallJob(name, ["a"]));
        first = await until(`${name} in member a`, () => a.jobs.get(name)?.seenAt);
        running = await until(`${name} Running in a`, () => a.jobs.get(name)?.runningAt);
      } else if (side === "self") {
        await submit(f.cp, smallJob(name, ["self"]));
        first = await until(`${name} admitted`, async () =>
          (await cpJob(name))?.status?.admission ? performance.now() : undefined,
        );
        running = await until(`${name} Running`, async () =>
          (await cpJob(name))?.status?.phase === "Running" ? performance.now() : undefined,
        );
      } else {
        await a.http.json(
          "POST",
          `/apis/loom.dev/v1alpha1/namespaces/${NS}/trainingjobs`,
          smallJob(name, []),
        );
        first = await until(`${name} in a`, () => a.jobs.get(name)?.seenAt);
        running = await until(`${name} Running in a`, () => a.jobs.get(name)?.runningAt);
      }
      rows.push({ side, first: first - t0, running: running - t0 });
      log(`(b) ${name}: submit → ${fmt(first - t0)} ms first mark, ${fmt(running - t0)} ms Running`);
      if (side === "direct")
        await a.http.send("DELETE", `/apis/loom.dev/v1alpha1/namespaces/${NS}/trainingjobs/${name}`);
      else await f.cp.api("DELETE", `${JOBS}/${name}`);
    }
  }
  const of = (side: string, k: "first" | "running") =>
    median(rows.filter((r) => r.side === side).map((r) => r[k]));
  const [ff, sf, fr, sr, dr] = [
    of("fleet", "first"),
    of("self", "first"),
    of("fleet", "running"),
    of("self", "running"),
    of("direct", "running"),
  ];
  const beyond = ff !== undefined && sf !== undefined ? ff - sf : undefined;
  return {
    heading: "(b) Dispatch across members: submit to the control plane → the job in member a",
    blocks: [
      markdownTable(
        [
          `median of ${DISPATCH_RUNS} (ms)`,
          "via the fleet (→ member a)",
          "control plane's own platform",
          "straight to member a",
        ],
        [
          ["submit → job created in a / admitted on self", fmt(ff), fmt(sf), "—"],
          ["submit → Running (in a / on self / in a)", fmt(fr), fmt(sr), fmt(dr)],
        ],
      ),
    ],
    notes: [
      `Goal: ≤ 200 ms beyond a single-cluster admission: the fleet's submit → created in a is ${fmt(beyond)} ms beyond self's submit → admitted: ${beyond !== undefined && beyond <= 200 ? "met" : "NOT met"}. Submit → Running in a via the fleet is ${fmt(fr !== undefined && dr !== undefined ? fr - dr : undefined)} ms beyond the same job submitted straight to a's API server (a's own operator admits and runs it).`,
      "The same job each time (1 worker, 100m CPU, 64Mi, `sleep 3600`), alternating the order of the three sides; each deleted after it is measured. Created in a / Running in a = the copy seen on the bench's watch of a's API server; self's admission and Running are polled from the control plane's API every 25 ms (up to 25 ms late). On self the worker is a real local process; in a, a kwok pod.",
    ],
    workload: `(b) ${DISPATCH_RUNS} jobs per side: fleet → member, self, straight to the member`,
    ok: beyond !== undefined,
  };
}

async function partFailover(f: Fleet): Promise<PartResult> {
  const [a, b] = [f.members.a!, f.members.b!];
  const names = Array.from({ length: FAILOVER_JOBS }, (_, i) => `f-${i}`);
  const t0 = performance.now();
  for (let i = 0; i < names.length; i += 10)
    await Promise.all(names.slice(i, i + 10).map((n) => submit(f.cp, smallJob(n, ["a", "b"]))));
  const allIn = (m: typeof a) => names.every((n) => m.jobs.get(n)?.runningAt !== undefined);
  await until(`${FAILOVER_JOBS} jobs Running in a`, () => (allIn(a) ? true : undefined));
  const filled = performance.now() - t0;
  log(`(c) ${FAILOVER_JOBS} jobs submitted → all Running in a: ${fmt(filled)} ms`);
  if (names.some((n) => b.jobs.has(n))) throw new Error("some jobs went to b before the failover");

  // A member lost: its API server dies (its etcd, kwok and operator keep running, unreachable).
  const line = readFileSync(join(ownState("a"), "pids"), "utf8")
    .split("\n")
    .find((l) => l.startsWith("kube-apiserver "));
  if (!line) throw new Error("no kube-apiserver in a's pids file");
  const killed = performance.now();
  process.kill(Number(line.split(" ")[1]), "SIGKILL");
  log("(c) killed a's kube-apiserver");
  const admitted = await until(
    "all jobs admitted to b",
    async () => {
      const r = await f.cp.api("GET", JOBS);
      const items = ((r.body as { items?: Obj[] }).items ?? []).filter((j) =>
        names.includes(j.metadata.name),
      );
      const inB = items.filter((j) => j.status?.admission?.cluster === "b").length;
      return inB === names.length ? performance.now() : undefined;
    },
    600_000,
  );
  const running = await until("all Running in b", () =>
    allIn(b) ? Math.max(...names.map((n) => b.jobs.get(n)!.runningAt!)) : undefined,
  );
  const timeoutS =
    Number(/^\d+/.exec(LOST_TIMEOUT)![0]) *
    (LOST_TIMEOUT.endsWith("ms") ? 0.001 : LOST_TIMEOUT.endsWith("m") ? 60 : 1);
  const adm = (admitted - killed) / 1000;
  const run = (running - killed) / 1000;
  log(`(c) kill → all admitted to b ${fmt(adm, 1)} s, all Running in b ${fmt(run, 1)} s`);
  return {
    heading: `(c) Failover of ${FAILOVER_JOBS} jobs after member a is lost (clusterLostTimeout ${LOST_TIMEOUT})`,
    blocks: [
      markdownTable(
        ["from a's kube-apiserver killed (s)", "Loom", "beyond the timeout", "MultiKueue default"],
        [
          [
            `all ${FAILOVER_JOBS} admitted to member b`,
            fmt(adm, 1),
            fmt(adm - timeoutS, 1),
            `≥ ${MULTIKUEUE_LOST_S}`,
          ],
          [`all ${FAILOVER_JOBS} Running in member b`, fmt(run, 1), fmt(run - timeoutS, 1), "—"],
        ],
      ),
    ],
    notes: [
      `Goal: ≤ ${LOST_TIMEOUT} + restart: ${adm - timeoutS <= 10 ? "met" : "NOT met"} (Running in b ${fmt(run - timeoutS, 1)} s beyond the timeout; the control plane probes each member every 5 s, so up to 5 s of that is the probe); ${ratio(MULTIKUEUE_LOST_S, run)} sooner than MultiKueue's default.`,
      "The peer is MultiKueue's documented default, not a run: its workerLostTimeout defaults to 15 minutes (kubernetes-sigs/kueue, apis/config/v1beta1: `DefaultMultiKueueWorkerLostTimeout = 15 * time.Minute`, added in PR #1681), the time a workload's admission stays with a lost worker cluster before it is moved.",
      `${FAILOVER_JOBS} jobs (1 worker, 100m CPU, \`clusters: [a, b]\`) submitted to the control plane went to a (members fill in order): ${fmt(filled / 1000, 1)} s from the first submit to all Running in a. Then a's kube-apiserver was killed (SIGKILL); admitted = the control plane's own list shows status.admission.cluster b for every job (polled every 25 ms); Running = seen Running on the bench's watch of b. Moved jobs start afresh (no checkpoint sync yet, docs/fleet.md).`,
    ],
    workload: `(c) ${FAILOVER_JOBS} jobs failed over from a to b`,
    ok: true,
  };
}

async function main(): Promise<void> {
  const began = performance.now();
  const date = new Date();
  const loadAtStart = loadNow();
  const watchdog = setTimeout(() => {
    log("watchdog: 45 minutes, stopping");
    void cleanupAll().then(() => process.exit(2));
  }, 45 * 60_000);
  const outputs: PartResult[] = [];
  try {
    if (PARTS.includes("a")) {
      try {
        outputs.push(await partAutoscale());
      } catch (err) {
        outputs.push(failedPart("a", err, log));
      }
      await cleanupAll(); // its cluster down before the fleet's two start
    }
    if (PARTS.includes("b") || PARTS.includes("c")) {
      let fleet: Fleet | undefined;
      try {
        fleet = await startFleet();
      } catch (err) {
        outputs.push(failedPart("b", err, log));
      }
      for (const [p, fn] of [
        ["b", partDispatch],
        ["c", partFailover],
      ] as const) {
        if (!fleet || !PARTS.includes(p)) continue;
        try {
          outputs.push(await fn(fleet));
        } catch (err) {
          outputs.push(failedPart(p, err, log));
        }
      }
    }
  } finally {
    await cleanupAll();
    clearTimeout(watchdog);
  }
  printParts(outputs);
  const section = [
    `## ${date.toISOString().slice(0, 16).replace("T", " ")} UTC — bench:fleet`,
    "",
    machineLine(loadAtStart),
    `- Loom ${loomCommit()}; private kwok clusters (test/k8s/up.sh, Kubernetes v1.37.2) under ${process.env.LOOM_K8S_STATE}-*, stopped and removed at the end. ${Number(loadAtStart.split(" ")[0]) > 1 ? "The machine was shared with other work (a full CI run): the load averages above measure it, and these figures need a rerun on a quiet machine." : ""}`,
    ...partsSection(outputs, began),
  ].join("\n");
  publishResults(section, outputs, "LOOM_BENCH_APPEND");
}

main().catch(async (err) => {
  console.error(err);
  await cleanupAll();
  process.exit(1);
});

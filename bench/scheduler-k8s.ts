/**
 * bench:scheduler part (b): pods bound per second by Loom (the operator, as a secondary
 * scheduler) and by kube-scheduler, on one real control plane with kwok nodes, in the same run.
 *
 * Both start from a standing queue: the pods are created first, with a schedulerName nobody
 * serves yet, then the scheduler starts, and the bench records when each pod got its node. The
 * kube-scheduler under test is a second instance of the cluster's own binary, with a profile for
 * that schedulerName and the client limits raised as one would for throughput.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { BenchCluster, cpuSeconds, KubeHttp, kubeTarget, ROOT } from "./cluster.js";

export interface BindingRun {
  scheduler: string;
  pods: number;
  bound: number;
  /** From the scheduler's start to the last pod bound. */
  totalSeconds: number;
  /** From the first pod bound to the last. */
  bindingSeconds: number;
  podsPerSecond: number;
  /** Pods bound per second from the scheduler's start (startup and first list included). */
  podsPerSecondFromStart: number;
  schedulerCpuSeconds?: number;
}

export interface BindingBenchResult {
  nodes: number;
  runs: BindingRun[];
  notes: string[];
  versions: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

function pod(name: string, ns: string, schedulerName: string) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: ns, annotations: { "loom.dev/kwok-complete-after": "24h" } },
    spec: {
      schedulerName,
      containers: [
        {
          name: "c",
          image: "busybox",
          command: ["sleep", "3600"],
          resources: { requests: { cpu: "100m", memory: "64Mi" }, limits: { memory: "64Mi" } },
        },
      ],
    },
  };
}

async function createPods(http: KubeHttp, ns: string, schedulerName: string, n: number): Promise<void> {
  await http.json("POST", "/api/v1/namespaces", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: ns },
  });
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const i = next++;
      const res = await http.send(
        "POST",
        `/api/v1/namespaces/${ns}/pods`,
        pod(`p-${String(i).padStart(5, "0")}`, ns, schedulerName),
      );
      if (res.status >= 300 && res.status !== 409)
        throw new Error(`create pod: HTTP ${res.status} ${res.body.slice(0, 200)}`);
    }
  };
  await Promise.all(Array.from({ length: 32 }, lane));
}

/** Follows the namespace's pods and resolves once `n` have a node; returns bind times (ms). */
async function followBinds(http: KubeHttp, ns: string, n: number, timeoutMs: number) {
  const list = await http.json<{
    metadata: { resourceVersion: string };
    items: { metadata: { name: string }; spec: { nodeName?: string } }[];
  }>("GET", `/api/v1/namespaces/${ns}/pods?limit=1`);
  const boundAt = new Map<string, number>();
  let resolveAll: () => void = () => {};
  const all = new Promise<void>((r) => {
    resolveAll = r;
  });
  const stop = await http.watch<{
    metadata: { name: string; resourceVersion?: string };
    spec?: { nodeName?: string };
  }>(`/api/v1/namespaces/${ns}/pods`, list.metadata.resourceVersion, (_type, obj) => {
    if (obj.spec?.nodeName && !boundAt.has(obj.metadata.name)) {
      boundAt.set(obj.metadata.name, performance.now());
      if (boundAt.size >= n) resolveAll();
    }
  });
  return {
    boundAt,
    done: Promise.race([all, sleep(timeoutMs)]).finally(stop),
  };
}

function spawnLogged(cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env) {
  const child: ChildProcess = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const log = createWriteStream(logFile);
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  return {
    child,
    async stop() {
      if (exited) return;
      child.kill("SIGTERM");
      for (let i = 0; i < 200 && !exited; i++) await sleep(50);
      if (!exited) child.kill("SIGKILL");
    },
  };
}

function summarize(
  scheduler: string,
  pods: number,
  startedAt: number,
  boundAt: Map<string, number>,
  cpu?: number,
): BindingRun {
  const times = [...boundAt.values()].sort((a, b) => a - b);
  const first = times[0] ?? startedAt;
  const last = times.at(-1) ?? startedAt;
  const bindingSeconds = (last - first) / 1000;
  const totalSeconds = (last - startedAt) / 1000;
  return {
    scheduler,
    pods,
    bound: times.length,
    totalSeconds,
    bindingSeconds,
    podsPerSecond: bindingSeconds > 0 ? times.length / bindingSeconds : times.length,
    podsPerSecondFromStart: totalSeconds > 0 ? times.length / totalSeconds : times.length,
    ...(cpu !== undefined ? { schedulerCpuSeconds: cpu } : {}),
  };
}

export async function runBindingBench(opts: {
  nodes: number;
  pods: number;
  log: (msg: string) => void;
  onCleanup: (fn: () => Promise<void> | void) => void;
  timeoutMs: number;
}): Promise<BindingBenchResult> {
  const { log } = opts;
  log(`(b) starting a private control plane with ${opts.nodes} kwok nodes`);
  const cluster = await BenchCluster.start(opts.nodes, (c) => opts.onCleanup(() => c.stop()));
  opts.onCleanup(() => cluster.stop());
  await cluster.installLoomCrds();
  const http = new KubeHttp(await kubeTarget(cluster.kubeconfig), 64);
  opts.onCleanup(() => http.close());
  const runs: BindingRun[] = [];
  const notes: string[] = [];

  // Loom: the operator as its own process, admin identity, started after the pods exist.
  log(`(b) Loom: creating ${opts.pods} pods with schedulerName loom`);
  await createPods(http, "bench-loom", "loom", opts.pods);
  const loomFollow = await followBinds(http, "bench-loom", opts.pods, opts.timeoutMs);
  const loomStart = performance.now();
  const operator = spawnLogged(
    process.execPath,
    [join(ROOT, "bin/loom.js"), "operator", "--kubeconfig", cluster.kubeconfig],
    join(cluster.state, "logs", "bench-loom-operator.log"),
    { ...process.env, LOOM_LOG_LEVEL: "warn" },
  );
  opts.onCleanup(() => operator.stop());
  await loomFollow.done;
  const loomCpu = operator.child.pid ? cpuSeconds(operator.child.pid) : undefined;
  await operator.stop();
  runs.push(summarize("Loom operator", opts.pods, loomStart, loomFollow.boundAt, loomCpu));
  log(`(b) Loom bound ${loomFollow.boundAt.size} of ${opts.pods}`);

  // kube-scheduler: a second instance of the cluster's binary, serving its own schedulerName.
  log(`(b) kube-scheduler: creating ${opts.pods} pods with schedulerName bench-kube-scheduler`);
  await createPods(http, "bench-kube", "bench-kube-scheduler", opts.pods);
  const config = join(cluster.state, "bench-kube-scheduler.yaml");
  writeFileSync(
    config,
    `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: ${cluster.kubeconfig}
  qps: 1000
  burst: 2000
leaderElection:
  leaderElect: false
profiles:
  - schedulerName: bench-kube-scheduler
`,
  );
  const kubeFollow = await followBinds(http, "bench-kube", opts.pods, opts.timeoutMs);
  const kubeStart = performance.now();
  const sched = spawnLogged(
    join(cluster.bin, "kube-scheduler"),
    ["--config", config, "--secure-port", "0", "-v", "1"],
    join(cluster.state, "logs", "bench-kube-scheduler.log"),
  );
  opts.onCleanup(() => sched.stop());
  await kubeFollow.done;
  const kubeCpu = sched.child.pid ? cpuSeconds(sched.child.pid) : undefined;
  await sched.stop();
  runs.push(summarize("kube-scheduler", opts.pods, kubeStart, kubeFollow.boundAt, kubeCpu));
  log(`(b) kube-scheduler bound ${kubeFollow.boundAt.size} of ${opts.pods}`);

  notes.push(
    `(b) Both schedulers start from a standing queue of ${opts.pods} pending pods (100m CPU, 64Mi each, no GPU) on ${opts.nodes} kwok nodes; pods are created first with a schedulerName nobody serves, then the scheduler process starts. Pods/s counts from the first bind to the last (startup and first list excluded); "from start" includes them. Bind time is when a watch on the namespace first shows the pod's nodeName.`,
    `(b) Loom is \`loom operator\` (its admission loop places the pods as one-pod gangs of the namespace's project, then binds them through pods/binding, 128 in flight). kube-scheduler is a second instance of the cluster's ${cluster.versions().kubernetes} binary with a profile for its own schedulerName and clientConnection qps 1000 / burst 2000 (default 50/100), default plugins and percentageOfNodesToScore; it also writes a Scheduled event per pod, which Loom does not.`,
    "(b) The API server, etcd, kwok, the controller-manager and the scheduler under test share the machine's cores; Loom runs first, then kube-scheduler, each alone.",
  );
  return { nodes: opts.nodes, runs, notes, versions: cluster.versions().line };
}

// Standalone: node --import tsx bench/scheduler-k8s.ts [pods] [nodes]
if (import.meta.url === `file://${process.argv[1]}`) {
  const cleanups: (() => Promise<void> | void)[] = [];
  const pods = Number(process.argv[2] ?? 5000);
  const nodes = Number(process.argv[3] ?? 500);
  const t0 = performance.now();
  runBindingBench({
    nodes,
    pods,
    log: (m) => console.log(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}`),
    onCleanup: (fn) => cleanups.push(fn),
    timeoutMs: 300_000,
  })
    .then((r) => console.log(JSON.stringify(r, null, 2)))
    .finally(async () => {
      for (const fn of cleanups.reverse()) await Promise.resolve(fn()).catch(() => undefined);
      process.exit(0);
    });
}

/**
 * Gateway benchmark: Loom's inference gateway against nginx as a reverse proxy, in front of the
 * same minimal model server, with the same load generator (wrk), in one run:
 *
 *  1. Proxy overhead. A minimal upstream (bench/gateway-upstream.go: a fixed JSON completion,
 *     keep-alive) reached (a) directly, (b) through a real `loom up` (an InferenceService whose
 *     runtime command is that upstream, one replica, autoscaling out of the way), (c) through
 *     Debian's nginx with an expert's reverse-proxy config, and (d) through `loom gateway --workers 2`
 *     (two gateway processes on one port following that `loom up`, like nginx's two workers). wrk drives each path in turn:
 *     - paced: 4 connections, 1 thread, each connection pausing a random time between requests
 *       (wrk's Lua `delay()`, exponential: Poisson-like arrivals at a fixed mean rate; wrk cannot hold
 *       a rate, wrk2 is not in Debian) → p50/p99; added latency = path − direct, per round;
 *     - lockstep: the same with a fixed pause, so the 4 connections send in bursts of 4;
 *     - max: 64 connections → requests/s.
 *     The paths take turns, in a rotated order per round; medians over the rounds.
 *  2. Scale from zero. An InferenceService with min 0 and scaleToZeroAfter 1 s, scaled to zero;
 *     the first request through the gateway (send → last byte) against the replica's own
 *     readiness (the same command started by hand: spawn → first 200 on /health, polled every
 *     millisecond). The upstream stamps when its main() ran, when it listened and when the first
 *     completion arrived, which splits the cold start into its parts.
 *
 * Everything (wrk, the proxies, the upstreams, this process) shares the machine's cores. Every
 * process and temp dir is removed at the end, on failure and on Ctrl-C; a watchdog ends the run
 * after its budget. Run with `npm run bench:gateway`; the section is appended to bench/RESULTS.md.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import { Agent, request } from "node:http";
import { createServer } from "node:net";
import { arch, platform } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { LoomProcess } from "../test/helpers.js";
import {
  cleanupAll,
  cleanups,
  fmt,
  loadNow,
  loomCommit,
  machine,
  markdownTable,
  num,
  partsSection,
  publishResults,
  sleep,
  tempDir,
} from "./report.js";

const env = process.env;
/** Part 1: rounds (each path once per round, in a rotated order) and seconds per wrk run. */
const ROUNDS = num(env.LOOM_BENCH_GATEWAY_ROUNDS, 5);
const PACED_SECONDS = num(env.LOOM_BENCH_GATEWAY_PACED_SECONDS, 8);
const MAX_SECONDS = num(env.LOOM_BENCH_GATEWAY_MAX_SECONDS, 8);
const WARMUP_SECONDS = num(env.LOOM_BENCH_GATEWAY_WARMUP_SECONDS, 2);
/** Paced runs: connections (both kinds below). */
const PACED_CONNECTIONS = num(env.LOOM_BENCH_GATEWAY_PACED_CONNECTIONS, 4);
/**
 * Paced, the goal's measure: each connection pauses a random time between requests, drawn from
 * an exponential distribution with this mean (ms), so that requests arrive independently of
 * each other at a fixed mean rate (Poisson-like arrivals), as from many clients.
 */
const PACED_MEAN_DELAY_MS = num(env.LOOM_BENCH_GATEWAY_PACED_MEAN_DELAY_MS, 2.9);
/**
 * Lockstep, the earlier measure, kept beside it: each connection pauses a fixed time. The
 * connections start together and stay in step, so requests arrive in bursts of PACED_CONNECTIONS.
 */
const LOCKSTEP_DELAY_MS = num(env.LOOM_BENCH_GATEWAY_LOCKSTEP_DELAY_MS, 2);
/** Max runs: connections and wrk threads (one thread leaves more of the 2 cores to the proxy). */
const MAX_CONNECTIONS = num(env.LOOM_BENCH_GATEWAY_MAX_CONNECTIONS, 64);
const MAX_THREADS = num(env.LOOM_BENCH_GATEWAY_MAX_THREADS, 1);
/** Processes of the `loom gateway --workers N` path. */
const GATEWAY_WORKERS = num(env.LOOM_BENCH_GATEWAY_WORKERS, 2);
/** nginx's worker_processes: "auto" (one per core) unless set. */
const NGINX_WORKERS = env.LOOM_BENCH_GATEWAY_NGINX_WORKERS || "auto";
/** Part 2: cold starts through the gateway, and replica starts by hand. */
const COLD_RUNS = num(env.LOOM_BENCH_GATEWAY_COLD_RUNS, 5);
const PARTS = (env.LOOM_BENCH_GATEWAY_PARTS ?? "1,2,3")
  .split(",")
  .map((p) => p.trim())
  .filter(Boolean);
const BUDGET_MS = num(env.LOOM_BENCH_GATEWAY_BUDGET_S, 900) * 1000;
/** Goals from the issue. */
const GOAL_ADDED_P99_MS = 1;
const GOAL_COLD_OVERHEAD_MS = 100;
/** Throughput lost to recording a trace per request (spec.tracing), at most. */
const GOAL_TRACE_COST = 0.1;
const TRACE_ROUNDS = num(env.LOOM_BENCH_GATEWAY_TRACE_ROUNDS, 3);

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = join(BENCH_DIR, "..");
const UPSTREAM_SOURCE = join(BENCH_DIR, "gateway-upstream.go");
const API = "/apis/loom.dev/v1alpha1/projects/default";
/** What every client sends, on every path (the same bytes, Authorization included). */
const REQUEST_BODY = JSON.stringify({ model: "bench", prompt: "hello", max_tokens: 1 });

const began = performance.now();
const log = (msg: string) =>
  console.log(`[${((performance.now() - began) / 1000).toFixed(0).padStart(4)} s] ${msg}`);
/** Wall clock in ms with sub-ms precision, comparable with the upstream's Unix-epoch stamps. */
const wallMs = () => performance.timeOrigin + performance.now();

let aborted = false;

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Milliseconds: two decimals below 1 ms, one below 10, none above. */
const ms = (x: number | undefined) =>
  x === undefined ? "—" : fmt(x, Math.abs(x) < 1 ? 2 : Math.abs(x) < 10 ? 1 : 0);
const signedMs = (x: number | undefined) => (x === undefined ? "—" : `${x >= 0 ? "+" : ""}${ms(x)}`);
const times = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? "—" : `${fmt(a / b, 2)}×`;

// ---------------------------------------------------------------------------------------------
// Processes

function which(cmd: string): string | undefined {
  const r = spawnSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((ok) => srv.listen(0, "127.0.0.1", ok));
  const port = (srv.address() as { port: number }).port;
  await new Promise((ok) => srv.close(ok));
  return port;
}

/** Kills a detached child's process group: SIGTERM, then SIGKILL to whatever is left. */
async function killGroup(proc: ChildProcess): Promise<void> {
  const pgid = proc.pid;
  if (pgid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
  const groupAlive = () => {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch {
      return false;
    }
  };
  try {
    process.kill(-pgid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = Date.now() + 5000;
  while (groupAlive() && Date.now() < deadline) await sleep(50);
  if (groupAlive()) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

/** The pids whose executable is this file (the upstream binary, which lives in our temp dir). */
function pidsOfExe(exe: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readlinkSync(`/proc/${name}/exe`) === exe) pids.push(Number(name));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

const CLK_TCK = 100;

/** User + system seconds of the given processes and all their live descendants. */
function treeCpuSeconds(roots: number[]): number {
  const procs = new Map<number, { ppid: number; ticks: number }>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      procs.set(Number(name), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // gone meanwhile
    }
  }
  const children = new Map<number, number[]>();
  for (const [pid, p] of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), pid]);
  let ticks = 0;
  const seen = new Set<number>();
  const stack = [...roots];
  for (let pid = stack.pop(); pid !== undefined; pid = stack.pop()) {
    if (seen.has(pid)) continue;
    seen.add(pid);
    ticks += procs.get(pid)?.ticks ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return ticks / CLK_TCK;
}

/** Busy seconds of the whole machine (all cores) from /proc/stat. */
function machineBusySeconds(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0)) / CLK_TCK;
}

// ---------------------------------------------------------------------------------------------
// The upstream: bench/gateway-upstream.go, built once per run into the temp dir

function buildUpstream(dir: string): string {
  const bin = join(dir, "upstream");
  const t0 = performance.now();
  const r = spawnSync("go", ["build", "-trimpath", "-o", bin, UPSTREAM_SOURCE], {
    cwd: dir,
    encoding: "utf8",
    env: { ...env, CGO_ENABLED: "0" },
  });
  if (r.status !== 0) throw new Error(`go build ${UPSTREAM_SOURCE} failed: ${r.stderr}`);
  log(`built the upstream (go build, ${fmt((performance.now() - t0) / 1000, 1)} s)`);
  return bin;
}

/** GET http://127.0.0.1:port/path on a new connection: the status, or 0 when nothing answered. */
function probe(port: number, path: string): Promise<number> {
  return new Promise((ok) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      res.resume();
      res.on("end", () => ok(res.statusCode ?? 0));
      res.on("error", () => ok(0));
    });
    req.on("error", () => ok(0));
    req.end();
  });
}

async function startUpstream(
  bin: string,
  extraEnv: Record<string, string> = {},
): Promise<{
  proc: ChildProcess;
  port: number;
  spawnedAt: number;
  readyAt: number;
}> {
  const port = await freePort();
  const spawnedAt = wallMs();
  const proc = spawn(bin, [], {
    env: { ...env, PORT: String(port), ...extraEnv },
    detached: true,
    stdio: "ignore",
  });
  cleanups.push(() => killGroup(proc));
  // Polled every millisecond, each try on a new connection, as a readiness probe would.
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if ((await probe(port, "/health")) === 200) return { proc, port, spawnedAt, readyAt: wallMs() };
    if (proc.exitCode !== null) throw new Error(`the upstream exited with ${proc.exitCode}`);
    await sleep(1);
  }
  throw new Error("the upstream did not answer /health within 10 s");
}

function readStamps(file: string): { what: string; ms: number }[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return []; // not written (yet), or its replica's directory is gone
  }
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [what, us] = l.split(" ");
      return { what: what!, ms: Number(us) / 1000 };
    });
}

/** The stamps every replica Loom started wrote to `file` in its work dir (workloads/UID/work/). */
function replicaStamps(dataDir: string, file: string): { what: string; ms: number }[] {
  const root = join(dataDir, "workloads");
  const uids = existsSync(root) ? readdirSync(root) : [];
  return uids.flatMap((uid) => readStamps(join(root, uid, "work", file))).sort((a, b) => a.ms - b.ms);
}

// ---------------------------------------------------------------------------------------------
// nginx, configured as its experts run a reverse proxy (../shared/PEERS.md)

function nginxConf(dir: string, listen: number, upstream: number): string {
  return `# bench/gateway.ts: nginx as a keep-alive reverse proxy in front of one model server
worker_processes ${NGINX_WORKERS};
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    upstream model {
        server 127.0.0.1:${upstream};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 600s;
    }
    server {
        listen 127.0.0.1:${listen};
        keepalive_requests 1000000;
        keepalive_timeout 600s;
        location / {
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`;
}

async function startNginx(upstreamPort: number): Promise<{ proc: ChildProcess; port: number; conf: string }> {
  const dir = tempDir("loom-bench-nginx-");
  // The workers run as nobody when the master is root: they must reach the temp paths.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const conf = nginxConf(dir, port, upstreamPort);
  writeFileSync(join(dir, "nginx.conf"), conf);
  const proc = spawn("nginx", ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log")], {
    detached: true,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  cleanups.push(() => killGroup(proc));
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if ((await probe(port, "/health")) === 200) return { proc, port, conf };
    if (proc.exitCode !== null) throw new Error(`nginx exited with ${proc.exitCode}: ${stderr}`);
    await sleep(20);
  }
  throw new Error(`nginx did not proxy /health within 10 s: ${stderr}`);
}

function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`.trim().split("\n")[0] ?? cmd;
}

// ---------------------------------------------------------------------------------------------
// Loom: a real `loom up`, an API key, InferenceServices

async function api(loom: LoomProcess, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await loom.api(method, path, body);
  if (r.status >= 300) throw new Error(`${method} ${path}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

interface Isvc {
  metadata?: { generation?: number };
  status?: {
    observedGeneration?: number;
    phase?: string;
    desired?: number;
    ready?: number;
    revisions?: { replicas?: { id: string; port?: number; ready: boolean }[] }[];
  };
}

async function isvc(loom: LoomProcess, name: string): Promise<Isvc> {
  return (await api(loom, "GET", `${API}/inferenceservices/${name}`)) as Isvc;
}

const replicasOf = (s: Isvc) => (s.status?.revisions ?? []).flatMap((r) => r.replicas ?? []);

async function waitIsvc(
  loom: LoomProcess,
  name: string,
  pred: (s: Isvc) => boolean,
  what: string,
  timeoutMs = 60_000,
  everyMs = 50,
): Promise<Isvc> {
  const deadline = Date.now() + timeoutMs;
  let last: Isvc | undefined;
  while (Date.now() < deadline && !aborted) {
    last = await isvc(loom, name);
    if (pred(last)) return last;
    await sleep(everyMs);
  }
  throw new Error(`${name}: timed out waiting for ${what}; last status: ${JSON.stringify(last?.status)}`);
}

function isvcManifest(name: string, bin: string, modelDir: string, opts: { min: number; stamps?: string }) {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "InferenceService",
    metadata: { name },
    spec: {
      model: modelDir,
      runtime: { command: [bin], ...(opts.stamps ? { env: { BENCH_STAMPS: opts.stamps } } : {}) },
      replicas: { min: opts.min, max: 1 },
      // The autoscaler must not move anything under load: one replica wants 1,000 in flight.
      autoscaling: { targetConcurrency: 1000, scaleDownDelay: "1s", scaleToZeroAfter: "1s" },
      readiness: { path: "/health", timeoutSeconds: 30 },
    },
  };
}

async function deleteIsvcs(loom: LoomProcess, names: string[]): Promise<void> {
  for (const name of names)
    await loom.api("DELETE", `${API}/inferenceservices/${name}`).catch(() => undefined);
  const deadline = Date.now() + 30_000;
  for (const name of names) {
    while (Date.now() < deadline) {
      const r = await loom.api("GET", `${API}/inferenceservices/${name}`).catch(() => ({ status: 404 }));
      if (r.status === 404) break;
      await sleep(100);
    }
  }
}

/** One request over a kept-alive socket: status, body, send → last byte. */
function post(
  agent: Agent,
  port: number,
  path: string,
  body: string,
  headers: Record<string, string>,
): Promise<{ status: number; text: string; ms: number; endAt: number }> {
  return new Promise((ok, fail) => {
    const t0 = performance.now();
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: "POST",
        agent,
        headers: {
          ...headers,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const t1 = performance.now();
          ok({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString("utf8"),
            ms: t1 - t0,
            endAt: performance.timeOrigin + t1,
          });
        });
        res.on("error", fail);
      },
    );
    req.on("error", fail);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// wrk

interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Socket errors and non-2xx/3xx answers. */
  errors: number;
  /** CPU seconds of the proxy (or the upstream, for direct) per second of the run: cores busy. */
  proxyCores?: number;
  upstreamCores?: number;
  wrkCores?: number;
  machineCores?: number;
}

/** How a connection pauses between requests: not at all, a fixed time, or an exponential draw. */
type Pause = { kind: "none" } | { kind: "fixed"; ms: number } | { kind: "exponential"; meanMs: number };

/**
 * wrk's delay() is whole milliseconds (wrk truncates it); the exponential draw is floored to
 * say so. LuaJIT's math.random starts from the same seed in every run, so every path and every
 * run gets the same sequence of pauses.
 */
function delayFunction(pause: Pause): string {
  if (pause.kind === "fixed") return `function delay()\n  return ${pause.ms}\nend\n`;
  if (pause.kind === "exponential")
    return `function delay()\n  return math.floor(-${pause.meanMs} * math.log(1 - math.random()))\nend\n`;
  return "";
}

const describePause = (pause: Pause) =>
  pause.kind === "fixed"
    ? `, pausing ${pause.ms} ms between requests per connection`
    : pause.kind === "exponential"
      ? `, pausing an exponential random time (mean ${pause.meanMs} ms) between requests per connection`
      : "";

function wrkScript(dir: string, name: string, key: string, pause: Pause): string {
  const file = join(dir, `${name}.lua`);
  writeFileSync(
    file,
    `-- bench/gateway.ts: POST a small completion request${describePause(pause)}
wrk.method = "POST"
wrk.body = '${REQUEST_BODY}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer ${key}"
${delayFunction(pause)}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.status + e.timeout))
end
`,
  );
  return file;
}

async function runWrk(
  url: string,
  script: string,
  connections: number,
  threads: number,
  seconds: number,
  pids: { proxy: number[]; upstream: number[] },
): Promise<WrkResult> {
  const args = ["-t", String(threads), "-c", String(connections), "-d", `${seconds}s`, "-s", script, url];
  const proc = spawn("wrk", args, { stdio: ["ignore", "pipe", "pipe"] });
  const kill = () => {
    if (proc.exitCode === null) proc.kill("SIGKILL");
  };
  cleanups.push(kill);
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const cpu0 = {
    proxy: treeCpuSeconds(pids.proxy),
    upstream: treeCpuSeconds(pids.upstream),
    machine: machineBusySeconds(),
    t: performance.now(),
  };
  let wrkCpu = 0;
  // wrk's own CPU (all its threads), sampled: its /proc entry goes when it exits.
  const sampler = setInterval(() => {
    try {
      const stat = readFileSync(`/proc/${proc.pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      wrkCpu = Math.max(wrkCpu, (Number(f[11]) + Number(f[12])) / CLK_TCK);
    } catch {
      // exited
    }
  }, 200);
  const code = await new Promise<number | null>((ok) => proc.on("exit", ok));
  clearInterval(sampler);
  const cpu1 = {
    proxy: treeCpuSeconds(pids.proxy),
    upstream: treeCpuSeconds(pids.upstream),
    machine: machineBusySeconds(),
    t: performance.now(),
  };
  const line = /WRK_JSON (\{.*\})/.exec(out)?.[1];
  if (code !== 0 || !line) throw new Error(`wrk ${args.join(" ")} failed (${code}): ${out}`);
  const j = JSON.parse(line) as Record<string, number>;
  const wall = (cpu1.t - cpu0.t) / 1000;
  return {
    requests: j.requests!,
    seconds: j.duration_us! / 1e6,
    rps: j.requests! / (j.duration_us! / 1e6),
    p50: j.p50! / 1000,
    p90: j.p90! / 1000,
    p99: j.p99! / 1000,
    max: j.max! / 1000,
    errors: j.errors!,
    proxyCores: pids.proxy.length ? (cpu1.proxy - cpu0.proxy) / wall : undefined,
    upstreamCores: (cpu1.upstream - cpu0.upstream) / wall,
    wrkCores: wrkCpu / seconds,
    machineCores: (cpu1.machine - cpu0.machine) / wall,
  };
}

// ---------------------------------------------------------------------------------------------
// Part 1: proxy overhead

type PathName = "direct" | "Loom" | "Loom2" | "nginx";

interface Path {
  name: PathName;
  url: string;
  pids: () => { proxy: number[]; upstream: number[] };
}

interface PartOutput {
  heading: string;
  blocks: string[];
  notes: string[];
  workload: string;
  goals: string[];
  ok: boolean;
}

async function partOverhead(
  paths: Path[],
  scripts: { paced: string; lockstep: string; max: string },
  responseBytes: number,
): Promise<PartOutput> {
  const paced = new Map<PathName, WrkResult[]>(paths.map((p) => [p.name, []]));
  const lockstep = new Map<PathName, WrkResult[]>(paths.map((p) => [p.name, []]));
  const max = new Map<PathName, WrkResult[]>(paths.map((p) => [p.name, []]));
  for (let round = 0; round < ROUNDS && !aborted; round++) {
    const order = paths.map((_, i) => paths[(i + round) % paths.length]!);
    for (const p of order) {
      const pids = p.pids();
      await runWrk(p.url, scripts.max, MAX_CONNECTIONS, MAX_THREADS, WARMUP_SECONDS, pids);
      const a = await runWrk(p.url, scripts.paced, PACED_CONNECTIONS, 1, PACED_SECONDS, pids);
      const s = await runWrk(p.url, scripts.lockstep, PACED_CONNECTIONS, 1, PACED_SECONDS, pids);
      const b = await runWrk(p.url, scripts.max, MAX_CONNECTIONS, MAX_THREADS, MAX_SECONDS, pids);
      paced.get(p.name)!.push(a);
      lockstep.get(p.name)!.push(s);
      max.get(p.name)!.push(b);
      log(
        `round ${round + 1}/${ROUNDS} ${p.name.padEnd(6)} paced ${fmt(a.rps)}/s p50 ${ms(a.p50)} p99 ${ms(a.p99)} ms; lockstep ${fmt(s.rps)}/s p50 ${ms(s.p50)} p99 ${ms(s.p99)} ms; max ${fmt(b.rps)} requests/s (p50 ${ms(b.p50)} ms), errors ${a.errors + s.errors + b.errors}; load average ${loadNow()}`,
      );
    }
  }
  const med = (name: PathName, which: Map<PathName, WrkResult[]>, f: (r: WrkResult) => number | undefined) =>
    median(
      which
        .get(name)!
        .map(f)
        .filter((x): x is number => x !== undefined),
    );
  /** Added latency per round (path − direct in the same round), then the median over rounds. */
  const added = (name: PathName, f: (r: WrkResult) => number, which = paced) => {
    const d = which.get("direct")!;
    const p = which.get(name)!;
    return median(p.map((r, i) => f(r) - f(d[i]!)));
  };
  const errors = [...paced.values(), ...lockstep.values(), ...max.values()]
    .flat()
    .reduce((a, r) => a + r.errors, 0);
  const col = (name: PathName) => ({
    pacedRps: med(name, paced, (r) => r.rps),
    p50: med(name, paced, (r) => r.p50),
    p99: med(name, paced, (r) => r.p99),
    p90: med(name, paced, (r) => r.p90),
    addedP50: name === "direct" ? undefined : added(name, (r) => r.p50),
    addedP99: name === "direct" ? undefined : added(name, (r) => r.p99),
    lockstepRps: med(name, lockstep, (r) => r.rps),
    lockstepP50: med(name, lockstep, (r) => r.p50),
    lockstepP99: med(name, lockstep, (r) => r.p99),
    lockstepAddedP50: name === "direct" ? undefined : added(name, (r) => r.p50, lockstep),
    lockstepAddedP99: name === "direct" ? undefined : added(name, (r) => r.p99, lockstep),
    rps: med(name, max, (r) => r.rps),
    maxP50: med(name, max, (r) => r.p50),
    maxP99: med(name, max, (r) => r.p99),
    proxyCores: med(name, max, (r) => r.proxyCores),
    upstreamCores: med(name, max, (r) => r.upstreamCores),
    wrkCores: med(name, max, (r) => r.wrkCores),
    machineCores: med(name, max, (r) => r.machineCores),
    proxyCpuPer1k: med(name, max, (r) =>
      r.proxyCores === undefined ? undefined : (r.proxyCores / r.rps) * 1e6,
    ),
  });
  const d = col("direct");
  const l = col("Loom");
  const w = col("Loom2");
  const n = col("nginx");
  const rounds = (name: PathName, which: Map<PathName, WrkResult[]>, f: (r: WrkResult) => string) =>
    which.get(name)!.map(f).join(" / ");
  /**
   * Each Loom path's max rate over nginx's in the same round: a paired figure, so that the
   * machine's drift between rounds (2× here, other work on shared cores) cancels out.
   */
  const pairedToNginx = (name: PathName) => {
    const ng = max.get("nginx")!;
    return max.get(name)!.map((r, i) => r.rps / ng[i]!.rps);
  };
  const paired = (name: PathName) => {
    const ratios = pairedToNginx(name);
    return `${ratios.map((x) => fmt(x, 2)).join(" / ")} (median ${times(median(ratios), 1)})`;
  };
  type Col = ReturnType<typeof col>;
  const proxies = [l, w];
  /** A row with one cell per path, then each Loom path against nginx (when `compare` is given). */
  const row = (label: string, cell: (c: Col) => string, compare?: (c: Col) => number | undefined) => [
    label,
    ...[d, l, w, n].map(cell),
    ...proxies.map((c) => (compare ? times(compare(c), compare(n)) : "")),
  ];
  /** The same, for the proxies only (direct has no such figure). */
  const proxyRow = (label: string, cell: (c: Col) => string, compare?: (c: Col) => number | undefined) => {
    const r = row(label, cell, compare);
    r[1] = "";
    return r;
  };
  /** The added-latency rows (p50, p99) of one paced load, each compared with nginx's. */
  const addedRows = (
    prefix: string,
    p50: (c: Col) => number | undefined,
    p99: (c: Col) => number | undefined,
  ) => [
    proxyRow(`${prefix}added latency p50 (ms)`, (c) => signedMs(p50(c)), p50),
    proxyRow(`${prefix}added latency p99 (ms)`, (c) => signedMs(p99(c)), p99),
  ];
  const eachRound = (label: string, which: Map<PathName, WrkResult[]>, f: (r: WrkResult) => string) => [
    label,
    ...(["direct", "Loom", "Loom2", "nginx"] as const).map((name) => rounds(name, which, f)),
    "",
    "",
  ];
  const table = markdownTable(
    [
      `POST /v1/completions, wrk, median of ${ROUNDS} rounds`,
      "direct",
      "Loom gateway",
      `\`loom gateway --workers ${GATEWAY_WORKERS}\``,
      "nginx",
      "Loom vs nginx",
      `Loom ×${GATEWAY_WORKERS} vs nginx`,
    ],
    [
      row(
        `paced (${PACED_CONNECTIONS} conn., random pauses, mean ${PACED_MEAN_DELAY_MS} ms): requests/s`,
        (c) => fmt(c.pacedRps),
      ),
      row(
        "paced: p50 (ms)",
        (c) => ms(c.p50),
        (c) => c.p50,
      ),
      row(
        "paced: p90 (ms)",
        (c) => ms(c.p90),
        (c) => c.p90,
      ),
      row(
        "paced: p99 (ms)",
        (c) => ms(c.p99),
        (c) => c.p99,
      ),
      ...addedRows(
        "",
        (c) => c.addedP50,
        (c) => c.addedP99,
      ),
      eachRound("paced p99 (ms), each round", paced, (r) => ms(r.p99)),
      row(`lockstep (${PACED_CONNECTIONS} conn., ${LOCKSTEP_DELAY_MS} ms pause): requests/s`, (c) =>
        fmt(c.lockstepRps),
      ),
      row("lockstep: p50 / p99 (ms)", (c) => `${ms(c.lockstepP50)} / ${ms(c.lockstepP99)}`),
      ...addedRows(
        "lockstep: ",
        (c) => c.lockstepAddedP50,
        (c) => c.lockstepAddedP99,
      ),
      eachRound("lockstep p99 (ms), each round", lockstep, (r) => ms(r.p99)),
      row(
        `max (${MAX_CONNECTIONS} conn.): requests/s`,
        (c) => fmt(c.rps),
        (c) => c.rps,
      ),
      eachRound("max: requests/s, each round", max, (r) => fmt(r.rps)),
      ["max ÷ nginx's in the same round", "", paired("Loom"), paired("Loom2"), "", "", ""],
      row("max: p50 / p99 (ms)", (c) => `${ms(c.maxP50)} / ${ms(c.maxP99)}`),
      row("max vs direct", (c) => times(c.rps, d.rps)),
      proxyRow("max: proxy CPU (cores busy)", (c) => fmt(c.proxyCores, 2)),
      proxyRow(
        "max: proxy CPU per 1,000 requests (ms)",
        (c) => fmt(c.proxyCpuPer1k, 1),
        (c) => c.proxyCpuPer1k,
      ),
      row(
        "max: upstream / wrk CPU (cores busy)",
        (c) => `${fmt(c.upstreamCores, 2)} / ${fmt(c.wrkCores, 2)}`,
      ),
      row("max: whole machine busy (cores)", (c) => fmt(c.machineCores, 2)),
    ],
  );
  const goalP99 = l.addedP99 !== undefined && l.addedP99 <= GOAL_ADDED_P99_MS;
  return {
    heading: "1. Added latency and throughput: direct, Loom's gateway, nginx",
    blocks: [table],
    notes: [
      `Every path serves the same upstream binary (bench/gateway-upstream.go, Go net/http, a fixed ${fmt(responseBytes)}-byte JSON completion, keep-alive; GOMAXPROCS = cores). Direct and nginx reach one standalone instance; Loom reaches its own replica of the same binary, started by the InferenceService (runtime.command, replicas min 1 max 1, targetConcurrency 1000 so the autoscaler never acts).`,
      `wrk sends the same request on every path: POST /v1/completions, body \`${REQUEST_BODY}\`, Content-Type and Authorization: Bearer <project API key> (Loom checks it and drops it before the upstream; nginx passes it on; the upstream ignores it).`,
      `Paced, the goal's measure: \`wrk -t 1 -c ${PACED_CONNECTIONS} -d ${PACED_SECONDS}s\` with a Lua \`delay()\` that pauses each connection a random time between requests, drawn from an exponential distribution with mean ${PACED_MEAN_DELAY_MS} ms (floored to whole ms, as wrk's timers take it), so requests arrive independently of each other at a fixed mean rate (Poisson-like arrivals, as from many clients; wrk's millisecond timers still group some of them) and the machine is far from saturation. wrk cannot hold a fixed rate and wrk2 is not in Debian; the rate above is what that gave. LuaJIT's generator starts from the same seed, so every path gets the same pauses. Latency is wrk's, send → response, per request. Added latency = the path's p50/p99 − direct's p50/p99 in the same round, median over the rounds.`,
      `Lockstep, the earlier measure (bench runs 1–8): the same ${PACED_CONNECTIONS} connections with a fixed ${LOCKSTEP_DELAY_MS} ms pause. They start together and their cycles are equal, so they stay in step: the requests arrive in bursts of ${PACED_CONNECTIONS} within a few µs, one burst every ~2.5 ms, not at a fixed rate. A proxy on one event loop serves a burst one request after another, so this measures how fast a burst of ${PACED_CONNECTIONS} drains, on top of the added latency of a request; nginx's ${NGINX_WORKERS === "auto" ? "two workers (one per core)" : `${NGINX_WORKERS} workers`} share each burst. It is kept beside the goal's measure so the two can be compared run by run.`,
      `Max: \`wrk -t ${MAX_THREADS} -c ${MAX_CONNECTIONS} -d ${MAX_SECONDS}s\` without pause, after a ${WARMUP_SECONDS} s warm-up per path and round. One wrk thread: on 2 cores a second thread takes CPU from the proxy and the upstream, and one thread already drives the direct path past what the proxies reach.`,
      `\`loom gateway --workers ${GATEWAY_WORKERS}\`: ${GATEWAY_WORKERS} gateway processes sharing one port (node:cluster: the primary accepts connections and hands them round robin to the workers), each following \`loom up\`'s API and reporting its load to it, as the loom-gateway Deployment does on Kubernetes; the same replica, key and request. nginx runs one worker per core (\`worker_processes auto\`), so this is the like-for-like configuration; the "Loom gateway" column is the one process that also runs the API and the controllers.`,
      `Each round runs the four paths one after another (order rotated per round); nothing else of the bench runs meanwhile. Errors (socket errors and non-2xx answers) over all runs: ${errors}.`,
      '"max ÷ nginx\'s in the same round" pairs each Loom run with nginx\'s run of the same round (a minute apart at most), so the machine\'s drift between rounds cancels out; the goal below is judged, as before, on the ratio of the medians (the "Loom vs nginx" column), which can pair runs of different rounds.',
      `CPU: user + system time from /proc; "proxy" is Loom's server process (the gateway runs in it, with the API and the controllers) or nginx's master and workers; "whole machine" includes everything on the host, other sessions' work too. wrk, the proxy and the upstream share the machine's 2 cores, so the max figures measure the whole chain on 2 cores, not the proxy alone.`,
      `Loom's p99 added latency goal ≤ ${GOAL_ADDED_P99_MS} ms: ${signedMs(l.addedP99)} ms, ${goalP99 ? "met" : "not met"} (nginx: ${signedMs(n.addedP99)} ms). Throughput: Loom ${fmt(l.rps)} (${GATEWAY_WORKERS} workers: ${fmt(w.rps)}) against nginx ${fmt(n.rps)} requests/s, ${times(l.rps, n.rps)} (${times(w.rps, n.rps)}).`,
    ],
    workload: `1. ${ROUNDS} rounds × 4 paths × (paced ${PACED_SECONDS} s + lockstep ${PACED_SECONDS} s + max ${MAX_SECONDS} s)`,
    goals: [
      `added p99 latency ≤ ${GOAL_ADDED_P99_MS} ms at a paced load (Poisson-like arrivals, ${fmt(l.pacedRps)} requests/s): ${signedMs(l.addedP99)} ms (p99 ${ms(l.p99)} against direct ${ms(d.p99)} ms), ${goalP99 ? "met" : "not met"}; with ${GATEWAY_WORKERS} gateway workers ${signedMs(w.addedP99)} ms; nginx adds ${signedMs(n.addedP99)} ms. In lockstep bursts of ${PACED_CONNECTIONS} (the earlier measure): Loom ${signedMs(l.lockstepAddedP99)} ms, ${GATEWAY_WORKERS} workers ${signedMs(w.lockstepAddedP99)} ms, nginx ${signedMs(n.lockstepAddedP99)} ms`,
      `throughput ≥ 0.5× nginx: Loom's gateway ${fmt(l.rps)} requests/s, ${times(l.rps, n.rps)} nginx's ${fmt(n.rps)}; \`loom gateway --workers ${GATEWAY_WORKERS}\` ${fmt(w.rps)}, ${times(w.rps, n.rps)} (direct ${fmt(d.rps)}); paired with nginx in each round, Loom ${paired("Loom")}; judged on the medians: ${Math.max(l.rps ?? 0, w.rps ?? 0) >= 0.5 * (n.rps ?? Infinity) ? "met" : "not met"}`,
    ],
    ok: errors === 0 && [...paced.values()].every((r) => r.length > 0),
  };
}

// ---------------------------------------------------------------------------------------------
// Part 2: scale from zero

async function partColdStart(
  loom: LoomProcess,
  key: string,
  bin: string,
  modelDir: string,
  workDir: string,
  standalone: number,
): Promise<PartOutput> {
  const replicaPids = () => pidsOfExe(bin).filter((p) => p !== standalone);
  // The replica's own readiness: the same command started by hand, /health polled every ms.
  const byHand: { ready: number; main: number; listen: number }[] = [];
  for (let i = 0; i < COLD_RUNS; i++) {
    const stamps = join(workDir, `hand-${i}.stamps`);
    const u = await startUpstream(bin, { BENCH_STAMPS: stamps });
    const s = readStamps(stamps);
    byHand.push({
      ready: u.readyAt - u.spawnedAt,
      main: s.find((x) => x.what === "main")!.ms - u.spawnedAt,
      listen: s.find((x) => x.what === "listen")!.ms - u.spawnedAt,
    });
    await killGroup(u.proc);
  }
  const readiness = median(byHand.map((r) => r.ready))!;
  log(
    `replica by hand: spawn → /health 200 median ${ms(readiness)} ms (${byHand.map((r) => ms(r.ready)).join(", ")})`,
  );

  const name = "bench-cold";
  // Relative: the replica writes it in its own work dir (LOOM_WORKLOAD_DIR), the one place a
  // sandboxed replica may write; every replica start has a new one under Loom's data dir.
  const stamps = `${name}.stamps`;
  await api(loom, "POST", `${API}/inferenceservices`, isvcManifest(name, bin, modelDir, { min: 0, stamps }));
  cleanups.push(() => deleteIsvcs(loom, [name]));
  log(`${name}: created (min 0); waiting for it to be scaled to zero`);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const headers = { authorization: `Bearer ${key}` };
  const body = JSON.stringify({ model: name, prompt: "hello", max_tokens: 1 });
  const runs: {
    total: number;
    toMain: number;
    mainToListen: number;
    listenToFirst: number;
    firstToEnd: number;
    warm: number;
  }[] = [];
  // Run 0 is the service's very first replica (a min-0 service starts none until asked): not
  // counted, so that every timed run is a replica that has run, scaled to zero, and comes back.
  let firstEver: number | undefined;
  for (let i = -1; i < COLD_RUNS && !aborted; i++) {
    await waitIsvc(
      loom,
      name,
      (s) => s.status?.phase === "ScaledToZero" && replicasOf(s).length === 0,
      "scale to zero",
      30_000,
      100,
    );
    const deadline = Date.now() + 10_000;
    while (replicaPids().length > 0 && Date.now() < deadline) await sleep(20);
    if (replicaPids().length > 0) throw new Error(`${name} scaled to zero but its process still runs`);
    await sleep(500);
    // A kept-alive socket to Loom first, so the timed request pays no TCP connect.
    const models = await new Promise<number>((ok, fail) => {
      const req = request(
        { host: "127.0.0.1", port: loomPort(loom), path: "/v1/models", agent, headers },
        (res) => {
          res.resume();
          res.on("end", () => ok(res.statusCode ?? 0));
        },
      );
      req.on("error", fail);
      req.end();
    });
    if (models !== 200) throw new Error(`GET /v1/models: HTTP ${models}`);
    const t0 = wallMs();
    const r = await post(agent, loomPort(loom), "/v1/completions", body, headers);
    if (r.status !== 200) throw new Error(`cold request ${i + 1}: HTTP ${r.status} ${r.text}`);
    const warm = await post(agent, loomPort(loom), "/v1/completions", body, headers);
    if (warm.status !== 200) throw new Error(`warm request ${i + 1}: HTTP ${warm.status} ${warm.text}`);
    // This start's replica: its main() ran after the request was sent, so its stamps are all later.
    const s = replicaStamps(loom.dataDir, stamps).filter((x) => x.ms >= t0);
    const at = (what: string) => s.find((x) => x.what === what)?.ms;
    const main = at("main");
    const listen = at("listen");
    const first = at("first");
    if (main === undefined || listen === undefined || first === undefined)
      throw new Error(`cold request ${i + 1}: the replica's stamps are missing: ${JSON.stringify(s)}`);
    if (i < 0) {
      firstEver = r.ms;
      log(`first start of ${name} (not counted): ${ms(r.ms)} ms`);
      continue;
    }
    runs.push({
      total: r.ms,
      toMain: main - t0,
      mainToListen: listen - main,
      listenToFirst: first - listen,
      firstToEnd: r.endAt - first,
      warm: warm.ms,
    });
    log(
      `cold start ${i + 1}/${COLD_RUNS}: ${ms(r.ms)} ms (request → replica main ${ms(main - t0)}, → listening ${ms(listen - main)}, → first request forwarded ${ms(first - listen)}, → answered ${ms(r.endAt - first)}); next request ${ms(warm.ms)} ms`,
    );
  }
  agent.destroy();
  const m = (f: (r: (typeof runs)[number]) => number) => median(runs.map(f));
  const total = m((r) => r.total);
  const overhead = total === undefined ? undefined : total - readiness;
  const hand = (f: (r: (typeof byHand)[number]) => number) => median(byHand.map(f));
  const met = overhead !== undefined && overhead <= GOAL_COLD_OVERHEAD_MS;
  // Stricter: against the moment the replica listens (stamps, no polling granularity in it).
  const listening = hand((r) => r.listen);
  const strict = total === undefined || listening === undefined ? undefined : total - listening;
  const table = markdownTable(
    [`scale from zero, ${runs.length} runs (ms)`, "median", "each run"],
    [
      [
        "first request through the gateway, send → last byte",
        ms(total),
        runs.map((r) => ms(r.total)).join(" / "),
      ],
      [
        "· request sent → replica's main() runs",
        ms(m((r) => r.toMain)),
        runs.map((r) => ms(r.toMain)).join(" / "),
      ],
      ["· main() → listening", ms(m((r) => r.mainToListen)), runs.map((r) => ms(r.mainToListen)).join(" / ")],
      [
        "· listening → request reaches the replica",
        ms(m((r) => r.listenToFirst)),
        runs.map((r) => ms(r.listenToFirst)).join(" / "),
      ],
      [
        "· reaches the replica → answer received",
        ms(m((r) => r.firstToEnd)),
        runs.map((r) => ms(r.firstToEnd)).join(" / "),
      ],
      ["the next request (replica warm)", ms(m((r) => r.warm)), runs.map((r) => ms(r.warm)).join(" / ")],
      [
        "replica by hand: spawn → first /health 200 (1 ms polling)",
        ms(readiness),
        byHand.map((r) => ms(r.ready)).join(" / "),
      ],
      [
        "replica by hand: spawn → main() / → listening",
        `${ms(hand((r) => r.main))} / ${ms(hand((r) => r.listen))}`,
        "",
      ],
      [
        "**added by Loom: first request − replica readiness**",
        `**${ms(overhead)}**`,
        runs.map((r) => ms(r.total - readiness)).join(" / "),
      ],
      ["stricter: first request − spawn → listening by hand", ms(strict), ""],
    ],
  );
  return {
    heading: "2. Scale from zero through the gateway",
    blocks: [table],
    notes: [
      `InferenceService \`${name}\`: the same upstream binary, replicas min 0 max 1, scaleToZeroAfter 1s, readiness /health. The service's very first replica (started by the first request after the create) is not counted: ${ms(firstEver)} ms. Before each run the bench waits until the service is ScaledToZero with no replica process left, then 0.5 s more, opens a keep-alive socket to Loom (GET /v1/models), and times one POST /v1/completions with a project API key, send → last byte; then one more request, warm.`,
      "The replica appends wall-clock stamps (µs) when its main() runs, when it listens and when the first completion arrives; with the send and receive times of this process (same clock) they split the cold start: the gateway holds the request and asks for a replica, the controller starts the process; the process starts; Loom sees it ready (readiness probe) and the gateway releases the request; the request goes through.",
      `The replica's own readiness: the same binary started by hand ${COLD_RUNS} times, /health polled every millisecond on a new connection, spawn → first 200; median ${ms(readiness)} ms. Overhead = median first-request time − that readiness. The 1 ms polling (a new connection each time, Node timers on a busy machine) puts a few ms between listening and the first 200, which that figure credits to the replica; the stricter row subtracts only spawn → listening (from the stamps), so it charges Loom with the request's own round trip and the replica's first answer too.`,
      `Goal: ≤ ${GOAL_COLD_OVERHEAD_MS} ms beyond the replica's readiness: ${ms(overhead)} ms, ${met ? "met" : "not met"} (stricter: ${ms(strict)} ms).`,
    ],
    workload: `2. ${COLD_RUNS} cold starts through the gateway, ${COLD_RUNS} replica starts by hand`,
    goals: [
      `scale from zero ≤ ${GOAL_COLD_OVERHEAD_MS} ms beyond the replica's readiness: ${ms(overhead)} ms (first request ${ms(total)} ms, replica ready by hand in ${ms(readiness)} ms; stricter, against spawn → listening: ${ms(strict)} ms), ${met ? "met" : "not met"}`,
    ],
    ok: runs.length === COLD_RUNS,
  };
}

// ---------------------------------------------------------------------------------------------
// Part 3: the cost of gateway-recorded traces

/** Sets spec.tracing on the service and waits until the gateway has it (a request is recorded, or not). */
async function setTracing(loom: LoomProcess, name: string, on: boolean): Promise<void> {
  const res = await fetch(`${loom.url}${API}/inferenceservices/${name}`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${loom.token}`, "content-type": "application/merge-patch+json" },
    body: JSON.stringify({ spec: { tracing: on } }),
  });
  if (res.status !== 200) throw new Error(`PATCH ${name} tracing=${on}: ${res.status} ${await res.text()}`);
  await waitIsvc(
    loom,
    name,
    (s) => s.metadata?.generation === s.status?.observedGeneration,
    "the change to be observed",
  );
  // The directory is republished on the reconcile that observed it; a moment for the gateway's copy.
  await sleep(500);
}

/** How many traces the service's experiment holds (MLflow's search, paged). */
async function traceCount(loom: LoomProcess, name: string): Promise<number> {
  const base = `${loom.url}/mlflow/projects/default/api`;
  const headers = { authorization: `Bearer ${loom.token}`, "content-type": "application/json" };
  const exp = await fetch(
    `${base}/2.0/mlflow/experiments/get-by-name?experiment_name=${encodeURIComponent(`isvc/${name}`)}`,
    { headers },
  );
  if (exp.status !== 200) return 0;
  const id = ((await exp.json()) as { experiment: { experiment_id: string } }).experiment.experiment_id;
  let count = 0;
  let token: string | undefined;
  do {
    const r = await fetch(`${base}/3.0/mlflow/traces/search`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        locations: [{ type: "MLFLOW_EXPERIMENT", mlflow_experiment: { experiment_id: id } }],
        max_results: 500,
        ...(token ? { page_token: token } : {}),
      }),
    });
    const j = (await r.json()) as { traces?: unknown[]; next_page_token?: string };
    count += j.traces?.length ?? 0;
    token = j.next_page_token;
  } while (token);
  return count;
}

async function partTracing(
  loom: LoomProcess,
  key: string,
  served: string,
  modelDir: string,
  work: string,
): Promise<PartOutput> {
  const name = "bench";
  await api(loom, "POST", `${API}/inferenceservices`, isvcManifest(name, served, modelDir, { min: 1 }));
  cleanups.push(() => deleteIsvcs(loom, [name]));
  await waitIsvc(loom, name, (s) => (s.status?.ready ?? 0) >= 1, "its replica to be ready");
  const script = wrkScript(work, "tracing", key, { kind: "none" });
  const url = `http://127.0.0.1:${loomPort(loom)}/v1/completions`;
  const pids = () => ({ proxy: [loom.pid!], upstream: pidsOfExe(served) });
  const off: WrkResult[] = [];
  const on: WrkResult[] = [];
  let tracedRequests = 0;
  await runWrk(url, script, MAX_CONNECTIONS, MAX_THREADS, WARMUP_SECONDS, pids());
  // Alternating, so that a change in the machine's load falls on both alike.
  for (let round = 0; round < TRACE_ROUNDS && !aborted; round++) {
    for (const tracing of [false, true]) {
      await setTracing(loom, name, tracing);
      const r = await runWrk(url, script, MAX_CONNECTIONS, MAX_THREADS, MAX_SECONDS, pids());
      (tracing ? on : off).push(r);
      if (tracing) tracedRequests += r.requests;
      log(
        `tracing ${tracing ? "on " : "off"} round ${round + 1}: ${fmt(r.rps)} req/s, p99 ${ms(r.p99)} ms, Loom ${fmt(r.proxyCores, 2)} cores`,
      );
    }
  }
  await setTracing(loom, name, false);
  const recorded = await traceCount(loom, name);
  await deleteIsvcs(loom, [name]);
  const rpsOff = median(off.map((r) => r.rps));
  const rpsOn = median(on.map((r) => r.rps));
  const ratio = rpsOn !== undefined && rpsOff ? rpsOn / rpsOff : undefined;
  const cost = ratio === undefined ? undefined : 1 - ratio;
  const met = cost !== undefined && cost <= GOAL_TRACE_COST;
  const row = (label: string, rs: WrkResult[]) => [
    label,
    fmt(median(rs.map((r) => r.rps))),
    ms(median(rs.map((r) => r.p50))),
    ms(median(rs.map((r) => r.p99))),
    fmt(median(rs.map((r) => r.proxyCores ?? 0)), 2),
    String(rs.reduce((a, r) => a + r.errors, 0)),
  ];
  const table = markdownTable(
    ["tracing", "req/s (median)", "p50 ms", "p99 ms", "Loom cores", "errors"],
    [row("off", off), row("on", on)],
  );
  const pct = (x: number | undefined) => (x === undefined ? "—" : `${fmt(x * 100, 1)}%`);
  return {
    heading: "3. Gateway throughput with tracing on vs off",
    blocks: [table],
    notes: [
      `The same InferenceService \`${name}\` (the upstream binary, one replica), spec.tracing patched between runs; ${TRACE_ROUNDS} rounds of off then on, each ${MAX_SECONDS} s of wrk at ${MAX_CONNECTIONS} connections, ${MAX_THREADS} thread(s), no pause, on Loom's port with a project API key; medians over rounds.`,
      `Traces recorded while on: ${recorded} of ${tracedRequests} requests (the recorder drops past a backlog of 50,000 and logs it; a trace is written raw after its answer, one row per batch of up to 256 requests every 100 ms, and made into an MLflow record by the first read after it: here the count's search). The event loop's own cost per trace, free of the machine's load, is measured apart by \`npx tsx bench/gateway-trace-cpu.ts\`.`,
      `Throughput on/off: ${ratio === undefined ? "—" : fmt(ratio, 3)}; cost of a trace ${pct(cost)}.`,
    ],
    workload: `3. ${TRACE_ROUNDS}×2 runs of ${MAX_SECONDS} s, tracing off/on`,
    goals: [
      `cost of a trace ≤ ${pct(GOAL_TRACE_COST)} of throughput: ${pct(cost)} (on/off ${ratio === undefined ? "—" : fmt(ratio, 3)}), ${met ? "met" : "not met"}`,
    ],
    ok: off.length === TRACE_ROUNDS && on.length === TRACE_ROUNDS,
  };
}

const loomPort = (loom: LoomProcess) => Number(new URL(loom.url).port);

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const startedAt = new Date();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      aborted = true;
      void cleanupAll().finally(() => process.exit(130));
    });
  }
  const missing = ["wrk", "nginx", "go"].filter((c) => !which(c));
  if (missing.length) {
    console.error(
      `bench:gateway needs ${missing.join(", ")} on PATH: apt-get install -y wrk nginx (Debian), and Go for the upstream`,
    );
    process.exitCode = 2;
    return;
  }
  const m = machine();
  const load = loadNow();
  console.log(
    `bench:gateway — parts ${PARTS.join(", ")}; ${ROUNDS} rounds × (paced ${PACED_SECONDS} s + lockstep ${PACED_SECONDS} s + max ${MAX_SECONDS} s) per path, ${COLD_RUNS} cold starts`,
  );
  console.log(
    `machine: ${m.cpus} CPUs, ${m.model}, ${m.memGiB} GiB, Node ${process.version}; load average ${load}`,
  );
  const watchdog = setTimeout(() => {
    aborted = true;
    console.error(`bench:gateway ran past its ${BUDGET_MS / 1000} s budget; stopping everything`);
    void cleanupAll().finally(() => process.exit(2));
  }, BUDGET_MS);
  watchdog.unref();

  const work = tempDir("loom-bench-gateway-");
  chmodSync(work, 0o755);
  const bin = buildUpstream(work);
  // Last line of defence: any replica Loom left behind runs our binary, from our temp dir.
  cleanups.push(async () => {
    for (const pid of pidsOfExe(bin)) process.kill(pid, "SIGKILL");
  });
  const modelDir = join(work, "model");
  mkdirSync(modelDir);
  // The replica's copy of the binary, in its model directory: a sandboxed replica sees only what
  // it is lent (its model read-only), not this temp dir.
  const served = join(modelDir, "upstream");
  copyFileSync(bin, served);
  chmodSync(served, 0o755);
  cleanups.push(async () => {
    for (const pid of pidsOfExe(served)) process.kill(pid, "SIGKILL");
  });
  const versions = {
    nginx: versionOf("nginx", ["-v"]).replace(/^nginx version: /, ""),
    wrk: versionOf("wrk", ["-v"]).split(" ").slice(0, 2).join(" "),
    go: versionOf("go", ["version"]).replace(/^go version /, ""),
  };
  log(`peers: ${versions.nginx}, ${versions.wrk}, upstream built with ${versions.go}`);

  log("starting the upstream, nginx and loom up");
  const upstream = await startUpstream(bin);
  const nginx = await startNginx(upstream.port);
  const loom = new LoomProcess();
  cleanups.push(() => loom.stop());
  await loom.start();
  const key = ((await api(loom, "POST", `${API}/apikeys`, { name: "bench" })) as { key: string }).key;
  const services: string[] = [];
  if (PARTS.includes("1")) {
    await api(loom, "POST", `${API}/inferenceservices`, isvcManifest("bench", served, modelDir, { min: 1 }));
    services.push("bench");
    cleanups.push(() => deleteIsvcs(loom, ["bench"]));
    await waitIsvc(loom, "bench", (s) => (s.status?.ready ?? 0) >= 1, "its replica to be ready");
  }
  const gatewayPort = await freePort();
  let gatewayPid = 0;
  if (PARTS.includes("1")) {
    const tokenFile = join(work, "gateway-token");
    writeFileSync(tokenFile, loom.token);
    const g = loom.cliBackground([
      "gateway",
      "--api",
      loom.url,
      "--token-file",
      tokenFile,
      "--port",
      String(gatewayPort),
      "--workers",
      String(GATEWAY_WORKERS),
    ]);
    gatewayPid = g.proc.pid!;
    cleanups.push(async () => {
      g.proc.kill("SIGTERM");
      await sleep(500);
    });
    for (let i = 0; ; i++) {
      if ((await probe(gatewayPort, "/healthz")) === 200) break;
      if (i > 300 || g.proc.exitCode !== null) throw new Error(`loom gateway did not start: ${g.output()}`);
      await sleep(100);
    }
  }
  log(
    `loom up at ${loom.url} (pid ${loom.pid}); loom gateway ×${GATEWAY_WORKERS} on ${gatewayPort}; nginx on ${nginx.port}; upstream on ${upstream.port}`,
  );

  const outputs: PartOutput[] = [];
  if (PARTS.includes("1")) {
    try {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const urls = { direct: upstream.port, Loom: loomPort(loom), Loom2: gatewayPort, nginx: nginx.port };
      let responseBytes = 0;
      for (const [name, port] of Object.entries(urls)) {
        const r = await post(agent, port, "/v1/completions", REQUEST_BODY, {
          authorization: `Bearer ${key}`,
        });
        if (r.status !== 200 || !r.text.includes("text_completion"))
          throw new Error(`${name}: HTTP ${r.status} ${r.text}`);
        responseBytes = Buffer.byteLength(r.text);
      }
      agent.destroy();
      const replicaPids = () => pidsOfExe(bin).filter((p) => p !== upstream.proc.pid);
      const paths: Path[] = [
        {
          name: "direct",
          url: `http://127.0.0.1:${upstream.port}/v1/completions`,
          pids: () => ({ proxy: [], upstream: [upstream.proc.pid!] }),
        },
        {
          name: "Loom",
          url: `http://127.0.0.1:${loomPort(loom)}/v1/completions`,
          pids: () => ({ proxy: [loom.pid!], upstream: replicaPids() }),
        },
        {
          name: "Loom2",
          url: `http://127.0.0.1:${gatewayPort}/v1/completions`,
          pids: () => ({ proxy: [gatewayPid], upstream: replicaPids() }),
        },
        {
          name: "nginx",
          url: `http://127.0.0.1:${nginx.port}/v1/completions`,
          pids: () => ({ proxy: [nginx.proc.pid!], upstream: [upstream.proc.pid!] }),
        },
      ];
      const scripts = {
        paced: wrkScript(work, "paced", key, { kind: "exponential", meanMs: PACED_MEAN_DELAY_MS }),
        lockstep: wrkScript(work, "lockstep", key, { kind: "fixed", ms: LOCKSTEP_DELAY_MS }),
        max: wrkScript(work, "max", key, { kind: "none" }),
      };
      outputs.push(await partOverhead(paths, scripts, responseBytes));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log(`part 1 FAILED: ${message}`);
      outputs.push({
        heading: "1. failed",
        blocks: [],
        notes: [`Part 1 failed: ${message}`],
        workload: "",
        goals: [],
        ok: false,
      });
    }
    // The throughput service goes, so that part 2 has the machine to itself.
    await deleteIsvcs(loom, services);
  }
  if (PARTS.includes("2") && !aborted) {
    try {
      outputs.push(await partColdStart(loom, key, served, modelDir, work, upstream.proc.pid!));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log(`part 2 FAILED: ${message}`);
      outputs.push({
        heading: "2. failed",
        blocks: [],
        notes: [`Part 2 failed: ${message}`],
        workload: "",
        goals: [],
        ok: false,
      });
    }
  }
  if (PARTS.includes("3") && !aborted) {
    try {
      outputs.push(await partTracing(loom, key, served, modelDir, work));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log(`part 3 FAILED: ${message}`);
      // What the server said about it (an internal error's details are only in its log).
      for (const line of loom.log
        .split("\n")
        .filter((l) => /"level":(40|50)/.test(l))
        .slice(-5))
        log(line.slice(0, 2000));
      outputs.push({
        heading: "3. failed",
        blocks: [],
        notes: [`Part 3 failed: ${message}`],
        workload: "",
        goals: [],
        ok: false,
      });
    }
  }
  await cleanupAll();
  if (aborted) {
    process.exitCode = 2;
    return;
  }
  const left = pidsOfExe(bin);
  if (left.length) console.error(`processes of the upstream left behind: ${left.join(", ")}`);

  for (const o of outputs) {
    console.log(`\n${o.heading}\n`);
    for (const b of o.blocks) console.log(`${b}\n`);
    for (const n of o.notes) console.log(`- ${n}`);
  }
  const goals = outputs.flatMap((o) => o.goals);
  if (goals.length) console.log(`\nGoals:\n${goals.map((g) => `- ${g}`).join("\n")}`);

  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
  const date = startedAt.toISOString().replace("T", " ").slice(0, 16);
  const section = [
    `## ${date} UTC — bench:gateway`,
    "",
    `- Machine: ${m.cpus} CPUs (availableParallelism), ${m.model}, ${m.memGiB} GiB memory, Node ${process.version}, ${platform()}/${arch()}; load average at start ${load}, at end ${loadNow()}`,
    `- Versions: Loom ${pkg.version} (${loomCommit()}; \`loom up\`, embedded, temp data dir; the gateway on Loom's port, a project API key); peer: ${versions.nginx} (Debian); load generator ${versions.wrk} (Debian); upstream bench/gateway-upstream.go built with ${versions.go}`,
    `- Peer config: nginx started by the bench from a temp dir (\`nginx -p <tmp> -c <tmp>/nginx.conf\`): \`worker_processes ${NGINX_WORKERS}\`, \`access_log off\`, \`upstream { server 127.0.0.1:<port>; keepalive 128; keepalive_requests 1000000; keepalive_timeout 600s; }\`, server \`keepalive_requests 1000000\`, \`keepalive_timeout 600s\`, \`location / { proxy_pass http://model; proxy_http_version 1.1; proxy_set_header Connection ""; }\`; everything else nginx's defaults (proxy_buffering on).`,
    `- CPU: wrk, the proxy (Loom's server or nginx), the upstream and this bench process share the ${m.cpus} cores; one path is under load at a time.`,
    ...partsSection(outputs, began, goals),
  ].join("\n");
  publishResults(section, outputs, "LOOM_BENCH_GATEWAY_RESULTS");
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanupAll().finally(() => process.exit()));

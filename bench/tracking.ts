/**
 * Tracking benchmark: Loom's MLflow-compatible tracking API against the real MLflow server
 * (`mlflow server`, pinned from PyPI), with the same client load, in the same run:
 *
 *  1. log_batch throughput: C concurrent clients (20), each posting runs/log-batch with 10 metric
 *     points to its own run, for a fixed time → requests/s, points/s, p50/p99 latency.
 *  2. create_run latency: sequential runs/create (200) → p50/p99.
 *  3. search_runs latency over 10,000 runs in one experiment (each with a param and a metric):
 *     (a) no filter, (b) `metrics.m > 0.5 and params.p = 'x'` ordered by `metrics.m DESC`, both
 *     max_results 100 → p50/p99; the answers are checked against what they must be.
 *  4. metrics/get-history of one metric with 100,000 points (logged in log-batch chunks of 1,000,
 *     MLflow's limit) → p50; both must return every point.
 *
 * Loom is a real `loom up` (test/helpers.ts's LoomProcess: temp data dir, port 0). MLflow runs
 * from a venv made once under ~/.cache/loom/bench-envs. Both servers are up during the whole
 * bench, and each part runs Loom first, then MLflow, never both at once. The load comes from
 * this process over keep-alive HTTP (node:http). The bench prints a table per part and appends
 * a dated section to bench/RESULTS.md. Run with `npm run bench:tracking`; see bench/README.md.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { arch, availableParallelism, homedir, platform } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { LoomProcess } from "../test/helpers.js";
import {
  cleanupAll,
  cleanups,
  fmt,
  freePort,
  loadNow,
  loomCommit,
  machine,
  markdownTable,
  median,
  num,
  partsSection,
  pct,
  publishResults,
  sleep,
  tempDir,
} from "./report.js";

const env = process.env;
/** Part 1: how long the clients post, after a warm-up that is not counted. */
const SECONDS = num(env.LOOM_BENCH_TRACKING_SECONDS, 10);
const WARMUP_SECONDS = num(env.LOOM_BENCH_TRACKING_WARMUP_SECONDS, 2);
/** Part 1: concurrent clients, each with its own run and keep-alive socket. */
const CLIENTS = num(env.LOOM_BENCH_TRACKING_CLIENTS, 20);
/** Part 1: metric points per log-batch request. */
const BATCH = num(env.LOOM_BENCH_TRACKING_BATCH, 10);
/** Part 2: sequential runs/create. */
const CREATES = num(env.LOOM_BENCH_TRACKING_CREATES, 200);
/** Part 3: runs in the searched experiment, how many requests fill it at once, and repetitions. */
const SEARCH_RUNS = num(env.LOOM_BENCH_TRACKING_SEARCH_RUNS, 10_000);
const POPULATE_CONCURRENCY = num(env.LOOM_BENCH_TRACKING_POPULATE_CONCURRENCY, 20);
const SEARCH_REPS = num(env.LOOM_BENCH_TRACKING_SEARCH_REPS, 20);
/** Part 4: points of the one metric, per log-batch request (MLflow's limit is 1,000), repetitions. */
const HISTORY_POINTS = num(env.LOOM_BENCH_TRACKING_HISTORY_POINTS, 100_000);
const HISTORY_CHUNK = num(env.LOOM_BENCH_TRACKING_HISTORY_CHUNK, 1000);
const HISTORY_REPS = num(env.LOOM_BENCH_TRACKING_HISTORY_REPS, 5);
/** MLflow's uvicorn workers: one per core. */
const MLFLOW_WORKERS = num(env.LOOM_BENCH_TRACKING_MLFLOW_WORKERS, availableParallelism());
/** 1: MLflow's SQLite database in WAL mode (set before the server creates its tables); 0: MLflow's default. */
const MLFLOW_WAL = env.LOOM_BENCH_TRACKING_MLFLOW_WAL !== "0";
const PARTS = (env.LOOM_BENCH_TRACKING_PARTS ?? "1,2,3,4")
  .split(",")
  .map((p) => p.trim())
  .filter(Boolean);
/** The whole bench (after the venv exists) stops by then: a watchdog ends it and cleans up. */
const BUDGET_MS = num(env.LOOM_BENCH_TRACKING_BUDGET_S, 720) * 1000;
/** Goals from the issue. */
const GOAL_THROUGHPUT = 10;
const GOAL_SEARCH = 10;

const MLFLOW_VERSION = "3.17.2";
const VENV = join(homedir(), ".cache", "loom", "bench-envs", `mlflow-${MLFLOW_VERSION}`);
const API = "/api/2.0/mlflow";

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = join(BENCH_DIR, "..");

const began = performance.now();
const log = (msg: string) =>
  console.log(`[${((performance.now() - began) / 1000).toFixed(0).padStart(4)} s] ${msg}`);

// ---------------------------------------------------------------------------------------------
// Cleanup and watchdog

/** Set by the watchdog: the servers are going away, so no part's figures count. */
let aborted = false;

// ---------------------------------------------------------------------------------------------
// Formatting and statistics

/** Milliseconds: one decimal below 10 ms, none above. */
const ms = (x: number | undefined) => fmt(x, x !== undefined && x < 10 ? 1 : 0);

function quotient(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0)
    return undefined;
  return a / b;
}

/** Throughput: Loom ÷ MLflow. */
const more = (loom: number | undefined, mlflow: number | undefined) => {
  const q = quotient(loom, mlflow);
  return q === undefined ? "—" : `${fmt(q, q < 10 ? 2 : 1)}×`;
};
/** Latency: MLflow ÷ Loom, "× faster". */
const faster = (loom: number | undefined, mlflow: number | undefined) => {
  const q = quotient(mlflow, loom);
  return q === undefined ? "—" : `${fmt(q, q < 10 ? 2 : 1)}× faster`;
};

/** What one part hands back: its tables and notes, in print order. */
interface PartOutput {
  heading: string;
  blocks: string[];
  notes: string[];
  workload: string;
  /** One line per goal of the issue that the part checks: the figure and whether it was met. */
  goals: string[];
  /** false when the part could not measure what it is for (the exit status says so). */
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------
// CPU time of a process tree, from /proc

const CLK_TCK = 100;

/** User + system seconds of root and all its live descendants. */
function treeCpuSeconds(root: number | undefined): number | undefined {
  if (root === undefined) return undefined;
  const procs = new Map<number, { ppid: number; ticks: number }>();
  let names: string[];
  try {
    names = readdirSync("/proc");
  } catch {
    return undefined;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
      procs.set(Number(name), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // gone meanwhile
    }
  }
  const children = new Map<number, number[]>();
  for (const [pid, p] of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), pid]);
  let ticks = 0;
  const stack = [root];
  for (let pid = stack.pop(); pid !== undefined; pid = stack.pop()) {
    ticks += procs.get(pid)?.ticks ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return ticks / CLK_TCK;
}

/** Busy seconds of the whole machine (all cores) from /proc/stat: everything but idle and iowait. */
function machineBusySeconds(): number | undefined {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0);
    return busy / CLK_TCK;
  } catch {
    return undefined;
  }
}

const benchCpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

// ---------------------------------------------------------------------------------------------
// HTTP: the same client for both servers

interface Side {
  name: "Loom" | "MLflow";
  host: string;
  port: number;
  /** Prefix of the MLflow REST paths (Loom serves the default project's at the root). */
  prefix: string;
  headers: Record<string, string>;
  /** The server's root process (its tree's CPU is measured). */
  pid: () => number | undefined;
}

interface Reply {
  status: number;
  text: string;
  /** Send → the last byte of the response, ms. */
  ms: number;
}

/** A request the server answered with an error, or not at all: what was sent and what came back. */
class RequestFailed extends Error {
  constructor(
    readonly side: string,
    readonly what: string,
    readonly detail: string,
  ) {
    super(`${side} failed ${what}: ${detail}`);
  }
}

const clip = (s: string, n = 600) => (s.length > n ? `${s.slice(0, n)}… (${s.length} chars)` : s);

/** A keep-alive agent per phase, so no phase reuses a socket a server closed while idle. */
function newAgent(sockets: number): Agent {
  const agent = new Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
  return agent;
}

function send(side: Side, agent: Agent, method: "GET" | "POST", path: string, body?: string): Promise<Reply> {
  return new Promise((ok, fail) => {
    const headers: Record<string, string | number> = { ...side.headers, accept: "application/json" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = Buffer.byteLength(body);
    }
    const t0 = performance.now();
    const req = request({ host: side.host, port: side.port, method, path, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        ok({
          status: res.statusCode ?? 0,
          text: Buffer.concat(chunks).toString("utf8"),
          ms: performance.now() - t0,
        }),
      );
      res.on("error", fail);
    });
    req.on("error", fail);
    req.end(body);
  });
}

/** Sends and insists on 200; a failure carries the request and the response. */
async function call(
  side: Side,
  agent: Agent,
  method: "GET" | "POST",
  endpoint: string,
  body?: unknown,
): Promise<Reply & { json: () => unknown }> {
  const path = `${side.prefix}${API}/${endpoint}`;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const what = `${method} ${path}${payload === undefined ? "" : ` with body ${clip(payload)}`}`;
  let r: Reply;
  try {
    r = await send(side, agent, method, path, payload);
  } catch (err) {
    throw new RequestFailed(side.name, what, `no response: ${String(err)}`);
  }
  if (r.status !== 200) throw new RequestFailed(side.name, what, `HTTP ${r.status}: ${clip(r.text)}`);
  return { ...r, json: () => JSON.parse(r.text) as unknown };
}

async function createExperiment(side: Side, agent: Agent, name: string): Promise<string> {
  const r = await call(side, agent, "POST", "experiments/create", { name });
  return (r.json() as { experiment_id: string }).experiment_id;
}

async function createRun(side: Side, agent: Agent, body: Record<string, unknown>): Promise<string> {
  const r = await call(side, agent, "POST", "runs/create", body);
  return (r.json() as { run: { info: { run_id: string } } }).run.info.run_id;
}

/** n tasks, `width` at a time. */
async function pool(n: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      for (let i = next++; i < n; i = next++) await task(i);
    }),
  );
}

/** One name per bench run, so nothing clashes with what a side already holds. */
const STAMP = Date.now().toString(36);

// ---------------------------------------------------------------------------------------------
// The peer: MLflow from PyPI in a cached venv

function ensureVenv(): void {
  if (existsSync(join(VENV, ".ready"))) return;
  rmSync(VENV, { recursive: true, force: true });
  mkdirSync(dirname(VENV), { recursive: true });
  log(`creating ${VENV} (python3 -m venv; pip install mlflow==${MLFLOW_VERSION}; ~80 s and ~850 MB once)`);
  const t0 = performance.now();
  for (const cmd of [
    ["python3", "-m", "venv", VENV],
    [join(VENV, "bin", "python"), "-m", "pip", "install", "--quiet", `mlflow==${MLFLOW_VERSION}`],
  ]) {
    log(`$ ${cmd.join(" ")}`);
    const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", stdio: ["ignore", "inherit", "pipe"] });
    if (r.status !== 0) throw new Error(`${cmd.join(" ")} failed (${r.status}): ${r.stderr}`);
  }
  writeFileSync(join(VENV, ".ready"), `mlflow==${MLFLOW_VERSION}\n`);
  log(`venv ready in ${fmt((performance.now() - t0) / 1000)} s`);
}

function peerVersions(): string {
  try {
    return execFileSync(
      join(VENV, "bin", "python"),
      [
        "-c",
        "import sys, mlflow, uvicorn, sqlalchemy, sqlite3; print(f'MLflow {mlflow.__version__}, uvicorn {uvicorn.__version__}, SQLAlchemy {sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}')",
      ],
      { encoding: "utf8" },
    ).trim();
  } catch {
    return `MLflow ${MLFLOW_VERSION}`;
  }
}

let mlflowArgs: string[] = [];
let mlflowDir = "";

/** The command line MLflow was started with, as one would type it. */
function peerCommand(): string {
  const shown = mlflowArgs.map((a, i) => {
    const arg = mlflowDir ? a.replaceAll(mlflowDir, "<tmp>") : a;
    return mlflowArgs[i - 1] === "--port"
      ? "<free port>"
      : mlflowArgs[i - 1] === "--uvicorn-opts"
        ? `"${arg}"`
        : arg;
  });
  return `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ${shown.join(" ")}`;
}

/** Kills the whole process group: SIGTERM, then SIGKILL to whatever is left. */
async function killGroup(proc: ChildProcess): Promise<void> {
  const pgid = proc.pid;
  if (pgid === undefined) return;
  const alive = () => {
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
  const deadline = Date.now() + 10_000;
  while (alive() && Date.now() < deadline) await sleep(100);
  if (alive()) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

async function startMlflow(): Promise<Side> {
  const dir = tempDir("loom-bench-mlflow-");
  mlflowDir = dir;
  const db = join(dir, "mlflow.db");
  if (MLFLOW_WAL)
    execFileSync(join(VENV, "bin", "python"), [
      "-c",
      "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute('pragma journal_mode=wal').fetchone()[0]); c.close()",
      db,
    ]);
  const port = await freePort();
  mlflowArgs = [
    "server",
    "--backend-store-uri",
    `sqlite:///${db}`,
    "--default-artifact-root",
    join(dir, "artifacts"),
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--workers",
    String(MLFLOW_WORKERS),
    "--uvicorn-opts",
    "--no-access-log",
  ];
  const proc = spawn(join(VENV, "bin", "mlflow"), mlflowArgs, {
    cwd: dir,
    // No huey job runner: it serves MLflow's GenAI jobs, none of which this bench uses.
    env: { ...process.env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION: "false" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own process group: uvicorn's supervisor, workers and resource tracker
  });
  cleanups.push(() => killGroup(proc));
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const side: Side = {
    name: "MLflow",
    host: "127.0.0.1",
    port,
    prefix: "",
    headers: {},
    pid: () => proc.pid,
  };
  // Up when /health answers and every worker has said "Application startup complete".
  const deadline = Date.now() + 120_000;
  const agent = newAgent(1);
  try {
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new Error(`mlflow server exited (${proc.exitCode ?? proc.signalCode}):\n${out.slice(-3000)}`);
      const ready = (out.match(/Application startup complete/g) ?? []).length >= MLFLOW_WORKERS;
      const health = await send(side, agent, "GET", "/health").catch(() => undefined);
      if (ready && health?.status === 200 && health.text.trim() === "OK") return side;
      await sleep(250);
    }
  } finally {
    agent.destroy();
  }
  throw new Error(`mlflow server did not answer /health within 120 s:\n${out.slice(-3000)}`);
}

// ---------------------------------------------------------------------------------------------
// Loom

async function startLoom(): Promise<Side> {
  const s = new LoomProcess();
  cleanups.push(() => s.stop());
  await s.start();
  const u = new URL(s.url);
  return {
    name: "Loom",
    host: u.hostname,
    port: Number(u.port),
    prefix: u.pathname.replace(/\/$/, ""),
    headers: { authorization: `Bearer ${s.token}` },
    pid: () => s.pid,
  };
}

// ---------------------------------------------------------------------------------------------
// 1. log_batch throughput

interface ThroughputResult {
  requests: number;
  windowS: number;
  latencies: number[];
  errors: number;
  firstError?: string;
  serverCpuS?: number;
  benchCpuS: number;
  machineCpuS?: number;
}

async function logBatchThroughput(side: Side): Promise<ThroughputResult> {
  const agent = newAgent(CLIENTS);
  try {
    const exp = await createExperiment(side, agent, `bench-log-batch-${STAMP}`);
    const runs: string[] = [];
    for (let c = 0; c < CLIENTS; c++)
      runs.push(
        await createRun(side, agent, { experiment_id: exp, run_name: `client-${c}`, start_time: Date.now() }),
      );
    const t0 = performance.now();
    const from = t0 + WARMUP_SECONDS * 1000;
    const until = from + SECONDS * 1000;
    const latencies: number[] = [];
    let errors = 0;
    let firstError: string | undefined;
    const sent = new Array<number>(CLIENTS).fill(0);
    type Snap = { server?: number; bench: number; machine?: number };
    let cpu0: Snap | undefined;
    let cpu1: Snap | undefined;
    let windowFrom = from;
    let windowUntil = until;
    const snap = (): Snap => ({
      server: treeCpuSeconds(side.pid()),
      bench: benchCpuSeconds(),
      machine: machineBusySeconds(),
    });
    const timers = [
      setTimeout(() => {
        windowFrom = performance.now();
        cpu0 = snap();
      }, from - t0),
      setTimeout(() => {
        windowUntil = performance.now();
        cpu1 = snap();
      }, until - t0),
    ];
    const base = Date.now();
    await Promise.all(
      runs.map(async (runId, c) => {
        for (let k = 0; performance.now() < until; k++) {
          const metrics = Array.from({ length: BATCH }, (_, i) => ({
            key: `m${i}`,
            value: Math.sin(k + i),
            timestamp: base + k * BATCH + i,
            step: k * BATCH + i,
          }));
          try {
            const r = await call(side, agent, "POST", "runs/log-batch", { run_id: runId, metrics });
            const end = performance.now();
            sent[c]! += 1;
            if (end >= windowFrom && end <= windowUntil) latencies.push(r.ms);
          } catch (err) {
            errors++;
            firstError ??= err instanceof Error ? err.message : String(err);
            if (err instanceof RequestFailed && err.detail.startsWith("no response")) return;
          }
        }
      }),
    );
    for (const t of timers) clearTimeout(t);
    // Every point of client 0 must be in its history.
    if (errors === 0) {
      const h = await call(side, agent, "GET", `metrics/get-history?run_id=${runs[0]}&metric_key=m0`);
      const n = ((h.json() as { metrics?: unknown[] }).metrics ?? []).length;
      if (n !== sent[0]) {
        errors++;
        firstError = `client 0 posted ${sent[0]} batches but the history of m0 has ${n} points`;
      }
    }
    return {
      requests: latencies.length,
      windowS: (windowUntil - windowFrom) / 1000,
      latencies,
      errors,
      firstError,
      serverCpuS:
        cpu0?.server !== undefined && cpu1?.server !== undefined ? cpu1.server - cpu0.server : undefined,
      benchCpuS: (cpu1?.bench ?? 0) - (cpu0?.bench ?? 0),
      machineCpuS:
        cpu0?.machine !== undefined && cpu1?.machine !== undefined ? cpu1.machine - cpu0.machine : undefined,
    };
  } finally {
    agent.destroy();
  }
}

async function partLogBatch(loom: Side, mlflow: Side): Promise<PartOutput> {
  const res: Record<string, ThroughputResult> = {};
  for (const side of [loom, mlflow]) {
    log(`1. log_batch: ${side.name}, ${CLIENTS} clients, ${WARMUP_SECONDS} s warm-up + ${SECONDS} s`);
    const r = await logBatchThroughput(side);
    res[side.name] = r;
    log(
      `1. log_batch: ${side.name} ${fmt(r.requests / r.windowS)} requests/s, p50 ${ms(median(r.latencies))} ms, p99 ${ms(pct(r.latencies, 99))} ms, ${r.errors} errors; load average ${loadNow()}`,
    );
    if (r.firstError) log(`1. log_batch: ${side.name} first error: ${r.firstError}`);
  }
  const l = res.Loom!;
  const m = res.MLflow!;
  const rps = (r: ThroughputResult) => r.requests / r.windowS;
  const cores = (r: ThroughputResult, cpu: number | undefined) =>
    cpu === undefined ? undefined : cpu / r.windowS;
  const others = (r: ThroughputResult) =>
    r.machineCpuS === undefined || r.serverCpuS === undefined
      ? undefined
      : Math.max(0, r.machineCpuS - r.serverCpuS - r.benchCpuS);
  const perK = (r: ThroughputResult) =>
    r.serverCpuS === undefined || r.requests === 0 ? undefined : (r.serverCpuS / r.requests) * 1000;
  const table = markdownTable(
    [`log_batch: ${CLIENTS} clients × ${BATCH} points, ${SECONDS} s`, "Loom", "MLflow", "Loom vs MLflow"],
    [
      ["requests/s", fmt(rps(l)), fmt(rps(m)), more(rps(l), rps(m))],
      ["metric points/s", fmt(rps(l) * BATCH), fmt(rps(m) * BATCH), more(rps(l), rps(m))],
      [
        "latency p50 (ms)",
        ms(median(l.latencies)),
        ms(median(m.latencies)),
        faster(median(l.latencies), median(m.latencies)),
      ],
      [
        "latency p99 (ms)",
        ms(pct(l.latencies, 99)),
        ms(pct(m.latencies, 99)),
        faster(pct(l.latencies, 99), pct(m.latencies, 99)),
      ],
      ["requests in the window", fmt(l.requests), fmt(m.requests), ""],
      ["errors", fmt(l.errors), fmt(m.errors), ""],
      ["server CPU (cores busy)", fmt(cores(l, l.serverCpuS), 2), fmt(cores(m, m.serverCpuS), 2), ""],
      ["load generator CPU (cores busy)", fmt(cores(l, l.benchCpuS), 2), fmt(cores(m, m.benchCpuS), 2), ""],
      [
        "other processes on the machine (cores busy)",
        fmt(cores(l, others(l)), 2),
        fmt(cores(m, others(m)), 2),
        "",
      ],
      [
        "server CPU per 1,000 requests (s)",
        fmt(perK(l), 2),
        fmt(perK(m), 2),
        quotient(perK(m), perK(l)) === undefined ? "—" : `${fmt(quotient(perK(m), perK(l)), 1)}× less`,
      ],
    ],
  );
  const ratio = quotient(rps(l), rps(m));
  const goal =
    ratio === undefined
      ? `log_batch throughput ≥ ${GOAL_THROUGHPUT}× MLflow's: could not be checked`
      : `log_batch throughput ≥ ${GOAL_THROUGHPUT}× MLflow's: ${fmt(ratio, 2)}× (${fmt(rps(l))} against ${fmt(rps(m))} requests/s), ${ratio >= GOAL_THROUGHPUT ? "met" : "missed"}`;
  const notes = [
    `Each of ${CLIENTS} clients has its own run and its own keep-alive socket, and posts \`runs/log-batch\` with ${BATCH} points (keys m0…m${BATCH - 1}, each point with its own step and timestamp) as soon as the previous answer is in. Counted: the responses that arrived in the ${SECONDS} s window after a ${WARMUP_SECONDS} s warm-up; the latency is send → last byte of the response. Afterwards, the history of client 0's m0 must hold one point per batch it posted.`,
    `"Server CPU" is user + system time of the server's process tree (/proc) in the window, in cores; "load generator CPU" is the bench process's own; "other processes" is the rest of the machine's busy time (/proc/stat), work that was not this bench's. The server and the load generator share the machine's ${availableParallelism()} cores, so a server that needs less CPU per request leaves more to the client, and a client that needs more per request leaves less to the server.`,
    `Loom checks a bearer token on every request; MLflow runs without authentication, its default.`,
    `Goal: ${goal}.`,
    ...[l, m].flatMap((r, i) =>
      r.firstError ? [`${i ? "MLflow" : "Loom"}'s first error: ${r.firstError}`] : [],
    ),
  ];
  return {
    heading: "1. log_batch throughput",
    blocks: [table],
    notes,
    workload: `1. ${CLIENTS} clients × log-batch of ${BATCH} points for ${SECONDS} s (+${WARMUP_SECONDS} s warm-up)`,
    goals: [goal],
    ok: l.errors === 0 && m.errors === 0 && l.requests > 0 && m.requests > 0,
  };
}

// ---------------------------------------------------------------------------------------------
// 2. create_run latency

async function createLatency(side: Side): Promise<number[]> {
  const agent = newAgent(1);
  try {
    const exp = await createExperiment(side, agent, `bench-create-${STAMP}`);
    const out: number[] = [];
    const body = (i: number) => ({
      experiment_id: exp,
      user_id: "bench",
      run_name: `create-${i}`,
      start_time: Date.now(),
      // What mlflow.start_run sends.
      tags: [
        { key: "mlflow.user", value: "bench" },
        { key: "mlflow.source.name", value: "bench/tracking.ts" },
        { key: "mlflow.source.type", value: "LOCAL" },
        { key: "mlflow.runName", value: `create-${i}` },
      ],
    });
    for (let i = 0; i < 10; i++) await call(side, agent, "POST", "runs/create", body(-1 - i)); // warm-up
    for (let i = 0; i < CREATES; i++) out.push((await call(side, agent, "POST", "runs/create", body(i))).ms);
    return out;
  } finally {
    agent.destroy();
  }
}

async function partCreate(loom: Side, mlflow: Side): Promise<PartOutput> {
  const res: Record<string, number[]> = {};
  for (const side of [loom, mlflow]) {
    log(`2. create_run: ${side.name}, ${CREATES} sequential`);
    res[side.name] = await createLatency(side);
    log(`2. create_run: ${side.name} p50 ${ms(median(res[side.name]!))} ms; load average ${loadNow()}`);
  }
  const l = res.Loom!;
  const m = res.MLflow!;
  const row = (label: string, f: (xs: number[]) => number | undefined) => [
    label,
    ms(f(l)),
    ms(f(m)),
    faster(f(l), f(m)),
  ];
  const table = markdownTable(
    [`runs/create, ${CREATES} sequential (ms)`, "Loom", "MLflow", "Loom vs MLflow"],
    [
      row("p50", median),
      row("p99", (xs) => pct(xs, 99)),
      row("mean", (xs) => xs.reduce((a, b) => a + b, 0) / xs.length),
    ],
  );
  return {
    heading: "2. create_run latency",
    blocks: [table],
    notes: [
      `One client, one request at a time, after 10 untimed ones. Each request is what \`mlflow.start_run\` sends: experiment_id, user_id, run_name, start_time and the tags mlflow.user, mlflow.source.name, mlflow.source.type, mlflow.runName. Both servers answer with the whole run.`,
    ],
    workload: `2. ${CREATES} sequential runs/create`,
    goals: [],
    ok: l.length === CREATES && m.length === CREATES,
  };
}

// ---------------------------------------------------------------------------------------------
// 3. search_runs over SEARCH_RUNS runs

/** Run i: param p = 'x' for even i, 'y' for odd; metric m distinct in [0, 1); start_time t0 + i. */
const P_OF = (i: number) => (i % 2 === 0 ? "x" : "y");
const M_OF = (i: number) => ((i * 7919) % 10_007) / 10_007;
const FILTER_B = "metrics.m > 0.5 and params.p = 'x'";
const ORDER_B = ["metrics.m DESC"];
const PAGE = 100;

/** The run names each search must answer with, in order. */
function expectedNames(): { a: string[]; b: string[] } {
  const ids = Array.from({ length: SEARCH_RUNS }, (_, i) => i);
  const a = [...ids].reverse().slice(0, PAGE);
  const b = ids
    .filter((i) => P_OF(i) === "x" && M_OF(i) > 0.5)
    .sort((x, y) => M_OF(y) - M_OF(x))
    .slice(0, PAGE);
  return { a: a.map((i) => `run-${i}`), b: b.map((i) => `run-${i}`) };
}

interface SearchResult {
  populateS: number;
  a: number[];
  b: number[];
  bytesA: number;
  bytesB: number;
}

async function searchLatency(side: Side): Promise<SearchResult> {
  let agent = newAgent(POPULATE_CONCURRENCY);
  try {
    const exp = await createExperiment(side, agent, `bench-search-${STAMP}`);
    const t0 = performance.now();
    const start = Date.now() - SEARCH_RUNS;
    let done = 0;
    await pool(SEARCH_RUNS, POPULATE_CONCURRENCY, async (i) => {
      const runId = await createRun(side, agent, {
        experiment_id: exp,
        run_name: `run-${i}`,
        start_time: start + i,
      });
      await call(side, agent, "POST", "runs/log-batch", {
        run_id: runId,
        params: [{ key: "p", value: P_OF(i) }],
        metrics: [{ key: "m", value: M_OF(i), timestamp: start + i, step: 0 }],
      });
      done++;
      if (done % 2000 === 0) log(`3. search_runs: ${side.name} ${done}/${SEARCH_RUNS} runs`);
    });
    const populateS = (performance.now() - t0) / 1000;
    agent.destroy();
    agent = newAgent(1);
    const expected = expectedNames();
    const bodyA = { experiment_ids: [exp], filter: "", run_view_type: "ACTIVE_ONLY", max_results: PAGE };
    const bodyB = { ...bodyA, filter: FILTER_B, order_by: ORDER_B };
    const once = async (label: string, body: unknown, want: string[]) => {
      const r = await call(side, agent, "POST", "runs/search", body);
      const got = ((r.json() as { runs?: { info: { run_name: string } }[] }).runs ?? []).map(
        (x) => x.info.run_name,
      );
      if (got.join() !== want.join())
        throw new RequestFailed(
          side.name,
          `POST runs/search (${label}) with ${JSON.stringify(body)}`,
          `wrong answer: ${got.length} runs, first ${got.slice(0, 5).join(", ")}; expected ${want.length}, first ${want.slice(0, 5).join(", ")}`,
        );
      return r;
    };
    const a: number[] = [];
    const b: number[] = [];
    let bytesA = 0;
    let bytesB = 0;
    for (let i = 0; i < 2; i++) {
      await once("a", bodyA, expected.a);
      await once("b", bodyB, expected.b);
    }
    for (let i = 0; i < SEARCH_REPS; i++) {
      const ra = await once("a", bodyA, expected.a);
      a.push(ra.ms);
      bytesA = Buffer.byteLength(ra.text);
      const rb = await once("b", bodyB, expected.b);
      b.push(rb.ms);
      bytesB = Buffer.byteLength(rb.text);
    }
    return { populateS, a, b, bytesA, bytesB };
  } finally {
    agent.destroy();
  }
}

async function partSearch(loom: Side, mlflow: Side): Promise<PartOutput> {
  const res: Record<string, SearchResult> = {};
  for (const side of [loom, mlflow]) {
    log(`3. search_runs: ${side.name}, filling ${SEARCH_RUNS} runs (${POPULATE_CONCURRENCY} in flight)`);
    const r = await searchLatency(side);
    res[side.name] = r;
    log(
      `3. search_runs: ${side.name} filled in ${fmt(r.populateS, 1)} s; (a) p50 ${ms(median(r.a))} ms, (b) p50 ${ms(median(r.b))} ms; load average ${loadNow()}`,
    );
  }
  const l = res.Loom!;
  const m = res.MLflow!;
  const row = (label: string, f: (r: SearchResult) => number | undefined) => [
    label,
    ms(f(l)),
    ms(f(m)),
    faster(f(l), f(m)),
  ];
  const runsPerS = (r: SearchResult) => SEARCH_RUNS / r.populateS;
  const table = markdownTable(
    [
      `runs/search over ${fmt(SEARCH_RUNS)} runs, max_results ${PAGE} (ms)`,
      "Loom",
      "MLflow",
      "Loom vs MLflow",
    ],
    [
      row("(a) no filter: p50", (r) => median(r.a)),
      row("(a) no filter: p99", (r) => pct(r.a, 99)),
      row(`(b) \`${FILTER_B}\`, \`${ORDER_B[0]}\`: p50`, (r) => median(r.b)),
      row("(b): p99", (r) => pct(r.b, 99)),
      [
        "response size (a) / (b) (KB)",
        `${fmt(l.bytesA / 1024)} / ${fmt(l.bytesB / 1024)}`,
        `${fmt(m.bytesA / 1024)} / ${fmt(m.bytesB / 1024)}`,
        "",
      ],
      [
        `filling: runs/create + log-batch per run, ${POPULATE_CONCURRENCY} in flight (runs/s)`,
        fmt(runsPerS(l)),
        fmt(runsPerS(m)),
        more(runsPerS(l), runsPerS(m)),
      ],
    ],
  );
  const qa = quotient(median(m.a), median(l.a));
  const qb = quotient(median(m.b), median(l.b));
  const goal = (label: string, q: number | undefined, lp: number | undefined, mp: number | undefined) =>
    q === undefined
      ? `search_runs ${label} p50 ≤ 1/${GOAL_SEARCH} of MLflow's: could not be checked`
      : `search_runs ${label} p50 ≤ 1/${GOAL_SEARCH} of MLflow's: 1/${fmt(q, 1)} (${ms(lp)} against ${ms(mp)} ms), ${q >= GOAL_SEARCH ? "met" : "missed"}`;
  const goals = [goal("(a)", qa, median(l.a), median(m.a)), goal("(b)", qb, median(l.b), median(m.b))];
  return {
    heading: "3. search_runs latency",
    blocks: [table],
    notes: [
      `One experiment with ${fmt(SEARCH_RUNS)} runs, filled through the API (runs/create, then log-batch with param p = 'x' for even runs and 'y' for odd ones, and metric m, distinct values in [0, 1)). Then ${SEARCH_REPS} repetitions of each search, one client, one request at a time, after 2 untimed ones; the body is what MlflowClient.search_runs sends (experiment_ids, filter, run_view_type ACTIVE_ONLY, max_results, order_by). (a) has no order_by, so the default order applies (start_time DESC); (b) matches about a quarter of the runs.`,
      `Every answer is checked: (a) must be the ${PAGE} newest runs, (b) the ${PAGE} runs with p = 'x' and the highest m above 0.5, in order, on both servers. Both answer with whole runs (info, latest metrics, params, tags); MLflow pretty-prints its JSON, so its responses are larger.`,
      `p99 is the nearest rank: with ${SEARCH_REPS} repetitions, the slowest of them.`,
      ...goals.map((g) => `Goal: ${g}.`),
    ],
    workload: `3. ${fmt(SEARCH_RUNS)} runs, ${SEARCH_REPS} × runs/search (a) and (b)`,
    goals,
    ok: l.a.length === SEARCH_REPS && m.a.length === SEARCH_REPS,
  };
}

// ---------------------------------------------------------------------------------------------
// 4. get-history of one metric with HISTORY_POINTS points

interface HistoryResult {
  ingestS: number;
  reads: number[];
  bytes: number;
}

async function historyLatency(side: Side): Promise<HistoryResult> {
  const agent = newAgent(1);
  try {
    const exp = await createExperiment(side, agent, `bench-history-${STAMP}`);
    const runId = await createRun(side, agent, {
      experiment_id: exp,
      run_name: "history",
      start_time: Date.now(),
    });
    const base = Date.now();
    const t0 = performance.now();
    for (let i = 0; i < HISTORY_POINTS; i += HISTORY_CHUNK) {
      const metrics = [];
      for (let s = i; s < Math.min(HISTORY_POINTS, i + HISTORY_CHUNK); s++)
        metrics.push({ key: "loss", value: 1 / (1 + s), timestamp: base + s, step: s });
      await call(side, agent, "POST", "runs/log-batch", { run_id: runId, metrics });
    }
    const ingestS = (performance.now() - t0) / 1000;
    const reads: number[] = [];
    let bytes = 0;
    const path = `metrics/get-history?run_id=${runId}&metric_key=loss`;
    for (let i = 0; i <= HISTORY_REPS; i++) {
      const r = await call(side, agent, "GET", path);
      const points = (r.json() as { metrics?: { step: number }[] }).metrics ?? [];
      if (
        points.length !== HISTORY_POINTS ||
        points[0]?.step !== 0 ||
        points.at(-1)?.step !== HISTORY_POINTS - 1
      )
        throw new RequestFailed(
          side.name,
          `GET ${path}`,
          `wrong answer: ${points.length} points (steps ${points[0]?.step}…${points.at(-1)?.step}), expected ${HISTORY_POINTS} (0…${HISTORY_POINTS - 1})`,
        );
      if (i > 0) reads.push(r.ms); // the first read is a warm-up
      bytes = Buffer.byteLength(r.text);
    }
    return { ingestS, reads, bytes };
  } finally {
    agent.destroy();
  }
}

async function partHistory(loom: Side, mlflow: Side): Promise<PartOutput> {
  const res: Record<string, HistoryResult> = {};
  for (const side of [loom, mlflow]) {
    log(`4. get-history: ${side.name}, logging ${fmt(HISTORY_POINTS)} points in batches of ${HISTORY_CHUNK}`);
    const r = await historyLatency(side);
    res[side.name] = r;
    log(
      `4. get-history: ${side.name} logged in ${fmt(r.ingestS, 1)} s; read p50 ${ms(median(r.reads))} ms; load average ${loadNow()}`,
    );
  }
  const l = res.Loom!;
  const m = res.MLflow!;
  const pointsPerS = (r: HistoryResult) => HISTORY_POINTS / r.ingestS;
  const table = markdownTable(
    [`one metric, ${fmt(HISTORY_POINTS)} points`, "Loom", "MLflow", "Loom vs MLflow"],
    [
      [
        "get-history, full: p50 (ms)",
        ms(median(l.reads)),
        ms(median(m.reads)),
        faster(median(l.reads), median(m.reads)),
      ],
      [
        "get-history, full: min (ms)",
        ms(Math.min(...l.reads)),
        ms(Math.min(...m.reads)),
        faster(Math.min(...l.reads), Math.min(...m.reads)),
      ],
      ["response size (MB)", fmt(l.bytes / 2 ** 20, 1), fmt(m.bytes / 2 ** 20, 1), ""],
      [
        `logging: ${fmt(HISTORY_POINTS / HISTORY_CHUNK)} sequential log-batch of ${fmt(HISTORY_CHUNK)} points (points/s)`,
        fmt(pointsPerS(l)),
        fmt(pointsPerS(m)),
        more(pointsPerS(l), pointsPerS(m)),
      ],
    ],
  );
  return {
    heading: "4. get-history of a 100k-point metric",
    blocks: [table],
    notes: [
      `One run, one metric (\`loss\`), ${fmt(HISTORY_POINTS)} points with distinct steps and timestamps, logged with sequential log-batch requests of ${fmt(HISTORY_CHUNK)} (MLflow's limit per request). Then GET metrics/get-history without max_results (the whole history in one response, as both servers allow), ${HISTORY_REPS} timed reads after one untimed one, send → last byte. Each answer must hold all ${fmt(HISTORY_POINTS)} points, steps 0…${fmt(HISTORY_POINTS - 1)} in order.`,
    ],
    workload: `4. ${fmt(HISTORY_POINTS)} points in one metric, ${HISTORY_REPS} × get-history`,
    goals: [],
    ok: l.reads.length === HISTORY_REPS && m.reads.length === HISTORY_REPS,
  };
}

// ---------------------------------------------------------------------------------------------

const PART_FNS: Record<string, (loom: Side, mlflow: Side) => Promise<PartOutput>> = {
  "1": partLogBatch,
  "2": partCreate,
  "3": partSearch,
  "4": partHistory,
};

async function main(): Promise<void> {
  const startedAt = new Date();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      void cleanupAll().finally(() => process.exit(130));
    });
  }
  const unknown = PARTS.filter((p) => !(p in PART_FNS));
  if (unknown.length) {
    console.error(`bench:tracking: unknown part(s) ${unknown.join(", ")} (known: 1, 2, 3, 4)`);
    process.exitCode = 2;
    return;
  }
  const m = machine();
  const load = loadNow();
  console.log(
    `bench:tracking — parts ${PARTS.join(", ")}; ${CLIENTS} clients × ${SECONDS} s, ${CREATES} creates, ${fmt(SEARCH_RUNS)} runs × ${SEARCH_REPS} searches, ${fmt(HISTORY_POINTS)} points × ${HISTORY_REPS} reads`,
  );
  console.log(
    `machine: ${m.cpus} CPUs, ${m.model}, ${m.memGiB} GiB, Node ${process.version}; load average ${load}`,
  );

  ensureVenv();
  const watchdog = setTimeout(() => {
    aborted = true;
    console.error(`bench:tracking ran past its ${BUDGET_MS / 1000} s budget; stopping everything`);
    void cleanupAll().finally(() => process.exit(2));
  }, BUDGET_MS);
  watchdog.unref();
  const peer = peerVersions();
  log(`peer: ${peer}`);

  log("starting loom up");
  const loom = await startLoom();
  log(
    `starting mlflow server (${MLFLOW_WORKERS} uvicorn workers${MLFLOW_WAL ? ", SQLite in WAL mode" : ""})`,
  );
  const t0 = performance.now();
  const mlflow = await startMlflow();
  log(`mlflow server up in ${fmt((performance.now() - t0) / 1000, 1)} s`);

  const outputs: PartOutput[] = [];
  for (const part of Object.keys(PART_FNS)) {
    if (!PARTS.includes(part) || aborted) continue;
    try {
      outputs.push(await PART_FNS[part]!(loom, mlflow));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log(`part ${part} FAILED: ${message}`);
      outputs.push({
        heading: `${part}. failed`,
        blocks: [],
        notes: [`Part ${part} failed: ${message}`],
        workload: "",
        goals: [],
        ok: false,
      });
    }
  }
  await cleanupAll();
  if (aborted) {
    // The watchdog stopped the servers under the running part: nothing here is a result.
    process.exitCode = 2;
    return;
  }

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
    `## ${date} UTC — bench:tracking`,
    "",
    `- Machine: ${m.cpus} CPUs (availableParallelism), ${m.model}, ${m.memGiB} GiB memory, Node ${process.version}, ${platform()}/${arch()}; load average at start ${load}, at end ${loadNow()}`,
    `- Versions: Loom ${pkg.version} (${loomCommit()}; \`loom up\`, embedded, temp data dir, SQLite in WAL mode with synchronous=NORMAL); peer: ${peer}, from PyPI in a venv`,
    `- Peer command: \`${peerCommand()}\`${MLFLOW_WAL ? "; its SQLite file was switched to WAL mode (`pragma journal_mode=wal`) before the server created its tables" : ""}. The access log is off (uvicorn writes a line per request otherwise) and so is the job runner (huey, for MLflow's GenAI jobs).`,
    `- CPU: the load generator (this Node process), Loom's server and MLflow's ${MLFLOW_WORKERS} workers share the ${m.cpus} cores; the servers take turns (Loom, then MLflow, per part), never both under load at once.`,
    ...partsSection(outputs, began, goals),
  ].join("\n");
  publishResults(section, outputs, "LOOM_BENCH_TRACKING_RESULTS");
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanupAll().finally(() => process.exit()));

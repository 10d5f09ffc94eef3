/**
 * Scheduler benchmark, in parts (LOOM_BENCH_SCHED_PARTS, default "a,b,c"):
 *
 *  (a) Loom's scheduler core in process: 1,000 nodes × 8 GPUs, 20 projects, 10,000 pending pods
 *      in gangs, scheduled in cycles until nothing more fits; then a cluster 90% full of
 *      over-quota preemptible work and 1,000 pending pods that reclaim quota (victim search).
 *  (b) On a real API server with 500 kwok nodes: 5,000 pending pods bound by Loom's operator
 *      against kube-scheduler, each from a standing queue (bench/scheduler-k8s.ts).
 *  (c) End to end: 1,000 trivial jobs through the embedded platform's HTTP API against Slurm
 *      (bench/slurm/slurm.sh), both with the machine's CPUs.
 *
 * Each part is one function that returns its tables and notes; main() runs the selected parts one
 * after another, prints them and appends one dated section to bench/RESULTS.md. Run with
 * `npm run bench:scheduler`; see bench/README.md.
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { Agent, request as httpRequest } from "node:http";
import { arch, availableParallelism, loadavg, platform } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import type {
  Decisions,
  PendingReasonCode,
  PodRequest,
  ProjectPolicy,
  RunningWorkload,
  SchedNode,
  Workload,
} from "../src/core/scheduler/model.js";
import { schedule } from "../src/core/scheduler/schedule.js";
import { LAUNCHER_PATH } from "../src/platforms/embedded/sandbox.js";
import { cleanupAll, cleanups, fmt, machine, markdownTable, num, ratio, sleep, tempDir } from "./report.js";
import { type BindingRun, runBindingBench } from "./scheduler-k8s.js";

const env = process.env;
const PARTS = (env.LOOM_BENCH_SCHED_PARTS ?? "a,b,c")
  .split(",")
  .map((p) => p.trim().toLowerCase())
  .filter(Boolean);
/** The whole bench stops by then: a watchdog ends it and cleans up. */
const BUDGET_MS = num(env.LOOM_BENCH_SCHED_BUDGET_S, 900) * 1000;
const SEED = num(env.LOOM_BENCH_SCHED_SEED, 20261128);
const REPEATS = num(env.LOOM_BENCH_SCHED_REPEATS, 3);
// (a)
const NODES = num(env.LOOM_BENCH_SCHED_NODES, 1000);
const GPUS_PER_NODE = 8;
const NODE_CPU_MILLIS = 128_000;
const GiB = 2 ** 30;
const NODE_MEMORY = 1024 * GiB;
const NODE_MAX_PODS = 110;
const PROJECTS = 20;
/** Deserved GPU quotas add up to this share of the cluster's GPUs. */
const DESERVED_SHARE = 0.8;
const PENDING_PODS = num(env.LOOM_BENCH_SCHED_PODS, 10_000);
const MAX_GANG = 16;
const FRACTIONAL_SHARE = 0.1;
/** The preemption scenario: running work fills this share of the GPUs, and this many pods wait. */
const FULL_SHARE = 0.9;
const RECLAIM_PODS = num(env.LOOM_BENCH_SCHED_RECLAIM_PODS, 1000);
/** A run of cycles stops here even if decisions keep coming (it is reported). */
const MAX_CYCLES = 50;
/** The issue's goal for the core, and figures published elsewhere (context only, not measured). */
const GOAL_PLACEMENTS_PER_S = 10_000;
const PUBLISHED = [
  {
    name: "kube-scheduler",
    podsPerSec: 270,
    source: "scheduling_throughput in the Kubernetes scalability SLOs",
  },
  { name: "Volcano", podsPerSec: 2000, source: "Volcano's own claim" },
];
// (c)
const E2E_JOBS = num(env.LOOM_BENCH_SCHED_E2E_JOBS, 1000);
/**
 * Loom's sides in (c), each a server of its own, one after another (LOOM_BENCH_SCHED_E2E_RUNS):
 * `loom` isolates as LOOM_BENCH_SCHED_ISOLATION says (default both, as `loom up`); `launcher`,
 * `bwrap` and `none` compare what a job's sandbox costs in one run: sandbox and network
 * namespace started by Loom's launcher, the same by bubblewrap's chain, and no isolation.
 */
interface LoomVariant {
  name: string;
  isolation: string;
  /** LOOM_SANDBOX_LAUNCHER for its server ("bwrap": bubblewrap's chain even where the launcher works). */
  launcher?: "bwrap";
}
const isolation = env.LOOM_BENCH_SCHED_ISOLATION ?? "both";
const LOOM_VARIANTS: Record<string, LoomVariant> = {
  loom: {
    name: "Loom embedded",
    isolation,
    ...(env.LOOM_SANDBOX_LAUNCHER === "bwrap" ? { launcher: "bwrap" as const } : {}),
  },
  launcher: { name: "Loom, launcher", isolation: "both" },
  bwrap: { name: "Loom, bwrap chain", isolation: "both", launcher: "bwrap" },
  none: { name: "Loom, no isolation", isolation: "none" },
};
/** What a variant isolates each job with, and which program makes its sandboxes (sandbox.ts). */
function isolationNote(v: LoomVariant): string {
  const program =
    v.isolation === "none" || v.isolation === "network"
      ? ""
      : v.launcher === "bwrap"
        ? ", started by bubblewrap's chain (LOOM_SANDBOX_LAUNCHER=bwrap)"
        : existsSync(LAUNCHER_PATH)
          ? ", started by Loom's launcher (native/loom-sandbox.c)"
          : ", started by bubblewrap's chain (Loom's launcher not built)";
  const what =
    {
      both: "sandbox and network namespace (as `loom up`)",
      none: "none",
      sandbox: "sandbox only",
      network: "network namespace only",
    }[v.isolation] ?? v.isolation;
  return what + program;
}
const mountsAtStart = readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter(Boolean).length;
const netnsAtStart = existsSync("/run/netns") ? readdirSync("/run/netns").length : 0;
const E2E_CONCURRENCY = 16;
const E2E_TIMEOUT_MS = num(env.LOOM_BENCH_SCHED_E2E_TIMEOUT_S, 300) * 1000;
const E2E_RUNS = (env.LOOM_BENCH_SCHED_E2E_RUNS ?? "loom,slurm").split(",").map((r) => r.trim());
const UNKNOWN_RUNS = E2E_RUNS.filter((r) => r !== "slurm" && !(r in LOOM_VARIANTS));
const SLURM_TIMEOUT_MS = num(env.LOOM_BENCH_SCHED_SLURM_TIMEOUT_S, 300) * 1000;
const E2E_GOAL = 2;
const PROJECT = "default";

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = join(BENCH_DIR, "..");
const RESULTS_FILE = join(BENCH_DIR, "RESULTS.md");

const began = performance.now();
const log = (msg: string) =>
  console.log(`[${((performance.now() - began) / 1000).toFixed(0).padStart(4)} s] ${msg}`);

// ---------------------------------------------------------------------------------------------
// Cleanup and watchdog

// ---------------------------------------------------------------------------------------------
// Formatting

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** What one part hands back: its tables and notes, in print order, and the versions it used. */
interface PartOutput {
  heading: string;
  blocks: string[];
  notes: string[];
  versions: string[];
  workload: string;
  /** false when the part could not measure what it is for (the exit status says so). */
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------
// (a) The scheduler core, in process

/** mulberry32: a small seeded PRNG, so every run schedules the same workload. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T>(rand: () => number, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

function clusterNodes(): SchedNode[] {
  return Array.from({ length: NODES }, (_, i) => ({
    name: `node-${String(i).padStart(4, "0")}`,
    gpuModel: "H100",
    cpuMillis: NODE_CPU_MILLIS,
    memoryBytes: NODE_MEMORY,
    gpus: Array.from({ length: GPUS_PER_NODE }, (_, g) => ({ id: `GPU-${i}-${g}`, memoryBytes: 80 * GiB })),
    maxPods: NODE_MAX_PODS,
  }));
}

/** 20 projects; deserved GPU quotas add up to ~80% of the cluster, over-quota weights 1–4. */
function projectPolicies(rand: () => number): ProjectPolicy[] {
  const raw = Array.from({ length: PROJECTS }, () => 0.5 + rand() * 1.5);
  const sum = raw.reduce((a, b) => a + b, 0);
  const gpus = NODES * GPUS_PER_NODE * DESERVED_SHARE;
  return raw.map((r, i) => ({
    name: `team-${String(i + 1).padStart(2, "0")}`,
    deserved: { gpu: Math.round((gpus * r) / sum) },
    overQuotaWeight: pick(rand, [1, 1, 1, 2, 2, 3, 4]),
  }));
}

interface GangMix {
  /** Share of gangs whose pods ask for half a GPU. */
  fractional: number;
  /** Share of gangs that may not be preempted (they must fit within deserved quota). */
  nonPreemptible: number;
  /** Share with priority 100 and with priority -100 (the rest 0). */
  high: number;
  low: number;
}

const MIX: GangMix = { fractional: FRACTIONAL_SHARE, nonPreemptible: 0.15, high: 0.15, low: 0.1 };

/** Gangs of 1–16 identical pods, `pods` pods in all, spread over `projects` uniformly. */
function gangs(
  rand: () => number,
  pods: number,
  projects: string[],
  prefix: string,
  mix: GangMix,
  wholeOnly = false,
): Workload[] {
  const out: Workload[] = [];
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  let left = pods;
  for (let i = 0; left > 0; i++) {
    const size = Math.min(left, 1 + Math.floor(rand() * MAX_GANG));
    left -= size;
    const fractional = !wholeOnly && rand() < mix.fractional;
    const pod: PodRequest = fractional
      ? { gpu: 0.5, cpuMillis: 4000, memoryBytes: 32 * GiB }
      : { gpu: 1, cpuMillis: pick(rand, [8, 12, 16]) * 1000, memoryBytes: pick(rand, [64, 96, 128]) * GiB };
    const project = pick(rand, projects);
    const p = rand();
    const name = `${prefix}-${String(i).padStart(5, "0")}`;
    out.push({
      id: `uid-${name}`,
      name: `${project}/${name}`,
      project,
      priority: p < mix.high ? 100 : p < mix.high + mix.low ? -100 : 0,
      preemptible: rand() >= mix.nonPreemptible,
      createdAt: new Date(t0 + i * 1000).toISOString(),
      pods: Array.from({ length: size }, () => ({ ...pod })),
      placement: rand() < 0.1 ? "spread" : "binpack",
    });
  }
  return out;
}

interface CycleStat {
  ms: number;
  binds: number;
  podsBound: number;
  preempted: number;
  preemptedPods: number;
}

interface CycleRun {
  cycles: CycleStat[];
  running: RunningWorkload[];
  pending: Workload[];
  /** The decisions of the first cycle and of the last (why the rest waits). */
  first: Decisions;
  last: Decisions;
  hitCap: boolean;
}

/**
 * Cycles as the admission loop runs them: each cycle's binds become running work, preempted
 * victims stop at once and go back to the queue (as a preempted Loom job does), until a cycle
 * decides nothing. Only schedule() is timed.
 */
function runCycles(
  nodes: SchedNode[],
  projects: ProjectPolicy[],
  running0: RunningWorkload[],
  pending0: Workload[],
): CycleRun {
  let running = [...running0];
  let pending = [...pending0];
  const cycles: CycleStat[] = [];
  let last: Decisions = { bind: [], resize: [], preempt: [], pending: [] };
  let first = last;
  for (let c = 0; c < MAX_CYCLES; c++) {
    const t = performance.now();
    last = schedule({ nodes, projects, running, pending });
    const ms = performance.now() - t;
    if (c === 0) first = last;
    const byId = new Map(pending.map((w) => [w.id, w]));
    const bound = new Set<string>();
    let podsBound = 0;
    running = [...running];
    for (const b of last.bind) {
      const w = byId.get(b.id)!;
      running.push({ ...w, placements: b.placements });
      bound.add(b.id);
      podsBound += w.pods.length;
    }
    pending = pending.filter((w) => !bound.has(w.id));
    const victims = new Set(last.preempt.map((p) => p.id));
    let preemptedPods = 0;
    if (victims.size > 0) {
      const back: Workload[] = [];
      running = running.filter((r) => {
        if (!victims.has(r.id)) return true;
        const { placements: _p, stopping: _s, preemptedFor: _f, ...w } = r;
        back.push(w);
        preemptedPods += w.pods.length;
        return false;
      });
      pending = pending.concat(back);
    }
    cycles.push({ ms, binds: last.bind.length, podsBound, preempted: victims.size, preemptedPods });
    if (last.bind.length === 0 && last.preempt.length === 0)
      return { cycles, running, pending, first, last, hitCap: false };
  }
  return { cycles, running, pending, first, last, hitCap: true };
}

/** Checks that running work never takes more than a node offers (a cheap guard on the figures). */
function overcommitted(nodes: SchedNode[], running: RunningWorkload[]): string[] {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const use = new Map<string, { cpu: number; memory: number; pods: number; dev: Map<string, number> }>();
  for (const r of running) {
    for (const p of r.placements) {
      const u = use.get(p.node) ?? { cpu: 0, memory: 0, pods: 0, dev: new Map<string, number>() };
      use.set(p.node, u);
      const pod = r.pods[p.pod]!;
      u.cpu += pod.cpuMillis;
      u.memory += pod.memoryBytes;
      u.pods += 1;
      for (const g of p.gpus) u.dev.set(g.device, (u.dev.get(g.device) ?? 0) + g.share);
    }
  }
  const bad: string[] = [];
  for (const [name, u] of use) {
    const n = byName.get(name)!;
    const dev = Math.max(0, ...u.dev.values());
    if (u.cpu > n.cpuMillis || u.memory > n.memoryBytes || u.pods > (n.maxPods ?? 1e9) || dev > 1 + 1e-9)
      bad.push(name);
  }
  return bad;
}

const podsOf = (ws: { pods: unknown[] }[]) => ws.reduce((s, w) => s + w.pods.length, 0);
const gpusOf = (ws: Workload[]) => ws.reduce((s, w) => s + w.pods.reduce((t, p) => t + p.gpu, 0), 0);

interface ReasonCount {
  workloads: number;
  pods: number;
}

function reasonCounts(last: Decisions, pending: Workload[]): Map<PendingReasonCode, ReasonCount> {
  const byId = new Map(pending.map((w) => [w.id, w]));
  const out = new Map<PendingReasonCode, ReasonCount>();
  for (const p of last.pending) {
    const c = out.get(p.reason) ?? { workloads: 0, pods: 0 };
    out.set(p.reason, c);
    c.workloads += 1;
    c.pods += byId.get(p.id)?.pods.length ?? 0;
  }
  return new Map([...out].sort((a, b) => b[1].pods - a[1].pods));
}

interface CoreRun {
  firstMs: number;
  firstPods: number;
  /** Sum of schedule() times up to and including the last cycle that bound something. */
  placeAllMs: number;
  /** Sum over every cycle, the final one that decides nothing included. */
  totalMs: number;
  cycles: number;
  podsBound: number;
  workloadsBound: number;
  preemptions: number;
  pendingPods: number;
  pendingWorkloads: number;
  reasons: Map<PendingReasonCode, ReasonCount>;
  hitCap: boolean;
  overcommitted: number;
  cycleMs: number[];
}

function summarize(run: CycleRun): CoreRun {
  const lastBind = run.cycles.reduce((k, c, i) => (c.binds > 0 ? i : k), -1);
  return {
    firstMs: run.cycles[0]!.ms,
    firstPods: run.cycles[0]!.podsBound,
    placeAllMs: run.cycles.slice(0, lastBind + 1).reduce((s, c) => s + c.ms, 0),
    totalMs: run.cycles.reduce((s, c) => s + c.ms, 0),
    cycles: run.cycles.length,
    podsBound: run.cycles.reduce((s, c) => s + c.podsBound, 0),
    workloadsBound: run.cycles.reduce((s, c) => s + c.binds, 0),
    preemptions: run.cycles.reduce((s, c) => s + c.preempted, 0),
    pendingPods: podsOf(run.pending),
    pendingWorkloads: run.pending.length,
    reasons: reasonCounts(run.last, run.pending),
    hitCap: run.hitCap,
    overcommitted: 0,
    cycleMs: run.cycles.map((c) => c.ms),
  };
}

interface ReclaimRun {
  /** The cycle that decides the preemptions. */
  decideMs: number;
  decidePodsBound: number;
  decidePreemptions: number;
  decideVictimPods: number;
  decideReasons: Map<PendingReasonCode, ReasonCount>;
  cycles: number;
  /** Until every one of the pending pods is placed (or the cycles stop). */
  placeAllMs: number;
  placedPods: number;
  preemptions: number;
  totalMs: number;
  hitCap: boolean;
}

async function partCore(deadline: number): Promise<PartOutput> {
  const nodes = clusterNodes();
  const rand = prng(SEED);
  const projects = projectPolicies(rand);
  const names = projects.map((p) => p.name);
  const pending = gangs(rand, PENDING_PODS, names, "job", MIX);
  const deservedGpus = projects.reduce((s, p) => s + (p.deserved.gpu ?? 0), 0);
  const clusterGpus = NODES * GPUS_PER_NODE;
  const fractionalGangs = pending.filter((w) => w.pods[0]!.gpu < 1).length;
  log(
    `(a) ${NODES} nodes × ${GPUS_PER_NODE} GPUs, ${PROJECTS} projects (deserved ${deservedGpus} GPUs), ` +
      `${PENDING_PODS} pending pods in ${pending.length} gangs (${fractionalGangs} fractional, ${fmt(gpusOf(pending), 1)} GPUs asked)`,
  );

  // Scenario 1: everything pending, cycles until nothing more fits.
  const runs: CoreRun[] = [];
  for (let r = 0; r < REPEATS && performance.now() < deadline; r++) {
    const run = runCycles(nodes, projects, [], pending);
    const s = summarize(run);
    s.overcommitted = overcommitted(nodes, run.running).length;
    runs.push(s);
    log(
      `(a) run ${r + 1}: first cycle ${fmt(s.firstMs, 1)} ms (${fmt(s.firstPods)} pods), ${s.cycles} cycles, ` +
        `${fmt(s.podsBound)} pods bound in ${fmt(s.placeAllMs, 1)} ms → ${fmt(s.podsBound / (s.placeAllMs / 1000))} placements/s; ` +
        `${fmt(s.pendingPods)} pods left pending`,
    );
  }

  // Scenario 2: 90% full of over-quota preemptible work; under-quota projects' pods wait.
  const borrowers = names.slice(0, PROJECTS / 2);
  const owners = names.slice(PROJECTS / 2);
  const fillRand = prng(SEED + 1);
  const fillGangs = gangs(
    fillRand,
    Math.round(clusterGpus * FULL_SHARE),
    borrowers,
    "fill",
    { fractional: 0, nonPreemptible: 0, high: 0, low: 0 },
    true,
  );
  const setupStart = performance.now();
  const filled = runCycles(nodes, projects, [], fillGangs);
  const setupMs = performance.now() - setupStart;
  const running = filled.running;
  const heldGpus = running.reduce((s, r) => s + r.pods.reduce((t, p) => t + p.gpu, 0), 0);
  const reclaim = gangs(prng(SEED + 2), RECLAIM_PODS, owners, "reclaim", {
    ...MIX,
    nonPreemptible: 0,
    high: 0,
    low: 0,
  });
  const borrowerDeserved = projects
    .filter((p) => borrowers.includes(p.name))
    .reduce((s, p) => s + (p.deserved.gpu ?? 0), 0);
  const ownerDeserved = deservedGpus - borrowerDeserved;
  log(
    `(a) preemption scenario: ${running.length} running gangs (${fmt(podsOf(running))} pods, ${fmt(heldGpus)} GPUs = ` +
      `${fmt((100 * heldGpus) / clusterGpus, 1)}% of the cluster) from ${borrowers.length} projects over quota ` +
      `(deserved ${borrowerDeserved}); ${RECLAIM_PODS} pods in ${reclaim.length} gangs from ${owners.length} projects ` +
      `(deserved ${ownerDeserved}, using none); setup ${fmt(setupMs)} ms`,
  );
  const reclaimRuns: ReclaimRun[] = [];
  const reclaimIds = new Set(reclaim.map((w) => w.id));
  for (let r = 0; r < REPEATS && performance.now() < deadline; r++) {
    const run = runCycles(nodes, projects, running, reclaim);
    const first = run.cycles[0]!;
    const stillPending = run.pending.filter((w) => reclaimIds.has(w.id));
    const lastBind = run.cycles.reduce((k, c, i) => (c.binds > 0 ? i : k), -1);
    const rr: ReclaimRun = {
      decideMs: first.ms,
      decidePodsBound: first.podsBound,
      decidePreemptions: first.preempted,
      decideVictimPods: first.preemptedPods,
      decideReasons: reasonCounts(run.first, reclaim),
      cycles: run.cycles.length,
      placeAllMs: run.cycles.slice(0, lastBind + 1).reduce((s, c) => s + c.ms, 0),
      placedPods: RECLAIM_PODS - podsOf(stillPending),
      preemptions: run.cycles.reduce((s, c) => s + c.preempted, 0),
      totalMs: run.cycles.reduce((s, c) => s + c.ms, 0),
      hitCap: run.hitCap,
    };
    reclaimRuns.push(rr);
    log(
      `(a) preemption run ${r + 1}: deciding cycle ${fmt(rr.decideMs, 1)} ms (${rr.decidePreemptions} victims, ` +
        `${fmt(rr.decidePodsBound)} pods bound at once); ${rr.cycles} cycles, ${fmt(rr.placedPods)} of ${RECLAIM_PODS} placed`,
    );
  }

  const blocks: string[] = [];
  const notes: string[] = [];
  if (runs.length === 0) {
    return {
      heading: "(a) Scheduler core, in process",
      blocks: [],
      notes: ["No run finished before the deadline."],
      versions: [],
      workload: "",
      ok: false,
    };
  }
  const med = (f: (r: CoreRun) => number) => median(runs.map(f));
  const perSec = (r: CoreRun) => r.podsBound / (r.placeAllMs / 1000);
  const runCols = runs.map((_, i) => `run ${i + 1}`);
  const row = (metric: string, f: (r: CoreRun) => number, digits = 0, goal = "") => [
    metric,
    ...runs.map((r) => fmt(f(r), digits)),
    fmt(med(f), digits),
    goal,
  ];
  const medianPerSec = med(perSec);
  blocks.push(
    markdownTable(
      [
        `${fmt(PENDING_PODS)} pending pods, ${fmt(NODES)} nodes × ${GPUS_PER_NODE} GPUs`,
        ...runCols,
        `median of ${runs.length}`,
        "goal",
      ],
      [
        row(
          "placements per second (pods bound ÷ schedule() time)",
          perSec,
          0,
          `≥ ${fmt(GOAL_PLACEMENTS_PER_S)} (${ratio(medianPerSec, GOAL_PLACEMENTS_PER_S)})`,
        ),
        row("first cycle (ms)", (r) => r.firstMs, 1),
        row("pods bound in the first cycle", (r) => r.firstPods),
        row("time to place all that fit (ms)", (r) => r.placeAllMs, 1),
        row("all cycles, the last one (decides nothing) included (ms)", (r) => r.totalMs, 1),
        row("cycles", (r) => r.cycles),
        row("pods bound", (r) => r.podsBound),
        row("gangs bound", (r) => r.workloadsBound),
        row("preemptions (victim gangs)", (r) => r.preemptions),
        row("pods left pending", (r) => r.pendingPods),
        row("gangs left pending", (r) => r.pendingWorkloads),
      ],
    ),
  );
  const reasons = runs[0]!.reasons;
  blocks.push(
    markdownTable(
      ["why the rest waits (last cycle)", "gangs", "pods"],
      [...reasons].map(([reason, c]) => [reason, fmt(c.workloads), fmt(c.pods)]),
    ),
  );
  blocks.push(
    markdownTable(
      ["placements per second: context", "pods/s", "source"],
      [
        [`Loom scheduler core (median of ${runs.length})`, fmt(medianPerSec), "measured here"],
        ["goal", fmt(GOAL_PLACEMENTS_PER_S), "the issue"],
        ...PUBLISHED.map((p) => [
          `${p.name}: published, not measured here`,
          `~${fmt(p.podsPerSec)}`,
          p.source,
        ]),
      ],
    ),
  );
  if (reclaimRuns.length > 0) {
    const rm = (f: (r: ReclaimRun) => number) => median(reclaimRuns.map(f));
    const rrow = (metric: string, f: (r: ReclaimRun) => number, digits = 0) => [
      metric,
      ...reclaimRuns.map((r) => fmt(f(r), digits)),
      fmt(rm(f), digits),
    ];
    blocks.push(
      markdownTable(
        [
          `preemption: ${fmt((100 * heldGpus) / clusterGpus, 0)}% full, ${fmt(RECLAIM_PODS)} pods reclaim quota`,
          ...reclaimRuns.map((_, i) => `run ${i + 1}`),
          `median of ${reclaimRuns.length}`,
        ],
        [
          rrow("cycle that decides the preemptions (ms)", (r) => r.decideMs, 1),
          rrow("victims chosen in it (gangs)", (r) => r.decidePreemptions),
          rrow("victims' pods", (r) => r.decideVictimPods),
          rrow("pods bound at once on free capacity", (r) => r.decidePodsBound),
          rrow(`cycles until the ${fmt(RECLAIM_PODS)} pods are placed`, (r) => r.cycles),
          rrow("schedule() time until then (ms)", (r) => r.placeAllMs, 1),
          rrow(`pods of the ${fmt(RECLAIM_PODS)} placed`, (r) => r.placedPods),
          rrow("preemptions in all (victim gangs)", (r) => r.preemptions),
        ],
      ),
    );
    const dr = reclaimRuns[0]!.decideReasons;
    notes.push(
      `Preemption scenario, the deciding cycle's pending reasons (gangs/pods): ${
        [...dr].map(([k, c]) => `${k} ${c.workloads}/${c.pods}`).join(", ") || "none"
      }.`,
    );
  }

  notes.push(
    `Scheduler core: \`schedule(snapshot)\` from src/core/scheduler/schedule.ts, called in process in cycles: each cycle's binds become running work, preempted victims stop at once and go back to the queue (as a preempted Loom job does), until a cycle decides nothing (at most ${MAX_CYCLES} cycles). Only the schedule() calls are timed, not the bench's bookkeeping between cycles. Placements per second = pods bound over all cycles ÷ the schedule() time up to the last cycle that bound something.`,
    `Cluster: ${fmt(NODES)} nodes × ${GPUS_PER_NODE} H100 (80 GiB), ${NODE_CPU_MILLIS / 1000} cores, 1 TiB, at most ${NODE_MAX_PODS} pods each (${fmt(clusterGpus)} GPUs). ${PROJECTS} projects: deserved GPU quotas ${fmt(deservedGpus)} in all (${fmt((100 * deservedGpus) / clusterGpus)}% of the GPUs, ${Math.min(...projects.map((p) => p.deserved.gpu!))}–${Math.max(...projects.map((p) => p.deserved.gpu!))} each), over-quota weights ${projects.map((p) => p.overQuotaWeight).join("/")}; no limits.`,
    `Workload (seed ${SEED}): ${fmt(PENDING_PODS)} pods in ${fmt(pending.length)} gangs of 1–${MAX_GANG} identical pods, projects drawn uniformly; ${fmt(100 * MIX.fractional)}% of gangs ask 0.5 GPU, 4 cores, 32 GiB per pod (${fractionalGangs} gangs), the rest 1 GPU, 8/12/16 cores, 64/96/128 GiB; ${fmt(100 * MIX.nonPreemptible)}% non-preemptible; priority 100 for ${fmt(100 * MIX.high)}%, −100 for ${fmt(100 * MIX.low)}%, else 0; 10% spread, 90% binpack. ${fmt(gpusOf(pending), 1)} GPUs asked in all, more than the cluster has, so some work must wait.`,
    `Preemption scenario: ${borrowers.length} projects (${borrowers[0]}–${borrowers.at(-1)}, deserved ${fmt(borrowerDeserved)} GPUs) run ${running.length} preemptible whole-GPU gangs (${fmt(podsOf(running))} pods, ${fmt(heldGpus)} GPUs, placed by the core itself, untimed); the other ${owners.length} (deserved ${fmt(ownerDeserved)}, using nothing) submit ${fmt(RECLAIM_PODS)} pods in ${reclaim.length} gangs (${reclaim.filter((w) => w.pods[0]!.gpu < 1).length} fractional), so what does not fit on the ${fmt(clusterGpus - heldGpus)} free GPUs is reclaimed: the victim search runs in the first cycle.`,
    "The published figures are context only: they were measured elsewhere, on other hardware, and include what a real cluster adds (API writes, binding, informers); the core here does none of that.",
  );
  const bad = runs.reduce((s, r) => s + r.overcommitted, 0);
  notes.push(
    bad === 0
      ? "Check: after every run, no node holds more cpu, memory, pods or GPU share than it has."
      : `Check FAILED: ${bad} node(s) over capacity after the runs.`,
  );
  if (runs.some((r) => r.hitCap) || reclaimRuns.some((r) => r.hitCap))
    notes.push(`Some runs reached ${MAX_CYCLES} cycles without settling (preemptions kept coming).`);
  notes.push(
    `Cycle times of run 1 (ms): ${runs[0]!.cycleMs.map((x) => fmt(x, 1)).join(", ")}.`,
    medianPerSec < GOAL_PLACEMENTS_PER_S
      ? `The core is below the goal of ${fmt(GOAL_PLACEMENTS_PER_S)} placements/s; bench/README.md lists the hot spots found with node --cpu-prof.`
      : `The core meets the goal of ${fmt(GOAL_PLACEMENTS_PER_S)} placements/s.`,
  );
  return {
    heading: "(a) Scheduler core, in process",
    blocks,
    notes,
    versions: [],
    workload: `(a) ${fmt(PENDING_PODS)} pods on ${fmt(NODES)} nodes, ${REPEATS} runs; preemption with ${fmt(RECLAIM_PODS)} pods`,
    ok: bad === 0,
  };
}

// ---------------------------------------------------------------------------------------------
// (c) End to end: the embedded platform against Slurm

interface E2eTarget {
  url: string;
  token: string;
  jobs: number;
  timeoutMs: number;
}

interface E2eFigures {
  jobs: number;
  created: number;
  submitMs: number;
  /** First create sent → every job Succeeded (or Failed); undefined when the deadline came first. */
  totalMs?: number;
  allAdmittedMs?: number;
  firstSucceededMs?: number;
  succeeded: number;
  failed: number;
  admitted: number;
  /** TrainingJob writes seen on the watch (creates included). */
  watchEvents: number;
  /** Of those, writes to jobs still waiting for admission (their Pending condition), creates excluded. */
  waitingWrites: number;
  createErrors: string[];
  /** What the first failed jobs' status said (up to 3). */
  failures: string[];
}

type E2eMessage = { type: "done"; figures: E2eFigures } | { type: "error"; message: string };

const e2eName = (i: number) => `sched-bench-${String(i).padStart(5, "0")}`;

/** The client, in a worker thread: creates (16 in flight) and a watch that sees every job finish. */
async function e2eClient(t: E2eTarget): Promise<E2eFigures> {
  const base = new URL(t.url);
  const headers = { authorization: `Bearer ${t.token}` };
  const agent = new Agent({ keepAlive: true, maxSockets: E2E_CONCURRENCY, maxFreeSockets: E2E_CONCURRENCY });
  const path = `/apis/loom.dev/v1alpha1/projects/${PROJECT}/trainingjobs`;
  const send = (method: string, p: string, body?: string, a: Agent | false = agent) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const h: Record<string, string | number> = { ...headers };
      if (body !== undefined) {
        h["content-type"] = "application/json";
        h["content-length"] = Buffer.byteLength(body);
      }
      const req = httpRequest(
        { host: base.hostname, port: base.port, method, path: p, agent: a, headers: h },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(body);
    });

  const list = await send("GET", path);
  if (list.status !== 200) throw new Error(`list: HTTP ${list.status}: ${list.body.slice(0, 200)}`);
  const rv = (JSON.parse(list.body) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;

  const admitted = new Set<string>();
  const succeeded = new Set<string>();
  const failed = new Set<string>();
  const failures: string[] = [];
  let events = 0;
  let waitingWrites = 0;
  let t0 = 0;
  let allAdmittedMs: number | undefined;
  let firstSucceededMs: number | undefined;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((r) => {
    finish = r;
  });
  const watchReq = httpRequest(
    {
      host: base.hostname,
      port: base.port,
      method: "GET",
      path: `${path}?watch=1&resourceVersion=${rv}`,
      agent: false,
      headers,
    },
    (res) => {
      res.setEncoding("utf8");
      let buf = "";
      res.on("data", (chunk: string) => {
        buf += chunk;
        let nl = buf.indexOf("\n");
        while (nl >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          nl = buf.indexOf("\n");
          if (!line.trim()) continue;
          const e = JSON.parse(line) as {
            type: string;
            object: {
              metadata: { name: string };
              status?: { phase?: string; admission?: unknown; conditions?: { message?: string }[] };
            };
          };
          if (e.type === "ERROR") throw new Error(`watch ended: ${line.slice(0, 300)}`);
          if (e.type === "BOOKMARK") continue;
          events++;
          const name = e.object.metadata.name;
          if (e.type === "MODIFIED" && !e.object.status?.admission && e.object.status?.phase === "Pending")
            waitingWrites++;
          const now = performance.now() - t0;
          if (e.object.status?.admission && !admitted.has(name)) {
            admitted.add(name);
            if (admitted.size === t.jobs) allAdmittedMs = now;
          }
          const phase = e.object.status?.phase;
          if (phase === "Succeeded" && !succeeded.has(name)) {
            succeeded.add(name);
            firstSucceededMs ??= now;
            // A job that finishes is admitted even if the watch never showed it between writes.
            if (!admitted.has(name)) {
              admitted.add(name);
              if (admitted.size === t.jobs) allAdmittedMs = now;
            }
          } else if (phase === "Failed" && !failed.has(name)) {
            failed.add(name);
            if (failures.length < 3)
              failures.push(
                `${name}: ${(e.object.status?.conditions ?? [])
                  .map((c) => c.message)
                  .filter(Boolean)
                  .join("; ")
                  .slice(0, 300)}`,
              );
          }
          if (succeeded.size + failed.size >= t.jobs) finish();
        }
      });
    },
  );
  watchReq.on("error", () => undefined);
  watchReq.end();
  await sleep(200); // the stream is open before the first create

  const body = (i: number) =>
    JSON.stringify({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: e2eName(i), labels: { "app.kubernetes.io/part-of": "loom-bench" } },
      spec: { command: ["/bin/true"], resources: { cpu: 1 } },
    });
  const createErrors: string[] = [];
  let created = 0;
  let next = 0;
  t0 = performance.now();
  await Promise.all(
    Array.from({ length: E2E_CONCURRENCY }, async () => {
      while (next < t.jobs) {
        const i = next++;
        const res = await send("POST", path, body(i));
        if (res.status === 201) created++;
        else if (createErrors.length < 5) createErrors.push(`${e2eName(i)}: HTTP ${res.status}`);
      }
    }),
  );
  const submitMs = performance.now() - t0;
  if (created < t.jobs) finish();
  const timer = setTimeout(finish, Math.max(0, t.timeoutMs - submitMs));
  await finished;
  clearTimeout(timer);
  const done = succeeded.size + failed.size >= t.jobs;
  const totalMs = done ? performance.now() - t0 : undefined;
  watchReq.destroy();
  agent.destroy();
  return {
    jobs: t.jobs,
    created,
    submitMs,
    totalMs,
    allAdmittedMs,
    firstSucceededMs,
    succeeded: succeeded.size,
    failed: failed.size,
    admitted: admitted.size,
    watchEvents: events,
    waitingWrites,
    createErrors,
    failures,
  };
}

async function workerMain(): Promise<void> {
  try {
    const figures = await e2eClient(workerData as E2eTarget);
    parentPort!.postMessage({ type: "done", figures } satisfies E2eMessage);
  } catch (err) {
    parentPort!.postMessage({
      type: "error",
      message: err instanceof Error ? (err.stack ?? err.message) : String(err),
    } satisfies E2eMessage);
  }
}

function runInWorker(target: E2eTarget): Promise<E2eFigures> {
  return new Promise((resolve, reject) => {
    // Workers do not inherit tsx's loader from `node --import tsx`: register it, then load this file.
    const tsxApi = import.meta.resolve("tsx/esm/api");
    const boot = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); });`;
    const worker = new Worker(boot, { eval: true, workerData: target });
    cleanups.push(() => worker.terminate().then(() => undefined));
    let settled = false;
    worker.on("message", (m: E2eMessage) => {
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
      if (!settled) reject(new Error(`the client thread exited with code ${code}`));
      settled = true;
    });
  });
}

/**
 * CPU time of this process and everything it starts from now on (Loom's spawn helper, sandboxes
 * and jobs; Slurm's daemons and sbatch), from a cpuacct cgroup of its own (cgroup v1, as root):
 * unlike wall time it holds on a loaded machine, and unlike process.cpuUsage() it counts the
 * children. Undefined where there is no writable cpuacct hierarchy.
 */
function cpuacctMeter(): { usageMs: () => number; close: () => void } | undefined {
  const root = "/sys/fs/cgroup/cpuacct";
  const dir = join(root, `loom-bench-${process.pid}`);
  try {
    if (!existsSync(join(root, "cpuacct.usage"))) return undefined;
    if (!existsSync(dir)) mkdirSync(dir);
    writeFileSync(join(dir, "cgroup.procs"), String(process.pid));
  } catch {
    return undefined;
  }
  return {
    usageMs: () => Number(readFileSync(join(dir, "cpuacct.usage"), "utf8")) / 1e6,
    close: () => {
      try {
        writeFileSync(join(root, "cgroup.procs"), String(process.pid));
        rmdirSync(dir);
      } catch {
        // children still in it (a daemon not stopped yet): left, empty later
      }
    },
  };
}
const meter = cpuacctMeter();
if (meter) cleanups.push(async () => meter.close());

interface LoomE2e {
  variant: LoomVariant;
  figures: E2eFigures;
  /** CPU seconds of this process (server and client thread) from the first create to the end. */
  cpuSeconds: number;
  /** CPU ms of every process on Loom's side (server, spawn helper, sandboxes, jobs; cpuacct). */
  allCpuMs?: number;
  /** The spawn helper's own CPU ms, and that of the processes it started and reaped (sandboxes, jobs, ip). */
  helper?: { ownMs: number; childrenMs: number };
  wallSeconds: number;
  reconciles: Record<string, { count: number; seconds: number }>;
}

/**
 * The CPU ms of this process's `node -e` children (Loom's spawn helper), their own and their
 * reaped children's, from /proc (clock ticks); undefined where there is none.
 */
function helperCpu(): { ownMs: number; childrenMs: number } | undefined {
  const tick = 1000 / 100; // USER_HZ is 100 on Linux
  let out: { ownMs: number; childrenMs: number } | undefined;
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) !== process.pid) continue;
      const argv = readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0");
      if (argv[1] !== "-e") continue;
      out ??= { ownMs: 0, childrenMs: 0 };
      out.ownMs += (Number(f[11]) + Number(f[12])) * tick;
      out.childrenMs += (Number(f[13]) + Number(f[14])) * tick;
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function runLoomE2e(variant: LoomVariant): Promise<LoomE2e> {
  const { createLogger } = await import("../src/lib/log.js");
  const { startEmbedded } = await import("../src/main/embedded.js");
  const dataDir = tempDir("loom-bench-sched-");
  // `loom up`'s composition root with its defaults (30 s resync), no virtual GPUs, pino at warn.
  // The variant's isolation: what each job's isolation costs, measured by turning its parts off.
  const iso = variant.isolation;
  if (variant.launcher) process.env.LOOM_SANDBOX_LAUNCHER = variant.launcher;
  else delete process.env.LOOM_SANDBOX_LAUNCHER;
  const server = await startEmbedded({
    dataDir,
    port: 0,
    gpus: 0,
    log: createLogger("warn"),
    ...(iso === "none" || iso === "network" ? { sandbox: false } : {}),
    ...(iso === "none" || iso === "sandbox" ? { networkIsolation: false } : {}),
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await server.close();
  };
  cleanups.push(close);
  try {
    const cpu0 = process.cpuUsage();
    const all0 = meter?.usageMs();
    const helper0 = helperCpu();
    const wall0 = performance.now();
    const figures = await runInWorker({
      url: server.url,
      token: server.adminToken,
      jobs: E2E_JOBS,
      timeoutMs: E2E_TIMEOUT_MS,
    });
    const cpu = process.cpuUsage(cpu0);
    const allCpuMs = meter && all0 !== undefined ? meter.usageMs() - all0 : undefined;
    const helper1 = helperCpu();
    const helper = helper1 && {
      ownMs: helper1.ownMs - (helper0?.ownMs ?? 0),
      childrenMs: helper1.childrenMs - (helper0?.childrenMs ?? 0),
    };
    const wallSeconds = (performance.now() - wall0) / 1000;
    const res = await fetch(`${server.url}/metrics`, {
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    const text = await res.text();
    const reconciles: Record<string, { count: number; seconds: number }> = {};
    const re = /^loom_reconcile_duration_seconds_(sum|count)\{controller="([^"]+)",result="[^"]+"\} (\S+)$/gm;
    for (const m of text.matchAll(re)) {
      const entry = reconciles[m[2]!] ?? { count: 0, seconds: 0 };
      reconciles[m[2]!] = entry;
      if (m[1] === "sum") entry.seconds += Number(m[3]);
      else entry.count += Number(m[3]);
    }
    return {
      variant,
      figures,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      allCpuMs,
      helper,
      wallSeconds,
      reconciles,
    };
  } finally {
    await close();
    delete process.env.LOOM_SANDBOX_LAUNCHER;
  }
}

interface SlurmLine {
  jobs: number;
  mode: "separate" | "array";
  submitSeconds: number;
  totalSeconds: number;
  jobsPerSecond: number;
  slurmVersion: string;
  nodeCpus: number;
  auth: string;
  completedSeen: number;
  notCompletedSeen: number;
  states: string;
  loadAvg1mAtStart: number;
}

/** Runs bench/slurm/slurm.sh in its own process group; stderr (progress) is echoed, indented. */
function slurmSh(
  args: string[],
  extraEnv: Record<string, string>,
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn("bash", [join(BENCH_DIR, "slurm", "slurm.sh"), ...args], {
      cwd: ROOT,
      env: { ...process.env, ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    let stdout = "";
    let stderr = "";
    let exited = false;
    const kill = () => {
      if (exited || child.pid === undefined) return;
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // gone already
      }
    };
    const timer = setTimeout(kill, timeoutMs);
    const stopper = () => kill();
    cleanups.push(stopper);
    child.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr!.on("data", (d: Buffer) => {
      stderr += d.toString();
      for (const l of d.toString().split("\n")) if (l.trim()) console.log(`        ${l}`);
    });
    child.on("error", reject);
    child.on("exit", (code) => {
      exited = true;
      clearTimeout(timer);
      const i = cleanups.indexOf(stopper);
      if (i >= 0) cleanups.splice(i, 1);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The slurm.conf settings that decide throughput, as slurm.sh wrote them. */
const SLURM_KEYS = ["SchedulerType", "SchedulerParameters", "SelectTypeParameters", "Epilog", "AuthType"];

interface SlurmRun {
  lines: SlurmLine[];
  conf?: string;
  error?: string;
  /** CPU ms of every process on Slurm's side (cpuacct) during each mode's run, by mode. */
  cpuMs: Partial<Record<SlurmLine["mode"], number>>;
}

async function runSlurm(): Promise<SlurmRun> {
  const cpus = String(availableParallelism());
  const up = await slurmSh(["up"], { SLURM_CPUS: cpus }, 180_000);
  const exports: Record<string, string> = {};
  for (const m of up.stdout.matchAll(/^export (\w+)=(.*)$/gm))
    exports[m[1]!] = m[2]!.replace(/^'(.*)'$/, "$1");
  // `down` also stops what a failed `up` left behind.
  const down = async () => {
    if (exports.SLURM_STATE || exports.SLURM_CONF) await slurmSh(["down"], exports, 60_000);
  };
  cleanups.push(down);
  if (up.code !== 0 || !exports.SLURM_CONF)
    return {
      lines: [],
      cpuMs: {},
      error: `slurm.sh up failed (exit ${up.code}): ${up.stderr.trim().slice(-300)}`,
    };
  let conf: string | undefined;
  try {
    const text = readFileSync(exports.SLURM_CONF, "utf8");
    conf = SLURM_KEYS.map((k) => new RegExp(`^${k}=.*$`, "m").exec(text)?.[0])
      .filter(Boolean)
      .join(", ");
  } catch {
    // reported as unknown
  }
  const lines: SlurmLine[] = [];
  const cpuMs: SlurmRun["cpuMs"] = {};
  try {
    // One mode at a time, so each has its own CPU figure (the warm-up jobs go with the first).
    for (const [i, mode] of (["separate", "array"] as const).entries()) {
      const all0 = meter?.usageMs();
      const run = await slurmSh(
        ["run", String(E2E_JOBS), mode],
        {
          ...exports,
          SLURM_RUN_TIMEOUT_S: String(Math.ceil(SLURM_TIMEOUT_MS / 1000)),
          ...(i > 0 ? { SLURM_WARMUP: "0" } : {}),
        },
        SLURM_TIMEOUT_MS + 60_000,
      );
      if (meter && all0 !== undefined) cpuMs[mode] = meter.usageMs() - all0;
      lines.push(
        ...run.stdout
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as SlurmLine),
      );
      if (run.code !== 0)
        return {
          lines,
          conf,
          cpuMs,
          error: `slurm.sh run ${mode} failed (exit ${run.code}): ${run.stderr.trim().slice(-300)}`,
        };
    }
    return { lines, conf, cpuMs };
  } finally {
    cleanups.splice(cleanups.indexOf(down), 1);
    await down();
  }
}

async function partEndToEnd(deadline: number): Promise<PartOutput> {
  const cpus = availableParallelism();
  const notes: string[] = [];
  if (UNKNOWN_RUNS.length)
    throw new Error(
      `unknown run(s) ${UNKNOWN_RUNS.join(", ")} in LOOM_BENCH_SCHED_E2E_RUNS (known: ${[...Object.keys(LOOM_VARIANTS), "slurm"].join(", ")})`,
    );
  const looms: LoomE2e[] = [];
  const loomErrors: string[] = [];
  for (const key of E2E_RUNS.filter((r) => r in LOOM_VARIANTS)) {
    const variant = LOOM_VARIANTS[key]!;
    log(`(c) ${variant.name}: ${E2E_JOBS} TrainingJobs (/bin/true, cpu 1) through the embedded server's API`);
    try {
      const loom = await runLoomE2e(variant);
      looms.push(loom);
      const f = loom.figures;
      log(
        `(c) ${variant.name}: submitted in ${fmt(f.submitMs / 1000, 2)} s; ${f.succeeded} succeeded, ${f.failed} failed` +
          (f.totalMs !== undefined
            ? ` in ${fmt(f.totalMs / 1000, 2)} s → ${fmt(f.jobs / (f.totalMs / 1000), 1)} jobs/s`
            : ` when the ${E2E_TIMEOUT_MS / 1000} s deadline came`) +
          (loom.allCpuMs !== undefined ? `; ${fmt(loom.allCpuMs / f.jobs, 1)} ms CPU per job` : ""),
      );
    } catch (err) {
      const message = err instanceof Error ? err.message.split("\n")[0] : String(err);
      loomErrors.push(`${variant.name}: ${message}`);
      log(`(c) ${variant.name} FAILED: ${message}`);
    }
  }
  if (!E2E_RUNS.some((r) => r in LOOM_VARIANTS))
    loomErrors.push("skipped (LOOM_BENCH_SCHED_E2E_RUNS has no Loom run)");

  let slurm: SlurmRun = { lines: [], cpuMs: {}, error: "skipped (LOOM_BENCH_SCHED_E2E_RUNS has no slurm)" };
  if (E2E_RUNS.includes("slurm")) {
    if (performance.now() + 120_000 > deadline)
      slurm = { lines: [], cpuMs: {}, error: "not run: too little time left" };
    else {
      log(`(c) Slurm: bench/slurm/slurm.sh up, run ${E2E_JOBS} separate, then ${E2E_JOBS} as an array, down`);
      try {
        slurm = await runSlurm();
      } catch (err) {
        slurm = { lines: [], cpuMs: {}, error: err instanceof Error ? err.message : String(err) };
      }
      for (const l of slurm.lines)
        log(`(c) Slurm ${l.mode}: ${fmt(l.totalSeconds, 2)} s → ${fmt(l.jobsPerSecond, 1)} jobs/s`);
      if (slurm.error) log(`(c) Slurm: ${slurm.error}`);
    }
  }

  const sep = slurm.lines.find((l) => l.mode === "separate");
  const arr = slurm.lines.find((l) => l.mode === "array");
  const totalOf = (l: LoomE2e) => (l.figures.totalMs !== undefined ? l.figures.totalMs / 1000 : undefined);
  const rateOf = (l: LoomE2e) => {
    const t = totalOf(l);
    return t !== undefined ? l.figures.jobs / t : undefined;
  };
  const perJob = (l: LoomE2e, ms: number | undefined) => (ms === undefined ? undefined : ms / l.figures.jobs);
  const slurmCpu = (mode: SlurmLine["mode"]) => {
    const line = slurm.lines.find((l) => l.mode === mode);
    const ms = slurm.cpuMs[mode];
    return line && ms !== undefined ? ms / line.jobs : undefined;
  };
  // Ratios are the first Loom run's (as `loom up` by default) against Slurm.
  const first = looms[0];
  const row = (
    label: string,
    loomCell: (l: LoomE2e) => number | undefined,
    digits: number,
    s?: [number | undefined, number | undefined],
    ratios = true,
  ) => {
    const f = first ? loomCell(first) : undefined;
    return [
      label,
      ...looms.map((l) => fmt(loomCell(l), digits)),
      fmt(s?.[0], digits),
      fmt(s?.[1], digits),
      ratios ? ratio(f, s?.[0]) : "",
      ratios ? ratio(f, s?.[1]) : "",
    ];
  };
  const rows: string[][] = [
    row("jobs per second (jobs ÷ total)", rateOf, 1, [sep?.jobsPerSecond, arr?.jobsPerSecond]),
    row("total: first submit → all done (s)", totalOf, 2, [sep?.totalSeconds, arr?.totalSeconds]),
    row(
      "submit: first → last accepted (s)",
      (l) => l.figures.submitMs / 1000,
      2,
      [sep?.submitSeconds, arr?.submitSeconds],
      false,
    ),
    row("CPU per job, ms: every process on each side (cpuacct)", (l) => perJob(l, l.allCpuMs), 1, [
      slurmCpu("separate"),
      slurmCpu("array"),
    ]),
    row(
      "· of it this process (server, client thread)",
      (l) => perJob(l, l.cpuSeconds * 1000),
      1,
      undefined,
      false,
    ),
    row("· the spawn helper itself", (l) => perJob(l, l.helper?.ownMs), 1, undefined, false),
    row(
      "· what the helper started (sandboxes, jobs)",
      (l) => perJob(l, l.helper?.childrenMs),
      1,
      undefined,
      false,
    ),
  ];
  const firstName = first?.variant.name ?? "Loom";
  const blocks = [
    markdownTable(
      [
        `${fmt(E2E_JOBS)} jobs of /bin/true, 1 CPU each, ${cpus} CPUs`,
        ...looms.map((l) => l.variant.name),
        "Slurm, separate sbatch",
        "Slurm, job array",
        `${firstName} ÷ Slurm separate`,
        `${firstName} ÷ Slurm array`,
      ],
      rows,
    ),
  ];
  notes.push(
    `Ratios are ${firstName} ÷ Slurm: above 1× is better for Loom on jobs per second, below 1× on seconds and CPU. Goal: at least ${E2E_GOAL}× Slurm's jobs per second.`,
    `Loom: the embedded platform from \`startEmbedded\` (src/main/embedded.ts, what \`loom up\` runs) in a temp data dir, port 0, pino at warn, no GPUs, its defaults otherwise; its local runtime offers availableParallelism() = ${cpus} CPUs, so at most ${cpus} one-CPU jobs run at once. A client thread creates ${fmt(E2E_JOBS)} TrainingJobs in project ${PROJECT} (\`spec: {command: ["/bin/true"], resources: {cpu: 1}}\`) over HTTP keep-alive, ${E2E_CONCURRENCY} creates in flight, and follows them on one watch opened before the first create; total runs from the first create until the watch has shown every job Succeeded. Each Loom column is a server of its own, one after another.`,
    `Slurm ${slurm.lines[0]?.slurmVersion ?? ""}: bench/slurm/slurm.sh, one node with CPUs=${cpus}, configured for throughput (${slurm.conf ?? "slurm.conf not read"}): \`separate\` runs ${fmt(E2E_JOBS)} sbatch processes one after another, \`array\` one \`sbatch --array=1-${E2E_JOBS}\`; each job \`-n1 -c1 --wrap /bin/true\`; total until squeue (polled every 0.1 s) is empty. Slurm needs the no-op Epilog (Epilog=/bin/true) that slurm.sh configures: without one a freed CPU waits up to 1 s for slurmctld's background scheduling pass and Slurm runs about 2 jobs/s here (bench/slurm/README.md).`,
    "CPU per job: every process of each side, from a cpuacct cgroup of the bench's own (Loom: its server and client thread, spawn helper, sandboxes and jobs; Slurm: its daemons, sbatch, squeue and jobs, each mode's run apart, the 4 warm-up jobs with the separate run). The rows under it split Loom's: this process (process.cpuUsage), the spawn helper's own time and that of the processes it started and reaped (/proc/PID/stat, 10 ms ticks).",
  );
  for (const loom of looms) {
    const lf = loom.figures;
    const rc = Object.entries(loom.reconciles)
      .map(([name, r]) => `${name} ${fmt(r.count)} reconciles, ${fmt(r.seconds, 1)} s`)
      .join("; ");
    notes.push(
      `${loom.variant.name}: isolation ${isolationNote(loom.variant)}; ${lf.created} created, ${lf.succeeded} succeeded, ${lf.failed} failed; all admitted ${fmt(lf.allAdmittedMs !== undefined ? lf.allAdmittedMs / 1000 : undefined, 2)} s after the first create, first Succeeded at ${fmt(lf.firstSucceededMs !== undefined ? lf.firstSucceededMs / 1000 : undefined, 2)} s; ` +
        `${fmt(lf.watchEvents)} TrainingJob writes on the watch (${fmt(lf.watchEvents / Math.max(1, lf.created), 1)} per job, creates included), ${fmt(lf.waitingWrites)} of them to jobs still waiting for admission; ` +
        `this process (server and client thread) used ${fmt(loom.cpuSeconds, 1)} CPU s in ${fmt(loom.wallSeconds, 1)} s wall (${fmt((100 * loom.cpuSeconds) / loom.wallSeconds)}% of one core); load average ${loadavg()[0]!.toFixed(2)} at its end; controllers: ${rc || "no metrics"}.`,
    );
    if (lf.createErrors.length)
      notes.push(`${loom.variant.name} create errors: ${lf.createErrors.join("; ")}.`);
    if (lf.failures.length) notes.push(`${loom.variant.name} failed jobs said: ${lf.failures.join(" | ")}.`);
    if (lf.totalMs === undefined)
      notes.push(
        `${loom.variant.name} did not finish within ${E2E_TIMEOUT_MS / 1000} s (LOOM_BENCH_SCHED_E2E_TIMEOUT_S): ${lf.succeeded} of ${lf.jobs} had succeeded.`,
      );
  }
  // Each sandbox start copies the mount table and unmounts it again: network namespaces that
  // crashed servers left under /run/netns made this bench 30% slower before (40.7 vs 59.2 jobs/s).
  notes.push(
    `Mounts on this machine at the start: ${fmt(mountsAtStart)} (${fmt(netnsAtStart)} of them network namespaces under /run/netns).`,
  );
  for (const e of loomErrors) notes.push(`Loom: ${e}.`);
  for (const l of slurm.lines)
    notes.push(
      `Slurm ${l.mode}: ${l.completedSeen} COMPLETED and ${l.notCompletedSeen} other among the records slurmctld still held (states ${l.states}); load average ${l.loadAvg1mAtStart} at its start.`,
    );
  if (slurm.error) notes.push(`Slurm: ${slurm.error}`);
  notes.push(
    `All run one after another on the same ${cpus} cores; each side's own processes (Loom's server and client thread; slurmctld, slurmd, slurmstepd, sbatch and squeue) compete with its jobs for them.`,
  );
  const firstRate = first ? rateOf(first) : undefined;
  if (firstRate !== undefined && sep)
    notes.push(
      firstRate >= E2E_GOAL * sep.jobsPerSecond
        ? `${firstName} meets the goal: ${ratio(firstRate, sep.jobsPerSecond)} Slurm's separate submissions.`
        : `${firstName} is below the goal of ${E2E_GOAL}× Slurm (${ratio(firstRate, sep.jobsPerSecond)} of separate sbatch); bench/README.md lists where the time goes.`,
    );
  const versions = slurm.lines[0]
    ? [`Slurm ${slurm.lines[0].slurmVersion} (slurm-wlm, bench/slurm/slurm.sh)`]
    : [];
  return {
    heading: "(c) End to end: embedded platform against Slurm",
    blocks,
    notes,
    versions,
    workload: `(c) ${fmt(E2E_JOBS)} × /bin/true with 1 CPU on ${cpus} CPUs`,
    ok: looms.length > 0 && looms.every((l) => totalOf(l) !== undefined),
  };
}

// ---------------------------------------------------------------------------------------------
// (b) On a real API server with kwok: pods bound per second, Loom against kube-scheduler

const BIND_PODS = num(env.LOOM_BENCH_SCHED_BIND_PODS, 5000);
const BIND_NODES = num(env.LOOM_BENCH_SCHED_BIND_NODES, 500);
const BIND_GOAL = 3;

async function partBinding(deadline: number): Promise<PartOutput> {
  const r = await runBindingBench({
    nodes: BIND_NODES,
    pods: BIND_PODS,
    log,
    onCleanup: (fn) => cleanups.push(fn),
    timeoutMs: Math.max(60_000, Math.min(300_000, deadline - performance.now() - 120_000)),
  });
  const loomRun = r.runs.find((x) => x.scheduler.startsWith("Loom"));
  const kubeRun = r.runs.find((x) => x.scheduler === "kube-scheduler");
  const bindRow = (label: string, f: (x: BindingRun) => number | undefined, digits = 0) => {
    const a = loomRun ? f(loomRun) : undefined;
    const b = kubeRun ? f(kubeRun) : undefined;
    return [label, fmt(a, digits), fmt(b, digits), ratio(a, b)];
  };
  const tables = [
    markdownTable(
      [
        "metric",
        `Loom operator (${fmt(BIND_PODS)} pods)`,
        `kube-scheduler (${fmt(BIND_PODS)} pods)`,
        "Loom ÷ kube-scheduler",
      ],
      [
        bindRow("pods bound", (x) => x.bound),
        bindRow("pods bound per second (first bind → last)", (x) => x.podsPerSecond),
        bindRow("pods bound per second (scheduler start → last)", (x) => x.podsPerSecondFromStart),
        bindRow("scheduler start → all bound (s)", (x) => x.totalSeconds, 1),
        bindRow("first bind → last bind (s)", (x) => x.bindingSeconds, 1),
        bindRow("scheduler CPU seconds", (x) => x.schedulerCpuSeconds, 1),
      ],
    ),
  ];
  const bindNotes = [...r.notes];
  if (loomRun && kubeRun)
    bindNotes.push(
      loomRun.podsPerSecond >= BIND_GOAL * kubeRun.podsPerSecond
        ? `Loom meets the goal of ${BIND_GOAL}× kube-scheduler's binding rate (${ratio(loomRun.podsPerSecond, kubeRun.podsPerSecond)}).`
        : `Loom is below the goal of ${BIND_GOAL}× kube-scheduler's binding rate (${ratio(loomRun.podsPerSecond, kubeRun.podsPerSecond)}).`,
    );
  return {
    heading: "(b) Binding pods on a real API server (kwok nodes): Loom against kube-scheduler",
    blocks: tables,
    notes: bindNotes,
    versions: [r.versions],
    workload: `(b) ${fmt(BIND_PODS)} pending pods on ${fmt(BIND_NODES)} kwok nodes, per scheduler`,
    ok: !!loomRun && !!kubeRun && loomRun.bound === BIND_PODS && kubeRun.bound === BIND_PODS,
  };
}

// ---------------------------------------------------------------------------------------------

/** The parts, in run order. A part is one function that returns its tables and notes. */
const PART_FNS: Record<string, (deadline: number) => Promise<PartOutput>> = {
  a: partCore,
  b: partBinding,
  c: partEndToEnd,
};

function appendResults(section: string): void {
  if (!existsSync(RESULTS_FILE)) {
    writeFileSync(
      RESULTS_FILE,
      "# Benchmark results\n\nEach run appends a section: date, machine, figures and the peer measured in the same run.\n",
    );
  }
  appendFileSync(RESULTS_FILE, `\n${section}\n`);
}

async function main(): Promise<void> {
  const startedAt = new Date();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      void cleanupAll().finally(() => process.exit(130));
    });
  }
  const watchdog = setTimeout(() => {
    console.error(`bench:scheduler ran past its ${BUDGET_MS / 1000} s budget; stopping everything`);
    void cleanupAll().finally(() => process.exit(2));
  }, BUDGET_MS);
  watchdog.unref();
  const hardStop = performance.now() + BUDGET_MS;

  const unknown = PARTS.filter((p) => !(p in PART_FNS));
  if (unknown.length) {
    console.error(
      `bench:scheduler: unknown part(s) ${unknown.join(", ")} in LOOM_BENCH_SCHED_PARTS (known: ${Object.keys(PART_FNS).join(", ")})`,
    );
    process.exitCode = 2;
    return;
  }
  const m = machine();
  const load = loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");
  console.log(`bench:scheduler — parts ${PARTS.join(", ")}`);
  console.log(
    `machine: ${m.cpus} CPUs, ${m.model}, ${m.memGiB} GiB, Node ${process.version}; load average ${load}`,
  );

  const outputs: PartOutput[] = [];
  for (const part of Object.keys(PART_FNS)) {
    if (!PARTS.includes(part)) continue;
    // Each part may use the time left, less a minute for the rest and the teardown.
    const deadline = hardStop - 60_000;
    try {
      outputs.push(await PART_FNS[part]!(deadline));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log(`part ${part} FAILED: ${message}`);
      outputs.push({
        heading: `(${part}) failed`,
        blocks: [],
        notes: [`Part ${part} failed: ${message.split("\n")[0]}`],
        versions: [],
        workload: "",
        ok: false,
      });
    } finally {
      await cleanupAll();
    }
  }

  for (const o of outputs) {
    console.log(`\n${o.heading}\n`);
    for (const b of o.blocks) console.log(`${b}\n`);
    for (const n of o.notes) console.log(`- ${n}`);
  }

  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
  const date = startedAt.toISOString().replace("T", " ").slice(0, 16);
  const versions = [`Loom ${pkg.version}`, ...outputs.flatMap((o) => o.versions)];
  const section = [
    `## ${date} UTC — bench:scheduler`,
    "",
    `- Machine: ${m.cpus} CPUs (availableParallelism), ${m.model}, ${m.memGiB} GiB memory, Node ${process.version}, ${platform()}/${arch()}; load average at start ${load}`,
    `- Versions: ${versions.join("; ")}`,
    `- Workload: ${outputs
      .map((o) => o.workload)
      .filter(Boolean)
      .join("; ")}. Whole bench: ${fmt((performance.now() - began) / 1000)} s.`,
    ...outputs.flatMap((o) => [
      "",
      `### ${o.heading}`,
      ...o.blocks.flatMap((b) => ["", b]),
      ...(o.notes.length ? ["", ...o.notes.map((n) => `- ${n}`)] : []),
    ]),
  ].join("\n");
  appendResults(section);
  console.log(`\nappended to ${RESULTS_FILE}`);
  process.exitCode = outputs.length > 0 && outputs.every((o) => o.ok) ? 0 : 1;
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

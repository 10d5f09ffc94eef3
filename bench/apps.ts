/**
 * Apps benchmark (issue 20) on a real `loom up` (test/helpers.ts's LoomProcess), with the tests'
 * stdlib app (test/fixtures/apps/counter.py: a WebSocket echo at any path, JSON at /):
 *
 *  (a) WebSocket message round trip through Loom's app origin vs straight to the replica's port,
 *      two sockets to the same replica, at a fixed moderate rate (LOOM_BENCH_APPS_RATE round trips
 *      per second per side, alternating). Goal: added p99 ≤ 1 ms.
 *  (b) Scale from zero: the first request through the origin to an app at zero replicas, against
 *      the app's own readiness (the same command spawned here, polled until it answers). Goal:
 *      added ≤ 100 ms.
 *
 * Prints tables and appends a dated section to bench/RESULTS.md (LOOM_BENCH_APPS_RESULTS=0:
 * print only). Run with `npm run bench:apps`.
 */
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { type LoomProcess, ROOT } from "../test/helpers.js";
import {
  cleanupAll,
  cleanups,
  failedPart,
  fmt,
  freePort,
  loadNow,
  machineLine,
  markdownTable,
  median,
  num,
  type PartResult,
  partsSection,
  pct,
  printParts,
  publishResults,
  sleep,
  startLoom,
} from "./report.js";
import { MiniWebSocket } from "./wsclient.js";

const env = process.env;
const MSGS = num(env.LOOM_BENCH_APPS_MSGS, 1000);
const RATE = num(env.LOOM_BENCH_APPS_RATE, 100);
const RUNS = num(env.LOOM_BENCH_APPS_RUNS, 5);
const PARTS = (env.LOOM_BENCH_APPS_PARTS ?? "a,b").split(",").map((p) => p.trim());
const GOAL_ADDED_P99_MS = 1;
const GOAL_COLD_ADDED_MS = 100;
const API = "/apis/loom.dev/v1alpha1/projects/default/apps";

const began = performance.now();
const log = (s: string) => console.log(`[${((performance.now() - began) / 1000).toFixed(1)}s] ${s}`);

let loom: LoomProcess;
let code = "";
let originPort = 0;

interface AppStatus {
  phase?: string;
  desired?: number;
  ready?: number;
  url?: string;
  revisions?: { replicas?: { ready?: boolean; host?: string; port?: number }[] }[];
}

async function status(name: string): Promise<AppStatus> {
  const r = await loom.api("GET", `${API}/${name}`);
  return (r.body as { status?: AppStatus }).status ?? {};
}

async function waitApp(name: string, pred: (s: AppStatus) => boolean, ms = 120_000): Promise<AppStatus> {
  let s: AppStatus = {};
  for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(100)) {
    s = await status(name);
    if (pred(s)) return s;
  }
  throw new Error(`app ${name} never got there: ${JSON.stringify(s)}\n${loom.log.slice(-2000)}`);
}

const manifest = (name: string, replicas: string, extra = "") =>
  `apiVersion: loom.dev/v1alpha1\nkind: App\nmetadata: {name: ${name}}\nspec:\n  framework: custom\n` +
  `  command: [/usr/bin/python3, counter.py]\n  workingDir: ${code}\n  access: public\n  replicas: ${replicas}\n${extra}`;

/** One GET of / with the given Host; resolves when the whole answer is in. */
function get(port: number, host: string): Promise<number> {
  return new Promise((ok, fail) => {
    const req = request({ host: "127.0.0.1", port, path: "/", headers: { host } }, (res) => {
      res.resume();
      res.on("end", () => ok(res.statusCode ?? 0));
    });
    req.on("error", fail);
    req.end();
  });
}

/** One echo round trip on the socket, in ms. */
async function roundTrip(ws: MiniWebSocket, msg: string): Promise<number> {
  const t0 = performance.now();
  ws.send(msg);
  const reply = await ws.next();
  const ms = performance.now() - t0;
  if (!reply.endsWith(msg)) throw new Error(`echo answered ${reply.slice(0, 200)}`);
  return ms;
}

async function partEcho(): Promise<PartResult> {
  const host = `echo--default.app.localhost:${originPort}`;
  const s = await waitApp("echo", (x) => (x.ready ?? 0) >= 1);
  const replica = s.revisions?.flatMap((r) => r.replicas ?? []).find((r) => r.ready && r.port);
  if (!replica?.host || !replica.port) throw new Error(`no replica address in ${JSON.stringify(s)}`);
  const viaLoom = await MiniWebSocket.open("127.0.0.1", originPort, "/ws", {
    Host: host,
    Origin: `http://${host}`,
  });
  const direct = await MiniWebSocket.open(replica.host, replica.port, "/ws", {
    Host: `${replica.host}:${replica.port}`,
  });
  cleanups.push(
    () => viaLoom.close(),
    () => direct.close(),
  );
  for (let i = 0; i < 50; i++) {
    await roundTrip(viaLoom, `warm ${i}`);
    await roundTrip(direct, `warm ${i}`);
  }
  const lm: number[] = [];
  const dr: number[] = [];
  const interval = 1000 / RATE;
  const t0 = performance.now();
  for (let i = 0; i < MSGS; i++) {
    // A fixed schedule: tick i at t0 + i/RATE, both sides in one tick, the order alternating.
    await sleep(t0 + i * interval - performance.now());
    const msg = `m${i}`;
    if (i % 2 === 0) {
      lm.push(await roundTrip(viaLoom, msg));
      dr.push(await roundTrip(direct, msg));
    } else {
      dr.push(await roundTrip(direct, msg));
      lm.push(await roundTrip(viaLoom, msg));
    }
  }
  const added = pct(lm, 99)! - pct(dr, 99)!;
  const row = (label: string, f: (xs: number[]) => number | undefined) => [
    label,
    fmt(f(lm), 3),
    fmt(f(dr), 3),
    fmt(f(lm)! - f(dr)!, 3),
  ];
  return {
    heading: "(a) WebSocket echo round trip: through Loom's app origin vs direct",
    blocks: [
      markdownTable(
        [`round trip (ms, ${MSGS} each, ${RATE}/s per side)`, "through Loom", "direct", "added"],
        [row("p50", median), row("p99", (xs) => pct(xs, 99)), row("max", (xs) => Math.max(...xs))],
      ),
    ],
    notes: [
      "One replica of a stdlib echo app (access: public), two WebSockets: one through the origin (Host NAME--default.app.localhost), one to the replica's own port (from status.revisions); 50 warm-up round trips each, then ticks on a fixed schedule, one round trip per side per tick, order alternating.",
      added <= GOAL_ADDED_P99_MS
        ? `Meets the goal: added p99 ${fmt(added, 3)} ms ≤ ${GOAL_ADDED_P99_MS} ms.`
        : `Misses the goal: added p99 ${fmt(added, 3)} ms > ${GOAL_ADDED_P99_MS} ms.`,
    ],
    workload: `(a) ${MSGS} echo round trips per side at ${RATE}/s`,
    ok: lm.length === MSGS,
  };
}

/** The app's own readiness: spawn → first answer of / on its port, polled every 2 ms. */
async function directCold(): Promise<number> {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn("/usr/bin/python3", ["counter.py"], {
    cwd: code,
    env: { ...process.env, PORT: String(port), HOST: "127.0.0.1" },
    stdio: "ignore",
  });
  try {
    for (;;) {
      const ok = await get(port, `127.0.0.1:${port}`).catch(() => 0);
      if (ok === 200) return performance.now() - t0;
      await sleep(2);
    }
  } finally {
    child.kill("SIGKILL");
  }
}

/** Through Loom: the app at zero (no replica left), then one GET through the origin, timed. */
async function loomCold(): Promise<number> {
  await waitApp(
    "cold",
    (s) => s.desired === 0 && !s.revisions?.some((r) => (r.replicas ?? []).length > 0),
    180_000,
  );
  await sleep(500); // the replica's process is gone, not only its record
  const t0 = performance.now();
  const code = await get(originPort, `cold--default.app.localhost:${originPort}`);
  const ms = performance.now() - t0;
  if (code !== 200) throw new Error(`the first request after zero answered ${code}`);
  return ms;
}

async function partCold(): Promise<PartResult> {
  const lm: number[] = [];
  const dr: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    lm.push(await loomCold());
    dr.push(await directCold());
    log(`cold run ${i + 1}: through Loom ${fmt(lm[i], 1)} ms, the app alone ${fmt(dr[i], 1)} ms`);
  }
  const added = median(lm)! - median(dr)!;
  const row = (label: string, f: (xs: number[]) => number | undefined) => [
    label,
    fmt(f(lm), 1),
    fmt(f(dr), 1),
    fmt(f(lm)! - f(dr)!, 1),
  ];
  return {
    heading: "(b) Scale from zero: first request through Loom vs the app's own readiness",
    blocks: [
      markdownTable(
        [`ms (${RUNS} runs)`, "first request through Loom", "spawn → first answer, direct", "added"],
        [row("median", median), row("min", (xs) => Math.min(...xs)), row("max", (xs) => Math.max(...xs))],
      ),
    ],
    notes: [
      "Through Loom: the app (replicas {min: 0, max: 1}, scaleToZeroAfter 1 s) at zero with its replica gone, then one GET / through the origin: the activator holds it, the autoscaler asks for a replica, the controller starts it sandboxed, the readiness probe passes, the request is forwarded. Direct: the same `/usr/bin/python3 counter.py` spawned here (one interpreter both ways: `python3` on PATH may be a slower shim, e.g. pyenv's) and polled every 2 ms until / answers.",
      added <= GOAL_COLD_ADDED_MS
        ? `Meets the goal: added (median) ${fmt(added, 1)} ms ≤ ${GOAL_COLD_ADDED_MS} ms.`
        : `Misses the goal: added (median) ${fmt(added, 1)} ms > ${GOAL_COLD_ADDED_MS} ms.`,
    ],
    workload: `(b) ${RUNS} cold starts each way`,
    ok: lm.length === RUNS,
  };
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const load = loadNow();
  loom = await startLoom();
  code = join(loom.home, "code");
  mkdirSync(code);
  copyFileSync(join(ROOT, "test/fixtures/apps/counter.py"), join(code, "counter.py"));
  const r = await loom.cli(["apply", "-f", "-"], {
    input: [
      manifest("echo", "{min: 1, max: 1}"),
      manifest("cold", "{min: 0, max: 1}", "  autoscaling: {scaleToZeroAfter: 1, scaleDownDelay: 1}\n"),
    ].join("---\n"),
  });
  if (r.code !== 0) throw new Error(`apply: ${r.stderr}`);
  const s = await waitApp("echo", (x) => !!x.url);
  originPort = Number(new URL(s.url!).port);
  log(`loom up; app origin on port ${originPort}`);

  const outputs: PartResult[] = [];
  const fail = (part: string, err: unknown) => failedPart(part, err, log);
  if (PARTS.includes("a")) outputs.push(await partEcho().catch((e: unknown) => fail("a", e)));
  if (PARTS.includes("b")) outputs.push(await partCold().catch((e: unknown) => fail("b", e)));
  await loom.cli(["delete", "app", "--all", "--timeout", "30"]).catch(() => undefined);
  await cleanupAll();

  printParts(outputs);
  const date = startedAt.toISOString().replace("T", " ").slice(0, 16);
  const section = [
    `## ${date} UTC — bench:apps`,
    "",
    machineLine(load),
    "- Loom (`loom up`, embedded, temp data dir) with stdlib Apps (test/fixtures/apps/counter.py, framework: custom); peers: the replica's own port, the same command spawned directly",
    ...partsSection(outputs, began, [
      `(a) added p99 of a WebSocket message round trip ≤ ${GOAL_ADDED_P99_MS} ms`,
      `(b) scale-from-zero added latency beyond the app's own readiness ≤ ${GOAL_COLD_ADDED_MS} ms`,
    ]),
  ].join("\n");
  publishResults(section, outputs, "LOOM_BENCH_APPS_RESULTS");
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanupAll().finally(() => process.exit()));

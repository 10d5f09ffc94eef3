/**
 * bench:console (issue 21): the same data, loaded through each side's REST API, opened in the same
 * Chromium — Loom's console against MLflow's own UI (`mlflow server`, PyPI, the venv bench:tracking
 * makes under ~/.cache/loom/bench-envs):
 * - 10,000 runs in one experiment (2 params, 2 metrics each): navigation to the first rows of the
 *   runs table;
 * - one run with a 100,000-point metric: navigation to that metric's chart drawn;
 * - Loom's jobs page with 10,000 jobs: navigation to the first rows (goal ≤ 1 s);
 * - the console's compressed JavaScript (goal ≤ 400 KB).
 * Real paint: each timing ends when the rows or the chart are in the DOM (for Loom's chart, its
 * canvas with the points it drew; for MLflow's, its plot). Loom and MLflow alternate, REPS times
 * each, medians reported. Appends to bench/RESULTS.md (LOOM_BENCH_CONSOLE_RESULTS=0: print only).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { arch, availableParallelism, homedir, platform, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { gzipSync } from "node:zlib";
import { type Browser, launchBrowser, type Page } from "../test/browser.js";
import { LoomProcess, ROOT } from "../test/helpers.js";
import {
  cleanupAll,
  cleanups,
  fmt,
  loadNow,
  loomCommit,
  machine,
  markdownTable,
  num,
  type PartResult,
  partsSection,
  publishResults,
  ratio,
  sleep,
  tempDir,
} from "./report.js";

const env = process.env;
const RUNS = num(env.LOOM_BENCH_CONSOLE_RUNS, 10_000);
const POINTS = num(env.LOOM_BENCH_CONSOLE_POINTS, 100_000);
const JOBS = num(env.LOOM_BENCH_CONSOLE_JOBS, 10_000);
const REPS = num(env.LOOM_BENCH_CONSOLE_REPS, 5);
const CONCURRENCY = 16;
const MLFLOW_VERSION = "3.17.2";
const VENV = join(homedir(), ".cache", "loom", "bench-envs", `mlflow-${MLFLOW_VERSION}`);
const WAIT_MS = 120_000;

const began = performance.now();
const log = (msg: string) =>
  console.log(`[${((performance.now() - began) / 1000).toFixed(0).padStart(4)} s] ${msg}`);

interface UiPage extends Page {
  waitForSelector(selector: string, opts?: { timeout?: number; state?: string }): Promise<unknown>;
  fill(selector: string, value: string): Promise<void>;
  keyboard: { press(key: string): Promise<void> };
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  content(): Promise<string>;
}

/** One side's MLflow REST API: base URL (with Loom's project prefix) and auth headers. */
interface Side {
  name: string;
  api: string;
  headers: Record<string, string>;
}

async function post<T>(side: Side, path: string, body: unknown): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(`${side.api}/${path}`, {
      method: "POST",
      headers: { ...side.headers, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (res.ok) return JSON.parse(text) as T;
    // MLflow's SQLite store answers "database is locked" under concurrent writes: retry those.
    if (attempt < 5 && /locked|RESOURCE_EXHAUSTED/i.test(text)) {
      await sleep(100 * (attempt + 1));
      continue;
    }
    throw new Error(`${side.name} ${path}: ${res.status} ${text.slice(0, 300)}`);
  }
}

async function pool(n: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

/** The same data on a side: an experiment of RUNS runs, and a run with a POINTS-point metric. */
async function populate(side: Side): Promise<{ exp: string; big: string }> {
  const t0 = performance.now();
  const exp = (
    await post<{ experiment_id: string }>(side, "experiments/create", {
      name: `bench-${Date.now()}`,
      // MLflow 3's UI asks what kind an experiment is before showing it; this answers (classic ML).
      tags: [{ key: "mlflow.experimentKind", value: "custom_model_development" }],
    })
  ).experiment_id;
  const start = Date.now() - RUNS * 1000;
  await pool(RUNS, CONCURRENCY, async (i) => {
    const { run } = await post<{ run: { info: { run_id: string } } }>(side, "runs/create", {
      experiment_id: exp,
      run_name: `run-${String(i).padStart(5, "0")}`,
      start_time: start + i * 1000,
    });
    await post(side, "runs/log-batch", {
      run_id: run.info.run_id,
      params: [
        { key: "lr", value: String(10 ** -(1 + (i % 4))) },
        { key: "batch", value: String(16 << (i % 3)) },
      ],
      metrics: [
        { key: "loss", value: 1 / (1 + (i % 97)), timestamp: start + i * 1000, step: 100 },
        { key: "accuracy", value: (i % 89) / 89, timestamp: start + i * 1000, step: 100 },
      ],
    });
  });
  const { run } = await post<{ run: { info: { run_id: string } } }>(side, "runs/create", {
    experiment_id: exp,
    run_name: "big",
    start_time: Date.now(),
  });
  const big = run.info.run_id;
  const chunks = Math.ceil(POINTS / 1000);
  const t1 = Date.now() - POINTS;
  await pool(chunks, 4, async (c) => {
    const metrics = [];
    for (let s = c * 1000; s < Math.min(POINTS, (c + 1) * 1000); s++)
      metrics.push({ key: "loss", value: 2 / (1 + s / 100) + (s % 7) / 100, timestamp: t1 + s, step: s });
    await post(side, "runs/log-batch", { run_id: big, metrics });
  });
  log(
    `${side.name}: ${RUNS} runs and a ${POINTS}-point metric loaded in ${fmt((performance.now() - t0) / 1000, 1)} s`,
  );
  return { exp, big };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((ok) => srv.listen(0, "127.0.0.1", ok));
  const port = (srv.address() as { port: number }).port;
  await new Promise((ok) => srv.close(ok));
  return port;
}

/** `mlflow server` as bench:tracking runs it (one uvicorn worker per core, SQLite in WAL mode). */
async function startMlflow(): Promise<{ url: string; command: string; version: string }> {
  if (!existsSync(join(VENV, ".ready")))
    throw new Error(`no MLflow venv at ${VENV}: run \`npm run bench:tracking\` once (it creates it)`);
  const dir = tempDir("loom-bench-console-mlflow-");
  const db = join(dir, "mlflow.db");
  execFileSync(join(VENV, "bin", "python"), [
    "-c",
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('pragma journal_mode=wal'); c.close()",
    db,
  ]);
  const port = await freePort();
  const workers = String(availableParallelism());
  const args = [
    "server",
    "--backend-store-uri",
    `sqlite:///${db}`,
    "--default-artifact-root",
    join(dir, "a"),
  ];
  args.push(
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--workers",
    workers,
    "--uvicorn-opts",
    "--no-access-log",
  );
  const proc: ChildProcess = spawn(join(VENV, "bin", "mlflow"), args, {
    cwd: dir,
    env: { ...process.env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION: "false" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  cleanups.push(async () => {
    try {
      if (proc.pid) process.kill(-proc.pid, "SIGTERM");
    } catch {}
    await sleep(2000);
    try {
      if (proc.pid) process.kill(-proc.pid, "SIGKILL");
    } catch {}
  });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d));
  proc.stderr!.on("data", (d: Buffer) => (out += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const ok = await fetch(`${url}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok && (out.match(/Application startup complete/g) ?? []).length >= Number(workers)) {
      const version = execFileSync(
        join(VENV, "bin", "python"),
        ["-c", "import mlflow; print(mlflow.__version__)"],
        {
          encoding: "utf8",
        },
      ).trim();
      return { url, command: `mlflow ${args.join(" ").replaceAll(dir, "<tmp>")}`, version };
    }
    if (proc.exitCode !== null) throw new Error(`mlflow server exited:\n${out.slice(-2000)}`);
    await sleep(250);
  }
  throw new Error(`mlflow server did not come up:\n${out.slice(-2000)}`);
}

/** Navigation (from about:blank, so the app loads whole) to `selector` in the DOM, in ms. */
async function timeTo(page: UiPage, url: string, selector: string): Promise<number> {
  await page.goto("about:blank");
  const t0 = performance.now();
  await page.goto(url);
  try {
    await page.waitForSelector(selector, { timeout: WAIT_MS });
  } catch (err) {
    const html = await page.content().catch(() => "");
    const file = join(tmpdir(), `loom-bench-console-${Date.now()}.html`);
    writeFileSync(file, html);
    throw new Error(`${url}: ${selector} not seen (the page as it was: ${file}): ${String(err)}`);
  }
  return performance.now() - t0;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : undefined;
};

/** The console's JavaScript as shipped: gzip bytes of every .js under dist/console. */
function consoleJsGzip(): number {
  let total = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (e.endsWith(".js")) total += gzipSync(readFileSync(p), { level: 9 }).length;
    }
  };
  walk(join(ROOT, "dist", "console"));
  return total;
}

async function main(): Promise<void> {
  const m = machine();
  const load = loadNow();
  const startedAt = new Date();
  const timer = setTimeout(() => {
    console.error("bench:console: over its budget (20 min), stopping");
    void cleanupAll().finally(() => process.exit(1));
  }, num(env.LOOM_BENCH_CONSOLE_BUDGET_S, 1200) * 1000);
  timer.unref();

  const loom = new LoomProcess();
  cleanups.push(() => loom.stop());
  await loom.start();
  const peer = await startMlflow();
  log(`loom at ${loom.url}, mlflow ${peer.version} at ${peer.url}`);
  const loomSide: Side = {
    name: "Loom",
    api: `${loom.url}/mlflow/projects/default/api/2.0/mlflow`,
    headers: { authorization: `Bearer ${loom.token}` },
  };
  const mlflowSide: Side = { name: "MLflow", api: `${peer.url}/api/2.0/mlflow`, headers: {} };
  const L = await populate(loomSide);
  const M = await populate(mlflowSide);

  const browser: Browser = await launchBrowser();
  cleanups.push(() => browser.close());
  const ctx = await browser.newContext();
  const page = (await ctx.newPage()) as UiPage;
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(`${loom.url}/`);
  await page.waitForSelector("#token");
  await page.fill("#token", loom.token);
  await page.keyboard.press("Enter");
  await page.waitForSelector("nav[aria-label=Pages]");

  const loomRows = `${loom.url}/#/experiments/default/${L.exp}`;
  const mlflowRows = `${peer.url}/#/experiments/${M.exp}/runs`;
  const loomChart = `${loom.url}/#/runs/default/${L.big}`;
  const mlflowChart = `${peer.url}/#/experiments/${M.exp}/runs/${M.big}/model-metrics`;
  // Rows: a run's name link in the table; chart: Loom's canvas, MLflow's plotted line (plotly).
  const ROW_LOOM = ".vrow a[href*='#/runs/']";
  const ROW_MLFLOW = env.LOOM_BENCH_CONSOLE_MLFLOW_ROW ?? "text=/^run-\\d{5}$/";
  const CHART_LOOM = "figure[data-metric=loss][data-points] canvas";
  const CHART_MLFLOW =
    env.LOOM_BENCH_CONSOLE_MLFLOW_CHART ?? ".js-plotly-plot .scatterlayer .trace path.js-line";
  const t = {
    loomRows: [] as number[],
    mlflowRows: [] as number[],
    loomChart: [] as number[],
    mlflowChart: [] as number[],
  };
  // One untimed pass each to warm caches (both serve their assets with caching headers).
  await timeTo(page, loomRows, ROW_LOOM);
  await timeTo(page, mlflowRows, ROW_MLFLOW);
  await timeTo(page, loomChart, CHART_LOOM);
  await timeTo(page, mlflowChart, CHART_MLFLOW);
  for (let r = 0; r < REPS; r++) {
    t.loomRows.push(await timeTo(page, loomRows, ROW_LOOM));
    t.mlflowRows.push(await timeTo(page, mlflowRows, ROW_MLFLOW));
    t.loomChart.push(await timeTo(page, loomChart, CHART_LOOM));
    t.mlflowChart.push(await timeTo(page, mlflowChart, CHART_MLFLOW));
    log(
      `rep ${r + 1}: rows ${fmt(t.loomRows.at(-1))} vs ${fmt(t.mlflowRows.at(-1))} ms, chart ${fmt(t.loomChart.at(-1))} vs ${fmt(t.mlflowChart.at(-1))} ms`,
    );
  }
  await page.goto(loomChart);
  await page.waitForSelector(CHART_LOOM);
  const loomPoints = await page.evaluate(
    () => document.querySelector("figure[data-metric=loss]")?.getAttribute("data-points") ?? "",
  );

  // Jobs: JOBS waiting jobs (a project whose limit none fits), then the jobs page's first rows.
  const BASE = "/apis/loom.dev/v1alpha1";
  await loom.api("POST", `${BASE}/projects`, {
    apiVersion: "loom.dev/v1alpha1",
    kind: "Project",
    metadata: { name: "bulk" },
    spec: { limit: { cpu: "1m" } },
  });
  const tj = performance.now();
  await pool(JOBS, CONCURRENCY, async (i) => {
    const r = await loom.api("POST", `${BASE}/projects/bulk/trainingjobs`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: `j${String(i).padStart(5, "0")}` },
      spec: { command: ["true"], resources: { cpu: "100m", memory: "16Mi" } },
    });
    if (r.status !== 201) throw new Error(`job ${i}: ${r.status} ${JSON.stringify(r.body)}`);
  });
  log(`${JOBS} jobs created in ${fmt((performance.now() - tj) / 1000, 1)} s`);
  const jobsUrl = `${loom.url}/?j#/jobs`;
  await timeTo(page, jobsUrl, ".vrow");
  const jobs: number[] = [];
  const jobsAll: number[] = [];
  for (let r = 0; r < REPS; r++) {
    jobs.push(await timeTo(page, jobsUrl, ".vrow"));
    const t0 = performance.now();
    await page.waitForSelector(`text=${JOBS} of ${JOBS} jobs`, { timeout: WAIT_MS });
    jobsAll.push(jobs.at(-1)! + performance.now() - t0);
  }
  const js = consoleJsGzip();

  const med = (xs: number[]) => median(xs);
  const rowsX = (med(t.mlflowRows) ?? 0) / (med(t.loomRows) ?? 1);
  const chartX = (med(t.mlflowChart) ?? 0) / (med(t.loomChart) ?? 1);
  const all = (xs: number[]) => xs.map((x) => fmt(x)).join(", ");
  const table = markdownTable(
    [
      "Navigation to",
      "Loom console, median ms",
      "MLflow UI, median ms",
      "MLflow ÷ Loom",
      "Loom runs",
      "MLflow runs",
    ],
    [
      [
        "first rows of the runs table",
        fmt(med(t.loomRows)),
        fmt(med(t.mlflowRows)),
        ratio(med(t.mlflowRows), med(t.loomRows)),
        all(t.loomRows),
        all(t.mlflowRows),
      ],
      [
        "metric chart drawn",
        fmt(med(t.loomChart)),
        fmt(med(t.mlflowChart)),
        ratio(med(t.mlflowChart), med(t.loomChart)),
        all(t.loomChart),
        all(t.mlflowChart),
      ],
    ],
  );
  const jobsTable = markdownTable(
    [`Jobs page, ${JOBS} jobs`, "median ms", "runs"],
    [
      ["first rows", fmt(med(jobs)), all(jobs)],
      ["every job listed", fmt(med(jobsAll)), all(jobsAll)],
    ],
  );
  const goals = [
    `runs table first rows ≥ 3× faster than MLflow's UI: ${rowsX.toFixed(1)}× — ${rowsX >= 3 ? "met" : "NOT met"}`,
    `metric chart drawn ≥ 3× faster than MLflow's UI: ${chartX.toFixed(1)}× — ${chartX >= 3 ? "met" : "NOT met"}`,
    `jobs page first rows ≤ 1 s with ${JOBS} jobs: ${fmt(med(jobs))} ms — ${(med(jobs) ?? 1e9) <= 1000 ? "met" : "NOT met"}`,
    `console JavaScript ≤ 400 KB gzip: ${fmt(js / 1024, 1)} KB — ${js <= 400 * 1024 ? "met" : "NOT met"}`,
  ];
  const out: PartResult = {
    heading: "Console vs MLflow's UI",
    blocks: [table, jobsTable],
    notes: [
      `Loom's chart holds ${loomPoints} points of the ${POINTS}: both UIs ask for the metric sampled (get-history-bulk-interval, MLflow's UI's own call); MLflow's run page draws its own sample with plotly.`,
      `Timing: from \`page.goto\` (after about:blank, assets cached by one untimed pass each) to the selector in the DOM — Loom rows \`${ROW_LOOM}\`, MLflow rows \`${ROW_MLFLOW}\`; Loom chart \`${CHART_LOOM}\`, MLflow chart \`${CHART_MLFLOW}\`. Loom and MLflow alternate, ${REPS} runs each.`,
    ],
    workload: `${RUNS} runs (2 params, 2 metrics each) in one experiment and one run with a ${POINTS}-point metric, loaded through each side's REST API; ${JOBS} jobs in Loom; Chromium at 1280×800`,
    ok: true,
  };
  console.log(`\n${table}\n\n${jobsTable}\n\n${goals.join("\n")}`);
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
  const section = [
    `## ${startedAt.toISOString().replace("T", " ").slice(0, 16)} UTC — bench:console`,
    "",
    `- Machine: ${m.cpus} CPUs, ${m.model}, ${m.memGiB} GiB memory, Node ${process.version}, ${platform()}/${arch()}; load average at start ${load}, at end ${loadNow()}`,
    `- Versions: Loom ${pkg.version} (${loomCommit()}; \`loom up\`, embedded); peer: MLflow ${peer.version} from PyPI, \`${peer.command}\` (SQLite in WAL mode)`,
    ...partsSection([out], began, goals),
  ].join("\n");
  publishResults(section, [out], "LOOM_BENCH_CONSOLE_RESULTS");
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanupAll().finally(() => process.exit()));

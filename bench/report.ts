/**
 * What every benchmark shares: cleanups that run once (normal end or watchdog), temp dirs,
 * number formatting, ratios, medians and percentiles, markdown tables, a description of the
 * machine, a `loom up` to measure, and the section each bench appends to RESULTS.md.
 */
import { execFileSync } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { arch, availableParallelism, loadavg, platform, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { LoomProcess } from "../test/helpers.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const RESULTS_FILE = join(ROOT, "bench", "RESULTS.md");

/** A numeric setting from the environment (LOOM_BENCH_*), or `d` when unset or empty. */
export const num = (v: string | undefined, d: number) => (v === undefined || v === "" ? d : Number(v));

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

export const cleanups: (() => void | Promise<void>)[] = [];

/** Runs every registered cleanup once, newest first (the watchdog and the normal path may overlap). */
export async function cleanupAll(): Promise<void> {
  for (let fn = cleanups.pop(); fn; fn = cleanups.pop()) {
    try {
      await fn();
    } catch (err) {
      console.error(`cleanup failed: ${String(err)}`);
    }
  }
}

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const fmt = (x: number | undefined, digits = 0) =>
  x === undefined || Number.isNaN(x)
    ? "—"
    : x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

export function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "—";
  return `${(a / b).toFixed(2)}×`;
}

/** A markdown table, padded the way Biome formats markdown (bench/ is under `npm run lint`). */
export function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(3, h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const cell = (text: string, c: number) => (c === 0 ? text.padEnd(widths[c]!) : text.padStart(widths[c]!));
  const line = (cells: string[]) => `| ${cells.map(cell).join(" | ")} |`;
  const rule = `| ${widths.map((w, c) => (c === 0 ? "-".repeat(w) : `${"-".repeat(w - 1)}:`)).join(" | ")} |`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

export function machine(): { cpus: string; model: string; memGiB: string } {
  let model = "unknown CPU";
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? model;
  } catch {
    // not Linux
  }
  return { cpus: String(availableParallelism()), model, memGiB: (totalmem() / 2 ** 30).toFixed(1) };
}

export const loadNow = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");

/** Appends a dated section to bench/RESULTS.md (made with its header when missing). */
export function appendResults(section: string): void {
  if (!existsSync(RESULTS_FILE)) {
    writeFileSync(
      RESULTS_FILE,
      "# Benchmark results\n\nEach run appends a section: date, machine, figures and the peer measured in the same run.\n",
    );
  }
  appendFileSync(RESULTS_FILE, `\n${section}\n`);
}

/** The commit the measured Loom was built from. */
export function loomCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

/** One part of a benchmark's results: its tables, notes and what it ran. */
export interface PartResult {
  heading: string;
  blocks: string[];
  notes: string[];
  workload: string;
  ok: boolean;
}

/** The "Workload" line, then one markdown section per part, with goals (if any) between. */
export function partsSection(outputs: PartResult[], began: number, goals: string[] = []): string[] {
  return [
    `- Workload: ${outputs
      .map((o) => o.workload)
      .filter(Boolean)
      .join("; ")}. Whole bench: ${fmt((performance.now() - began) / 1000)} s.`,
    ...(goals.length ? ["", "Goals:", "", ...goals.map((g) => `- ${g}`)] : []),
    ...outputs.flatMap((o) => [
      "",
      `### ${o.heading}`,
      ...o.blocks.flatMap((b) => ["", b]),
      ...(o.notes.length ? ["", ...o.notes.map((n) => `- ${n}`)] : []),
    ]),
  ];
}

/**
 * Appends the section to RESULTS.md, or prints it when `skipVar` is "0" in the environment; the
 * exit status says whether every part measured what it is for.
 */
export function publishResults(section: string, outputs: PartResult[], skipVar: string): void {
  if (process.env[skipVar] === "0")
    console.log(`\nnot appended to RESULTS.md (${skipVar}=0); the section would be:\n\n${section}`);
  else {
    appendResults(section);
    console.log(`\nappended to ${RESULTS_FILE}`);
  }
  process.exitCode = outputs.length > 0 && outputs.every((o) => o.ok) ? 0 : 1;
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile. */
export function pct(xs: number[], p: number): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** A loopback port free right now. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((ok) => srv.listen(0, "127.0.0.1", ok));
  const port = (srv.address() as { port: number }).port;
  await new Promise((ok) => srv.close(ok));
  return port;
}

/** A real `loom up` (temp data dir), stopped by cleanupAll. */
export async function startLoom(): Promise<LoomProcess> {
  const loom = new LoomProcess();
  cleanups.push(() => loom.stop());
  await loom.start();
  return loom;
}

/** A part that threw: a result saying so (the bench goes on with the others). */
export function failedPart(part: string, err: unknown, log: (msg: string) => void): PartResult {
  const message = err instanceof Error ? err.message : String(err);
  log(`part ${part} FAILED: ${message}`);
  return {
    heading: `(${part}) failed`,
    blocks: [],
    notes: [`Part ${part} failed: ${message.split("\n")[0]}`],
    workload: "",
    ok: false,
  };
}

/** The parts' tables and notes on the console. */
export function printParts(outputs: PartResult[]): void {
  for (const o of outputs) {
    console.log(`\n${o.heading}\n`);
    for (const b of o.blocks) console.log(`${b}\n`);
    for (const n of o.notes) console.log(`- ${n}`);
  }
}

/** The section's "Machine" line: the machine, Node, and the load average at start and now. */
export function machineLine(loadAtStart: string): string {
  const m = machine();
  return `- Machine: ${m.cpus} CPUs (availableParallelism), ${m.model}, ${m.memGiB} GiB memory, Node ${process.version}, ${platform()}/${arch()}; load average at start ${loadAtStart}, at end ${loadNow()}`;
}

/**
 * What every benchmark shares: cleanups that run once (normal end or watchdog), temp dirs,
 * number formatting, ratios, markdown tables and a description of the machine.
 */
import { execFileSync } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

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

import { readFileSync, writeFileSync } from "node:fs";
import { relative } from "node:path";
import { DURATIONS_FILE } from "./sequencer.js";

/**
 * Refreshes test/durations.json, the estimates test/sequencer.ts starts the longest files with on
 * a machine with no Vitest cache (CI), from a full run's report:
 *   npx vitest run --reporter=default --reporter=json --outputFile=/tmp/vitest.json
 *   node --import tsx test/durations.ts /tmp/vitest.json
 * Files under 5 s are left out: their order hardly changes when the run ends.
 */
interface Report {
  testResults: { name: string; startTime: number; endTime: number }[];
}

const [report] = process.argv.slice(2);
if (!report) {
  console.error("usage: node --import tsx test/durations.ts VITEST_JSON_REPORT");
  process.exit(2);
}
const root = `${import.meta.dirname}/..`;
const { testResults } = JSON.parse(readFileSync(report, "utf8")) as Report;
const entries = testResults
  .map((r) => [relative(root, r.name), Math.round((r.endTime - r.startTime) / 1000)] as const)
  .filter(([, s]) => s >= 5)
  .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
writeFileSync(DURATIONS_FILE, `${JSON.stringify(Object.fromEntries(entries), null, 2)}\n`);
console.log(`${DURATIONS_FILE}: ${entries.length} files of ${testResults.length} at 5 s or more`);

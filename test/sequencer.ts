import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/**
 * Longest files first, so that the run's two workers end together: the last file to start is a
 * short one, not a 6-minute cluster suite started when the other worker is nearly done.
 *
 * Vitest's own order is by the last run's durations in node_modules/.vite, which `npm ci` wipes: on
 * CI it fell back to file size, and test/realnode.e2e.test.ts (347 s, 414 bytes: it only imports
 * its suites) started last of 188. The last run's duration here is used when Vitest has one (a
 * developer's machine); otherwise the committed test/durations.json (seconds, a full CI run's,
 * refreshed with `node --import tsx test/durations.ts REPORT.json`); otherwise the file's size decides among
 * the rest, which are all short.
 */
export const DURATIONS_FILE = join(import.meta.dirname, "durations.json");

/** Committed estimates, seconds per file (path from the repository root). */
export function committedDurations(file = DURATIONS_FILE): Map<string, number> {
  try {
    return new Map(Object.entries(JSON.parse(readFileSync(file, "utf8")) as Record<string, number>));
  } catch {
    return new Map();
  }
}

/** Orders files by estimated seconds, longest first; files with no estimate last, by size. */
export function longestFirst<T>(
  files: T[],
  estimate: (f: T) => number | undefined,
  size: (f: T) => number,
): T[] {
  const keyed = files.map((f) => ({ f, s: estimate(f), size: size(f) }));
  keyed.sort((a, b) => {
    if (a.s !== undefined && b.s !== undefined) return b.s - a.s;
    if (a.s !== undefined) return -1;
    if (b.s !== undefined) return 1;
    return b.size - a.size;
  });
  return keyed.map((k) => k.f);
}

export default class LongestFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const committed = committedDurations();
    const { cache, config } = this.ctx;
    const path = (f: TestSpecification) => relative(config.root, f.moduleId);
    const key = (f: TestSpecification) => `${f.project.name}:${path(f)}`;
    return longestFirst(
      files,
      (f) => {
        const last = cache.getFileTestResults(key(f));
        return last ? last.duration / 1000 : committed.get(path(f));
      },
      (f) => cache.getFileStats(key(f))?.size ?? 0,
    );
  }
}

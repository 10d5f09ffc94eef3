import type { Reporter, TestModule } from "vitest/node";

/**
 * Prints the closing line CI reads ("N passed, N failed") after Vitest's own summary. A run that
 * collected no test at all fails: an empty run proves nothing. A file that failed outside its
 * tests (a beforeAll hook, its import) counts as one failure: its tests show as skipped, and the
 * line said "0 failed" while Vitest's exit code said otherwise (CI: a cluster that did not start).
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const state = test.result().state;
        if (state === "passed") passed++;
        else if (state === "failed") failed++;
        else skipped++;
      }
      const failedTests = [...mod.children.allTests()].filter((t) => t.result().state === "failed");
      if (mod.state() === "failed" && failedTests.length === 0) failed++;
    }
    if (passed + failed === 0) {
      process.exitCode = 1;
      process.stdout.write("no tests were executed\n");
    }
    process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}\n`);
  }
}

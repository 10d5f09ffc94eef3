import { describe, expect, it } from "vitest";
import type { TestModule } from "vitest/node";
import SummaryReporter from "./summary-reporter.js";

/** A module as the reporter reads it: its state and its tests' states. */
function mod(state: string, tests: string[]): TestModule {
  const all = tests.map((s) => ({ result: () => ({ state: s }) }));
  return { state: () => state, children: { allTests: () => all.values() } } as unknown as TestModule;
}

function closingLine(modules: TestModule[]): string {
  const out: string[] = [];
  const write = process.stdout.write;
  const exitCode = process.exitCode;
  process.stdout.write = ((s: string) => out.push(s) > 0) as typeof process.stdout.write;
  try {
    new SummaryReporter().onTestRunEnd(modules);
  } finally {
    process.stdout.write = write;
    process.exitCode = exitCode;
  }
  return out.join("").trim().split("\n").at(-1)!;
}

describe("the closing line", () => {
  it("counts passed, failed and skipped tests", () => {
    expect(closingLine([mod("failed", ["passed", "failed", "skipped"]), mod("passed", ["passed"])])).toBe(
      "2 passed, 1 failed, 1 skipped",
    );
  });

  it("counts a file whose hook failed (its tests all skipped) as a failure", () => {
    expect(closingLine([mod("failed", ["skipped", "skipped", "skipped"]), mod("passed", ["passed"])])).toBe(
      "1 passed, 1 failed, 3 skipped",
    );
  });

  it("counts a file that collected no test because it failed to load", () => {
    expect(closingLine([mod("failed", []), mod("passed", ["passed"])])).toBe("1 passed, 1 failed");
  });
});

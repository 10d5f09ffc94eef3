import { describe, expect, it } from "vitest";
import { classifyFailure, restartDelayMs } from "./reconciler.js";

describe("classifyFailure (failurePolicy.rules)", () => {
  const rules = [
    { exitCodes: [2], action: "Fail" as const },
    { signals: ["SIGKILL"], action: "RestartWithoutCounting" as const },
    { exitCodes: [1, 2], action: "Restart" as const },
  ];

  it("the first matching rule decides, by exit code or by signal", () => {
    expect(classifyFailure({ index: 1, state: "Failed", exitCode: 2 }, rules)).toBe("Fail");
    expect(classifyFailure({ index: 0, state: "Failed", exitCode: 137, signal: "SIGKILL" }, rules)).toBe(
      "RestartWithoutCounting",
    );
    expect(classifyFailure({ index: 0, state: "Failed", exitCode: 1 }, rules)).toBe("Restart");
  });

  it("no match restarts (counted); a lost worker never counts", () => {
    expect(classifyFailure({ index: 0, state: "Failed", exitCode: 3 }, rules)).toBe("Restart");
    expect(classifyFailure({ index: 0, state: "Failed", exitCode: 2 }, [])).toBe("Restart");
    expect(classifyFailure({ index: 0, state: "Unknown" }, rules)).toBe("RestartWithoutCounting");
  });
});

describe("restartDelayMs", () => {
  it("restarts at once the first time, then backs off exponentially up to the cap", () => {
    expect([0, 1, 2, 3, 4, 10].map((n) => restartDelayMs(n, 1000, 8000))).toEqual([
      0, 1000, 2000, 4000, 8000, 8000,
    ]);
  });
});

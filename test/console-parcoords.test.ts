import { describe, expect, it } from "vitest";
import { axisFor, parallelCoordinates } from "../web/src/parcoords.js";

/** The Sweeps page's parallel coordinates: where each trial's values sit on each axis. */
describe("parallel coordinates", () => {
  it("puts a log-uniform parameter on a log axis, ends at the extremes", () => {
    const a = axisFor("lr", [1e-5, 1e-3, 1e-1]);
    expect(a.log).toBe(true);
    expect(a.at(1e-5)).toBe(0);
    expect(a.at(1e-3)).toBeCloseTo(0.5);
    expect(a.at(1e-1)).toBe(1);
  });

  it("keeps a narrow numeric range linear, and a single value mid-axis", () => {
    const a = axisFor("val_loss", [2, 3, 2.5]);
    expect(a.log).toBe(false);
    expect(a.at(2.5)).toBeCloseTo(0.5);
    expect(axisFor("x", [4, 4]).at(4)).toBe(0.5);
  });

  it("spaces categories evenly in natural order; a missing value has no position", () => {
    const a = axisFor("opt", ["sgd", "adam", "sgd", undefined]);
    expect(a.ticks.map((t) => t.label)).toEqual(["adam", "sgd"]);
    expect(a.at("adam")).toBe(0);
    expect(a.at("sgd")).toBe(1);
    expect(a.at(undefined)).toBeUndefined();
    expect(axisFor("n", ["2", "10", "4"]).ticks.map((t) => t.label)).toEqual(["2", "4", "10"]);
  });

  it("gives one axis per parameter plus the objective, one polyline per trial", () => {
    const { axes, lines } = parallelCoordinates(
      [
        { number: 1, params: { lr: 0.001, rank: 2 }, objective: 2.0, stopped: false },
        { number: 2, params: { lr: 0.01, rank: 8 }, objective: 3.0, stopped: true },
        { number: 3, params: { lr: 0.1, rank: 4 }, stopped: false },
      ],
      ["lr", "rank"],
      "val_loss",
    );
    expect(axes.map((a) => a.name)).toEqual(["lr", "rank", "val_loss"]);
    expect(lines).toHaveLength(3);
    expect(lines[0]!.ys).toEqual([0, 0, 0]);
    expect(lines[1]!.ys).toEqual([0.5, 1, 1]);
    // A trial that has not reported yet: its line stops before the objective axis.
    expect(lines[2]!.ys[2]).toBeUndefined();
  });
});

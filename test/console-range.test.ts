import { describe, expect, it } from "vitest";
import { LONE_X_PAD, xRange } from "../web/src/xrange.js";

/** The console's metric charts: the x range uPlot is given (issue 21: one point charted by time spanned years). */
describe("xRange", () => {
  const t = 1_796_000_000; // seconds

  it("gives a lone x on a time axis a minute either side, not the 1,000 days uPlot proposes", () => {
    expect(xRange([t], t, t + 86_400_000, true)).toEqual([t - LONE_X_PAD.time, t + LONE_X_PAD.time]);
    expect(LONE_X_PAD.time).toBeLessThan(3600);
  });

  it("does the same for several points at one x (equal timestamps)", () => {
    expect(xRange([t, t, t], t, t + 86_400_000, true)).toEqual([t - 60, t + 60]);
  });

  it("gives a lone step one step either side", () => {
    expect(xRange([0], -0.1, 0.1, false)).toEqual([-1, 1]);
    expect(xRange([59], 58.9, 59.1, false)).toEqual([58, 60]);
  });

  it("keeps what uPlot proposes for distinct x's: their span, or a zoom", () => {
    expect(xRange([0, 30, 59], 0, 59, false)).toEqual([0, 59]);
    expect(xRange([t, t + 37], t + 5, t + 9, true)).toEqual([t + 5, t + 9]);
  });

  it("leaves an empty chart to uPlot", () => {
    expect(xRange([], null, null, true)).toEqual([null, null]);
    expect(xRange([null], null, null, false)).toEqual([null, null]);
  });
});

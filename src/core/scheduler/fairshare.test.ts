import { describe, expect, it } from "vitest";
import { fairShares, fairSharesByPool } from "./fairshare.js";
import type { ProjectPolicy, Vec } from "./model.js";

const v = (gpu: number): Vec => ({ gpu, cpu: 0, memory: 0 });
const p = (name: string, weight: number, extra: Partial<ProjectPolicy> = {}): ProjectPolicy => ({
  name,
  deserved: {},
  overQuotaWeight: weight,
  ...extra,
});

describe("fair shares", () => {
  it("splits idle capacity by weight over demand, and what one does not need flows to the others", () => {
    const shares = fairShares(
      [p("a", 1), p("b", 1), p("c", 2)],
      v(16),
      new Map([
        ["a", v(2)],
        ["b", v(100)],
        ["c", v(100)],
      ]),
    );
    // a asks for 2 only; b and c split the other 14 by 1:2.
    expect(shares.get("a")!.gpu).toBeCloseTo(2);
    expect(shares.get("b")!.gpu).toBeCloseTo(14 / 3);
    expect(shares.get("c")!.gpu).toBeCloseTo(28 / 3);
  });

  it("gives deserved quota first, up to demand", () => {
    const shares = fairShares(
      [p("a", 1, { deserved: { gpu: 6 } }), p("b", 1)],
      v(8),
      new Map([
        ["a", v(8)],
        ["b", v(8)],
      ]),
    );
    expect(shares.get("a")!.gpu).toBeCloseTo(7);
    expect(shares.get("b")!.gpu).toBeCloseTo(1);
  });

  it("counts only the pools a project may use: three projects pinned to an 8-GPU pool share 8, not the cluster", () => {
    const pinned = { nodePools: ["small"] };
    const shares = fairSharesByPool(
      [p("a", 1, pinned), p("b", 1, pinned), p("c", 2, pinned), p("other", 1)],
      new Map([
        ["small", v(8)],
        ["big", v(24)],
      ]),
      new Map([
        ["a", v(8)],
        ["b", v(8)],
        ["c", v(8)],
        ["other", v(0)],
      ]),
    );
    expect([shares.get("a")!.gpu, shares.get("b")!.gpu, shares.get("c")!.gpu]).toEqual([2, 2, 4]);
  });
});

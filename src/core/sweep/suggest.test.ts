import { describe, expect, it } from "vitest";
import { SweepSpec } from "../../api/sweep.js";
import {
  gridSize,
  gridTrial,
  gridValues,
  type Observation,
  type Params,
  plannedTrials,
  randomTrial,
  suggest,
  tpeTrial,
} from "./suggest.js";

const TEMPLATE = { command: ["python", "train.py"] };

function spec(fields: Record<string, unknown>): SweepSpec {
  return SweepSpec.parse({
    objective: { metric: "val_loss", goal: "minimize" },
    template: TEMPLATE,
    ...fields,
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe("grid", () => {
  const grid = spec({
    algorithm: "grid",
    gridPoints: 3,
    maxTrials: 100,
    parameters: [
      { name: "opt", categorical: { values: ["adam", "sgd"] } },
      { name: "layers", int: { min: 1, max: 5, step: 2 } },
      { name: "lr", logUniform: { min: 1e-4, max: 1e-2 } },
    ],
  });

  it("gives each parameter's points: categorical values, int steps, logUniform evenly in log space", () => {
    expect(gridValues(grid.parameters[0]!, 3)).toEqual(["adam", "sgd"]);
    expect(gridValues(grid.parameters[1]!, 3)).toEqual([1, 3, 5]);
    expect(gridValues(grid.parameters[2]!, 3)).toEqual([1e-4, 1e-3, 1e-2]);
    expect(gridValues({ name: "x", uniform: { min: 0, max: 1 } }, 5)).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(gridValues(grid.parameters[2]!, 5)).toEqual([1e-4, 0.000316228, 1e-3, 0.00316228, 1e-2]);
  });

  it("enumerates every combination exactly once, in order (the last parameter fastest)", () => {
    expect(gridSize(grid)).toBe(18);
    const expected: Params[] = [];
    for (const opt of ["adam", "sgd"])
      for (const layers of [1, 3, 5]) for (const lr of [1e-4, 1e-3, 1e-2]) expected.push({ opt, layers, lr });
    const trials = Array.from({ length: 18 }, (_, i) => suggest(grid, i + 1, []));
    expect(trials).toEqual(expected);
    expect(new Set(trials.map((t) => JSON.stringify(t))).size).toBe(18);
    // Nothing depends on what was observed.
    expect(gridTrial(grid, 7)).toEqual(suggest(grid, 7, [{ params: { opt: "sgd" }, objective: 1 }]));
  });

  it("plans at most the grid's size, and at most maxTrials", () => {
    expect(plannedTrials(grid)).toBe(18);
    expect(plannedTrials({ ...grid, maxTrials: 5 })).toBe(5);
    expect(plannedTrials({ ...grid, maxTrials: 18 })).toBe(18);
    // Other algorithms are not capped by the grid.
    expect(plannedTrials({ ...grid, algorithm: "random", maxTrials: 40 })).toBe(40);
    expect(plannedTrials({ ...grid, algorithm: "tpe", maxTrials: 40 })).toBe(40);
  });
});

describe("random", () => {
  const random = spec({
    algorithm: "random",
    seed: 7,
    parameters: [
      { name: "opt", categorical: { values: ["adam", "sgd", "rmsprop"] } },
      { name: "batch", int: { min: 16, max: 256, step: 16 } },
      { name: "dropout", uniform: { min: 0.1, max: 0.5 } },
      { name: "lr", logUniform: { min: 1e-5, max: 1e-1 } },
    ],
  });
  const samples = Array.from({ length: 2001 }, (_, i) => randomTrial(random, i + 1));

  it("is deterministic per (seed, trial)", () => {
    expect(randomTrial(random, 5)).toEqual(randomTrial(structuredClone(random), 5));
    expect(suggest(random, 5, [])).toEqual(randomTrial(random, 5));
    // Observations do not change a random suggestion.
    expect(suggest(random, 5, [{ params: { opt: "adam" }, objective: 0 }])).toEqual(randomTrial(random, 5));
  });

  it("differs across trials and across seeds", () => {
    const first20 = samples.slice(0, 20).map((s) => s.dropout);
    expect(new Set(first20).size).toBe(20);
    const other = { ...random, seed: 8 };
    const differing = samples.slice(0, 20).filter((s, i) => s.dropout !== randomTrial(other, i + 1).dropout);
    expect(differing.length).toBe(20);
  });

  it("stays in bounds; int respects step; every category comes up", () => {
    for (const s of samples) {
      expect(["adam", "sgd", "rmsprop"]).toContain(s.opt);
      const batch = s.batch as number;
      expect(batch).toBeGreaterThanOrEqual(16);
      expect(batch).toBeLessThanOrEqual(256);
      expect((batch - 16) % 16).toBe(0);
      expect(s.dropout as number).toBeGreaterThanOrEqual(0.1);
      expect(s.dropout as number).toBeLessThanOrEqual(0.5);
      expect(s.lr as number).toBeGreaterThanOrEqual(1e-5);
      expect(s.lr as number).toBeLessThanOrEqual(1e-1);
    }
    expect(new Set(samples.map((s) => s.opt)).size).toBe(3);
    // All 16 batch values, both ends included.
    expect(new Set(samples.map((s) => s.batch)).size).toBe(16);
  });

  it("an int range whose max is off the step grid never goes past max", () => {
    const odd = spec({ parameters: [{ name: "k", int: { min: 0, max: 10, step: 3 } }] });
    const ks = new Set(Array.from({ length: 500 }, (_, i) => randomTrial(odd, i + 1).k));
    expect([...ks].sort((a, b) => Number(a) - Number(b))).toEqual([0, 3, 6, 9]);
  });

  it("samples uniform evenly and logUniform evenly in log space", () => {
    const dropout = samples.map((s) => s.dropout as number);
    expect(median(dropout)).toBeGreaterThan(0.27);
    expect(median(dropout)).toBeLessThan(0.33);
    const lr = samples.map((s) => s.lr as number);
    // The median of a log-uniform 1e-5..1e-1 is the geometric mean 1e-3 (a uniform one's is ~0.05).
    expect(Math.abs(Math.log10(median(lr)) + 3)).toBeLessThan(0.2);
    // A quarter of the samples in each decade.
    const below1e4 = lr.filter((x) => x < 1e-4).length / lr.length;
    expect(below1e4).toBeGreaterThan(0.2);
    expect(below1e4).toBeLessThan(0.3);
  });
});

describe("tpe", () => {
  const lrSpace = [{ name: "lr", logUniform: { min: 1e-5, max: 1e-1 } }];
  /** Minimized at lr = 10^-2.5. */
  const lossOf = (p: Params) => (Math.log10(p.lr as number) + 2.5) ** 2;
  const distance = (p: Params) => Math.abs(Math.log10(p.lr as number) + 2.5);

  /** A sequential sweep: each trial sees every earlier trial's result. */
  function run(s: SweepSpec, trials: number, objective: (p: Params) => number): Params[] {
    const observed: Observation[] = [];
    const out: Params[] = [];
    for (let n = 1; n <= trials; n++) {
      const params = suggest(s, n, observed);
      out.push(params);
      observed.push({ params, objective: objective(params) });
    }
    return out;
  }

  it("is random before startupTrials have finished", () => {
    const s = spec({ algorithm: "tpe", startupTrials: 5, parameters: lrSpace });
    const observed: Observation[] = [];
    for (let n = 1; n <= 5; n++) {
      expect(tpeTrial(s, n, observed)).toEqual(randomTrial(s, n));
      const params = randomTrial(s, n);
      observed.push({ params, objective: lossOf(params) });
    }
    // With startupTrials observations it uses the model, and suggests other values than random.
    const modelled = [6, 7, 8, 9, 10].filter((n) => tpeTrial(s, n, observed).lr !== randomTrial(s, n).lr);
    expect(modelled.length).toBeGreaterThanOrEqual(4);
  });

  it("is deterministic given the same observations", () => {
    const s = spec({ algorithm: "tpe", seed: 3, parameters: lrSpace });
    expect(run(s, 15, lossOf)).toEqual(run(structuredClone(s), 15, lossOf));
  });

  for (const seed of [1, 2, 3]) {
    it(`concentrates near the optimum much more than random (seed ${seed})`, () => {
      const tpe = run(spec({ algorithm: "tpe", seed, parameters: lrSpace }), 30, lossOf);
      const random = run(spec({ algorithm: "random", seed, parameters: lrSpace }), 30, lossOf);
      for (const p of tpe) {
        expect(p.lr as number).toBeGreaterThanOrEqual(1e-5);
        expect(p.lr as number).toBeLessThanOrEqual(1e-1);
      }
      const tpeDistance = mean(tpe.slice(-10).map(distance));
      const randomDistance = mean(random.slice(-10).map(distance));
      expect(tpeDistance).toBeLessThan(randomDistance / 2);
      expect(tpeDistance).toBeLessThan(0.5);
    });
  }

  it("maximize: concentrates near the maximum", () => {
    const s = (algorithm: string) =>
      spec({ algorithm, seed: 4, objective: { metric: "acc", goal: "maximize" }, parameters: lrSpace });
    const score = (p: Params) => -lossOf(p);
    const tpe = run(s("tpe"), 30, score);
    const random = run(s("random"), 30, score);
    const tpeDistance = mean(tpe.slice(-10).map(distance));
    expect(tpeDistance).toBeLessThan(mean(random.slice(-10).map(distance)) / 2);
    expect(tpeDistance).toBeLessThan(0.5);
    // Minimizing the same score would drive it to the ends of the range instead.
    const inverted = run(spec({ algorithm: "tpe", seed: 4, parameters: lrSpace }), 30, score);
    expect(mean(inverted.slice(-10).map(distance))).toBeGreaterThan(1);
  });

  it("concentrates a categorical parameter on the best category", () => {
    const parameters = [
      { name: "opt", categorical: { values: ["sgd", "adam", "rmsprop", "adagrad"] } },
      { name: "lr", logUniform: { min: 1e-5, max: 1e-1 } },
    ];
    const objective = (p: Params) => (p.opt === "adam" ? 0 : 1) + lossOf(p) / 10;
    const tpe = run(spec({ algorithm: "tpe", seed: 5, parameters }), 30, objective);
    const random = run(spec({ algorithm: "random", seed: 5, parameters }), 30, objective);
    const adam = (ps: Params[]) => ps.slice(-10).filter((p) => p.opt === "adam").length;
    // A quarter of random's suggestions land on it; most of TPE's do.
    expect(adam(tpe)).toBeGreaterThanOrEqual(7);
    expect(adam(tpe)).toBeGreaterThanOrEqual(adam(random) + 4);
  });

  it("prefers the category the good trials have over what the bad ones have", () => {
    const parameters = [{ name: "opt", categorical: { values: ["sgd", "adam", "rmsprop", "adagrad"] } }];
    const s = spec({ algorithm: "tpe", seed: 9, parameters });
    // The best quarter (5 of 20) used adam; the rest used the other three.
    const others = ["sgd", "rmsprop", "adagrad"];
    const observed: Observation[] = [
      ...Array.from({ length: 5 }, (_, i) => ({ params: { opt: "adam" }, objective: i / 10 })),
      ...Array.from({ length: 15 }, (_, i) => ({ params: { opt: others[i % 3]! }, objective: 1 + i })),
    ];
    const picks = Array.from({ length: 40 }, (_, i) => tpeTrial(s, 21 + i, observed).opt);
    // Sampling the good model alone would give adam about two times in three; the ratio, nearly always.
    expect(picks.filter((o) => o === "adam").length).toBeGreaterThanOrEqual(38);
    // Maximizing the same objective: adam is now the bad category.
    const max = { ...s, objective: { metric: "acc", goal: "maximize" as const } };
    const maxPicks = Array.from({ length: 40 }, (_, i) => tpeTrial(max, 21 + i, observed).opt);
    expect(maxPicks.filter((o) => o === "adam").length).toBeLessThanOrEqual(2);
  });

  it("keeps int parameters on their steps and in bounds", () => {
    const s = spec({
      algorithm: "tpe",
      seed: 6,
      parameters: [{ name: "k", int: { min: 2, max: 20, step: 3 } }],
    });
    const ks = run(s, 25, (p) => Math.abs((p.k as number) - 11));
    for (const p of ks) {
      expect([2, 5, 8, 11, 14, 17, 20]).toContain(p.k);
    }
    expect(ks.slice(-10).filter((p) => p.k === 11 || p.k === 8 || p.k === 14).length).toBeGreaterThanOrEqual(
      7,
    );
  });
});

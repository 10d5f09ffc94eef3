import { describe, expect, it } from "vitest";
import type { EarlyStopping } from "../../api/sweep.js";
import { ashaRule, medianRule, type Point, rungs, shouldStop, type TrialCurve } from "./earlystop.js";

type Median = Extract<EarlyStopping, { rule: "median" }>;
type Asha = Extract<EarlyStopping, { rule: "asha" }>;

/** A curve reporting values at steps 1, 2, 3, … */
function curve(number: number, values: number[], running = true): TrialCurve {
  return { number, points: values.map((value, i) => ({ step: i + 1, value })), running };
}

/** A curve from explicit points. */
function at(number: number, points: [number, number][], running = true): TrialCurve {
  return { number, points: points.map(([step, value]): Point => ({ step, value })), running };
}

describe("median rule", () => {
  const rule: Median = { rule: "median", minSteps: 0, minTrials: 2 };
  // Running averages up to step 3: 0.9, 1.0, 1.1 → median 1.0.
  const others = [curve(1, [1.0, 0.9, 0.8]), curve(2, [1.1, 1.0, 0.9]), curve(3, [1.2, 1.1, 1.0])];

  it("stops a clearly bad trial and says why", () => {
    const bad = curve(9, [3.0, 2.9, 2.8]);
    const d = medianRule(rule, "minimize", bad, [...others, bad]);
    expect(d.stop).toBe(true);
    expect(d.reason).toContain("median rule at step 3");
    expect(d.reason).toContain("2.8");
    expect(d.reason).toContain("of 3 other trials");
  });

  it("does not stop a good trial, nor one whose best so far beats the median", () => {
    const good = curve(9, [0.7, 0.6, 0.5]);
    expect(medianRule(rule, "minimize", good, [...others, good]).stop).toBe(false);
    // Its latest value is bad, but its best (0.5 at step 1) is below the median.
    const wobbly = curve(9, [0.5, 2.0, 3.0]);
    expect(medianRule(rule, "minimize", wobbly, [...others, wobbly]).stop).toBe(false);
  });

  it("compares against the others' running averages up to the trial's step, not their later values", () => {
    // At step 2 the others averaged 1.5 and 1.6; they improved a lot later.
    const later = [curve(1, [2.0, 1.0, 0.1, 0.1]), curve(2, [2.1, 1.1, 0.1, 0.1])];
    const trial = curve(9, [1.4, 1.3]);
    expect(medianRule(rule, "minimize", trial, [...later, trial]).stop).toBe(false);
    const worse = curve(9, [1.7, 1.7]);
    expect(medianRule(rule, "minimize", worse, [...later, worse]).stop).toBe(true);
  });

  it("respects minSteps", () => {
    const strict: Median = { ...rule, minSteps: 3 };
    const early = curve(9, [3.0, 2.9]);
    expect(medianRule(strict, "minimize", early, [...others, early]).stop).toBe(false);
    const atMin = curve(9, [3.0, 2.9, 2.8]);
    expect(medianRule(strict, "minimize", atMin, [...others, atMin]).stop).toBe(true);
  });

  it("respects minTrials, counting only trials that reported at or past the step", () => {
    const bad = curve(9, [3.0, 2.9, 2.8]);
    expect(medianRule({ ...rule, minTrials: 4 }, "minimize", bad, [...others, bad]).stop).toBe(false);
    expect(medianRule({ ...rule, minTrials: 3 }, "minimize", bad, [...others, bad]).stop).toBe(true);
    // Two of the others have only reached step 2: one comparable trial is not enough for minTrials 2.
    const behind = [curve(1, [1.0, 0.9]), curve(2, [1.1, 1.0]), curve(3, [1.2, 1.1, 1.0])];
    expect(medianRule(rule, "minimize", bad, [...behind, bad]).stop).toBe(false);
    // A trial with no reports is never stopped.
    const none = curve(9, []);
    expect(medianRule(rule, "minimize", none, [...others, none]).stop).toBe(false);
  });

  it("does not count the trial itself among the others", () => {
    const bad = curve(9, [3.0, 2.9, 2.8]);
    // Only one other trial: the bad trial must not make up the second.
    expect(medianRule(rule, "minimize", bad, [others[0]!, bad]).stop).toBe(false);
  });

  it("maximize: stops a trial with low values and keeps one with high values", () => {
    const acc = [curve(1, [0.5, 0.6, 0.7]), curve(2, [0.55, 0.65, 0.75]), curve(3, [0.5, 0.62, 0.7])];
    const low = curve(9, [0.1, 0.15, 0.2]);
    const high = curve(9, [0.7, 0.8, 0.9]);
    expect(medianRule(rule, "maximize", low, [...acc, low]).stop).toBe(true);
    expect(medianRule(rule, "maximize", high, [...acc, high]).stop).toBe(false);
    // The same curves judged for minimizing give the opposite answers.
    expect(medianRule(rule, "minimize", low, [...acc, low]).stop).toBe(false);
    expect(medianRule(rule, "minimize", high, [...acc, high]).stop).toBe(true);
  });

  it("shouldStop dispatches to it", () => {
    const bad = curve(9, [3.0, 2.9, 2.8]);
    expect(shouldStop(rule, "minimize", bad, [...others, bad], undefined).stop).toBe(true);
  });
});

describe("ASHA", () => {
  it("rungs are minSteps · reductionFactor^k up to the step, below maxSteps", () => {
    const rule: Asha = { rule: "asha", minSteps: 1, reductionFactor: 3 };
    expect(rungs(rule, 100)).toEqual([1, 3, 9, 27, 81]);
    expect(rungs(rule, 81)).toEqual([1, 3, 9, 27, 81]);
    expect(rungs(rule, 80)).toEqual([1, 3, 9, 27]);
    expect(rungs({ ...rule, maxSteps: 27 }, 100)).toEqual([1, 3, 9]);
    expect(rungs({ rule: "asha", minSteps: 10, reductionFactor: 2 }, 45)).toEqual([10, 20, 40]);
    expect(rungs({ rule: "asha", minSteps: 10, reductionFactor: 2 }, 9)).toEqual([]);
  });

  const rule: Asha = { rule: "asha", minSteps: 10, reductionFactor: 2 };
  // Four trials at rung 0 (step 10), losses 1..4.
  const four = [1, 2, 3, 4].map((v, i) =>
    at(i + 1, [
      [5, v + 1],
      [10, v],
    ]),
  );

  it("with reductionFactor 2 and 4 trials at a rung, the worse half stops and the better half goes on", () => {
    const decisions = four.map((t) => ashaRule(rule, "minimize", t, four, undefined));
    expect(decisions.map((d) => d.stop)).toEqual([false, false, true, true]);
    expect(decisions.map((d) => d.rung)).toEqual([0, 0, 0, 0]);
    expect(decisions[3]!.reason).toContain("ASHA rung 0 (step 10)");
    expect(decisions[3]!.reason).toContain("best 2 of 4");
  });

  it("maximize: the lower half stops", () => {
    const decisions = four.map((t) => ashaRule(rule, "maximize", t, four, undefined));
    expect(decisions.map((d) => d.stop)).toEqual([true, true, false, false]);
  });

  it("judges a trial by its first report at or past the rung's step", () => {
    // Reported at 5 (great) and at 12 (bad): its rung-0 value is the one at step 12.
    const skipped = at(5, [
      [5, 0.1],
      [12, 9],
    ]);
    const all = [...four, skipped];
    expect(ashaRule(rule, "minimize", skipped, all, undefined).stop).toBe(true);
    // And the others see it at 9 too: trial 2 (2) is still among the best 2 of 5.
    expect(ashaRule(rule, "minimize", four[1]!, all, undefined).stop).toBe(false);
  });

  it("makes no decision with fewer than reductionFactor trials at a rung, and judges it again later", () => {
    const alone = at(1, [[10, 5]]);
    const behind = at(2, [[9, 1]]);
    const d = ashaRule(rule, "minimize", alone, [alone, behind], undefined);
    expect(d).toEqual({ stop: false });
    // Once another trial reached the rung with a better value, it is judged (and stopped).
    const caughtUp = at(2, [
      [9, 1],
      [10, 1],
    ]);
    expect(ashaRule(rule, "minimize", alone, [alone, caughtUp], undefined)).toMatchObject({
      stop: true,
      rung: 0,
    });
    // reductionFactor 3 needs 3 trials at the rung.
    const three: Asha = { ...rule, reductionFactor: 3 };
    expect(ashaRule(three, "minimize", alone, [alone, caughtUp], undefined)).toEqual({ stop: false });
    // A trial below the first rung is never judged.
    expect(ashaRule(rule, "minimize", behind, [...four, behind], undefined)).toEqual({ stop: false });
  });

  it("judgedRung: a rung is judged once; the next rung is judged again", () => {
    const worst = four[3]!;
    expect(ashaRule(rule, "minimize", worst, four, 0)).toEqual({ stop: false });
    // At step 20 (rung 1) it is judged afresh against those that reached step 20.
    const onward = [1, 2, 3, 4].map((v, i) =>
      at(i + 1, [
        [10, v],
        [20, v],
      ]),
    );
    expect(ashaRule(rule, "minimize", onward[3]!, onward, 0)).toMatchObject({ stop: true, rung: 1 });
    expect(ashaRule(rule, "minimize", onward[0]!, onward, 0)).toMatchObject({ stop: false, rung: 1 });
    expect(ashaRule(rule, "minimize", onward[3]!, onward, 1)).toEqual({ stop: false });
  });

  it("no rungs at or past maxSteps", () => {
    const capped: Asha = { ...rule, maxSteps: 20 };
    const onward = [1, 2, 3, 4].map((v, i) =>
      at(i + 1, [
        [10, v],
        [20, v],
      ]),
    );
    // Rung 0 was judged and passed; step 20 is no rung: no further judgement.
    expect(ashaRule(capped, "minimize", onward[3]!, onward, 0)).toEqual({ stop: false });
  });

  it("shouldStop dispatches to it with judgedRung", () => {
    expect(shouldStop(rule, "minimize", four[3]!, four, undefined).stop).toBe(true);
    expect(shouldStop(rule, "minimize", four[3]!, four, 0).stop).toBe(false);
  });
});

import type { EarlyStopping } from "../../api/sweep.js";

/**
 * Early-stopping rules: pure functions of the objective every trial has reported so far. They
 * say whether a running trial should stop; the controller stops it the graceful way.
 */

export interface Point {
  step: number;
  value: number;
}

export interface TrialCurve {
  number: number;
  /** The objective as reported, in step order. */
  points: Point[];
  running: boolean;
}

export interface StopDecision {
  stop: boolean;
  reason?: string;
  /** ASHA: the rung this decision was made at (a trial is judged once per rung). */
  rung?: number;
}

type Goal = "minimize" | "maximize";

const better = (goal: Goal, a: number, b: number) => (goal === "minimize" ? a < b : a > b);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const fmt = (x: number) => Number(x.toPrecision(4)).toString();

/**
 * Median stopping rule (Golovin et al., Vizier): at the trial's latest step s, stop it when its
 * best value so far is worse than the median of the other trials' running averages up to s. Only
 * trials that reported at or past s take part, and at least minTrials of them.
 */
export function medianRule(
  rule: Extract<EarlyStopping, { rule: "median" }>,
  goal: Goal,
  trial: TrialCurve,
  others: TrialCurve[],
): StopDecision {
  const last = trial.points.at(-1);
  if (!last || last.step < rule.minSteps) return { stop: false };
  const s = last.step;
  const averages: number[] = [];
  for (const o of others) {
    if (o.number === trial.number || (o.points.at(-1)?.step ?? -1) < s) continue;
    const upTo = o.points.filter((p) => p.step <= s);
    if (upTo.length) averages.push(upTo.reduce((a, p) => a + p.value, 0) / upTo.length);
  }
  if (averages.length < rule.minTrials) return { stop: false };
  const best = trial.points.reduce(
    (b, p) => (better(goal, p.value, b) ? p.value : b),
    trial.points[0]!.value,
  );
  const m = median(averages);
  if (better(goal, best, m) || best === m) return { stop: false };
  return {
    stop: true,
    reason: `median rule at step ${s}: best ${fmt(best)} is worse than the median ${fmt(m)} of ${averages.length} other trials' running averages`,
  };
}

/** The rung steps: minSteps · reductionFactor^k below maxSteps. */
export function rungs(rule: Extract<EarlyStopping, { rule: "asha" }>, upTo: number): number[] {
  const out: number[] = [];
  for (
    let r = rule.minSteps;
    r <= upTo && (rule.maxSteps === undefined || r < rule.maxSteps);
    r *= rule.reductionFactor
  )
    out.push(r);
  return out;
}

/** A trial's value at a rung: the first report at or past the rung's step. */
function valueAt(points: Point[], step: number): number | undefined {
  return points.find((p) => p.step >= step)?.value;
}

/**
 * Asynchronous successive halving (Li et al., ASHA): when a trial reaches a rung, it goes on only
 * if it is among the best 1/reductionFactor of all trials that reached that rung so far (and at
 * least reductionFactor trials did; fewer, and there is nothing to compare with yet: it goes on).
 * A trial is judged at each rung once: `judgedRung` is the highest rung it passed.
 */
export function ashaRule(
  rule: Extract<EarlyStopping, { rule: "asha" }>,
  goal: Goal,
  trial: TrialCurve,
  others: TrialCurve[],
  judgedRung: number | undefined,
): StopDecision {
  const last = trial.points.at(-1);
  if (!last) return { stop: false };
  const reached = rungs(rule, last.step);
  if (!reached.length) return { stop: false };
  const rung = reached.length - 1;
  if (judgedRung !== undefined && rung <= judgedRung) return { stop: false };
  const step = reached[rung]!;
  const mine = valueAt(trial.points, step)!;
  const values = [mine];
  for (const o of others) {
    if (o.number === trial.number) continue;
    const v = valueAt(o.points, step);
    if (v !== undefined) values.push(v);
  }
  if (values.length < rule.reductionFactor) {
    // Too few to compare yet: judge this rung again when more trials have reached it.
    return { stop: false };
  }
  const keep = Math.max(1, Math.floor(values.length / rule.reductionFactor));
  const sorted = [...values].sort((a, b) => (goal === "minimize" ? a - b : b - a));
  const cutoff = sorted[keep - 1]!;
  if (mine === cutoff || better(goal, mine, cutoff)) return { stop: false, rung };
  return {
    stop: true,
    rung,
    reason: `ASHA rung ${rung} (step ${step}): ${fmt(mine)} is not among the best ${keep} of ${values.length} trials (cut-off ${fmt(cutoff)})`,
  };
}

export function shouldStop(
  rule: EarlyStopping,
  goal: Goal,
  trial: TrialCurve,
  all: TrialCurve[],
  judgedRung: number | undefined,
): StopDecision {
  return rule.rule === "median"
    ? medianRule(rule, goal, trial, all)
    : ashaRule(rule, goal, trial, all, judgedRung);
}

import type { ParamValue, SweepParameter, SweepSpec } from "../../api/sweep.js";

/**
 * Suggesting the next trial's parameters: grid, random and TPE. Pure functions of the spec, the
 * trial number and the trials so far; randomness comes from a generator seeded by (seed, trial
 * number), so a controller that restarts suggests the same trial again.
 */

export type Params = Record<string, ParamValue>;

/** A finished trial the model-based algorithm learns from. */
export interface Observation {
  params: Params;
  objective: number;
}

/** mulberry32: small, fast, good enough for sampling search spaces. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function trialRng(seed: number, trial: number): () => number {
  return rng(Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(trial, 0x85ebca6b));
}

/** Grid points of one parameter, in order. */
export function gridValues(p: SweepParameter, points: number): ParamValue[] {
  if (p.categorical) return p.categorical.values;
  if (p.int) {
    const out: number[] = [];
    for (let v = p.int.min; v <= p.int.max; v += p.int.step) out.push(v);
    return out;
  }
  const r = (p.uniform ?? p.logUniform)!;
  const log = !!p.logUniform;
  const [lo, hi] = log ? [Math.log(r.min), Math.log(r.max)] : [r.min, r.max];
  return Array.from({ length: points }, (_, i) => {
    const x = lo + ((hi - lo) * i) / (points - 1);
    return round(log ? Math.exp(x) : x);
  });
}

/** How many trials a grid has (every combination). */
export function gridSize(spec: Pick<SweepSpec, "parameters" | "gridPoints">): number {
  return spec.parameters.reduce((n, p) => n * gridValues(p, spec.gridPoints).length, 1);
}

/** Trial n (1-based) of the grid: the last parameter varies fastest. */
export function gridTrial(spec: Pick<SweepSpec, "parameters" | "gridPoints">, trial: number): Params {
  let index = trial - 1;
  const out: Params = {};
  for (let i = spec.parameters.length - 1; i >= 0; i--) {
    const p = spec.parameters[i]!;
    const values = gridValues(p, spec.gridPoints);
    out[p.name] = values[index % values.length]!;
    index = Math.floor(index / values.length);
  }
  return out;
}

/** Six significant digits: values read well in tables and as environment variables. */
function round(x: number): number {
  return Number(x.toPrecision(6));
}

function sample(p: SweepParameter, u: () => number): ParamValue {
  if (p.categorical) return p.categorical.values[Math.floor(u() * p.categorical.values.length)]!;
  if (p.int) {
    const n = Math.floor((p.int.max - p.int.min) / p.int.step) + 1;
    return p.int.min + Math.floor(u() * n) * p.int.step;
  }
  if (p.logUniform) {
    const lo = Math.log(p.logUniform.min);
    const hi = Math.log(p.logUniform.max);
    return round(Math.exp(lo + u() * (hi - lo)));
  }
  const r = p.uniform!;
  return round(r.min + u() * (r.max - r.min));
}

export function randomTrial(spec: Pick<SweepSpec, "parameters" | "seed">, trial: number): Params {
  const u = trialRng(spec.seed, trial);
  return Object.fromEntries(spec.parameters.map((p) => [p.name, sample(p, u)]));
}

// --- TPE ----------------------------------------------------------------------------------------

/** A numeric parameter in the space TPE models it in: log for logUniform, as is for the rest. */
function toModel(p: SweepParameter, v: ParamValue): number {
  return p.logUniform ? Math.log(Number(v)) : Number(v);
}

function bounds(p: SweepParameter): [number, number] {
  if (p.logUniform) return [Math.log(p.logUniform.min), Math.log(p.logUniform.max)];
  if (p.int) return [p.int.min - 0.5, p.int.max + 0.5];
  return [p.uniform!.min, p.uniform!.max];
}

interface Parzen {
  mus: number[];
  sigmas: number[];
}

/**
 * A Parzen estimator over one numeric parameter: a Gaussian at each observation, its width the
 * larger gap to its neighbours (clipped), plus a wide prior in the middle of the range, as
 * Bergstra et al. (2011) describe and Optuna does by default.
 */
function parzen(values: number[], lo: number, hi: number): Parzen {
  const range = hi - lo;
  const mus = [...values, (lo + hi) / 2].sort((a, b) => a - b);
  const minSigma = range / Math.min(100, 1 + mus.length);
  const sigmas = mus.map((m, i) => {
    const left = i > 0 ? m - mus[i - 1]! : m - lo;
    const right = i < mus.length - 1 ? mus[i + 1]! - m : hi - m;
    return Math.min(range, Math.max(minSigma, left, right));
  });
  const prior = mus.indexOf((lo + hi) / 2);
  sigmas[prior] = range;
  return { mus, sigmas };
}

function logDensity(e: Parzen, x: number): number {
  let sum = 0;
  for (let i = 0; i < e.mus.length; i++) {
    const z = (x - e.mus[i]!) / e.sigmas[i]!;
    sum += Math.exp(-0.5 * z * z) / (e.sigmas[i]! * Math.sqrt(2 * Math.PI));
  }
  return Math.log(sum / e.mus.length + 1e-300);
}

function sampleParzen(e: Parzen, lo: number, hi: number, u: () => number): number {
  const i = Math.floor(u() * e.mus.length);
  for (let tries = 0; tries < 20; tries++) {
    // Box–Muller; resample until inside the range (a truncated mixture).
    const g = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
    const x = e.mus[i]! + e.sigmas[i]! * g;
    if (x >= lo && x <= hi) return x;
  }
  return Math.min(hi, Math.max(lo, e.mus[i]!));
}

function fromModel(p: SweepParameter, x: number): ParamValue {
  if (p.logUniform) return round(Math.exp(x));
  if (p.int) {
    const k = Math.round((x - p.int.min) / p.int.step);
    const n = Math.floor((p.int.max - p.int.min) / p.int.step);
    return p.int.min + Math.min(n, Math.max(0, k)) * p.int.step;
  }
  return round(x);
}

const CANDIDATES = 24;
const GAMMA = 0.25;

/**
 * Tree-structured Parzen Estimator: split the finished trials into the best quarter ("good") and
 * the rest, model each parameter's density in both, draw candidates from the good model and keep
 * the one with the highest good/bad density ratio. Random until `startupTrials` have finished.
 */
export function tpeTrial(
  spec: Pick<SweepSpec, "parameters" | "seed" | "startupTrials" | "objective">,
  trial: number,
  observed: Observation[],
): Params {
  if (observed.length < spec.startupTrials) return randomTrial(spec, trial);
  const u = trialRng(spec.seed, trial);
  const sign = spec.objective.goal === "minimize" ? 1 : -1;
  const sorted = [...observed].sort((a, b) => sign * (a.objective - b.objective));
  const nGood = Math.max(1, Math.ceil(GAMMA * sorted.length));
  const good = sorted.slice(0, nGood);
  const bad = sorted.slice(nGood);
  const candidates: { params: Params; score: number }[] = Array.from({ length: CANDIDATES }, () => ({
    params: {},
    score: 0,
  }));
  for (const p of spec.parameters) {
    if (p.categorical) {
      const values = p.categorical.values;
      // Counts plus one (a uniform prior), normalised.
      const weights = (set: Observation[]) => {
        const w = values.map(() => 1);
        for (const o of set) {
          const i = values.indexOf(o.params[p.name]!);
          if (i >= 0) w[i]! += 1;
        }
        const total = w.reduce((a, b) => a + b, 0);
        return w.map((x) => x / total);
      };
      const l = weights(good);
      const g = weights(bad);
      for (const c of candidates) {
        let r = u();
        let i = 0;
        while (i < l.length - 1 && r >= l[i]!) r -= l[i++]!;
        c.params[p.name] = values[i]!;
        c.score += Math.log(l[i]!) - Math.log(g[i]!);
      }
      continue;
    }
    const [lo, hi] = bounds(p);
    const l = parzen(
      good.map((o) => toModel(p, o.params[p.name]!)),
      lo,
      hi,
    );
    const g = parzen(
      bad.map((o) => toModel(p, o.params[p.name]!)),
      lo,
      hi,
    );
    for (const c of candidates) {
      const x = sampleParzen(l, lo, hi, u);
      const value = fromModel(p, x);
      c.params[p.name] = value;
      const xm = toModel(p, value);
      c.score += logDensity(l, xm) - logDensity(g, xm);
    }
  }
  let best = candidates[0]!;
  for (const c of candidates) if (c.score > best.score) best = c;
  return best.params;
}

/** The next trial's parameters, by the sweep's algorithm. */
export function suggest(spec: SweepSpec, trial: number, observed: Observation[]): Params {
  switch (spec.algorithm) {
    case "grid":
      return gridTrial(spec, trial);
    case "random":
      return randomTrial(spec, trial);
    case "tpe":
      return tpeTrial(spec, trial, observed);
  }
}

/** Trials the sweep will run in all: maxTrials, or fewer when the grid is smaller. */
export function plannedTrials(spec: SweepSpec): number {
  return spec.algorithm === "grid" ? Math.min(spec.maxTrials, gridSize(spec)) : spec.maxTrials;
}

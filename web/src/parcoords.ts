/** One axis of a parallel-coordinates view: a swept parameter or the objective. */
export interface Axis {
  name: string;
  /** Where a value sits on the axis, 0 (bottom) to 1 (top); undefined: the trial has none. */
  at(v: unknown): number | undefined;
  /** Tick labels with their positions (0..1). */
  ticks: { at: number; label: string }[];
  log: boolean;
}

/** What a trial contributes: its parameter values, its objective, whether it was stopped early. */
export interface PcTrial {
  number: number;
  params: Record<string, unknown>;
  objective?: number;
  stopped: boolean;
}

const short = (n: number) => Number(n.toPrecision(3)).toString();

/**
 * An axis for values as they came: numbers on a linear scale, or a log one where they are all
 * positive and span two decades or more (a log-uniform learning rate); anything else (or a mix)
 * as categories, evenly spaced in sorted order.
 */
export function axisFor(name: string, values: unknown[]): Axis {
  const present = values.filter((v) => v !== undefined && v !== null);
  const nums = present.filter((v): v is number => typeof v === "number" && Number.isFinite(v));
  if (nums.length > 0 && nums.length === present.length) {
    const min = Math.min(...nums);
    const max = Math.max(...nums);
    const log = min > 0 && max / min >= 100;
    const f = log ? Math.log10 : (x: number) => x;
    const lo = f(min);
    const span = f(max) - lo;
    // One distinct value sits mid-axis.
    const at = (v: unknown) => (typeof v === "number" ? (span === 0 ? 0.5 : (f(v) - lo) / span) : undefined);
    const ticks =
      span === 0
        ? [{ at: 0.5, label: short(min) }]
        : [min, max].map((v) => ({ at: at(v)!, label: short(v) }));
    return { name, at, ticks, log };
  }
  const cats = [...new Set(present.map(String))].sort((a, b) =>
    a.localeCompare(b, undefined, { numeric: true }),
  );
  const pos = (i: number) => (cats.length === 1 ? 0.5 : i / (cats.length - 1));
  return {
    name,
    log: false,
    at: (v) => {
      const i = v === undefined || v === null ? -1 : cats.indexOf(String(v));
      return i < 0 ? undefined : pos(i);
    },
    ticks: cats.map((c, i) => ({ at: pos(i), label: c })),
  };
}

/** The axes (each parameter, then the objective) and each trial's polyline positions on them. */
export function parallelCoordinates(
  trials: PcTrial[],
  params: string[],
  objective: string,
): { axes: Axis[]; lines: { trial: PcTrial; ys: (number | undefined)[] }[] } {
  const axes = [
    ...params.map((p) =>
      axisFor(
        p,
        trials.map((t) => t.params[p]),
      ),
    ),
    axisFor(
      objective,
      trials.map((t) => t.objective),
    ),
  ];
  const lines = trials.map((trial) => ({
    trial,
    ys: axes.map((a, i) => a.at(i < params.length ? trial.params[params[i]!] : trial.objective)),
  }));
  return { axes, lines };
}

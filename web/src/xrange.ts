/** Half the window drawn around a lone x: a minute either side on a time axis, one step on a step axis. */
export const LONE_X_PAD = { time: 60, step: 1 } as const;

/**
 * The x range a metric chart draws, given its (sorted) x values and the range uPlot proposes.
 * uPlot widens a single x (or all x's equal) on a time axis by 86400/ms, which is 1,000 days when
 * x is in seconds, so a lone point sat on an axis of years; it gets a small window around it
 * instead. Distinct x's keep what uPlot proposes (their span, or the user's zoom).
 */
export function xRange(
  xs: ArrayLike<number | null | undefined>,
  min: number | null,
  max: number | null,
  byTime: boolean,
): [number | null, number | null] {
  const first = xs[0];
  const last = xs[xs.length - 1];
  if (xs.length === 0 || typeof first !== "number" || first !== last || !Number.isFinite(first))
    return [min, max];
  const pad = byTime ? LONE_X_PAD.time : LONE_X_PAD.step;
  return [first - pad, first + pad];
}

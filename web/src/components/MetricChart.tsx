import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { xRange } from "../xrange.js";

/** One series of a chart: a name and its points (x: step or time in seconds). */
export interface Series {
  label: string;
  xs: number[];
  ys: number[];
}

const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0550ae", "#a40e26", "#116329"];

/** Series on one shared x axis (uPlot's shape): the union of their xs, null where one has none. */
export function align(series: Series[]): uPlot.AlignedData {
  if (series.length === 1) return [series[0]!.xs, series[0]!.ys];
  const xs = [...new Set(series.flatMap((s) => s.xs))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s) => {
    const col: (number | null)[] = new Array(xs.length).fill(null);
    s.xs.forEach((x, i) => {
      col[at.get(x)!] = s.ys[i]!;
    });
    return col;
  });
  return [xs, ...ys] as uPlot.AlignedData;
}

/**
 * A line chart drawn by uPlot on a canvas. The figure carries what it draws as data attributes
 * (data-series, data-points: points per series; data-xmin/data-xmax: the x range drawn), so tests
 * and benches read the chart's own data.
 */
export function MetricChart(props: { title: string; series: Series[]; byTime: boolean; width?: number }) {
  const box = useRef<HTMLDivElement>(null);
  const { series, byTime, title } = props;
  const width = props.width ?? 560;
  // Redrawn when what it shows changes, not on every render of its page (series are rebuilt then).
  const drawn = useRef(series);
  drawn.current = series;
  const sig = series
    .map((s) => `${s.label}:${s.xs.length}:${s.xs[0]}:${s.xs.at(-1)}:${s.ys.at(-1)}`)
    .join("|");
  useEffect(() => {
    void sig;
    const series = drawn.current;
    const el = box.current;
    if (!el || series.length === 0) return;
    const plot = new uPlot(
      {
        width,
        height: 260,
        title,
        scales: { x: { time: byTime, range: (u, min, max) => xRange(u.data[0], min, max, byTime) } },
        axes: [{ label: byTime ? "time" : "step" }, {}],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: COLORS[i % COLORS.length],
            width: 1.5,
            spanGaps: true,
            // Dots where there are few points (a single value draws no line).
            points: { show: s.xs.length <= 50 },
          })),
        ],
        hooks: {
          // The x range drawn, on the figure: what a test or bench checks of the axis.
          setScale: [
            (u, key) => {
              if (key !== "x" || !el.parentElement) return;
              el.parentElement.dataset.xmin = String(u.scales.x?.min);
              el.parentElement.dataset.xmax = String(u.scales.x?.max);
            },
          ],
        },
      },
      align(series),
      el,
    );
    return () => plot.destroy();
  }, [sig, byTime, title, width]);
  return (
    <figure
      className="chart"
      aria-label={`${title} by ${byTime ? "time" : "step"}`}
      data-metric={title}
      data-series={series.length}
      data-points={series.map((s) => s.xs.length).join(",")}
    >
      <div ref={box} />
    </figure>
  );
}

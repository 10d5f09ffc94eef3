import { useEffect, useRef } from "react";
import uPlot, { type AlignedData, type Options } from "uplot";
import "uplot/dist/uPlot.min.css";

/** A uPlot chart sized for the page; `label` is its accessible name (the canvas has none). */
export function Chart({
  label,
  data,
  series,
  xTime = false,
  height = 220,
}: {
  label: string;
  data: AlignedData;
  series: { label: string; stroke: string }[];
  xTime?: boolean;
  height?: number;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = `${series.map((s) => s.label).join("|")}|${xTime}`;
  // biome-ignore lint/correctness/useExhaustiveDependencies: rebuilt only when the series change, data goes through setData
  useEffect(() => {
    if (!box.current) return;
    const opts: Options = {
      width: Math.max(320, box.current.clientWidth || 560),
      height,
      scales: { x: { time: xTime } },
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.stroke }))],
    };
    plot.current = new uPlot(opts, data, box.current);
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
  }, [shape]);
  useEffect(() => plot.current?.setData(data), [data]);
  return <div className="chart" role="img" aria-label={label} ref={box} />;
}

import { useState } from "react";
import type { Metric } from "../mlflow.js";
import { MetricChart, type Series } from "./MetricChart.js";

/** Points of one run's metric as a chart series, x by step or by time (seconds). */
export function toSeries(label: string, points: Metric[], byTime: boolean): Series {
  const sorted = byTime ? [...points].sort((a, b) => a.timestamp - b.timestamp) : points;
  return {
    label,
    xs: sorted.map((p) => (byTime ? p.timestamp / 1000 : p.step)),
    ys: sorted.map((p) => p.value),
  };
}

/**
 * A chart per metric with the by step / by time switch: a run's page and the compare page.
 * `seriesOf` gives a metric's series on the chosen axis, or undefined while its points load.
 */
export function MetricCharts(props: {
  metrics: string[];
  seriesOf: (metric: string, byTime: boolean) => Series[] | undefined;
}) {
  const [byTime, setByTime] = useState(false);
  return (
    <>
      <fieldset className="filters">
        <legend className="muted">Charts by</legend>
        <label>
          <input type="radio" name="x" checked={!byTime} onChange={() => setByTime(false)} /> step
        </label>
        <label>
          <input type="radio" name="x" checked={byTime} onChange={() => setByTime(true)} /> time
        </label>
      </fieldset>
      <div className="charts">
        {props.metrics.map((m) => {
          const series = props.seriesOf(m, byTime);
          return series ? (
            <MetricChart key={m} title={m} byTime={byTime} series={series} />
          ) : (
            <p key={m} className="muted">
              Loading {m}…
            </p>
          );
        })}
      </div>
    </>
  );
}

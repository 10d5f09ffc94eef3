import { useEffect, useState } from "react";
import { MetricChart, type Series } from "../components/MetricChart.js";
import { type Metric, metricPoints, mlflow, type Run, runName } from "../mlflow.js";
import { href } from "../router.js";
import { toSeries } from "./Run.js";

/** Runs compared: one chart per metric any of them logged, each run a series on it. */
export function ComparePage({ project, ids }: { project: string; ids: string[] }) {
  const [runs, setRuns] = useState<Run[]>();
  const [charts, setCharts] = useState<Record<string, (Metric & { run_id: string })[]>>({});
  const [byTime, setByTime] = useState(false);
  const [error, setError] = useState("");
  const key = ids.join(",");
  useEffect(() => {
    let live = true;
    const runIds = key.split(",");
    setCharts({});
    Promise.all(runIds.map((id) => mlflow<{ run: Run }>(project, "GET", "runs/get", { run_id: id })))
      .then((got) => {
        if (!live) return;
        const rs = got.map((g) => g.run);
        setRuns(rs);
        const keys = [...new Set(rs.flatMap((r) => (r.data.metrics ?? []).map((m) => m.key)))].sort();
        // One request per metric for all the runs (what get-history-bulk-interval is for).
        for (const k of keys)
          metricPoints(project, runIds, k).then(
            (ps) => live && setCharts((had) => ({ ...had, [k]: ps })),
            (e: Error) => live && setError(e.message),
          );
      })
      .catch((e: Error) => live && setError(e.message));
    return () => {
      live = false;
    };
  }, [project, key]);
  return (
    <>
      <h1>Compare {ids.length} runs</h1>
      {error && <p role="alert">{error}</p>}
      {runs && (
        <p>
          {runs.map((r, i) => (
            <span key={r.info.run_id}>
              {i > 0 && ", "}
              <a href={href("runs", project, r.info.run_id)}>{runName(r)}</a>
            </span>
          ))}
        </p>
      )}
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
        {runs &&
          Object.keys(charts)
            .sort()
            .map((k) => {
              const series: Series[] = runs
                .map((r) =>
                  toSeries(
                    runName(r),
                    charts[k]!.filter((p) => p.run_id === r.info.run_id),
                    byTime,
                  ),
                )
                .filter((s) => s.xs.length > 0);
              return <MetricChart key={k} title={k} byTime={byTime} series={series} />;
            })}
      </div>
    </>
  );
}

import { useEffect, useState } from "react";
import { MetricCharts, toSeries } from "../components/MetricCharts.js";
import { type Metric, metricPoints, mlflow, type Run, runName } from "../mlflow.js";
import { href } from "../router.js";

/** Runs compared: one chart per metric any of them logged, each run a series on it. */
export function ComparePage({ project, ids }: { project: string; ids: string[] }) {
  const [runs, setRuns] = useState<Run[]>();
  const [charts, setCharts] = useState<Record<string, (Metric & { run_id: string })[]>>({});
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
      {runs && (
        <MetricCharts
          metrics={Object.keys(charts).sort()}
          seriesOf={(key, byTime) =>
            runs
              .map((r) =>
                toSeries(
                  runName(r),
                  charts[key]!.filter((p) => p.run_id === r.info.run_id),
                  byTime,
                ),
              )
              .filter((s) => s.xs.length > 0)
          }
        />
      )}
    </>
  );
}

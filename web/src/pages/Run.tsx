import { useEffect, useState } from "react";
import { MetricCharts, toSeries } from "../components/MetricCharts.js";
import { type Metric, metricPoints, mlflow, mlflowBase, type Run, runName, when } from "../mlflow.js";
import { href } from "../router.js";
import { fmt } from "./Runs.js";

/** A run: params, tags, latest metrics, a chart per metric (by step or time), its artifacts. */
export function RunPage({ project, runId }: { project: string; runId: string }) {
  const [run, setRun] = useState<Run>();
  const [error, setError] = useState("");
  const [points, setPoints] = useState<Record<string, Metric[]>>({});
  useEffect(() => {
    let live = true;
    setRun(undefined);
    setPoints({});
    mlflow<{ run: Run }>(project, "GET", "runs/get", { run_id: runId })
      .then((r) => {
        if (!live) return;
        setRun(r.run);
        for (const m of r.run.data.metrics ?? [])
          metricPoints(project, [runId], m.key).then(
            (ps) => live && setPoints((had) => ({ ...had, [m.key]: ps })),
            (e: Error) => live && setError(e.message),
          );
      })
      .catch((e: Error) => live && setError(e.message));
    return () => {
      live = false;
    };
  }, [project, runId]);
  if (!run) return error ? <p role="alert">{error}</p> : <p className="muted">Loading…</p>;
  const { info, data } = run;
  const metrics = [...(data.metrics ?? [])].sort((a, b) => a.key.localeCompare(b.key));
  return (
    <>
      <p>
        <a href={href("experiments")}>Experiments</a> /{" "}
        <a href={href("experiments", project, info.experiment_id)}>experiment {info.experiment_id}</a>
      </p>
      <h1>{runName(run)}</h1>
      {error && <p role="alert">{error}</p>}
      <dl className="facts">
        <dt>Status</dt>
        <dd>{info.status}</dd>
        <dt>Run ID</dt>
        <dd>{info.run_id}</dd>
        <dt>Started</dt>
        <dd>{when(info.start_time)}</dd>
        <dt>Ended</dt>
        <dd>{when(info.end_time)}</dd>
      </dl>
      <h2>Metrics</h2>
      <MetricCharts
        metrics={metrics.map((m) => m.key)}
        seriesOf={(key, byTime) => {
          const ps = points[key];
          return ps && [toSeries(runName(run), ps, byTime)];
        }}
      />
      <KeyValues title="Latest metrics" rows={metrics.map((m) => ({ key: m.key, value: fmt(m.value) }))} />
      <KeyValues title="Parameters" rows={data.params ?? []} />
      <KeyValues title="Tags" rows={(data.tags ?? []).filter((t) => !t.key.startsWith("mlflow.log-model"))} />
      <h2>Artifacts</h2>
      <Artifacts project={project} root={(info.artifact_uri ?? "").replace(/^mlflow-artifacts:\/*/, "")} />
    </>
  );
}

function KeyValues({ title, rows }: { title: string; rows: { key: string; value: string }[] }) {
  return (
    <>
      <h2>{title}</h2>
      {rows.length === 0 ? (
        <p className="muted">None.</p>
      ) : (
        <table>
          <tbody>
            {[...rows]
              .sort((a, b) => a.key.localeCompare(b.key))
              .map((r) => (
                <tr key={r.key}>
                  <th scope="row">{r.key}</th>
                  <td>{r.value}</td>
                </tr>
              ))}
          </tbody>
        </table>
      )}
    </>
  );
}

interface FileInfo {
  path: string;
  is_dir: boolean;
  file_size?: number;
}

/** A folder of the run's artifacts (listed by the artifact proxy), folders opened in place. */
function Artifacts({ project, root, sub = "" }: { project: string; root: string; sub?: string }) {
  const [files, setFiles] = useState<FileInfo[]>();
  const [open, setOpen] = useState<Set<string>>(new Set());
  const [error, setError] = useState("");
  const base = `${mlflowBase(project)}/mlflow-artifacts/artifacts`;
  useEffect(() => {
    if (!root) return setFiles([]);
    fetch(`${base}?path=${encodeURIComponent(sub ? `${root}/${sub}` : root)}`, { credentials: "same-origin" })
      .then(async (r) => {
        const body = (await r.json()) as { files?: FileInfo[]; message?: string };
        if (!r.ok) throw new Error(body.message ?? r.statusText);
        setFiles(body.files ?? []);
      })
      .catch((e: Error) => setError(e.message));
  }, [base, root, sub]);
  if (error) return <p role="alert">{error}</p>;
  if (!files) return <p className="muted">Loading…</p>;
  if (files.length === 0 && !sub) return <p className="muted">No artifacts.</p>;
  return (
    <ul className="artifacts">
      {files.map((f) => {
        const path = sub ? `${sub}/${f.path}` : f.path;
        if (!f.is_dir)
          return (
            <li key={path}>
              <a
                href={`${base}/${root}/${path.split("/").map(encodeURIComponent).join("/")}`}
                download={f.path}
              >
                {f.path}
              </a>{" "}
              <span className="muted">{f.file_size ?? 0} bytes</span>
            </li>
          );
        const isOpen = open.has(path);
        return (
          <li key={path}>
            <button
              type="button"
              className="link"
              aria-expanded={isOpen}
              onClick={() =>
                setOpen((s) => {
                  const n = new Set(s);
                  if (!n.delete(path)) n.add(path);
                  return n;
                })
              }
            >
              {isOpen ? "▾" : "▸"} {f.path}/
            </button>
            {isOpen && <Artifacts project={project} root={root} sub={path} />}
          </li>
        );
      })}
    </ul>
  );
}

import { useMemo, useState } from "react";
import { age, BASE, keyOf, type Resource } from "../api.js";
import { Chart } from "../components/Chart.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import { useWatchedList, useWatchedObject } from "../watch.js";

export interface Trial {
  number: number;
  name: string;
  params: Record<string, string | number | boolean>;
  phase: "Pending" | "Running" | "Succeeded" | "Failed" | "EarlyStopped";
  objective?: number;
  step?: number;
  runId?: string;
  rung?: number;
  message?: string;
}

export interface Sweep extends Resource {
  spec?: { objective?: { metric: string; goal: "minimize" | "maximize" }; maxTrials?: number } & Record<
    string,
    unknown
  >;
  status?: Resource["status"] & {
    trials?: Trial[];
    best?: { trial: number; name: string; objective: number; params: Record<string, unknown> };
    succeeded?: number;
  };
}

/** The list path of a kind: one project's, or every project's for a token that reaches them all. */
export function kindPath(plural: string, project: string | undefined): string {
  return project ? `${BASE}/projects/${encodeURIComponent(project)}/${plural}` : `${BASE}/${plural}`;
}

/** Every sweep the user can see, live: trials done, best objective so far. */
export function SweepsPage() {
  const me = useMe();
  const sweeps = useWatchedList<Sweep>(kindPath("sweeps", me.allProjects ? undefined : me.project));
  const now = Date.now();
  const rows = [...sweeps.items].sort((a, b) =>
    (b.metadata.creationTimestamp ?? "").localeCompare(a.metadata.creationTimestamp ?? ""),
  );
  return (
    <>
      <h1>Sweeps</h1>
      {sweeps.error && <p role="alert">{sweeps.error}</p>}
      {!sweeps.loaded ? (
        <p className="muted">Loading…</p>
      ) : rows.length === 0 ? (
        <p className="muted">
          No sweeps. <code>loom apply -f</code> a Sweep (see examples/sweep) to start one.
        </p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Project</th>
              <th scope="col">Name</th>
              <th scope="col">Phase</th>
              <th scope="col">Objective</th>
              <th scope="col">Trials</th>
              <th scope="col">Best</th>
              <th scope="col">Age</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr key={keyOf(s)}>
                <td>{s.metadata.project}</td>
                <td>
                  <a href={href("sweeps", s.metadata.project ?? "", s.metadata.name)}>{s.metadata.name}</a>
                </td>
                <td className={`phase ${s.status?.phase ?? "Pending"}`}>{s.status?.phase ?? "Pending"}</td>
                <td>{s.spec?.objective ? `${s.spec.objective.goal} ${s.spec.objective.metric}` : ""}</td>
                <td>{s.status?.trials?.length ?? 0}</td>
                <td>{s.status?.best ? fmt(s.status.best.objective) : "—"}</td>
                <td>{age(s.metadata.creationTimestamp, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

const fmt = (n: number | undefined) => (n === undefined ? "—" : Number(n.toPrecision(5)).toString());

/** Best objective so far after each trial, in trial order (the goal decides "best"). */
export function bestSoFar(trials: Trial[], goal: "minimize" | "maximize"): (number | undefined)[] {
  let best: number | undefined;
  return [...trials]
    .sort((a, b) => a.number - b.number)
    .map((t) => {
      if (
        t.objective !== undefined &&
        (best === undefined || (goal === "minimize" ? t.objective < best : t.objective > best))
      )
        best = t.objective;
      return best;
    });
}

/** A sweep: its trials (early stops marked), best so far, and each parameter against the objective. */
export function SweepPage({ project, name }: { project: string; name: string }) {
  const { obj: sweep, error } = useWatchedObject<Sweep>(kindPath("sweeps", project), name);
  const trials = useMemo(
    () => [...(sweep?.status?.trials ?? [])].sort((a, b) => a.number - b.number),
    [sweep],
  );
  const params = useMemo(() => [...new Set(trials.flatMap((t) => Object.keys(t.params)))].sort(), [trials]);
  const [param, setParam] = useState("");
  const shownParam = params.includes(param) ? param : (params[0] ?? "");
  const goal = sweep?.spec?.objective?.goal ?? "minimize";
  const best = bestSoFar(trials, goal);
  if (error && !sweep) return <p role="alert">{error}</p>;
  if (!sweep) return <p className="muted">Loading…</p>;
  const numeric = trials.filter((t) => typeof t.params[shownParam] === "number" && t.objective !== undefined);
  const sorted = [...numeric].sort(
    (a, b) => (a.params[shownParam] as number) - (b.params[shownParam] as number),
  );
  return (
    <>
      <h1>
        Sweep {project}/{name}
      </h1>
      <dl className="facts">
        <dt>Phase</dt>
        <dd className={`phase ${sweep.status?.phase ?? "Pending"}`}>{sweep.status?.phase ?? "Pending"}</dd>
        <dt>Objective</dt>
        <dd>
          {goal} {sweep.spec?.objective?.metric}
        </dd>
        <dt>Best so far</dt>
        <dd>
          {sweep.status?.best
            ? `${fmt(sweep.status.best.objective)} (trial ${sweep.status.best.trial}: ${Object.entries(
                sweep.status.best.params,
              )
                .map(([k, v]) => `${k}=${v}`)
                .join(", ")})`
            : "none yet"}
        </dd>
      </dl>
      <h2 id="trials">Trials</h2>
      <table aria-labelledby="trials">
        <thead>
          <tr>
            <th scope="col">#</th>
            <th scope="col">Job</th>
            <th scope="col">State</th>
            {params.map((p) => (
              <th scope="col" key={p}>
                {p}
              </th>
            ))}
            <th scope="col">{sweep.spec?.objective?.metric ?? "objective"}</th>
            <th scope="col">Step</th>
            <th scope="col">Best so far</th>
          </tr>
        </thead>
        <tbody>
          {trials.map((t, i) => (
            <tr key={t.number} className={t.phase === "EarlyStopped" ? "stopped" : undefined}>
              <td>{t.number}</td>
              <td>
                <a href={href("jobs", project, t.name)}>{t.name}</a>
              </td>
              <td className={`phase ${t.phase}`} title={t.message}>
                {t.phase === "EarlyStopped"
                  ? `⏹ early-stopped${t.rung !== undefined ? ` (rung ${t.rung})` : ""}`
                  : t.phase}
              </td>
              {params.map((p) => (
                <td key={p}>{String(t.params[p] ?? "")}</td>
              ))}
              <td>{fmt(t.objective)}</td>
              <td>{t.step ?? ""}</td>
              <td>{fmt(best[i])}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {params.length > 0 && (
        <section aria-labelledby="scatter">
          <h2 id="scatter">Values against the objective</h2>
          <label>
            Parameter{" "}
            <select value={shownParam} onChange={(e) => setParam(e.target.value)}>
              {params.map((p) => (
                <option key={p}>{p}</option>
              ))}
            </select>
          </label>
          {sorted.length ? (
            <Chart
              label={`${sweep.spec?.objective?.metric ?? "objective"} against ${shownParam}, one point per trial`}
              points
              data={[
                sorted.map((t) => t.params[shownParam] as number),
                sorted.map((t) => t.objective ?? null),
              ]}
              series={[{ label: sweep.spec?.objective?.metric ?? "objective", stroke: "#2563eb" }]}
            />
          ) : (
            <p className="muted">No trial has reported a numeric {shownParam} with an objective yet.</p>
          )}
        </section>
      )}
    </>
  );
}

import { useMemo } from "react";
import { kindPath, type Resource } from "../api.js";
import { LiveTable } from "../components/LiveTable.js";
import { ParallelCoords } from "../components/ParallelCoords.js";
import { href } from "../router.js";
import { useWatchedObject } from "../watch.js";

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

/** Every sweep the user can see, live: trials done, best objective so far. */
export function SweepsPage() {
  return (
    <LiveTable<Sweep>
      title="Sweeps"
      plural="sweeps"
      route="sweeps"
      empty={
        <>
          No sweeps. <code>loom apply -f</code> a Sweep (see examples/finetune) to start one.
        </>
      }
      sort={(a, b) => (b.metadata.creationTimestamp ?? "").localeCompare(a.metadata.creationTimestamp ?? "")}
      columns={[
        {
          header: "Objective",
          cell: (s) => (s.spec?.objective ? `${s.spec.objective.goal} ${s.spec.objective.metric}` : ""),
        },
        { header: "Trials", cell: (s) => s.status?.trials?.length ?? 0 },
        { header: "Best", cell: (s) => (s.status?.best ? fmt(s.status.best.objective) : "—") },
      ]}
    />
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

/** A sweep: its trials (early stops marked), best so far, and parallel coordinates of values against the objective. */
export function SweepPage({ project, name }: { project: string; name: string }) {
  const { obj: sweep, error } = useWatchedObject<Sweep>(kindPath("sweeps", project), name);
  const trials = useMemo(
    () => [...(sweep?.status?.trials ?? [])].sort((a, b) => a.number - b.number),
    [sweep],
  );
  const params = useMemo(() => [...new Set(trials.flatMap((t) => Object.keys(t.params)))].sort(), [trials]);
  const pcTrials = useMemo(
    () =>
      trials.map((t) => ({
        number: t.number,
        params: t.params,
        objective: t.objective,
        stopped: t.phase === "EarlyStopped",
      })),
    [trials],
  );
  const goal = sweep?.spec?.objective?.goal ?? "minimize";
  const best = bestSoFar(trials, goal);
  if (error && !sweep) return <p role="alert">{error}</p>;
  if (!sweep) return <p className="muted">Loading…</p>;
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
        <section aria-labelledby="parcoords">
          <h2 id="parcoords">Values against the objective</h2>
          <ParallelCoords
            trials={pcTrials}
            params={params}
            objective={sweep.spec?.objective?.metric ?? "objective"}
            best={sweep.status?.best?.trial}
          />
        </section>
      )}
    </>
  );
}

import { useEffect, useState } from "react";
import { BASE, type Resource } from "../api.js";
import { type Experiment, mlflow, when } from "../mlflow.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import { useWatchedList } from "../watch.js";

/** The project an experiments page shows: the one chosen, else the token's own, else "default". */
export function useProjectChoice(): [string[], string, (p: string) => void] {
  const me = useMe();
  const all = useWatchedList<Resource>(me.allProjects ? `${BASE}/projects` : undefined);
  const names = me.allProjects ? all.items.map((p) => p.metadata.name).sort() : [me.project ?? "default"];
  const [chosen, setChosen] = useState(() => sessionStorage.getItem("loom.project") ?? "");
  const project = names.includes(chosen) ? chosen : (me.project ?? names[0] ?? "default");
  const choose = (p: string) => {
    sessionStorage.setItem("loom.project", p);
    setChosen(p);
  };
  return [names, project, choose];
}

/** A project's MLflow experiments (experiments are not Loom objects, so read on open and on Reload). */
export function ExperimentsPage() {
  const [names, project, choose] = useProjectChoice();
  const [exps, setExps] = useState<Experiment[] | undefined>();
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  useEffect(() => {
    void tick;
    let live = true;
    setError("");
    mlflow<{ experiments?: Experiment[] }>(project, "GET", "experiments/search", { max_results: 1000 }).then(
      (r) => live && setExps(r.experiments ?? []),
      (e: Error) => live && setError(e.message),
    );
    return () => {
      live = false;
    };
  }, [project, tick]);
  return (
    <>
      <h1>Experiments</h1>
      <form className="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Project
          <select value={project} onChange={(e) => choose(e.target.value)}>
            {names.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </label>
        <button type="button" onClick={() => setTick((t) => t + 1)}>
          Reload
        </button>
      </form>
      {error && <p role="alert">{error}</p>}
      {exps && exps.length === 0 && (
        <p className="muted">
          No experiments in {project} yet: point the mlflow client at Loom (MLFLOW_TRACKING_URI) and log a
          run.
        </p>
      )}
      {exps && exps.length > 0 && (
        <table>
          <caption className="muted">Experiments of {project}</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">ID</th>
              <th scope="col">Created</th>
              <th scope="col">Updated</th>
            </tr>
          </thead>
          <tbody>
            {exps.map((x) => (
              <tr key={x.experiment_id}>
                <td>
                  <a href={href("experiments", project, x.experiment_id)}>{x.name}</a>
                </td>
                <td>{x.experiment_id}</td>
                <td>{when(x.creation_time)}</td>
                <td>{when(x.last_update_time)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

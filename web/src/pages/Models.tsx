import { useEffect, useMemo, useState } from "react";
import { age, api, BASE, kindPath, type Resource } from "../api.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import { useWatchedList } from "../watch.js";
import type { Service } from "./Serving.js";

export interface Version {
  version: string;
  aliases: string[];
  stage?: string;
  source: string;
  runId?: string;
  experimentId?: string;
  job?: string;
  jobPhase?: string;
  checkpointStep?: number;
  initCheckpointFrom?: string;
  sweep?: string;
  trial?: string;
  createdAt: string;
}

export interface Model extends Resource {
  spec?: { description?: string };
  status?: Resource["status"] & {
    latestVersion?: string;
    aliases?: Record<string, string>;
    versions?: Version[];
  };
}

/**
 * The version a serving reference names in a model ("models:/m/3", "models:/m@champion",
 * "models:/m" = latest), or undefined when it names another model or a path.
 */
export function resolvedVersion(ref: string, model: Model): string | undefined {
  const m = /^models:\/([^/@]+)(?:\/(\d+)|@(.+))?$/.exec(ref);
  if (!m || m[1] !== model.metadata.name) return undefined;
  if (m[2]) return m[2];
  if (m[3]) return model.status?.aliases?.[m[3]];
  return model.status?.latestVersion;
}

/** Each version's serving revisions: which services run it now, and under which revision. */
export function servedBy(
  model: Model,
  services: Service[],
): Map<string, { service: string; revision: string }[]> {
  const out = new Map<string, { service: string; revision: string }[]>();
  for (const s of services) {
    if (s.metadata.project !== model.metadata.project) continue;
    for (const r of s.status?.revisions ?? []) {
      const ref = (r.spec as { model?: string } | undefined)?.model ?? s.spec?.model ?? "";
      const v = resolvedVersion(ref, model);
      if (!v) continue;
      out.set(v, [...(out.get(v) ?? []), { service: s.metadata.name, revision: r.name }]);
    }
  }
  return out;
}

/** Models are a view of the registry (not watchable): read again when a service changes. */
function useModels(project: string, bump: number): { items: Model[]; error?: string; loaded: boolean } {
  const [state, setState] = useState<{ items: Model[]; error?: string; loaded: boolean }>({
    items: [],
    loaded: false,
  });
  // biome-ignore lint/correctness/useExhaustiveDependencies: bump is the reason to read again
  useEffect(() => {
    if (!project) return;
    let live = true;
    api<{ items: Model[] }>("GET", kindPath("models", project)).then(
      (l) => live && setState({ items: l.items, loaded: true }),
      (e: Error) => live && setState({ items: [], loaded: true, error: e.message }),
    );
    return () => {
      live = false;
    };
  }, [project, bump]);
  return state;
}

/** Registered models of a project, their versions and aliases. */
export function ModelsPage() {
  const me = useMe();
  const projects = useWatchedList<Resource>(me.allProjects ? `${BASE}/projects` : undefined);
  const names = me.allProjects
    ? projects.items.map((p) => p.metadata.name).sort()
    : [me.project ?? "default"];
  const [chosen, setChosen] = useState("");
  const project = names.includes(chosen) ? chosen : names.includes("default") ? "default" : (names[0] ?? "");
  const models = useModels(project, 0);
  const now = Date.now();
  return (
    <>
      <h1>Models</h1>
      <form className="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Project
          <select value={project} onChange={(e) => setChosen(e.target.value)}>
            {names.map((n) => (
              <option key={n}>{n}</option>
            ))}
          </select>
        </label>
      </form>
      {models.error && <p role="alert">{models.error}</p>}
      {!models.loaded ? (
        <p className="muted">Loading…</p>
      ) : models.items.length === 0 ? (
        <p className="muted">No registered models in {project}: a job registers one with MLflow's client.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Latest</th>
              <th scope="col">Aliases</th>
              <th scope="col">Versions</th>
              <th scope="col">Age</th>
            </tr>
          </thead>
          <tbody>
            {models.items.map((m) => (
              <tr key={m.metadata.name}>
                <td>
                  <a href={href("models", project, m.metadata.name)}>{m.metadata.name}</a>
                </td>
                <td>{m.status?.latestVersion ?? ""}</td>
                <td>
                  {Object.entries(m.status?.aliases ?? {})
                    .map(([a, v]) => `@${a}→${v}`)
                    .join(" ")}
                </td>
                <td>{m.status?.versions?.length ?? 0}</td>
                <td>{age(m.metadata.creationTimestamp, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

/** A model: each version with its lineage, job → run → checkpoint → version → serving revision. */
export function ModelPage({ project, name }: { project: string; name: string }) {
  const services = useWatchedList<Service>(kindPath("inferenceservices", project));
  const [model, setModel] = useState<Model>();
  const [error, setError] = useState("");
  // A service change may change what serves a version (and a new version may be behind it): read again.
  // biome-ignore lint/correctness/useExhaustiveDependencies: services.version is the reason to read again
  useEffect(() => {
    let live = true;
    api<Model>("GET", `${kindPath("models", project)}/${encodeURIComponent(name)}`).then(
      (m) => live && setModel(m),
      (e: Error) => live && setError(e.message),
    );
    return () => {
      live = false;
    };
  }, [project, name, services.version]);
  const serving = useMemo(
    () => (model ? servedBy(model, services.items) : new Map()),
    [model, services.items],
  );
  if (error && !model) return <p role="alert">{error}</p>;
  if (!model) return <p className="muted">Loading…</p>;
  const versions = [...(model.status?.versions ?? [])].sort((a, b) => Number(b.version) - Number(a.version));
  return (
    <>
      <h1>
        Model {project}/{name}
      </h1>
      {model.spec?.description && <p>{model.spec.description}</p>}
      <h2>Versions and lineage</h2>
      {versions.length === 0 && <p className="muted">No versions yet.</p>}
      <ul className="lineage">
        {versions.map((v) => (
          <li key={v.version}>
            <h3>
              Version {v.version}
              {v.aliases.map((a) => (
                <span key={a} className="alias">
                  @{a}
                </span>
              ))}
            </h3>
            <ol className="graph" aria-label={`Lineage of version ${v.version}`}>
              <li>
                <span className="node-kind">job</span>
                {v.job ? (
                  <a href={href("jobs", project, v.job)}>
                    {v.job} {v.jobPhase ?? ""}
                  </a>
                ) : (
                  <span className="muted">not made by a Loom job</span>
                )}
                {v.sweep && (
                  <>
                    {" "}
                    (trial {v.trial} of <a href={href("sweeps", project, v.sweep)}>{v.sweep}</a>)
                  </>
                )}
              </li>
              <li>
                <span className="node-kind">run</span>
                {v.runId ? (
                  <a href={href("runs", project, v.runId)}>{v.runId.slice(0, 12)}</a>
                ) : (
                  <span className="muted">none</span>
                )}
              </li>
              <li>
                <span className="node-kind">checkpoint</span>
                {v.checkpointStep !== undefined && v.job ? (
                  <a href={href("jobs", project, v.job)}>step {v.checkpointStep}</a>
                ) : (
                  <span className="muted">none reported</span>
                )}
              </li>
              <li>
                <span className="node-kind">version</span>
                <span title={v.source}>
                  {name} v{v.version}
                </span>
              </li>
              <li>
                <span className="node-kind">serving</span>
                {(serving.get(v.version) ?? []).length ? (
                  (serving.get(v.version) ?? []).map((s: { service: string; revision: string }) => (
                    <a key={s.revision} href={href("serving", project, s.service)}>
                      {s.revision}
                    </a>
                  ))
                ) : (
                  <span className="muted">not served</span>
                )}
              </li>
            </ol>
          </li>
        ))}
      </ul>
    </>
  );
}

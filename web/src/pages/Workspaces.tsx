import { useState } from "react";
import { age, api, BASE, type Resource } from "../api.js";
import { useMe } from "../session.js";
import { useWatchedList } from "../watch.js";
import "./ops.css";

interface Served extends Resource {
  spec?: { ide?: string; stopped?: boolean } & Record<string, unknown>;
  status?: Resource["status"] & {
    url?: string;
    ports?: { port: number; url?: string }[];
    stoppedReason?: string;
    node?: string;
    ready?: number;
    desired?: number;
  };
}

/** The objects of a plural a user can see: every project's, or their project's. */
const pathOf = (plural: string, project: string | undefined) =>
  project ? `${BASE}/projects/${encodeURIComponent(project)}/${plural}` : `${BASE}/${plural}`;

/**
 * Workspaces and apps, live through the API's watch: state and why, an Open button, their ports,
 * and stop/start for editors. Open asks for the one-time log-in link `loom open` prints and opens
 * the workspace's (app's) own origin in a new tab: its content never runs on the console's origin,
 * which holds the console's session.
 */
export function WorkspacesPage() {
  const me = useMe();
  const project = me.allProjects ? undefined : me.project;
  const ws = useWatchedList<Served>(pathOf("workspaces", project));
  const apps = useWatchedList<Served>(pathOf("apps", project));
  return (
    <>
      <h1>Workspaces and apps</h1>
      <ServedTable title="Workspaces" plural="workspaces" list={ws} canWrite={me.canWrite} />
      <ServedTable title="Apps" plural="apps" list={apps} canWrite={me.canWrite} />
    </>
  );
}

/** Why an object is in its state: the reason of its first condition that is not True, or why it stopped. */
function why(o: Served): string {
  const c = o.status?.conditions?.find((x) => x.status !== "True");
  if (o.status?.stoppedReason) return `Stopped by ${o.status.stoppedReason}`;
  return c ? [c.reason, c.message].filter(Boolean).join(": ") : "";
}

function ServedTable(props: {
  title: string;
  plural: "workspaces" | "apps";
  list: { items: Served[]; loaded: boolean; error?: string };
  canWrite: boolean;
}) {
  const { title, plural, list } = props;
  const [error, setError] = useState("");
  const [busy, setBusy] = useState("");
  const items = [...list.items].sort((a, b) =>
    `${a.metadata.project}/${a.metadata.name}`.localeCompare(`${b.metadata.project}/${b.metadata.name}`),
  );
  const item = (o: Served) =>
    `${BASE}/projects/${encodeURIComponent(o.metadata.project ?? "")}/${plural}/${encodeURIComponent(o.metadata.name)}`;
  const open = async (o: Served) => {
    setError("");
    try {
      const { url } = await api<{ url: string }>("POST", `${item(o)}/login`, {});
      // noopener: the workspace's page gets no handle on the console's window.
      window.open(url, "_blank", "noopener,noreferrer");
    } catch (e) {
      setError(`${o.metadata.name}: ${(e as Error).message}`);
    }
  };
  const setStopped = async (o: Served, stopped: boolean) => {
    setError("");
    setBusy(`${o.metadata.project}/${o.metadata.name}`);
    try {
      // What `loom stop ws/NAME` and `loom start ws/NAME` send (start also lifts an idle stop).
      await api(
        "PATCH",
        item(o),
        stopped
          ? { spec: { stopped } }
          : { metadata: { annotations: { "loom.dev/idle-stopped": null } }, spec: { stopped } },
      );
    } catch (e) {
      setError(`${o.metadata.name}: ${(e as Error).message}`);
    } finally {
      setBusy("");
    }
  };
  const id = `${plural}-title`;
  return (
    <section aria-labelledby={id}>
      <h2 id={id}>
        {title} ({items.length})
      </h2>
      {(error || list.error) && <p role="alert">{error || list.error}</p>}
      {list.loaded && items.length === 0 ? (
        <p className="muted">
          None yet: <code>loom apply -f</code> a {plural === "apps" ? "App" : "Workspace"}, or use the Apply
          page.
        </p>
      ) : (
        <table className="served">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Phase</th>
              <th scope="col">Why</th>
              <th scope="col">Ports</th>
              <th scope="col">Age</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {items.map((o) => {
              const key = `${o.metadata.project}/${o.metadata.name}`;
              const stopped = !!o.spec?.stopped || o.status?.phase === "Stopped";
              return (
                <tr key={key}>
                  <th scope="row">{key}</th>
                  <td>
                    <span className={`phase ${o.status?.phase ?? "Pending"}`}>
                      {o.status?.phase ?? "Pending"}
                    </span>
                  </td>
                  <td>{why(o)}</td>
                  <td>
                    {(o.status?.ports ?? []).map((p) => (
                      <a key={p.port} href={p.url} target="_blank" rel="noopener noreferrer" className="port">
                        {p.port}
                      </a>
                    ))}
                  </td>
                  <td>{age(o.metadata.creationTimestamp)}</td>
                  <td className="actions">
                    {(plural === "apps" || props.canWrite) && (
                      <button
                        type="button"
                        onClick={() => open(o)}
                        disabled={stopped}
                        aria-label={`Open ${key} in a new tab`}
                      >
                        Open
                      </button>
                    )}
                    {plural === "workspaces" && props.canWrite && (
                      <button
                        type="button"
                        disabled={busy === key}
                        onClick={() => setStopped(o, !stopped)}
                        aria-label={`${stopped ? "Start" : "Stop"} ${key}`}
                      >
                        {stopped ? "Start" : "Stop"}
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

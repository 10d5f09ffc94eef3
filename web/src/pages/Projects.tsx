import { type FormEvent, useCallback, useEffect, useState } from "react";
import { api, BASE, type Resource } from "../api.js";
import { useMe } from "../session.js";
import { useWatchedList } from "../watch.js";

interface Member {
  user?: string;
  group?: string;
  role: string;
}
interface Quota {
  cpu?: string | number;
  memory?: string;
  gpu?: number;
}
interface Project extends Resource {
  spec?: {
    displayName?: string;
    description?: string;
    members?: Member[];
    quota?: Quota;
    limit?: Quota;
    overQuotaWeight?: number;
  };
}
interface Credential {
  id: string;
  name: string;
  role?: string;
  project?: string;
  services?: string[];
  createdAt: string;
  expiresAt?: string;
  lastUsedAt?: string;
}

/** Projects: members and quotas; a project's API keys (editors) and API tokens (admins): create and revoke. */
export function ProjectsPage() {
  const me = useMe();
  const all = useWatchedList<Project>(me.allProjects ? `${BASE}/projects` : undefined);
  const [own, setOwn] = useState<Project | undefined>();
  useEffect(() => {
    if (!me.allProjects && me.project)
      api<Project>("GET", `${BASE}/projects/${encodeURIComponent(me.project)}`).then(setOwn, () => undefined);
  }, [me.allProjects, me.project]);
  const projects = me.allProjects ? all.items : own ? [own] : [];
  const [picked, setPicked] = useState<string>("");
  const current = projects.find((p) => p.metadata.name === picked) ?? projects[0];
  return (
    <>
      <h1>Projects</h1>
      {all.error && <p role="alert">{all.error}</p>}
      <div className="split">
        <nav aria-label="Projects" className="side">
          <ul>
            {projects
              .map((p) => p.metadata.name)
              .sort()
              .map((n) => (
                <li key={n}>
                  <button
                    type="button"
                    className="link"
                    aria-current={n === current?.metadata.name ? "true" : undefined}
                    onClick={() => setPicked(n)}
                  >
                    {n}
                  </button>
                </li>
              ))}
          </ul>
        </nav>
        {current && <ProjectDetail key={current.metadata.name} project={current} />}
      </div>
    </>
  );
}

function ProjectDetail({ project }: { project: Project }) {
  const me = useMe();
  const name = project.metadata.name;
  const spec = project.spec ?? {};
  return (
    <div className="detail">
      <h2>{spec.displayName ?? name}</h2>
      {spec.description && <p>{spec.description}</p>}
      <section aria-labelledby="members">
        <h3 id="members">Members</h3>
        {spec.members?.length ? (
          <table>
            <thead>
              <tr>
                <th scope="col">Who</th>
                <th scope="col">Role</th>
              </tr>
            </thead>
            <tbody>
              {spec.members.map((m) => (
                <tr key={`${m.user ?? ""}:${m.group ?? ""}`}>
                  <td>{m.user ? `user ${m.user}` : `group ${m.group}`}</td>
                  <td>{m.role}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <p className="muted">No members listed: tokens scoped to {name} reach it.</p>
        )}
      </section>
      <section aria-labelledby="quota">
        <h3 id="quota">Quota</h3>
        <dl className="facts">
          <dt>Deserved</dt>
          <dd>{quota(spec.quota)}</dd>
          <dt>Limit</dt>
          <dd>{quota(spec.limit)}</dd>
          <dt>Over-quota weight</dt>
          <dd>{spec.overQuotaWeight ?? 1}</dd>
        </dl>
      </section>
      {me.canWrite && (!me.project || me.project === name) && <Credentials kind="apikeys" project={name} />}
      {me.admin && <Credentials kind="tokens" project={name} />}
    </div>
  );
}

const quota = (q: Quota | undefined) =>
  q
    ? [
        q.gpu !== undefined && `${q.gpu} GPU`,
        q.cpu !== undefined && `${q.cpu} CPU`,
        q.memory && `${q.memory} memory`,
      ]
        .filter(Boolean)
        .join(", ") || "none"
    : "none";

/** A project's API keys (for the gateway) or API tokens (for Loom's API): list, create, revoke. */
function Credentials({ kind, project }: { kind: "apikeys" | "tokens"; project: string }) {
  const keys = kind === "apikeys";
  const listPath = keys
    ? `${BASE}/projects/${encodeURIComponent(project)}/apikeys`
    : `${BASE}/tokens?project=${encodeURIComponent(project)}`;
  const [items, setItems] = useState<Credential[]>([]);
  const [error, setError] = useState("");
  const [made, setMade] = useState("");
  const [newName, setNewName] = useState("");
  const [role, setRole] = useState("viewer");
  const [ttl, setTtl] = useState("");
  const reload = useCallback(() => {
    api<{ items: Credential[] }>("GET", listPath).then(
      (r) => setItems(r.items.filter((t) => !keys || t.project === project)),
      (e: Error) => setError(e.message),
    );
  }, [listPath, keys, project]);
  useEffect(reload, [reload]);
  const create = async (e: FormEvent) => {
    e.preventDefault();
    setError("");
    try {
      const body = keys
        ? { name: newName, ...(ttl ? { ttl } : {}) }
        : { name: newName, role, project, ...(ttl ? { ttl } : {}) };
      const r = await api<{ key?: string; token?: string }>("POST", keys ? listPath : `${BASE}/tokens`, body);
      setMade(r.key ?? r.token ?? "");
      setNewName("");
      reload();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  const revoke = async (id: string) => {
    try {
      await api(
        "DELETE",
        keys ? `${listPath}/${encodeURIComponent(id)}` : `${BASE}/tokens/${encodeURIComponent(id)}`,
      );
      reload();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  const title = keys ? "API keys (inference gateway)" : "API tokens (Loom's API)";
  const id = `cred-${kind}`;
  return (
    <section aria-labelledby={id}>
      <h3 id={id}>{title}</h3>
      {error && <p role="alert">{error}</p>}
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            {!keys && <th scope="col">Role</th>}
            <th scope="col">Created</th>
            <th scope="col">Expires</th>
            <th scope="col">Last used</th>
            <th scope="col">
              <span className="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {items.map((t) => (
            <tr key={t.id}>
              <td>{t.name}</td>
              {!keys && <td>{t.role}</td>}
              <td>{t.createdAt}</td>
              <td>{t.expiresAt ?? "never"}</td>
              <td>{t.lastUsedAt ?? ""}</td>
              <td>
                <button
                  type="button"
                  className="danger"
                  onClick={() => revoke(t.id)}
                  aria-label={`Revoke ${t.name}`}
                >
                  Revoke
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="filters" onSubmit={create} aria-label={`Create ${keys ? "API key" : "API token"}`}>
        <label>
          Name
          <input
            value={newName}
            onChange={(e) => setNewName(e.target.value)}
            required
            pattern="[A-Za-z0-9][A-Za-z0-9._@\-]{0,62}"
          />
        </label>
        {!keys && (
          <label>
            Role
            <select value={role} onChange={(e) => setRole(e.target.value)}>
              <option>viewer</option>
              <option>editor</option>
              <option>admin</option>
            </select>
          </label>
        )}
        <label>
          Lifetime
          <input value={ttl} placeholder="e.g. 30d (empty: none)" onChange={(e) => setTtl(e.target.value)} />
        </label>
        <button type="submit">{keys ? "Create API key" : "Create token"}</button>
      </form>
      {made && (
        <p role="status">
          Copy it now, it is not shown again: <code className="secret">{made}</code>
        </p>
      )}
    </section>
  );
}

import { type FormEvent, useEffect, useState } from "react";
import { api, BASE, csrfToken, type Me } from "./api.js";
import { ApplyPage } from "./pages/Apply.js";
import { ComparePage } from "./pages/Compare.js";
import { ExperimentsPage } from "./pages/Experiments.js";
import { JobPage } from "./pages/Job.js";
import { JobsPage } from "./pages/Jobs.js";
import { ModelPage, ModelsPage } from "./pages/Models.js";
import { NodesPage } from "./pages/Nodes.js";
import { OverviewPage } from "./pages/Overview.js";
import { ProjectsPage } from "./pages/Projects.js";
import { RunPage } from "./pages/Run.js";
import { RunsPage } from "./pages/Runs.js";
import { ServicePage, ServingPage } from "./pages/Serving.js";
import { SweepPage, SweepsPage } from "./pages/Sweeps.js";
import { WorkspacesPage } from "./pages/Workspaces.js";
import { href, useRoute } from "./router.js";
import { MeContext } from "./session.js";

/** Pages in the navigation, in order; a later page is one line here and one file in pages/. */
const PAGES = [
  { path: "overview", title: "Overview" },
  { path: "jobs", title: "Jobs" },
  { path: "sweeps", title: "Sweeps" },
  { path: "models", title: "Models" },
  { path: "serving", title: "Serving" },
  { path: "experiments", title: "Experiments" },
  { path: "projects", title: "Projects" },
  { path: "workspaces", title: "Workspaces and apps" },
  { path: "nodes", title: "Nodes" },
  { path: "apply", title: "Apply" },
] as const;

/** The console: log-in when there is no session, else the navigation and the routed page. */
export function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  useEffect(() => {
    // No CSRF cookie: never logged in here (or logged out), so no request that can only fail.
    if (!csrfToken()) return setMe(null);
    api<Me>("GET", `${BASE}/whoami`).then(setMe, () => setMe(null));
  }, []);
  if (me === undefined) return <p className="muted">Loading…</p>;
  if (me === null) return <Login onIn={setMe} />;
  return (
    <MeContext.Provider value={me}>
      <Shell me={me} onOut={() => setMe(null)} />
    </MeContext.Provider>
  );
}

function Shell({ me, onOut }: { me: Me; onOut: () => void }) {
  const route = useRoute();
  const page = route[0] ?? "overview";
  useEffect(() => {
    const title = PAGES.find((p) => p.path === page)?.title ?? "Loom";
    document.title = `${route.length > 1 ? route.slice(1).join("/") : title} · Loom`;
  }, [page, route]);
  const logout = async () => {
    await api("POST", "/console/logout").catch(() => undefined);
    onOut();
  };
  return (
    <>
      <header className="top">
        <a className="brand" href={href("overview")}>
          Loom
        </a>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a key={p.path} href={href(p.path)} aria-current={p.path === page ? "page" : undefined}>
              {p.title}
            </a>
          ))}
        </nav>
        <span className="who">
          {me.name} · {me.role}
          {me.project ? ` of ${me.project}` : ""}
        </span>
        <button type="button" onClick={logout}>
          Log out
        </button>
      </header>
      <main>{routed(route)}</main>
    </>
  );
}

function routed(route: string[]) {
  const [page, project, name] = route;
  switch (page) {
    case undefined:
    case "overview":
      return <OverviewPage />;
    case "jobs":
      return project && name ? <JobPage project={project} name={name} /> : <JobsPage />;
    case "sweeps":
      return project && name ? <SweepPage project={project} name={name} /> : <SweepsPage />;
    case "models":
      return project && name ? <ModelPage project={project} name={name} /> : <ModelsPage />;
    case "serving":
      return project && name ? <ServicePage project={project} name={name} /> : <ServingPage />;
    case "projects":
      return <ProjectsPage />;
    case "workspaces":
      return <WorkspacesPage />;
    case "nodes":
      return <NodesPage />;
    case "apply":
      return <ApplyPage />;
    case "experiments":
      return project && name ? <RunsPage project={project} experimentId={name} /> : <ExperimentsPage />;
    case "runs":
      return project && name ? <RunPage project={project} runId={name} /> : <ExperimentsPage />;
    case "compare":
      return project && name ? <ComparePage project={project} ids={name.split(",")} /> : <ExperimentsPage />;
    default:
      return <p role="alert">No page {page}: pick one above.</p>;
  }
}

function Login({ onIn }: { onIn: (me: Me) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState("");
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError("");
    try {
      onIn(await api<Me>("POST", "/console/login", { token: token.trim() }));
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <main className="login">
      <h1>Log in to Loom</h1>
      <form onSubmit={submit}>
        <label htmlFor="token">Token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="current-password"
          value={token}
          onChange={(e) => setToken(e.target.value)}
          required
        />
        <button type="submit">Log in</button>
        {error && <p role="alert">{error}</p>}
      </form>
      <p className="muted">
        Use the admin token <code>loom up</code> printed, or one an admin made with{" "}
        <code>loom token create NAME</code>. It is kept in an HttpOnly cookie for this site only.
      </p>
    </main>
  );
}

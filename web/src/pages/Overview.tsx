import { useEffect, useMemo, useRef, useState } from "react";
import { api, BASE, condition, type Job } from "../api.js";
import { Bar } from "../components/Bar.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import { cores, gib } from "../units.js";
import { useWatchedList } from "../watch.js";

interface NodeUsage {
  name: string;
  pool: string;
  gpuModel?: string;
  capacity: { cpuMillis: number; memoryBytes: number; gpus: number };
  allocated: { cpuMillis: number; memoryBytes: number; gpus: number; pods: number };
  workloads: string[];
}
interface Vec {
  gpu?: number;
  cpuMillis?: number;
  memoryBytes?: number;
}
interface ProjectUsage {
  name: string;
  deserved: Vec;
  limit?: Vec;
  allocated: { gpu: number; cpuMillis: number; memoryBytes: number };
  running: number;
  pending: number;
}

/** The jobs a user can see: every project's, or their project's. */
export function jobsPath(project: string | undefined): string {
  return project ? `${BASE}/projects/${encodeURIComponent(project)}/trainingjobs` : `${BASE}/trainingjobs`;
}

/**
 * Capacity per node pool, per-project held vs deserved vs limit, and the queue. Node and project
 * usage are the scheduler's own views (`loom get nodes`, `loom top`), read again when a job
 * changes (at most once a second), never on a timer.
 */
export function OverviewPage() {
  const me = useMe();
  const jobs = useWatchedList<Job>(jobsPath(me.allProjects ? undefined : me.project));
  const [nodes, setNodes] = useState<NodeUsage[]>([]);
  const [usage, setUsage] = useState<ProjectUsage[] | undefined>();
  const [error, setError] = useState("");
  // The first read at once; later ones (a job changed) at most once a second.
  const readOnce = useRef(false);
  // biome-ignore lint/correctness/useExhaustiveDependencies: jobs.version is the trigger: read again when a job changes
  useEffect(() => {
    const delay = readOnce.current ? 1000 : 0;
    readOnce.current = true;
    const t = setTimeout(() => {
      api<{ items: NodeUsage[] }>("GET", `${BASE}/nodes`).then(
        (r) => setNodes(r.items),
        (e: Error) => setError(e.message),
      );
      if (me.allProjects)
        api<{ items: ProjectUsage[] }>("GET", `${BASE}/usage/projects`).then(
          (r) => setUsage(r.items),
          (e: Error) => setError(e.message),
        );
    }, delay);
    return () => clearTimeout(t);
  }, [jobs.version, me.allProjects]);
  const pools = useMemo(() => byPool(nodes), [nodes]);
  const queue = useMemo(
    () =>
      jobs.items
        .filter((j) => (j.status?.phase ?? "Pending") === "Pending" && !j.status?.admission)
        .sort((a, b) => (a.status?.queuePosition ?? 1e9) - (b.status?.queuePosition ?? 1e9)),
    [jobs.items],
  );
  return (
    <>
      <h1>Overview</h1>
      {error && <p role="alert">{error}</p>}
      <section aria-labelledby="pools">
        <h2 id="pools">Capacity by node pool</h2>
        <table>
          <thead>
            <tr>
              <th scope="col">Pool</th>
              <th scope="col">Nodes</th>
              <th scope="col">GPUs in use</th>
              <th scope="col">CPU cores in use</th>
              <th scope="col">Memory in use (GiB)</th>
            </tr>
          </thead>
          <tbody>
            {pools.map((p) => (
              <tr key={p.pool}>
                <th scope="row">{p.pool}</th>
                <td>{p.nodes}</td>
                <td>
                  {p.gpus.used} / {p.gpus.total}
                  <Bar label={`${p.pool} GPUs`} held={p.gpus.used} limit={p.gpus.total} />
                </td>
                <td>
                  {cores(p.cpu.used)} / {cores(p.cpu.total)}
                  <Bar
                    label={`${p.pool} CPU`}
                    held={cores(p.cpu.used)}
                    limit={cores(p.cpu.total)}
                    unit="cores"
                  />
                </td>
                <td>
                  {gib(p.mem.used)} / {gib(p.mem.total)}
                  <Bar
                    label={`${p.pool} memory`}
                    held={gib(p.mem.used)}
                    limit={gib(p.mem.total)}
                    unit="GiB"
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section aria-labelledby="projects">
        <h2 id="projects">Projects: held, deserved and limit</h2>
        {usage ? (
          <table>
            <thead>
              <tr>
                <th scope="col">Project</th>
                <th scope="col">Running</th>
                <th scope="col">Waiting</th>
                <th scope="col">GPUs</th>
                <th scope="col">CPU cores</th>
                <th scope="col">Memory (GiB)</th>
              </tr>
            </thead>
            <tbody>
              {usage.map((u) => (
                <tr key={u.name}>
                  <th scope="row">{u.name}</th>
                  <td>{u.running}</td>
                  <td>{u.pending}</td>
                  <td>
                    <Bar
                      label={`${u.name} GPUs`}
                      held={u.allocated.gpu}
                      deserved={u.deserved.gpu}
                      limit={u.limit?.gpu}
                    />
                  </td>
                  <td>
                    <Bar
                      label={`${u.name} CPU`}
                      unit="cores"
                      held={cores(u.allocated.cpuMillis)}
                      deserved={opt(u.deserved.cpuMillis, cores)}
                      limit={opt(u.limit?.cpuMillis, cores)}
                    />
                  </td>
                  <td>
                    <Bar
                      label={`${u.name} memory`}
                      unit="GiB"
                      held={gib(u.allocated.memoryBytes)}
                      deserved={opt(u.deserved.memoryBytes, gib)}
                      limit={opt(u.limit?.memoryBytes, gib)}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <p className="muted">Every project's use is shown to tokens that reach every project.</p>
        )}
        <p className="legend muted">
          Bar: held; <span className="key deserved">deserved</span> and{" "}
          <span className="key limit">limit</span> marks; red past deserved (borrowed).
        </p>
      </section>
      <section aria-labelledby="queue">
        <h2 id="queue">Queue ({queue.length} waiting)</h2>
        <table>
          <thead>
            <tr>
              <th scope="col">Position</th>
              <th scope="col">Job</th>
              <th scope="col">Reason</th>
              <th scope="col">Why it waits</th>
            </tr>
          </thead>
          <tbody>
            {queue.slice(0, 200).map((j) => {
              const c = condition(j, "Admitted");
              return (
                <tr key={`${j.metadata.project}/${j.metadata.name}`}>
                  <td>{j.status?.queuePosition ?? "–"}</td>
                  <td>
                    <a href={href("jobs", j.metadata.project ?? "", j.metadata.name)}>
                      {j.metadata.project}/{j.metadata.name}
                    </a>
                  </td>
                  <td>{c?.reason ?? "Queued"}</td>
                  <td>{c?.message ?? "not yet seen by the scheduler"}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </section>
    </>
  );
}

const opt = (n: number | undefined, f: (n: number) => number) => (n === undefined ? undefined : f(n));

function byPool(nodes: NodeUsage[]) {
  const out = new Map<
    string,
    {
      pool: string;
      nodes: number;
      gpus: { used: number; total: number };
      cpu: { used: number; total: number };
      mem: { used: number; total: number };
    }
  >();
  for (const n of nodes) {
    let p = out.get(n.pool);
    if (!p) {
      p = {
        pool: n.pool,
        nodes: 0,
        gpus: { used: 0, total: 0 },
        cpu: { used: 0, total: 0 },
        mem: { used: 0, total: 0 },
      };
      out.set(n.pool, p);
    }
    p.nodes += 1;
    p.gpus.used += n.allocated.gpus;
    p.gpus.total += n.capacity.gpus;
    p.cpu.used += n.allocated.cpuMillis;
    p.cpu.total += n.capacity.cpuMillis;
    p.mem.used += n.allocated.memoryBytes;
    p.mem.total += n.capacity.memoryBytes;
  }
  return [...out.values()];
}

import { useEffect, useRef, useState } from "react";
import { api, BASE } from "../api.js";
import { Bar } from "../components/Bar.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import { cores, gib } from "../units.js";
import { useWatchedList } from "../watch.js";
import "./ops.css";

interface Holder {
  workload: string;
  project: string;
  worker: number;
  share: number;
}
interface NodeUsage {
  name: string;
  pool: string;
  gpuModel?: string;
  capacity: { cpuMillis: number; memoryBytes: number; gpus: number };
  allocated: { cpuMillis: number; memoryBytes: number; gpus: number; pods: number };
  workloads: string[];
  devices?: { id: string; memoryBytes?: number; holders: Holder[] }[];
}

const scoped = (plural: string, project: string | undefined) =>
  project ? `${BASE}/projects/${encodeURIComponent(project)}/${plural}` : `${BASE}/${plural}`;

/** A stable colour per project, so one project's work reads as one colour across the map. */
function hue(project: string): number {
  let h = 0;
  for (const c of project) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

/**
 * Every node and each of its GPU devices with what holds it (workload, project, worker), a
 * fraction drawn as its part of the device; CPU and memory bars. The scheduler's own view
 * (`loom get nodes`), read again when a job, workspace or service changes (at most once a
 * second), never on a timer.
 */
export function NodesPage() {
  const me = useMe();
  const project = me.allProjects ? undefined : me.project;
  const jobs = useWatchedList(scoped("trainingjobs", project));
  const ws = useWatchedList(scoped("workspaces", project));
  const svcs = useWatchedList(scoped("inferenceservices", project));
  const [nodes, setNodes] = useState<NodeUsage[] | undefined>();
  const [error, setError] = useState("");
  const readOnce = useRef(false);
  // biome-ignore lint/correctness/useExhaustiveDependencies: the versions are the trigger: read again when a workload changes
  useEffect(() => {
    const delay = readOnce.current ? 1000 : 0;
    readOnce.current = true;
    const t = setTimeout(() => {
      api<{ items: NodeUsage[] }>("GET", `${BASE}/nodes`).then(
        (r) => {
          setNodes(r.items);
          setError("");
        },
        (e: Error) => setError(e.message),
      );
    }, delay);
    return () => clearTimeout(t);
  }, [jobs.version, ws.version, svcs.version]);
  return (
    <>
      <h1>Nodes</h1>
      {error && <p role="alert">{error}</p>}
      {!nodes && !error && <p className="muted">Loading…</p>}
      <ul className="nodemap" aria-label="Nodes">
        {(nodes ?? []).map((n) => (
          <NodeCard key={n.name} node={n} />
        ))}
      </ul>
      <p className="legend muted">
        Each box is a GPU device; a coloured part is a worker holding it (its width: the share of the device),
        one colour per project. Work you cannot see is shown by name only.
      </p>
    </>
  );
}

function NodeCard({ node: n }: { node: NodeUsage }) {
  const id = `node-${n.name}`;
  return (
    <li className="node" aria-labelledby={id}>
      <h2 id={id}>{n.name}</h2>
      <p className="muted">
        pool {n.pool}
        {n.gpuModel ? ` · ${n.gpuModel}` : ""} · {n.allocated.pods} workers · GPUs {round(n.allocated.gpus)} /{" "}
        {n.capacity.gpus}
      </p>
      <div className="usage">
        <span>
          CPU {cores(n.allocated.cpuMillis)} / {cores(n.capacity.cpuMillis)} cores
        </span>
        <Bar
          label={`${n.name} CPU`}
          unit="cores"
          held={cores(n.allocated.cpuMillis)}
          limit={cores(n.capacity.cpuMillis)}
        />
        <span>
          Memory {gib(n.allocated.memoryBytes)} / {gib(n.capacity.memoryBytes)} GiB
        </span>
        <Bar
          label={`${n.name} memory`}
          unit="GiB"
          held={gib(n.allocated.memoryBytes)}
          limit={gib(n.capacity.memoryBytes)}
        />
      </div>
      {(n.devices ?? []).length > 0 && (
        <ul className="devices" aria-label={`${n.name} GPU devices`}>
          {(n.devices ?? []).map((d) => (
            <Device key={d.id} device={d} />
          ))}
        </ul>
      )}
      <h3>Workloads here</h3>
      {n.workloads.length ? (
        <ul className="held">
          {n.workloads.map((w) => {
            const [p, name] = w.split("/");
            return (
              <li key={w}>
                <a href={href("jobs", p ?? "", name ?? "")}>{w}</a>
              </li>
            );
          })}
        </ul>
      ) : (
        <p className="muted">none</p>
      )}
    </li>
  );
}

function Device({ device: d }: { device: { id: string; memoryBytes?: number; holders: Holder[] } }) {
  const used = d.holders.reduce((s, h) => s + h.share, 0);
  const words =
    `${d.id}${d.memoryBytes ? ` (${gib(d.memoryBytes)} GiB)` : ""}: ` +
    (d.holders.length
      ? d.holders.map((h) => `${h.workload} worker ${h.worker} holds ${pct(h.share)}`).join("; ")
      : "free");
  return (
    <li className="device" title={words}>
      <span className="devname">{d.id}</span>
      <div className="devbar" role="img" aria-label={words}>
        {d.holders.map((h) => (
          <div
            key={`${h.workload}-${h.worker}`}
            className="part"
            style={{
              width: `${Math.min(100, h.share * 100)}%`,
              background: `hsl(${hue(h.project)} 55% 42%)`,
            }}
          >
            {h.workload}
            {h.share < 1 ? ` ${pct(h.share)}` : ""}
          </div>
        ))}
      </div>
      <span className="muted">{used >= 1 ? "full" : `${pct(1 - used)} free`}</span>
    </li>
  );
}

const round = (n: number) => Math.round(n * 100) / 100;
const pct = (n: number) => `${Math.round(n * 100)}%`;

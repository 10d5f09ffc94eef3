import { useEffect, useMemo, useState } from "react";
import { age, api, kindPath, type Resource } from "../api.js";
import { Chart } from "../components/Chart.js";
import { LiveTable } from "../components/LiveTable.js";
import { useMe } from "../session.js";
import { useWatchedObject } from "../watch.js";
import { Playground } from "./Playground.js";

export interface Revision {
  name: string;
  generation: number;
  desired: number;
  ready: number;
  replicas?: { id: string; ready: boolean; startedAt: string; host?: string; port?: number; node?: string }[];
  createdAt: string;
  spec?: { model?: string };
}

export interface Service extends Resource {
  spec?: { model?: string } & Record<string, unknown>;
  status?: Resource["status"] & {
    url?: string;
    revisions?: Revision[];
    traffic?: { revision: string; percent: number }[];
    latestReadyRevision?: string;
    desired?: number;
    ready?: number;
  };
}

/** Every InferenceService the user can see, live: phase, replicas, traffic. */
export function ServingPage() {
  return (
    <LiveTable<Service>
      title="Serving"
      plural="inferenceservices"
      route="serving"
      empty="No InferenceServices: apply one (see docs/serving.md)."
      columns={[
        { header: "Model", cell: (s) => s.spec?.model },
        { header: "Ready", cell: (s) => `${s.status?.ready ?? 0}/${s.status?.desired ?? 0}` },
        {
          header: "Traffic",
          cell: (s) => (s.status?.traffic ?? []).map((t) => `${t.revision} ${t.percent}%`).join(", "),
        },
      ]}
    />
  );
}

interface Figures {
  time: number;
  requests: number;
  durationSum: number;
  durationCount: number;
  ttfbSum: number;
  ttfbCount: number;
  completionTokens: number;
  inFlight: number;
}

/** Samples kept for the charts: 10 minutes at one every 5 s. */
const SAMPLES = 120;
const EVERY_MS = 5000;

/**
 * Rates from the gateway's cumulative figures: one small read every 5 s while the page is open
 * (a rate needs two readings; the gateway keeps no history), none when the tab is hidden.
 */
function useRates(project: string, name: string) {
  const [samples, setSamples] = useState<Figures[]>([]);
  const [error, setError] = useState("");
  useEffect(() => {
    let live = true;
    setSamples([]);
    const read = async () => {
      if (document.hidden) return;
      try {
        const f = await api<Figures>(
          "GET",
          `${kindPath("inferenceservices", project)}/${encodeURIComponent(name)}/figures`,
        );
        if (live) setSamples((s) => [...s.slice(-SAMPLES), f]);
        setError("");
      } catch (e) {
        if (live) setError((e as Error).message);
      }
    };
    read();
    const t = setInterval(read, EVERY_MS);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, [project, name]);
  const data = useMemo(() => {
    const x: number[] = [];
    const rps: (number | null)[] = [];
    const latency: (number | null)[] = [];
    const ttfb: (number | null)[] = [];
    const tps: (number | null)[] = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1]!;
      const b = samples[i]!;
      const dt = (b.time - a.time) / 1000;
      if (dt <= 0) continue;
      const n = b.durationCount - a.durationCount;
      const m = b.ttfbCount - a.ttfbCount;
      x.push(b.time / 1000);
      rps.push((b.requests - a.requests) / dt);
      latency.push(n > 0 ? ((b.durationSum - a.durationSum) / n) * 1000 : null);
      ttfb.push(m > 0 ? ((b.ttfbSum - a.ttfbSum) / m) * 1000 : null);
      tps.push((b.completionTokens - a.completionTokens) / dt);
    }
    return { x, rps, latency, ttfb, tps };
  }, [samples]);
  return { data, last: samples.at(-1), error };
}

/** A service: revisions, traffic split, replicas, its gateway charts, and the chat playground. */
export function ServicePage({ project, name }: { project: string; name: string }) {
  const { obj: svc, error } = useWatchedObject<Service>(kindPath("inferenceservices", project), name);
  const rates = useRates(project, name);
  const me = useMe();
  if (error && !svc) return <p role="alert">{error}</p>;
  if (!svc) return <p className="muted">Loading…</p>;
  const st = svc.status ?? {};
  const now = Date.now();
  return (
    <>
      <h1>
        Service {project}/{name}
      </h1>
      <dl className="facts">
        <dt>Phase</dt>
        <dd className={`phase ${st.phase ?? "Pending"}`}>{st.phase ?? "Pending"}</dd>
        <dt>Model</dt>
        <dd>{svc.spec?.model}</dd>
        <dt>Replicas</dt>
        <dd>
          {st.ready ?? 0} ready of {st.desired ?? 0} desired
        </dd>
        <dt>Requests</dt>
        <dd>
          {rates.last?.requests ?? 0} in all, {rates.last?.inFlight ?? 0} in flight
        </dd>
      </dl>
      <h2 id="revisions">Revisions and traffic</h2>
      <table aria-labelledby="revisions">
        <thead>
          <tr>
            <th scope="col">Revision</th>
            <th scope="col">Model</th>
            <th scope="col">Traffic</th>
            <th scope="col">Ready</th>
            <th scope="col">Replicas</th>
            <th scope="col">Age</th>
          </tr>
        </thead>
        <tbody>
          {(st.revisions ?? []).map((r) => (
            <tr key={r.name}>
              <td>
                {r.name}
                {r.name === st.latestReadyRevision ? " (latest ready)" : ""}
              </td>
              <td>{r.spec?.model ?? ""}</td>
              <td>
                <span className="bar" aria-hidden="true">
                  <span className="fill" style={{ width: `${percentOf(st.traffic, r.name)}%` }} />
                </span>{" "}
                {percentOf(st.traffic, r.name)}%
              </td>
              <td>
                {r.ready}/{r.desired}
              </td>
              <td>
                {(r.replicas ?? []).map((p) => (
                  <span key={p.id} className={`replica ${p.ready ? "ready" : "starting"}`}>
                    {p.id} {p.ready ? "ready" : "starting"} {age(p.startedAt, now)}
                    {p.node ? ` on ${p.node}` : ""}
                  </span>
                ))}
              </td>
              <td>{age(r.createdAt, now)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Gateway figures</h2>
      {rates.error && <p role="alert">{rates.error}</p>}
      <p className="muted">From the gateway's own counters, read every 5 s while this page is open.</p>
      <div className="charts">
        <Chart
          label="Requests per second"
          xTime
          data={[rates.data.x, rates.data.rps]}
          series={[{ label: "req/s", stroke: "#2563eb" }]}
        />
        <Chart
          label="Mean latency and time to first byte, milliseconds"
          xTime
          data={[rates.data.x, rates.data.latency, rates.data.ttfb]}
          series={[
            { label: "latency ms", stroke: "#dc2626" },
            { label: "first byte ms", stroke: "#16a34a" },
          ]}
        />
        <Chart
          label="Completion tokens per second"
          xTime
          data={[rates.data.x, rates.data.tps]}
          series={[{ label: "tokens/s", stroke: "#9333ea" }]}
        />
      </div>
      <h2>Playground</h2>
      {me.canWrite ? (
        <Playground project={project} service={name} />
      ) : (
        <p className="muted">
          The playground makes a short-lived API key for this service, which takes an editor of {project}.
        </p>
      )}
    </>
  );
}

const percentOf = (traffic: { revision: string; percent: number }[] | undefined, rev: string) =>
  traffic?.find((t) => t.revision === rev)?.percent ?? 0;

import { useEffect, useState } from "react";
import { api, BASE, condition, type Job } from "../api.js";
import { Logs } from "../components/Logs.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import { useWatchedObject } from "../watch.js";

interface LoomEvent {
  type: string;
  reason: string;
  message: string;
  count?: number;
  firstTimestamp?: string;
  lastTimestamp?: string;
}

/** One job, live: its state, attempts on a timeline, workers, logs, events and spec. */
export function JobPage({ project, name }: { project: string; name: string }) {
  const me = useMe();
  const list = `${BASE}/projects/${encodeURIComponent(project)}/trainingjobs`;
  const { obj: job, error } = useWatchedObject<Job>(list, name);
  const [events, setEvents] = useState<LoomEvent[]>([]);
  const rv = job?.metadata.resourceVersion;
  // Events are read again when the job changes (a new attempt, a failure), not on a timer.
  useEffect(() => {
    if (!rv) return;
    const q = new URLSearchParams({ kind: "TrainingJob", name, limit: "200" });
    api<{ items: LoomEvent[] }>("GET", `${BASE}/projects/${encodeURIComponent(project)}/events?${q}`).then(
      (r) => setEvents(r.items),
      () => undefined,
    );
  }, [project, name, rv]);
  const [deleting, setDeleting] = useState("");
  const remove = async () => {
    try {
      await api("DELETE", `${list}/${encodeURIComponent(name)}`);
      setDeleting("deleting…");
    } catch (err) {
      setDeleting((err as Error).message);
    }
  };
  if (!job)
    return (
      <>
        <h1>
          {project}/{name}
        </h1>
        <p role={error ? "alert" : undefined}>{error ?? "Loading…"}</p>
      </>
    );
  const admitted = condition(job, "Admitted");
  const workers = job.status?.workers?.length || workerCount(job.spec?.workers);
  return (
    <>
      <p>
        <a href={href("jobs")}>← Jobs</a>
      </p>
      <h1>
        {project}/{name}
      </h1>
      <dl className="facts">
        <dt>Phase</dt>
        <dd className={`phase ${job.status?.phase ?? "Pending"}`}>{job.status?.phase ?? "Pending"}</dd>
        <dt>Attempts</dt>
        <dd>{job.status?.attempts ?? 0}</dd>
        <dt>Restarts</dt>
        <dd>{job.status?.restarts ?? 0}</dd>
        <dt>Node</dt>
        <dd>{job.status?.admission?.node ?? "–"}</dd>
        <dt>Checkpoint</dt>
        <dd>
          {job.status?.checkpoint
            ? `step ${job.status.checkpoint.step ?? "?"} at ${job.status.checkpoint.time}`
            : "–"}
        </dd>
        {admitted?.status === "False" && (
          <>
            <dt>Waiting</dt>
            <dd>
              {admitted.reason}: {admitted.message}
            </dd>
          </>
        )}
      </dl>
      {me.canWrite && (!me.project || me.project === project) && (
        <p>
          <button type="button" className="danger" onClick={remove}>
            Delete job
          </button>{" "}
          {deleting && <span role="status">{deleting}</span>}
        </p>
      )}
      <Timeline job={job} events={events} />
      <section aria-labelledby="workers">
        <h2 id="workers">Workers</h2>
        <table>
          <thead>
            <tr>
              <th scope="col">Worker</th>
              <th scope="col">State</th>
              <th scope="col">Exit</th>
              <th scope="col">Started</th>
              <th scope="col">Finished</th>
            </tr>
          </thead>
          <tbody>
            {(job.status?.workers ?? []).map((w) => (
              <tr key={w.index}>
                <th scope="row">{w.index}</th>
                <td>{w.state}</td>
                <td>{w.exitCode ?? w.signal ?? ""}</td>
                <td>{time(w.startTime)}</td>
                <td>{time(w.finishTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <Logs
        path={`${list}/${encodeURIComponent(name)}`}
        workers={workers}
        {...(job.status?.attempts ? { attempt: job.status.attempts } : {})}
      />
      <section aria-labelledby="events">
        <h2 id="events">Events</h2>
        <table>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Type</th>
              <th scope="col">Reason</th>
              <th scope="col">Message</th>
            </tr>
          </thead>
          <tbody>
            {events.map((e) => (
              <tr key={`${e.lastTimestamp}-${e.reason}-${e.message}`}>
                <td>{time(e.lastTimestamp)}</td>
                <td>{e.type}</td>
                <td>{e.reason}</td>
                <td>{e.message}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section aria-labelledby="spec">
        <h2 id="spec">Spec</h2>
        {/* biome-ignore lint/a11y/noNoninteractiveTabindex: the spec box scrolls by keyboard */}
        <section className="spec" tabIndex={0} aria-labelledby="spec">
          <pre>{JSON.stringify({ metadata: job.metadata, spec: job.spec }, null, 2)}</pre>
        </section>
      </section>
    </>
  );
}

const time = (iso: string | undefined) => (iso ? new Date(iso).toLocaleTimeString() : "");

function workerCount(w: unknown): number {
  if (typeof w === "number") return w;
  if (w && typeof w === "object" && "max" in w) return Number((w as { max: number }).max);
  return 1;
}

/**
 * The job's life on one axis: creation, each event (start, failure, preemption, resize, restart)
 * and completion, placed by time.
 */
function Timeline({ job, events }: { job: Job; events: LoomEvent[] }) {
  const points = [
    { t: job.metadata.creationTimestamp, label: "Created", kind: "Normal" },
    ...events.map((e) => ({
      t: e.firstTimestamp ?? e.lastTimestamp,
      label: `${e.reason}: ${e.message}`,
      kind: e.type,
    })),
    ...(job.status?.completionTime
      ? [{ t: job.status.completionTime, label: job.status.phase ?? "Finished", kind: "Normal" }]
      : []),
  ]
    .filter((p): p is { t: string; label: string; kind: string } => !!p.t)
    .sort((a, b) => a.t.localeCompare(b.t));
  const start = Date.parse(points[0]?.t ?? "") || 0;
  const end = Math.max(
    start + 1,
    ...points.map((p) => Date.parse(p.t)),
    job.status?.completionTime ? 0 : Date.now(),
  );
  return (
    <section aria-labelledby="timeline">
      <h2 id="timeline">Attempts timeline</h2>
      <div className="timeline" aria-hidden="true">
        {points.map((p) => (
          <span
            key={`${p.t}-${p.label}`}
            className={`tick ${p.kind}`}
            style={{ left: `${((Date.parse(p.t) - start) / (end - start)) * 100}%` }}
            title={p.label}
          />
        ))}
      </div>
      <ol className="timeline-list">
        {points.map((p) => (
          <li key={`${p.t}-${p.label}`} className={p.kind}>
            <time dateTime={p.t}>{time(p.t)}</time> {p.label}
          </li>
        ))}
      </ol>
    </section>
  );
}

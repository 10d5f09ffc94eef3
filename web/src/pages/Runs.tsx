import { type FormEvent, useEffect, useMemo, useState } from "react";
import { VirtualList } from "../components/VirtualList.js";
import { type Experiment, mlflow, type Run, runName, when } from "../mlflow.js";
import { href } from "../router.js";

/** Runs fetched first (the table shows these at once), then the rest behind in larger pages. */
const FIRST_PAGE = 100;
const NEXT_PAGE = 1000;
/** Param and metric columns shown at most (the run's page shows them all). */
const MAX_COLUMNS = 12;

interface Order {
  col: string;
  desc: boolean;
}

/** A column's key in MLflow's search syntax: metrics.`loss`, params.`lr`, attributes.start_time. */
const quoted = (kind: "metrics" | "params", key: string) => `${kind}.\`${key.replaceAll("`", "\\`")}\``;

/**
 * One experiment's runs, as MLflow's runs table: params and metrics as columns, sorted and
 * filtered by the server with MLflow's search syntax (what runs/search takes), paged by
 * page_token: the first page shows at once and the rest arrive behind it. Rows are virtualised.
 */
export function RunsPage({ project, experimentId }: { project: string; experimentId: string }) {
  const [exp, setExp] = useState<Experiment>();
  const [runs, setRuns] = useState<Run[]>([]);
  const [done, setDone] = useState(false);
  const [error, setError] = useState("");
  const [draft, setDraft] = useState("");
  const [filter, setFilter] = useState("");
  const [order, setOrder] = useState<Order>({ col: "attributes.start_time", desc: true });
  const [picked, setPicked] = useState<Set<string>>(new Set());
  useEffect(() => {
    mlflow<{ experiment: Experiment }>(project, "GET", "experiments/get", {
      experiment_id: experimentId,
    }).then(
      (r) => setExp(r.experiment),
      (e: Error) => setError(e.message),
    );
  }, [project, experimentId]);
  useEffect(() => {
    let live = true;
    setRuns([]);
    setDone(false);
    setError("");
    (async () => {
      let token: string | undefined;
      let max = FIRST_PAGE;
      do {
        const r: { runs?: Run[]; next_page_token?: string } = await mlflow(project, "POST", "runs/search", {
          experiment_ids: [experimentId],
          filter,
          order_by: [`${order.col} ${order.desc ? "DESC" : "ASC"}`],
          max_results: max,
          ...(token ? { page_token: token } : {}),
        });
        if (!live) return;
        const page = r.runs ?? [];
        setRuns((had) => (token ? [...had, ...page] : page));
        token = r.next_page_token;
        max = NEXT_PAGE;
      } while (token && live);
      if (live) setDone(true);
    })().catch((e: Error) => {
      if (!live) return;
      setError(e.message);
      setDone(true);
    });
    return () => {
      live = false;
    };
  }, [project, experimentId, filter, order]);
  const { params, metrics } = useMemo(() => columnsOf(runs.slice(0, NEXT_PAGE)), [runs]);
  const grid = `28px 2fr 1fr 1.4fr ${"1fr ".repeat(params.length + metrics.length)}`.trim();
  const width = 560 + 110 * (params.length + metrics.length);
  const sortBy = (col: string) => setOrder((o) => ({ col, desc: o.col === col ? !o.desc : true }));
  const head = (col: string, label: string) => (
    <span key={col}>
      <button
        type="button"
        className="link"
        onClick={() => sortBy(col)}
        aria-label={`Sort by ${label}${order.col === col ? (order.desc ? ", now descending" : ", now ascending") : ""}`}
      >
        {label}
        {order.col === col ? (order.desc ? " ↓" : " ↑") : ""}
      </button>
    </span>
  );
  const toggle = (id: string) =>
    setPicked((s) => {
      const n = new Set(s);
      if (!n.delete(id)) n.add(id);
      return n;
    });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setFilter(draft.trim());
  };
  return (
    <>
      <p>
        <a href={href("experiments")}>Experiments</a> / {project}
      </p>
      <h1>{exp?.name ?? `Experiment ${experimentId}`}</h1>
      <form className="filters" onSubmit={submit} aria-label="Filter runs">
        <label>
          Filter
          <input
            className="wide"
            value={draft}
            placeholder="metrics.loss < 0.5 and params.lr = '0.01'"
            onChange={(e) => setDraft(e.target.value)}
          />
        </label>
        <button type="submit">Search</button>
        <a
          className={picked.size >= 2 ? "button" : "button disabled"}
          aria-disabled={picked.size < 2}
          href={picked.size >= 2 ? href("compare", project, [...picked].join(",")) : undefined}
        >
          Compare {picked.size} runs
        </a>
        <output aria-live="polite">{`${runs.length} runs${done ? "" : ", loading…"}`}</output>
      </form>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      <div className="runs" style={{ overflowX: "auto" }}>
        <div style={{ minWidth: width }}>
          <div className="runhead" style={{ gridTemplateColumns: grid }}>
            <span />
            {head("attributes.run_name", "Run")}
            {head("attributes.status", "Status")}
            {head("attributes.start_time", "Started")}
            {params.map((p) => head(quoted("params", p), p))}
            {metrics.map((m) => head(quoted("metrics", m), m))}
          </div>
          <VirtualList
            items={runs}
            rowHeight={32}
            height={520}
            label="Runs"
            keyOf={(r) => r.info.run_id}
            row={(r) => {
              const ps = new Map((r.data.params ?? []).map((p) => [p.key, p.value]));
              const ms = new Map((r.data.metrics ?? []).map((m) => [m.key, m.value]));
              return (
                <div className="runrow" style={{ gridTemplateColumns: grid }}>
                  <input
                    type="checkbox"
                    aria-label={`Compare ${runName(r)}`}
                    checked={picked.has(r.info.run_id)}
                    onChange={() => toggle(r.info.run_id)}
                  />
                  <a href={href("runs", project, r.info.run_id)}>{runName(r)}</a>
                  <span>{r.info.status}</span>
                  <span>{when(r.info.start_time)}</span>
                  {params.map((p) => (
                    <span key={p}>{ps.get(p) ?? ""}</span>
                  ))}
                  {metrics.map((m) => (
                    <span key={m}>{fmt(ms.get(m))}</span>
                  ))}
                </div>
              );
            }}
          />
        </div>
      </div>
    </>
  );
}

/** The param and metric keys of the runs, most common first, at most MAX_COLUMNS of each. */
function columnsOf(runs: Run[]): { params: string[]; metrics: string[] } {
  const count = (keys: string[][]) => {
    const c = new Map<string, number>();
    for (const ks of keys) for (const k of ks) c.set(k, (c.get(k) ?? 0) + 1);
    return [...c.entries()]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, MAX_COLUMNS)
      .map(([k]) => k)
      .sort();
  };
  return {
    params: count(runs.map((r) => (r.data.params ?? []).map((p) => p.key))),
    metrics: count(runs.map((r) => (r.data.metrics ?? []).map((m) => m.key))),
  };
}

/** A metric for a table cell: four significant digits. */
export const fmt = (v: number | undefined) => (v === undefined ? "" : Number(v.toPrecision(4)).toString());

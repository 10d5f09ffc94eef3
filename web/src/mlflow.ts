/** MLflow's REST API as Loom serves it per project (the same routes the mlflow client calls). */
import { api } from "./api.js";

export interface KV {
  key: string;
  value: string;
}
export interface Metric {
  key: string;
  value: number;
  timestamp: number;
  step: number;
}
export interface Experiment {
  experiment_id: string;
  name: string;
  lifecycle_stage?: string;
  last_update_time?: number;
  creation_time?: number;
}
export interface Run {
  info: {
    run_id: string;
    run_name?: string;
    experiment_id: string;
    status: string;
    start_time?: number;
    end_time?: number;
    artifact_uri?: string;
  };
  data: { metrics?: Metric[]; params?: KV[]; tags?: KV[] };
}

/** The base of a project's MLflow API. */
export const mlflowBase = (project: string) => `/mlflow/projects/${encodeURIComponent(project)}/api/2.0`;

/** One MLflow call (GET with a query, or POST with a JSON body); errors carry MLflow's message. */
export function mlflow<T>(
  project: string,
  method: "GET" | "POST",
  path: string,
  body?: Record<string, unknown>,
) {
  const base = `${mlflowBase(project)}/mlflow/${path}`;
  if (method === "POST") return api<T>("POST", base, body ?? {});
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(body ?? {})) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
  }
  const qs = q.toString();
  return api<T>("GET", qs ? `${base}?${qs}` : base);
}

/** A run's display name: its name, else its id's head. */
export const runName = (r: Run) => r.info.run_name || r.info.run_id.slice(0, 8);

/** A metric's points for a chart: sampled by the server as MLflow's UI asks (bulk interval). */
export async function metricPoints(
  project: string,
  runIds: string[],
  key: string,
): Promise<(Metric & { run_id: string })[]> {
  const r = await mlflow<{ metrics?: (Metric & { run_id: string })[] }>(
    project,
    "GET",
    "metrics/get-history-bulk-interval",
    { run_ids: runIds, metric_key: key, max_results: 2500 },
  );
  return r.metrics ?? [];
}

/** "2026-12-07 03:41": a time in ms since the epoch, local. */
export function when(ms: number | undefined): string {
  if (!ms) return "";
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

import type { LoggedModels } from "../logged.js";
import type { TrackingStore } from "../store.js";
import type { DatasetInput, KeyValue, RawMetric } from "../types.js";
import { type AddRoute, list, need, num, runIdOf, str, view } from "./http.js";

/** Runs: their lifecycle, what they log (params, metrics, tags, inputs), search and metric history. */
export function runRoutes(route: AddRoute, deps: { store: TrackingStore; loggedModels: LoggedModels }): void {
  const s = deps.store;
  const lm = deps.loggedModels;
  /** Runs as MLflow 3 shows them: with the models they logged (outputs). */
  const withOutputs = async <T extends { info: { run_id: string } }>(runs: T[]) => {
    const outputs = await lm.outputsOf(runs.map((x) => x.info.run_id));
    return runs.map((x) => {
      const models = outputs.get(x.info.run_id);
      return { ...x, outputs: models ? { model_outputs: models } : {} };
    });
  };
  route("POST", "runs/create", async (p, f) => ({
    run: await s.createRun(p, {
      experimentId: str(f, "experiment_id"),
      userId: str(f, "user_id"),
      runName: str(f, "run_name"),
      startTime: num(f, "start_time"),
      tags: list<KeyValue>(f, "tags"),
    }),
  }));
  route("GET", "runs/get", async (p, f) => ({
    run: (await withOutputs([await s.getRun(p, runIdOf(f))]))[0],
  }));
  route("POST", "runs/update", async (p, f) => ({
    run_info: await s.updateRun(p, runIdOf(f), {
      status: str(f, "status"),
      endTime: num(f, "end_time"),
      runName: str(f, "run_name"),
    }),
  }));
  route("POST", "runs/delete", async (p, f) => {
    await s.setRunLifecycle(p, runIdOf(f), "deleted");
    return {};
  });
  route("POST", "runs/restore", async (p, f) => {
    await s.setRunLifecycle(p, runIdOf(f), "active");
    return {};
  });
  route("POST", "runs/log-parameter", async (p, f) => {
    await s.logBatch(p, runIdOf(f), { params: [{ key: need(f, "key"), value: str(f, "value") ?? "" }] });
    return {};
  });
  route("POST", "runs/log-metric", async (p, f) => {
    await s.logBatch(p, runIdOf(f), { metrics: [f as RawMetric] });
    return {};
  });
  route("POST", "runs/set-tag", async (p, f) => {
    await s.logBatch(p, runIdOf(f), { tags: [{ key: need(f, "key"), value: str(f, "value") ?? "" }] });
    return {};
  });
  route("POST", "runs/delete-tag", async (p, f) => {
    await s.deleteTag(p, runIdOf(f), need(f, "key"));
    return {};
  });
  route("POST", "runs/log-batch", async (p, f) => {
    await s.logBatch(p, runIdOf(f), {
      metrics: list<RawMetric>(f, "metrics"),
      params: list<KeyValue>(f, "params"),
      tags: list<KeyValue>(f, "tags"),
    });
    return {};
  });
  route("POST", "runs/log-inputs", async (p, f) => {
    await s.logInputs(p, runIdOf(f), list<DatasetInput>(f, "datasets"));
    return {};
  });
  route("POST", "runs/search", async (p, f) => {
    const found = await s.searchRuns(p, {
      experimentIds: list<string>(f, "experiment_ids").map(String),
      filter: str(f, "filter"),
      viewType: view(f, "run_view_type"),
      maxResults: num(f, "max_results"),
      orderBy: list<string>(f, "order_by"),
      pageToken: str(f, "page_token"),
    });
    return { ...found, runs: await withOutputs(found.runs) };
  });
  route("GET", "metrics/get-history", (p, f) =>
    s.metricHistory(p, runIdOf(f), need(f, "metric_key"), {
      maxResults: num(f, "max_results"),
      pageToken: str(f, "page_token"),
    }),
  );
  // The UI's charts: one metric for many runs (run_ids repeated in the query), sampled.
  route("GET", "metrics/get-history-bulk-interval", (p, f) =>
    s.metricHistoryBulkInterval(p, {
      runIds: list<unknown>(f, "run_ids")
        .map(String)
        .filter((id) => id !== ""),
      metricKey: need(f, "metric_key"),
      maxResults: num(f, "max_results"),
      startStep: num(f, "start_step"),
      endStep: num(f, "end_step"),
    }),
  );
}

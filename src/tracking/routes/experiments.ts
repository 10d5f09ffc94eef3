import type { TrackingStore } from "../store.js";
import type { KeyValue } from "../types.js";
import { type AddRoute, type Handler, list, need, num, str, view } from "./http.js";

/** Experiments and their tags. */
export function experimentRoutes(route: AddRoute, deps: { store: TrackingStore }): void {
  const s = deps.store;
  // MLflow takes the experiment search as a POST (the client) or a GET with the same fields.
  const searchExperiments: Handler = (p, f) =>
    s.searchExperiments(p, {
      viewType: view(f, "view_type"),
      maxResults: num(f, "max_results"),
      pageToken: str(f, "page_token"),
      filter: str(f, "filter"),
    });
  route("POST", "experiments/create", async (p, f) => ({
    experiment_id: await s.createExperiment(
      p,
      need(f, "name"),
      str(f, "artifact_location"),
      list<KeyValue>(f, "tags"),
    ),
  }));
  route("GET", "experiments/get", async (p, f) => ({
    experiment: await s.getExperiment(p, need(f, "experiment_id")),
  }));
  route("GET", "experiments/get-by-name", async (p, f) => ({
    experiment: await s.getExperimentByName(p, need(f, "experiment_name")),
  }));
  route("POST", "experiments/search", searchExperiments);
  route("GET", "experiments/search", searchExperiments);
  route("POST", "experiments/update", async (p, f) => {
    await s.renameExperiment(p, need(f, "experiment_id"), need(f, "new_name"));
    return {};
  });
  route("POST", "experiments/delete", async (p, f) => {
    await s.setExperimentLifecycle(p, need(f, "experiment_id"), "deleted");
    return {};
  });
  route("POST", "experiments/restore", async (p, f) => {
    await s.setExperimentLifecycle(p, need(f, "experiment_id"), "active");
    return {};
  });
  route("POST", "experiments/set-experiment-tag", async (p, f) => {
    await s.setExperimentTag(p, need(f, "experiment_id"), need(f, "key"), str(f, "value") ?? "");
    return {};
  });
  route("POST", "experiments/delete-experiment-tag", async (p, f) => {
    await s.deleteExperimentTag(p, need(f, "experiment_id"), need(f, "key"));
    return {};
  });
}

import type { LoggedModels } from "../logged.js";
import type { KeyValue } from "../types.js";
import { type AddRoute, list, need, num, str } from "./http.js";

/** MLflow 3's logged models, and the runs that output them. */
export function loggedModelRoutes(route: AddRoute, deps: { loggedModels: LoggedModels }): void {
  const lm = deps.loggedModels;
  route("POST", "logged-models", async (p, f) => ({
    model: await lm.create(p, {
      experimentId: need(f, "experiment_id"),
      name: str(f, "name"),
      sourceRunId: str(f, "source_run_id"),
      params: list<KeyValue>(f, "params"),
      tags: list<KeyValue>(f, "tags"),
    }),
  }));
  route("GET", "logged-models/:model_id", async (p, f) => ({ model: await lm.get(p, need(f, "model_id")) }));
  route("PATCH", "logged-models/:model_id", async (p, f) => ({
    model: await lm.finalize(p, need(f, "model_id"), need(f, "status")),
  }));
  route("DELETE", "logged-models/:model_id", async (p, f) => {
    await lm.delete(p, need(f, "model_id"));
    return {};
  });
  route("PATCH", "logged-models/:model_id/tags", async (p, f) => {
    await lm.setTags(p, need(f, "model_id"), list<KeyValue>(f, "tags"));
    return {};
  });
  route("DELETE", "logged-models/:model_id/tags/:key", async (p, f) => {
    await lm.deleteTag(p, need(f, "model_id"), need(f, "key"));
    return {};
  });
  // The client also searches them on every artifact download, to see whether a path names one.
  route("POST", "logged-models/search", (p, f) =>
    lm.search(p, {
      experimentIds: list<string>(f, "experiment_ids").map(String),
      filter: str(f, "filter"),
      maxResults: num(f, "max_results"),
    }),
  );
  route("POST", "runs/outputs", async (p, f) => {
    await lm.recordOutputs(p, need(f, "run_id"), list<{ model_id?: string; step?: number }>(f, "models"));
    return {};
  });
}

import { describe, expect, it } from "vitest";
import { buildOpenApi } from "../server/openapi.js";
import { MLFLOW_ENDPOINTS } from "./catalog.js";
import { experimentRoutes } from "./routes/experiments.js";
import type { AddRoute } from "./routes/http.js";
import { loggedModelRoutes } from "./routes/logged-models.js";
import { registryRoutes } from "./routes/registry.js";
import { runRoutes } from "./routes/runs.js";

describe("the MLflow route catalog", () => {
  it("lists exactly the routes the tracking API registers, so none is served undescribed", () => {
    const served: string[] = [];
    const route: AddRoute = (method, path) => served.push(`${method} ${path}`);
    const deps = {} as never;
    registryRoutes(route, deps);
    loggedModelRoutes(route, deps);
    experimentRoutes(route, deps);
    runRoutes(route, deps);
    expect(MLFLOW_ENDPOINTS.map((e) => `${e.method} ${e.path}`).sort()).toEqual(served.sort());
  });

  it("is in /openapi.json under both prefixes, with typed bodies and query parameters", () => {
    // biome-ignore lint/suspicious/noExplicitAny: walking a JSON document
    const doc = buildOpenApi("test") as { paths: Record<string, Record<string, any>> };
    const create = doc.paths["/api/2.0/mlflow/runs/log-batch"]!.post;
    expect(create.requestBody.content["application/json"].schema.properties.metrics).toMatchObject({
      type: "array",
      maxItems: 1000,
    });
    expect(
      doc.paths["/mlflow/projects/{project}/api/2.0/mlflow/logged-models/{model_id}"]!.patch,
    ).toBeDefined();
    const get = doc.paths["/api/2.0/mlflow/metrics/get-history-bulk-interval"]!.get;
    expect(get.parameters.map((p: { name: string }) => p.name)).toContain("run_ids");
    expect(doc.paths["/api/2.0/mlflow-artifacts/artifacts/{path}"]!.put).toBeDefined();
  });
});

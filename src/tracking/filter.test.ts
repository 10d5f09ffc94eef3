import { describe, expect, it } from "vitest";
import { MlflowError } from "./errors.js";
import { parseFilter, parseOrderBy } from "./filter.js";

describe("MLflow search grammar", () => {
  it("parses metrics, params, tags, attributes and datasets joined by AND", () => {
    expect(
      parseFilter(
        "metrics.loss < 0.5 and params.lr = '0.01' AND tags.`mlflow.runName` LIKE 'a%' and status != 'RUNNING' and datasets.name IN ('a', 'b')",
      ),
    ).toEqual([
      { entity: "metric", key: "loss", comparator: "<", value: 0.5 },
      { entity: "param", key: "lr", comparator: "=", value: "0.01" },
      { entity: "tag", key: "mlflow.runName", comparator: "LIKE", value: "a%" },
      { entity: "attribute", key: "status", comparator: "!=", value: "RUNNING" },
      { entity: "dataset", key: "name", comparator: "IN", value: ["a", "b"] },
    ]);
    expect(parseFilter("")).toEqual([]);
    expect(parseFilter('attributes.run_name ILIKE "x%"')).toEqual([
      { entity: "attribute", key: "run_name", comparator: "ILIKE", value: "x%" },
    ]);
  });

  it("refuses what MLflow refuses, with INVALID_PARAMETER_VALUE", () => {
    for (const bad of [
      "metrics.x >>> 1",
      "params.p IN ('a')",
      "metrics.x = 'a'",
      "params.p = 1",
      "foo.bar = 'x'",
      "metrics.x > 1 or metrics.y > 1",
      "tags.t = 'unterminated",
    ]) {
      let err: unknown;
      try {
        parseFilter(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(MlflowError);
      expect((err as MlflowError).errorCode).toBe("INVALID_PARAMETER_VALUE");
    }
  });

  it("parses order_by with a default ascending direction", () => {
    expect(parseOrderBy(["metrics.x DESC", "attributes.start_time", "params.p asc"])).toEqual([
      { entity: "metric", key: "x", ascending: false },
      { entity: "attribute", key: "start_time", ascending: true },
      { entity: "param", key: "p", ascending: true },
    ]);
    expect(() => parseOrderBy(["foo.bar"])).toThrow(/Invalid entity type 'foo'/);
  });
});

import { describe, expect, it } from "vitest";
import { MlflowError } from "./errors.js";
import {
  type Clause,
  EXPERIMENT_GRAMMAR,
  MODEL_VERSION_GRAMMAR,
  parseFilter,
  parseOrderBy,
  REGISTERED_MODEL_GRAMMAR,
  RUN_GRAMMAR,
} from "./filter.js";

/**
 * Filter strings from MLflow's own tests (tests/utils/test_search_utils.py) and the grammar's edges,
 * each with what MLflow 3.17's server makes of it (SearchUtils.parse_search_filter and the SQL
 * store's comparator checks, run with the pinned client's search_utils): the clauses, or REFUSED.
 * Clauses are [entity, key, comparator, value], with Loom's names (param; source for source_path).
 */
const REFUSED = "refused";
const GRAMMARS = {
  runs: RUN_GRAMMAR,
  experiments: EXPERIMENT_GRAMMAR,
  models: REGISTERED_MODEL_GRAMMAR,
  versions: MODEL_VERSION_GRAMMAR,
};
type Row = [keyof typeof GRAMMARS, string, [string, string, string, unknown][] | typeof REFUSED];
const CASES: Row[] = [
  [
    "runs",
    "tags.mlflow.parentRunId = '0123456789abcdef0123456789abcdef'",
    [["tag", "mlflow.parentRunId", "=", "0123456789abcdef0123456789abcdef"]],
  ],
  [
    "runs",
    "tags.mlflow.loggedArtifacts LIKE '%table.json%'",
    [["tag", "mlflow.loggedArtifacts", "LIKE", "%table.json%"]],
  ],
  ["runs", "tags.`mlflow.runName` = 'a'", [["tag", "mlflow.runName", "=", "a"]]],
  ["runs", "tags.\"mlflow.runName\" = 'a'", [["tag", "mlflow.runName", "=", "a"]]],
  ["runs", "tags.`my key.with dots` = 'v'", [["tag", "my key.with dots", "=", "v"]]],
  ["runs", "tags.mlflow.parentRunId IS NULL", [["tag", "mlflow.parentRunId", "IS NULL", null]]],
  ["runs", "metric.acc >= 0.94", [["metric", "acc", ">=", 0.94]]],
  ["runs", "metric.acc>=100", [["metric", "acc", ">=", 100.0]]],
  ["runs", "params.m!='tf'", [["param", "m", "!=", "tf"]]],
  ["runs", 'params."m"!="tf"', [["param", "m", "!=", "tf"]]],
  ["runs", 'metric."legit name" >= 0.243', [["metric", "legit name", ">=", 0.243]]],
  ["runs", "metrics.XYZ = 3", [["metric", "XYZ", "=", 3.0]]],
  ["runs", 'params."cat dog" = "pets"', [["param", "cat dog", "=", "pets"]]],
  ["runs", 'metrics."X-Y-Z" = 3', [["metric", "X-Y-Z", "=", 3.0]]],
  ["runs", 'metrics."X//Y#$$@&Z" = 3', [["metric", "X//Y#$$@&Z", "=", 3.0]]],
  ["runs", "params.model = 'LinearRegression'", [["param", "model", "=", "LinearRegression"]]],
  [
    "runs",
    "metrics.rmse < 1 and params.model_class = 'LR'",
    [
      ["metric", "rmse", "<", 1.0],
      ["param", "model_class", "=", "LR"],
    ],
  ],
  ["runs", "`metric`.a >= 0.1", [["metric", "a", ">=", 0.1]]],
  ["runs", "tags.version = 'commit-hash'", [["tag", "version", "=", "commit-hash"]]],
  ["runs", "`tags`.source_name = 'a notebook'", [["tag", "source_name", "=", "a notebook"]]],
  ["runs", 'metrics."accuracy.2.0" > 5', [["metric", "accuracy.2.0", ">", 5.0]]],
  ["runs", "metrics.`spacey name` > 5", [["metric", "spacey name", ">", 5.0]]],
  ["runs", 'params."p.a.r.a.m" != "a"', [["param", "p.a.r.a.m", "!=", "a"]]],
  ["runs", 'tags."t.a.g" = "a"', [["tag", "t.a.g", "=", "a"]]],
  ["runs", "attribute.artifact_uri = '1/23/4'", [["attribute", "artifact_uri", "=", "1/23/4"]]],
  ["runs", "attribute.start_time >= 1234", [["attribute", "start_time", ">=", 1234]]],
  ["runs", "run.status = 'RUNNING'", [["attribute", "status", "=", "RUNNING"]]],
  ["runs", "dataset.name = 'my_dataset'", [["dataset", "name", "=", "my_dataset"]]],
  ["runs", "tags.version IS NULL", [["tag", "version", "IS NULL", null]]],
  ["runs", "tags.version IS NOT NULL", [["tag", "version", "IS NOT NULL", null]]],
  ["runs", "params.lr IS NULL", [["param", "lr", "IS NULL", null]]],
  ["runs", "params.lr is not null", [["param", "lr", "IS NOT NULL", null]]],
  [
    "runs",
    "tags.a IS NULL AND params.b = 'val'",
    [
      ["tag", "a", "IS NULL", null],
      ["param", "b", "=", "val"],
    ],
  ],
  ["runs", 'params.m = "L\'Hosp"', [["param", "m", "=", "L'Hosp"]]],
  ["runs", "tags.x = 'it''s'", [["tag", "x", "=", "it''s"]]],
  ["runs", "tags.x = 'a\\'b'", [["tag", "x", "=", "a\\'b"]]],
  ["runs", "status = 'FINISHED'", [["attribute", "status", "=", "FINISHED"]]],
  ["runs", "attributes.run_id IN ('a', \"b\")", [["attribute", "run_id", "IN", ["a", "b"]]]],
  ["runs", "attributes.run_id IN ('a',)", [["attribute", "run_id", "IN", ["a"]]]],
  ["runs", "attributes.run_id NOT IN ('a')", [["attribute", "run_id", "NOT IN", ["a"]]]],
  ["runs", "run_id in ('a\\'b')", [["attribute", "run_id", "IN", ["a'b"]]]],
  ["runs", "attr.end_time < 1.5", [["attribute", "end_time", "<", 1.5]]],
  ["runs", "Created > 5", [["attribute", "start_time", ">", 5]]],
  ["runs", "attributes.`Run Name` = 'x'", [["attribute", "run_name", "=", "x"]]],
  ["runs", "run_name ILIKE 'A%'", [["attribute", "run_name", "ILIKE", "A%"]]],
  [
    "runs",
    "user_id != 'me' AND artifact_uri LIKE 's3://%'",
    [
      ["attribute", "user_id", "!=", "me"],
      ["attribute", "artifact_uri", "LIKE", "s3://%"],
    ],
  ],
  [
    "runs",
    "datasets.digest IN ('a') and datasets.context NOT IN ('b') and datasets.name LIKE 'x%'",
    [
      ["dataset", "digest", "IN", ["a"]],
      ["dataset", "context", "NOT IN", ["b"]],
      ["dataset", "name", "LIKE", "x%"],
    ],
  ],
  [
    "runs",
    "parameters.x = 'a' AND parameter.y = 'b' AND param.z = 'c'",
    [
      ["param", "x", "=", "a"],
      ["param", "y", "=", "b"],
      ["param", "z", "=", "c"],
    ],
  ],
  [
    "runs",
    "metrics.x > 1e5 and metrics.y < -.5 and metrics.z != 5. and metrics.w <= 1E-3",
    [
      ["metric", "x", ">", 100000.0],
      ["metric", "y", "<", -0.5],
      ["metric", "z", "!=", 5.0],
      ["metric", "w", "<=", 0.001],
    ],
  ],
  ["runs", "tags.select = 'a'", [["tag", "select", "=", "a"]]],
  ["runs", "metrics.1x > 1", [["metric", "1x", ">", 1.0]]],
  ["runs", "tags.é = 'à'", [["tag", "é", "=", "à"]]],
  ["runs", "tags.`` = 'x'", [["tag", "", "=", "x"]]],
  ["runs", "tags.x = ''", [["tag", "x", "=", ""]]],
  ["runs", 'tags.x=""', [["tag", "x", "=", ""]]],
  [
    "runs",
    "tags.x = 'a'  And  tags.y = 'b'",
    [
      ["tag", "x", "=", "a"],
      ["tag", "y", "=", "b"],
    ],
  ],
  ["runs", "`tags`.`x` = 'x'", [["tag", "x", "=", "x"]]],
  ["runs", "metric.acc >= 0.94; metrics.rmse < 1", REFUSED],
  ["runs", "m.acc >= 0.94", REFUSED],
  ["runs", "acc >= 0.94", REFUSED],
  ["runs", "p.model >= 'LR'", REFUSED],
  ["runs", "attri.x != 1", REFUSED],
  ["runs", "model >= 'LR'", REFUSED],
  ["runs", "metrics.A > 0.1 OR params.B = 'LR'", REFUSED],
  ["runs", "metrics.A > 0.1 NAND params.B = 'LR'", REFUSED],
  ["runs", "metrics.A > 0.1 AND (params.B = 'LR')", REFUSED],
  ["runs", "`metrics.A > 0.1", REFUSED],
  ["runs", "param`.A > 0.1", REFUSED],
  ["runs", "`dummy.A > 0.1", REFUSED],
  ["runs", "attribute.start != 1", REFUSED],
  ["runs", "attribute.experiment_id != 1", REFUSED],
  ["runs", "attribute.lifecycle_stage = 'ACTIVE'", REFUSED],
  ["runs", "attribute.name != 1", REFUSED],
  ["runs", "attribute._status != 'RUNNING'", REFUSED],
  ["runs", "attribute.status = true", REFUSED],
  ["runs", "dataset.status = 'true'", REFUSED],
  ["runs", "metrics.acc IS NULL", REFUSED],
  ["runs", "attribute.status IS NULL", REFUSED],
  ["runs", "datasets.name IS NOT NULL", REFUSED],
  ["runs", "metric.model = 'LR'", REFUSED],
  ["runs", "metric.model = '5'", REFUSED],
  ["runs", "params.acc = 5", REFUSED],
  ["runs", "tags.acc = 5", REFUSED],
  ["runs", "metrics.acc != metrics.acc", REFUSED],
  ["runs", "1.0 > metrics.acc", REFUSED],
  ["runs", "attribute.status = 1", REFUSED],
  ["runs", "params.acc = LR", REFUSED],
  ["runs", "tags.acc = LR", REFUSED],
  ["runs", "params.acc = `LR`", REFUSED],
  ["runs", "params.'acc = LR", REFUSED],
  ["runs", "params.acc = 'LR", REFUSED],
  ["runs", "params.acc = LR'", REFUSED],
  ["runs", "params.acc = \"LR'", REFUSED],
  ["runs", "tags.acc = = 'LR'", REFUSED],
  ["runs", "attribute.status IS 'RUNNING'", REFUSED],
  ["runs", "params.acc LR !=", REFUSED],
  ["runs", "params.acc LR", REFUSED],
  ["runs", "metric.acc !=", REFUSED],
  ["runs", "foo is null", REFUSED],
  ["runs", "1=1", REFUSED],
  ["runs", "metrics.abc ~ 1.0", REFUSED],
  ["runs", "metrics.abc ~= 1.0", REFUSED],
  ["runs", "metrics.abc == 1.0", REFUSED],
  ["runs", "params.abc > 'v'", REFUSED],
  ["runs", "tags.abc <= 'v'", REFUSED],
  ["runs", "attributes.status >= 'v'", REFUSED],
  ["runs", "attributes.start_time LIKE 1234", REFUSED],
  ["runs", "datasets.name < 'n'", REFUSED],
  ["runs", "tags.x NOT LIKE 'a%'", REFUSED],
  ["runs", "tags.x <> 'a'", REFUSED],
  ["runs", "tags.x IN ('a')", REFUSED],
  ["runs", "metrics.x IN ('1')", REFUSED],
  ["runs", "status IN ('A')", REFUSED],
  ["runs", "start_time = '1'", REFUSED],
  ["runs", "attributes.run_id IN ()", REFUSED],
  ["runs", "attributes.run_id IN (1, 2)", REFUSED],
  ["runs", "metrics.x > 0x1f", REFUSED],
  ["runs", "metrics.x > +1", REFUSED],
  ["runs", "tags.my-key = 'x'", REFUSED],
  ["runs", "tags.a:b = 'x'", REFUSED],
  ["runs", "tags.a/b = 'x'", REFUSED],
  ["runs", "tags . x = 'a'", REFUSED],
  ["runs", "\"tags\".x = 'x'", REFUSED],
  ["runs", "tags.x = 'a' AND NOT tags.y = 'b'", REFUSED],
  ["runs", "tags.x = 'a' && tags.y = 'b'", REFUSED],
  ["runs", "tags.x = 'a' -- comment", REFUSED],
  ["runs", "tags.x", REFUSED],
  ["runs", "= 'a'", REFUSED],
  ["runs", "datasets.foo = 'a'", REFUSED],
  ["experiments", "name = 'a'", [["attribute", "name", "=", "a"]]],
  [
    "experiments",
    "name LIKE 'a%' AND tags.mlflow.note.content ILIKE '%x%'",
    [
      ["attribute", "name", "LIKE", "a%"],
      ["tag", "mlflow.note.content", "ILIKE", "%x%"],
    ],
  ],
  ["experiments", "attribute.name != 'a'", [["attribute", "name", "!=", "a"]]],
  ["experiments", "tags.`a b` = 'x'", [["tag", "a b", "=", "x"]]],
  ["experiments", "tag.\"k.1\" = 'x'", [["tag", "k.1", "=", "x"]]],
  ["experiments", "tags.team IS NULL", [["tag", "team", "IS NULL", null]]],
  ["experiments", "tags.team IS NOT NULL", [["tag", "team", "IS NOT NULL", null]]],
  ["experiments", "experiment_id = '1'", [["attribute", "experiment_id", "=", 1]]],
  ["experiments", "experiment_id IN ('1', '2')", [["attribute", "experiment_id", "IN", [1, 2]]]],
  ["experiments", "experiment_id NOT IN ('1')", [["attribute", "experiment_id", "NOT IN", [1]]]],
  [
    "experiments",
    "creation_time > 100 AND last_update_time <= 200",
    [
      ["attribute", "creation_time", ">", 100],
      ["attribute", "last_update_time", "<=", 200],
    ],
  ],
  ["experiments", "attributes.name = 'a'", REFUSED],
  ["experiments", "`tags`.x = 'a'", REFUSED],
  ["experiments", "params.x = 'a'", REFUSED],
  ["experiments", "name IN ('a')", REFUSED],
  ["experiments", "name > 'a'", REFUSED],
  ["experiments", "name IS NULL", REFUSED],
  ["experiments", "experiment_id = 1", REFUSED],
  ["experiments", "experiment_id = 'x'", REFUSED],
  ["experiments", "experiment_id LIKE '1'", REFUSED],
  ["experiments", "creation_time > 1.5", REFUSED],
  ["experiments", "creation_time > '100'", REFUSED],
  ["experiments", "creation_time LIKE 1", REFUSED],
  ["experiments", "lifecycle_stage = 'active'", REFUSED],
  ["experiments", "tags.x > 'a'", REFUSED],
  ["models", "name = 'm'", [["attribute", "name", "=", "m"]]],
  [
    "models",
    "name ILIKE '%m%' AND tags.`mlflow.prompt.is_prompt` != 'true'",
    [
      ["attribute", "name", "ILIKE", "%m%"],
      ["tag", "mlflow.prompt.is_prompt", "!=", "true"],
    ],
  ],
  ["models", "name IN ('a', 'b')", [["attribute", "name", "IN", ["a", "b"]]]],
  ["models", "name NOT IN ('a')", [["attribute", "name", "NOT IN", ["a"]]]],
  ["models", "attribute.name LIKE 'm%'", [["attribute", "name", "LIKE", "m%"]]],
  ["models", "tags.k.v = 'x'", [["tag", "k.v", "=", "x"]]],
  ["models", "tag.\"k v\" = 'x'", [["tag", "k v", "=", "x"]]],
  ["models", "attribute.`name` = 'm'", REFUSED],
  ["models", "run_id = 'r'", REFUSED],
  ["models", "tags.x IS NULL", REFUSED],
  ["models", "name > 'm'", REFUSED],
  ["models", "name = 5", REFUSED],
  ["models", "tags.x IN ('a')", REFUSED],
  ["models", "attributes.name = 'm'", REFUSED],
  ["models", "creation_timestamp > 5", REFUSED],
  [
    "versions",
    "name = 'm' AND version_number > 1",
    [
      ["attribute", "name", "=", "m"],
      ["attribute", "version_number", ">", 1],
    ],
  ],
  ["versions", "run_id IN ('r1', 'r2')", [["attribute", "run_id", "IN", ["r1", "r2"]]]],
  ["versions", "name NOT IN ('m')", [["attribute", "name", "NOT IN", ["m"]]]],
  ["versions", "source_path LIKE 's3://%'", [["attribute", "source", "LIKE", "s3://%"]]],
  ["versions", "version_number = '3'", [["attribute", "version_number", "=", 3]]],
  [
    "versions",
    "version_number >= 2 and tags.mlflow.x = 'y'",
    [
      ["attribute", "version_number", ">=", 2],
      ["tag", "mlflow.x", "=", "y"],
    ],
  ],
  ["versions", "tags.`a.b` ILIKE 'Y%'", [["tag", "a.b", "ILIKE", "Y%"]]],
  ["versions", "source = 'x'", REFUSED],
  ["versions", "source_path IN ('x')", REFUSED],
  ["versions", "version_number = 2.5", REFUSED],
  ["versions", "version_number LIKE '2'", REFUSED],
  ["versions", "version_number = 'two'", REFUSED],
  ["versions", "name = 5", REFUSED],
  ["versions", "tags.x IS NOT NULL", REFUSED],
  ["versions", "run_id > 'a'", REFUSED],
  ["versions", "params.x = 'a'", REFUSED],
  ["versions", "creation_timestamp > 5", REFUSED],
];

function refusal(f: () => unknown): MlflowError | undefined {
  try {
    f();
  } catch (e) {
    return e as MlflowError;
  }
  return undefined;
}

describe("MLflow search grammar, case by case against MLflow's own answers", () => {
  it.each(CASES)("%s: %s", (kind, filter, expected) => {
    if (expected === REFUSED) {
      const err = refusal(() => parseFilter(filter, GRAMMARS[kind]));
      expect(err, `${filter} must be refused`).toBeInstanceOf(MlflowError);
      expect(err!.errorCode).toBe("INVALID_PARAMETER_VALUE");
      return;
    }
    const clauses = parseFilter(filter, GRAMMARS[kind]).map((c: Clause) => [
      c.entity,
      c.key,
      c.comparator,
      c.value,
    ]);
    expect(clauses).toEqual(expected);
  });
});

describe("what MLflow accepts by accident, Loom refuses with a reason", () => {
  // sqlparse drops a missing or dangling AND, and takes a list with = ; none of these is a
  // filter anyone means, so Loom says what is wrong instead.
  it.each([
    ["tags.x = 'a' tags.y = 'b'", /expected AND or the end/],
    ["tags.x = 'a' AND", /expected AND or the end/],
    ["AND tags.x = 'a'", /Invalid attribute key 'AND'/],
    ["attributes.run_id = ('a', 'b')", /needs IN or NOT IN/],
  ])("%s", (filter, message) => {
    expect(() => parseFilter(filter)).toThrow(message);
  });
});

describe("MLflow search grammar", () => {
  it("keeps the key after the entity whole: dots, backticks, double quotes", () => {
    expect(parseFilter("tags.mlflow.parentRunId = 'abc' and tags.`a b.c` LIKE 'x%'")).toEqual([
      { entity: "tag", key: "mlflow.parentRunId", comparator: "=", value: "abc" },
      { entity: "tag", key: "a b.c", comparator: "LIKE", value: "x%" },
    ]);
    expect(parseFilter("")).toEqual([]);
  });

  it("says how to quote a key with other characters", () => {
    expect(() => parseFilter("tags.my-key = 'x'")).toThrow(/backticks, as in tags.`my-key`/);
    expect(() => parseFilter("metrics.x > 1 or metrics.y > 1")).toThrow(/AND only/);
    expect(() => parseFilter("nope = 'x'", REGISTERED_MODEL_GRAMMAR)).toThrow(/tags.KEY/);
  });

  it("takes a map of attribute names as a search of those attributes (logged models)", () => {
    expect(
      parseFilter("name = 'm' and source_run_id != 'r'", { name: "name", source_run_id: "source_run_id" }),
    ).toEqual([
      { entity: "attribute", key: "name", comparator: "=", value: "m" },
      { entity: "attribute", key: "source_run_id", comparator: "!=", value: "r" },
    ]);
  });

  it("parses order_by with a default ascending direction, dotted and quoted keys included", () => {
    expect(
      parseOrderBy([
        "metrics.x DESC",
        "attributes.start_time",
        "params.p asc",
        "tags.mlflow.runName",
        "metrics.`a b` DESC",
      ]),
    ).toEqual([
      { entity: "metric", key: "x", ascending: false },
      { entity: "attribute", key: "start_time", ascending: true },
      { entity: "param", key: "p", ascending: true },
      { entity: "tag", key: "mlflow.runName", ascending: true },
      { entity: "metric", key: "a b", ascending: false },
    ]);
    expect(() => parseOrderBy(["foo.bar"])).toThrow(/Invalid entity type 'foo'/);
    expect(() => parseOrderBy(["metrics.x sideways"])).toThrow(/KEY ASC or KEY DESC/);
  });
});

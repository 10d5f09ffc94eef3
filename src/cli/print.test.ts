import { afterEach, beforeEach, expect, describe as group, it, vi } from "vitest";
import { findKind, type KindDef } from "../api/kinds.js";
import type { Resource } from "../api/meta.js";
import { CliError } from "./errors.js";
import {
  age,
  describe,
  formatResources,
  lineageText,
  type NodeUsageView,
  nodeTable,
  type ProjectUsageView,
  pick,
  resourceTable,
  table,
  topText,
  trialTable,
} from "./print.js";

const NOW = Date.parse("2024-05-01T12:00:00Z");
const ago = (seconds: number) => new Date(NOW - seconds * 1000).toISOString();
const kind = (name: string) => findKind(name) as KindDef;

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(NOW);
});
afterEach(() => {
  vi.useRealTimers();
});

function tj(
  name: string,
  status: Record<string, unknown>,
  meta: Partial<Resource["metadata"]> = {},
): Resource {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name, project: "team-a", uid: `u-${name}`, creationTimestamp: ago(300), ...meta },
    spec: { command: ["python", "train.py"], workers: 2 },
    status,
  } as Resource;
}

group("age", () => {
  it("reads like kubectl's AGE column at each unit boundary", () => {
    expect([0, 119, 120, 7199, 7200, 172799, 172800].map((s) => age(ago(s)))).toEqual([
      "0s",
      "119s",
      "2m",
      "119m",
      "2h",
      "47h",
      "2d",
    ]);
    expect(age(undefined)).toBe("<none>");
    expect(age(ago(-60))).toBe("0s"); // a clock a little ahead is not a negative age
  });
});

group("pick", () => {
  it("follows dotted paths and [-1] for the last element", () => {
    const o = { status: { conditions: [{ reason: "A" }, { reason: "B" }], n: 0 } };
    expect(pick(o, "status.conditions[-1].reason")).toBe("B");
    expect(pick(o, "status.conditions[0].reason")).toBe("A");
    expect(pick(o, "status.n")).toBe(0);
    expect(pick(o, "status.missing.deeper")).toBeUndefined();
    expect(pick(o, "status.n[0]")).toBeUndefined();
  });
});

group("table", () => {
  it("pads every column but the last to its widest cell plus three, and trims line ends", () => {
    expect(
      table([
        ["NAME", "PHASE", "X"],
        ["a-long-name", "Running", ""],
      ]),
    ).toBe("NAME          PHASE     X\na-long-name   Running\n");
    expect(table([])).toBe("");
  });
});

group("resourceTable", () => {
  const items = [
    tj("one", {
      phase: "Running",
      ready: "2/2",
      attempts: 1,
      restarts: 3,
      conditions: [{ reason: "Started" }],
    }),
    tj("two", { phase: "Running" }, { project: "team-b", deletionTimestamp: ago(1) }),
  ];

  it("prints the narrow columns, <none> for missing values and Terminating while deleting", () => {
    expect(resourceTable(kind("tj"), items, { wide: false, allProjects: false })).toBe(
      [
        "NAME   PHASE         READY    ATTEMPT   REASON    AGE",
        "one    Running       2/2      1         Started   5m",
        "two    Terminating   <none>   <none>    <none>    5m",
        "",
      ].join("\n"),
    );
  });

  it("says why a pending job waits without -o wide (its latest condition's reason), as kubectl's STATUS", () => {
    const building = tj("env", {
      phase: "Pending",
      conditions: [
        { type: "Admitted", status: "True", reason: "Admitted" },
        { type: "EnvironmentReady", status: "False", reason: "BuildingEnvironment", message: "[==>  ] 3s" },
      ],
    });
    const [header, row] = resourceTable(kind("tj"), [building], { wide: false, allProjects: false }).split(
      "\n",
    );
    expect(header?.split(/\s+/)).toEqual(["NAME", "PHASE", "READY", "ATTEMPT", "REASON", "AGE"]);
    expect(row?.split(/\s+/)).toEqual(["env", "Pending", "<none>", "<none>", "BuildingEnvironment", "5m"]);
    // -o wide: a job that never restarted has RESTARTS 0, not <none>.
    const wide = resourceTable(kind("tj"), [building], { wide: true, allProjects: false }).split("\n")[1];
    expect(wide).toMatch(/^env +Pending +<none> +<none> +0 +<none> +BuildingEnvironment +<none> +5m$/);
  });

  it("wide adds the wide columns; all projects adds PROJECT first", () => {
    const text = resourceTable(kind("tj"), items, { wide: true, allProjects: true });
    const [header, first] = text.split("\n");
    expect(header?.split(/\s+/)).toEqual([
      "PROJECT",
      "NAME",
      "PHASE",
      "READY",
      "ATTEMPT",
      "RESTARTS",
      "CHECKPOINT",
      "REASON",
      "NODE",
      "AGE",
    ]);
    expect(first?.split(/\s+/)).toEqual([
      "team-a",
      "one",
      "Running",
      "2/2",
      "1",
      "3",
      "<none>",
      "Started",
      "<none>",
      "5m",
    ]);
  });

  it("a cluster-scoped kind has no PROJECT column even across projects", () => {
    const p = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "p1" },
      spec: {},
    } as Resource;
    expect(
      resourceTable(kind("project"), [p], { wide: false, allProjects: true }).split("\n")[0]?.split(/\s+/),
    ).toEqual(["NAME", "PHASE", "AGE"]);
  });

  it("numbers read at six significant digits", () => {
    const sweep = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Sweep",
      metadata: { name: "s", project: "p" },
      spec: { algorithm: "random" },
      status: { best: { objective: 2.2910878658294678 } },
    } as Resource;
    expect(resourceTable(kind("sweep"), [sweep], { wide: false, allProjects: false })).toContain(" 2.29109 ");
  });
});

group("formatResources", () => {
  const def = kind("tj");
  const items = [tj("a", {}), tj("b", {})];

  it("json and yaml print one object alone and several as a List", () => {
    expect(JSON.parse(formatResources([items[0]!], def, "json", false, true))).toEqual(items[0]);
    expect(JSON.parse(formatResources(items, def, "json", false, false))).toEqual({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJobList",
      items,
    });
    expect(formatResources([items[0]!], def, "yaml", false, true)).toMatch(
      /^apiVersion: loom.dev\/v1alpha1\nkind: TrainingJob\n/,
    );
    expect(formatResources(items, def, "yaml", false, false)).toMatch(
      /^apiVersion: loom.dev\/v1alpha1\nkind: TrainingJobList\n/,
    );
  });

  it("name prints KIND.GROUP/NAME lines; tables print nothing for no items", () => {
    expect(formatResources(items, def, "name", false, false)).toBe(
      "trainingjob.loom.dev/a\ntrainingjob.loom.dev/b\n",
    );
    expect(formatResources([], def, undefined, false, false)).toBe("");
    expect(formatResources([], def, "wide", false, false)).toBe("");
    expect(formatResources(items, def, undefined, false, false).split("\n")[0]).toMatch(/^NAME\s+PHASE/);
  });

  it("an unknown format throws a CliError listing the formats", () => {
    expect(() => formatResources(items, def, "table", false, false)).toThrow(
      new CliError('unknown output format "table": use wide, json, yaml or name'),
    );
  });
});

group("trialTable", () => {
  it("prints parameters, phase, objective and step, and stars the best trial", () => {
    const sweep = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Sweep",
      metadata: { name: "s", project: "p" },
      spec: { parameters: [{ name: "lr" }, { name: "batch" }], objective: { metric: "loss" } },
      status: {
        best: { trial: 1 },
        trials: [
          {
            number: 0,
            name: "s-0",
            params: { lr: 0.1, batch: 8 },
            phase: "Succeeded",
            objective: 0.5,
            step: 10,
          },
          {
            number: 1,
            name: "s-1",
            params: { lr: 0.01 },
            phase: "Succeeded",
            objective: 0.123456789,
            message: "best",
          },
        ],
      },
    } as Resource;
    expect(trialTable(sweep)).toBe(
      [
        "TRIAL   NAME   LR     BATCH   PHASE       LOSS       STEP   NOTE",
        "0       s-0    0.1    8       Succeeded   0.5        10",
        "1 *     s-1    0.01   -       Succeeded   0.123457   -      best",
        "",
      ].join("\n"),
    );
    expect(trialTable({ ...sweep, status: {} })).toBe("No trials yet.\n");
  });
});

group("describe", () => {
  it("prints fields, spec, workers, conditions and events in order", () => {
    const obj = tj(
      "hello",
      {
        phase: "Running",
        attempts: 2,
        workers: [
          { index: 0, state: "Running", pid: 123 },
          { index: 1, state: "Exited", exitCode: 1 },
        ],
        conditions: [
          {
            type: "Ready",
            status: "True",
            reason: "AllRunning",
            lastTransitionTime: ago(60),
            message: "2/2",
          },
        ],
      },
      { labels: { team: "nlp" } },
    );
    const text = describe(kind("tj"), obj, [
      {
        type: "Warning",
        reason: "WorkerFailed",
        message: "worker 1 exited 1",
        count: 2,
        firstTimestamp: ago(90),
        lastTimestamp: ago(30),
      },
    ]);
    expect(text).toBe(
      [
        "Name:                 hello",
        "Project:              team-a",
        "Kind:                 TrainingJob (loom.dev/v1alpha1)",
        "UID:                  u-hello",
        `Created:              ${ago(300)} (5m ago)`,
        "Labels:               team=nlp",
        "Phase:                Running",
        "Attempts:             2",
        "Spec:",
        "  command:",
        "    - python",
        "    - train.py",
        "  workers: 2",
        "Workers:",
        "  INDEX   STATE     PID   EXIT CODE   SIGNAL",
        "  0       Running   123",
        "  1       Exited          1",
        "Conditions:",
        "  TYPE    STATUS   REASON       SINCE   MESSAGE",
        "  Ready   True     AllRunning   60s     2/2",
        "Events:",
        "  TYPE      REASON         AGE   COUNT   MESSAGE",
        "  Warning   WorkerFailed   30s   2       worker 1 exited 1",
        "",
      ].join("\n"),
    );
  });

  it("says <none> for what is missing, and leaves Project out for cluster-scoped kinds", () => {
    const p = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "p1", uid: "u", creationTimestamp: ago(10) },
      spec: {},
    } as Resource;
    const text = describe(kind("project"), p, []);
    expect(text).not.toContain("Project:");
    expect(text).toContain("Labels:               <none>\n");
    expect(text).toMatch(/Conditions:\n {2}<none>\nEvents:\n {2}<none>\n$/);
  });

  it("a Model lists each version's lineage", () => {
    const model = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Model",
      metadata: { name: "m", project: "p", uid: "u", creationTimestamp: ago(10) },
      spec: {},
      status: {
        versions: [
          {
            version: 3,
            aliases: ["prod"],
            createdAt: ago(7200),
            job: "train",
            jobPhase: "Succeeded",
            runId: "r1",
            experimentId: "e1",
            checkpointStep: 100,
            source: "runs:/r1/model",
          },
        ],
      },
    } as unknown as Resource;
    const expected = [
      "version 3 @prod  (2h ago)",
      "  job:        trainingjob/train Succeeded",
      "  run:        r1 (experiment e1)",
      "  checkpoint: step 100",
      "  source:     runs:/r1/model",
      "",
    ].join("\n");
    expect(lineageText(model)).toBe(expected);
    expect(describe(kind("model"), model, [])).toContain(
      `Versions (lineage: job → run → checkpoint → version):\n${expected
        .trimEnd()
        .split("\n")
        .map((l) => `  ${l}`)
        .join("\n")}\n`,
    );
  });
});

group("capacity views", () => {
  const nodes: NodeUsageView[] = [
    {
      name: "n1",
      pool: "a100",
      gpuModel: "A100",
      capacity: { cpuMillis: 16000, memoryBytes: 64 * 2 ** 30, gpus: 4, pods: 110 },
      allocated: { cpuMillis: 1500, memoryBytes: 2 ** 29, gpus: 2, pods: 3 },
      workloads: [],
    },
  ];

  it("nodeTable prints allocated/total per resource, and workloads when wide", () => {
    expect(
      nodeTable(nodes, false)
        .split("\n")[1]
        ?.split(/\s{3,}/),
    ).toEqual(["n1", "a100", "A100", "2/4", "1.50/16", "0.50Gi/64Gi", "3/110"]);
    expect(nodeTable(nodes, true)).toMatch(/WORKLOADS\n.* -\n$/);
  });

  it("topText prints each project against its quota, then the cluster's totals", () => {
    const projects: ProjectUsageView[] = [
      {
        name: "team-a",
        deserved: { gpu: 2 },
        overQuotaWeight: 1,
        allocated: { gpu: 2, cpuMillis: 1500, memoryBytes: 2 ** 29 },
        running: 1,
        pending: 4,
      },
    ];
    const [head, row, blank, clusterHead, clusterRow] = topText(projects, nodes).split("\n");
    expect(head?.split(/\s+/)).toEqual([
      "PROJECT",
      "GPUS",
      "DESERVED",
      "LIMIT",
      "WEIGHT",
      "CPU",
      "MEMORY",
      "RUNNING",
      "PENDING",
    ]);
    expect(row?.split(/\s+/)).toEqual(["team-a", "2", "2", "-", "1", "1.50", "0.50Gi", "1", "4"]);
    expect(blank).toBe("");
    expect(clusterHead?.split(/\s{3,}/)).toEqual([
      "NODES",
      "GPUS",
      "GPU USE",
      "CPU",
      "CPU USE",
      "MEMORY",
      "MEMORY USE",
    ]);
    expect(clusterRow?.split(/\s+/)).toEqual(["1", "2/4", "50%", "1.50/16", "9%", "0.50Gi/64Gi", "1%"]);
  });
});

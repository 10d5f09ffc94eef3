import { stringify } from "yaml";
import type { InferenceServiceStatus } from "../api/inferenceservice.js";
import type { KindDef } from "../api/kinds.js";
import { API_VERSION, type Condition, type Resource } from "../api/meta.js";
import type { PromptVersionView } from "../api/prompt.js";
import { describeCapacity } from "../controllers/admission/capacity.js";
import type { ObjectEvent } from "../ports/store.js";
import type { NodeUsage, ProjectUsage } from "../server/scheduling.js";
import { CliError } from "./errors.js";
import { gpuTopText } from "./gputop.js";
import { ref } from "./resources.js";

/** What `GET /nodes` and `GET /usage/projects` answer (the server's types). */
export type NodeUsageView = NodeUsage;
export type ProjectUsageView = ProjectUsage;

/** "5s", "3m", "2h", "4d" — kubectl's AGE column. */
export function age(since: string | undefined, now = Date.now()): string {
  if (!since) return "<none>";
  const s = Math.max(0, Math.floor((now - Date.parse(since)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** Reads a dotted path; "conditions[-1]" is the last element. */
export function pick(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split(".")) {
    if (cur === undefined || cur === null) return undefined;
    const m = /^(\w+)\[(-?\d+)\]$/.exec(part);
    if (m) {
      const arr = (cur as Record<string, unknown>)[m[1]!];
      if (!Array.isArray(arr)) return undefined;
      const i = Number(m[2]);
      cur = arr[i < 0 ? arr.length + i : i];
    } else cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

export function table(rows: string[][]): string {
  if (rows.length === 0) return "";
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  return `${rows
    .map((r) =>
      r
        .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]! + 3)))
        .join("")
        .trimEnd(),
    )
    .join("\n")}\n`;
}

export function resourceTable(
  def: KindDef,
  items: Resource[],
  opts: { wide: boolean; allProjects: boolean },
): string {
  const cols = def.columns.filter((c) => opts.wide || !c.wide);
  const header = [
    ...(opts.allProjects && def.namespaced ? ["PROJECT"] : []),
    "NAME",
    ...cols.map((c) => c.name),
    "AGE",
  ];
  const rows = items.map((o) => [
    ...(opts.allProjects && def.namespaced ? [o.metadata.project ?? ""] : []),
    o.metadata.name,
    ...cols.map((c) => {
      const v = pick(o, c.path);
      if (c.path === "status.phase" && o.metadata.deletionTimestamp) return "Terminating";
      if (v === undefined || v === null) return c.empty ?? "<none>";
      // Metrics read best at six significant digits (2.29109, not 2.2910878658294678).
      return c.type === "number" && typeof v === "number" ? String(Number(v.toPrecision(6))) : String(v);
    }),
    age(o.metadata.creationTimestamp),
  ]);
  return table([header, ...rows]);
}

/** Formats objects for `-o`: a table (wide or not), json, yaml or names; one object or a List. */
export function formatResources(
  items: Resource[],
  def: KindDef,
  format: string | undefined,
  allProjects: boolean,
  single: boolean,
): string {
  switch (format) {
    case "json":
      return `${JSON.stringify(single ? items[0] : { apiVersion: API_VERSION, kind: `${def.kind}List`, items }, null, 2)}\n`;
    case "yaml":
      return toYaml(single ? items[0] : { apiVersion: API_VERSION, kind: `${def.kind}List`, items });
    case "name":
      return items.map((o) => `${ref(def, o.metadata.name)}\n`).join("");
    case undefined:
    case "wide":
      if (items.length === 0) return "";
      return resourceTable(def, items, { wide: format === "wide", allProjects });
    default:
      throw new CliError(`unknown output format "${format}": use wide, json, yaml or name`);
  }
}

export function toYaml(value: unknown): string {
  return stringify(value, { lineWidth: 0 });
}

const indent = (text: string) =>
  text
    .trimEnd()
    .split("\n")
    .map((l) => `  ${l}`);

const num = (v: unknown) => (typeof v === "number" ? String(Number(v.toPrecision(6))) : "-");

/** `loom get sweep X`: one row per trial — its parameters, phase and objective. */
export function trialTable(obj: Resource): string {
  const status = (obj.status ?? {}) as {
    trials?: {
      number: number;
      name: string;
      params: Record<string, unknown>;
      phase: string;
      objective?: number;
      step?: number;
      message?: string;
    }[];
    best?: { trial: number };
  };
  const spec = obj.spec as { parameters?: { name: string }[]; objective?: { metric: string } };
  const names = (spec.parameters ?? []).map((p) => p.name);
  const metric = (spec.objective?.metric ?? "objective").toUpperCase();
  const trials = status.trials ?? [];
  if (!trials.length) return "No trials yet.\n";
  return table([
    ["TRIAL", "NAME", ...names.map((n) => n.toUpperCase()), "PHASE", metric, "STEP", "NOTE"],
    ...trials.map((t) => [
      `${t.number}${status.best?.trial === t.number ? " *" : ""}`,
      t.name,
      ...names.map((n) => (t.params[n] === undefined ? "-" : String(t.params[n]))),
      t.phase,
      num(t.objective),
      t.step === undefined ? "-" : String(t.step),
      t.message ?? "",
    ]),
  ]);
}

/** `loom describe model X`: each version with the job, run and checkpoint it came from. */
export function lineageText(obj: Resource): string {
  const versions = ((obj.status ?? {}) as { versions?: Record<string, unknown>[] }).versions ?? [];
  if (!versions.length) return "<none>\n";
  const out: string[] = [];
  for (const v of versions) {
    const aliases = (v.aliases as string[]).map((a) => `@${a}`).join(" ");
    out.push(
      `version ${v.version}${aliases ? ` ${aliases}` : ""}${v.stage ? ` [${v.stage}]` : ""}  (${age(v.createdAt as string)} ago)`,
    );
    const from = v.initCheckpointFrom
      ? ` (started from the checkpoints of trainingjob/${v.initCheckpointFrom})`
      : "";
    const sweep = v.sweep ? `, trial ${v.trial} of sweep/${v.sweep}` : "";
    out.push(
      `  job:        ${v.job ? `trainingjob/${v.job} ${v.jobPhase ?? ""}${sweep}${from}` : "<unknown: not made by a Loom job>"}`,
    );
    out.push(`  run:        ${v.runId ? `${v.runId} (experiment ${v.experimentId ?? "?"})` : "<none>"}`);
    out.push(
      `  checkpoint: ${v.checkpointStep !== undefined ? `step ${v.checkpointStep}` : "<none reported>"}`,
    );
    out.push(`  source:     ${v.source}`);
  }
  return `${out.join("\n")}\n`;
}

/** `loom describe isvc`: revisions, the traffic split, each replica, and the recent scale decisions. */
export function servingSections(status: Record<string, unknown>): string[] {
  const s = status as InferenceServiceStatus;
  const revisions = s.revisions ?? [];
  const section = (title: string, rows: string[][]) =>
    rows.length > 1 ? [`${title}:`, ...indent(table(rows))] : [`${title}:`, "  <none>"];
  const url = s.url ? [`${"URL:".padEnd(22)}${s.url}`] : [];
  return [
    ...url,
    ...section("Revisions", [
      ["NAME", "DESIRED", "READY", "MODEL", "AGE"],
      ...revisions.map((r) => [
        `${r.name}${r.name === s.latestReadyRevision ? " (latest ready)" : ""}`,
        String(r.desired),
        String(r.ready),
        String((r.spec as { model?: string } | undefined)?.model ?? "-"),
        age(r.createdAt),
      ]),
    ]),
    ...section("Traffic", [
      ["REVISION", "PERCENT"],
      ...(s.traffic ?? []).map((t) => [t.revision, `${t.percent}%`]),
    ]),
    ...section("Replicas", [
      ["ID", "REVISION", "READY", "ADDRESS", "AGE"],
      ...revisions.flatMap((r) =>
        (r.replicas ?? []).map((x) => [
          x.id,
          r.name,
          String(x.ready),
          x.host && x.port ? `${x.host}:${x.port}` : "-",
          age(x.startedAt),
        ]),
      ),
    ]),
    ...section("Scale events", [
      ["AGE", "REVISION", "FROM", "TO", "REASON"],
      ...(s.scaleEvents ?? [])
        .slice(-10)
        .map((e) => [age(e.time), e.revision, String(e.from), String(e.to), e.reason]),
    ]),
  ];
}

/** kubectl describe: the object in sections a person reads top to bottom, then its events. */
export function describe(def: KindDef, obj: Resource, events: ObjectEvent[]): string {
  const lines: string[] = [];
  const field = (k: string, v: unknown) =>
    lines.push(`${`${k}:`.padEnd(22)}${v === undefined || v === "" ? "<none>" : String(v)}`);
  const block = (k: string, v: unknown) => {
    lines.push(`${k}:`);
    const text = v === undefined ? "<none>" : toYaml(v).trimEnd();
    for (const l of text.split("\n")) lines.push(`  ${l}`);
  };
  field("Name", obj.metadata.name);
  if (def.namespaced) field("Project", obj.metadata.project);
  field("Kind", `${obj.kind} (${obj.apiVersion})`);
  field("UID", obj.metadata.uid);
  field("Created", `${obj.metadata.creationTimestamp} (${age(obj.metadata.creationTimestamp)} ago)`);
  if (obj.metadata.deletionTimestamp) field("Deleting since", obj.metadata.deletionTimestamp);
  field(
    "Labels",
    Object.entries(obj.metadata.labels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(",") || undefined,
  );
  const status = (obj.status ?? {}) as Record<string, unknown>;
  if (status.phase !== undefined) field("Phase", status.phase);
  for (const k of [
    "attempts",
    "preemptions",
    "queuePosition",
    "startTime",
    "completionTime",
    "nextAttemptTime",
  ])
    if (status[k] !== undefined) field(k[0]!.toUpperCase() + k.slice(1), status[k]);
  const capacity = status.capacityRequest as Parameters<typeof describeCapacity>[0] | undefined;
  if (capacity) field("Capacity", describeCapacity(capacity, new Date()));
  block("Spec", obj.spec);
  const workers = status.workers as
    | { index: number; state: string; pid?: number; exitCode?: number; signal?: string }[]
    | undefined;
  if (workers?.length) {
    lines.push("Workers:");
    lines.push(
      ...table([
        ["INDEX", "STATE", "PID", "EXIT CODE", "SIGNAL"],
        ...workers.map((w) => [
          String(w.index),
          w.state,
          String(w.pid ?? ""),
          w.exitCode === undefined ? "" : String(w.exitCode),
          w.signal ?? "",
        ]),
      ])
        .trimEnd()
        .split("\n")
        .map((l) => `  ${l}`),
    );
  }
  if (obj.kind === "Sweep" && Array.isArray(status.trials)) {
    lines.push("Trials:");
    lines.push(...indent(trialTable(obj)));
    if (status.best) block("Best", status.best);
    if (status.model) block("Registered", status.model);
  }
  if (obj.kind === "InferenceService") lines.push(...servingSections(status));
  if (obj.kind === "App") {
    const access = (obj.spec as { access?: string }).access;
    field("Access", access === "public" ? "public: anyone with the URL, no log-in" : access);
    lines.push(...servingSections(status));
  }
  if (obj.kind === "Model") {
    lines.push("Versions (lineage: job → run → checkpoint → version):");
    lines.push(...indent(lineageText(obj)));
  }
  if (obj.kind === "Prompt") lines.push(...promptSections(status));
  if (status.admission) block("Admission", status.admission);
  if (status.preemption) block("Preemption", status.preemption);
  const conditions = (status.conditions as Condition[] | undefined) ?? [];
  lines.push("Conditions:");
  if (conditions.length === 0) lines.push("  <none>");
  else {
    lines.push(
      ...table([
        ["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"],
        ...conditions.map((c) => [c.type, c.status, c.reason, age(c.lastTransitionTime), c.message]),
      ])
        .trimEnd()
        .split("\n")
        .map((l) => `  ${l}`),
    );
  }
  lines.push("Events:");
  if (events.length === 0) lines.push("  <none>");
  else {
    lines.push(
      ...table([
        ["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"],
        ...events.map((e) => [e.type, e.reason, age(e.lastTimestamp), String(e.count), e.message]),
      ])
        .trimEnd()
        .split("\n")
        .map((l) => `  ${l}`),
    );
  }
  return `${lines.join("\n")}\n`;
}

/** A prompt's tags and its versions, newest first, each with its template. */
function promptSections(status: Record<string, unknown>): string[] {
  const lines: string[] = [];
  const tags = status.tags as Record<string, string> | undefined;
  if (tags)
    lines.push(
      `${"Tags:".padEnd(22)}${Object.entries(tags)
        .map(([k, v]) => `${k}=${v}`)
        .join(",")}`,
    );
  const versions = (status.versions as PromptVersionView[] | undefined) ?? [];
  lines.push("Versions:");
  if (versions.length === 0) lines.push("  <none>");
  for (const v of [...versions].reverse()) {
    const extra = [
      v.aliases.length ? `aliases: ${v.aliases.join(",")}` : "",
      v.tags
        ? `tags: ${Object.entries(v.tags)
            .map(([k, t]) => `${k}=${t}`)
            .join(",")}`
        : "",
      `${age(v.createdAt)} ago`,
    ].filter(Boolean);
    lines.push(`  ${v.version}${v.commitMessage ? `: ${v.commitMessage}` : ""} (${extra.join("; ")})`);
    lines.push(...v.template.split("\n").map((l) => `    | ${l}`));
  }
  return lines;
}

const GiB = 2 ** 30;
const fmtNum = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(2));
const cores = (m: number) => fmtNum(m / 1000);
const gib = (b: number) => `${fmtNum(b / GiB)}Gi`;
const pct = (used: number, of: number) => (of > 0 ? `${Math.round((100 * used) / of)}%` : "-");

/** `loom get nodes`: what each node offers and what Loom's scheduler has handed out. */
export function nodeTable(nodes: NodeUsageView[], wide: boolean): string {
  const head = [
    "NAME",
    "POOL",
    "GPU MODEL",
    "GPUS (ALLOC/TOTAL)",
    "CPU (ALLOC/TOTAL)",
    "MEMORY (ALLOC/TOTAL)",
    "PODS",
  ];
  if (wide) head.push("WORKLOADS");
  return table([
    head,
    ...nodes.map((n) => {
      const row = [
        n.name,
        n.pool,
        n.gpuModel ?? "-",
        `${fmtNum(n.allocated.gpus)}/${n.capacity.gpus}`,
        `${cores(n.allocated.cpuMillis)}/${cores(n.capacity.cpuMillis)}`,
        `${gib(n.allocated.memoryBytes)}/${gib(n.capacity.memoryBytes)}`,
        `${n.allocated.pods}${n.capacity.pods !== undefined ? `/${n.capacity.pods}` : ""}`,
      ];
      if (wide) row.push(n.workloads.join(",") || "-");
      return row;
    }),
  ]);
}

/** `loom top`: per project, what it holds against its deserved quota and limit; then the cluster. */
export function topText(projects: ProjectUsageView[], nodes: NodeUsageView[]): string {
  const sum = (f: (n: NodeUsageView) => number) => nodes.reduce((s, n) => s + f(n), 0);
  const gpus = sum((n) => n.capacity.gpus);
  const cpu = sum((n) => n.capacity.cpuMillis);
  const mem = sum((n) => n.capacity.memoryBytes);
  const projectRows = table([
    ["PROJECT", "GPUS", "DESERVED", "LIMIT", "WEIGHT", "CPU", "MEMORY", "RUNNING", "PENDING"],
    ...projects.map((p) => [
      p.name,
      fmtNum(p.allocated.gpu),
      p.deserved.gpu !== undefined ? String(p.deserved.gpu) : "0",
      p.limit?.gpu !== undefined ? String(p.limit.gpu) : "-",
      fmtNum(p.overQuotaWeight),
      cores(p.allocated.cpuMillis),
      gib(p.allocated.memoryBytes),
      String(p.running),
      String(p.pending),
    ]),
  ]);
  const used = {
    gpus: sum((n) => n.allocated.gpus),
    cpu: sum((n) => n.allocated.cpuMillis),
    mem: sum((n) => n.allocated.memoryBytes),
  };
  const cluster = table([
    ["NODES", "GPUS", "GPU USE", "CPU", "CPU USE", "MEMORY", "MEMORY USE"],
    [
      String(nodes.length),
      `${fmtNum(used.gpus)}/${gpus}`,
      pct(used.gpus, gpus),
      `${cores(used.cpu)}/${cores(cpu)}`,
      pct(used.cpu, cpu),
      `${gib(used.mem)}/${gib(mem)}`,
      pct(used.mem, mem),
    ],
  ]);
  const gpu = gpuTopText(nodes, table);
  return `${projectRows}
${cluster}${gpu ? `\n${gpu}` : ""}`;
}

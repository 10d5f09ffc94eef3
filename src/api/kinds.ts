import { z } from "zod";
import { AppSpec, AppStatus } from "./app.js";
import { ClusterSpec, ClusterStatus } from "./cluster.js";
import { type FieldIssue, ValidationError } from "./errors.js";
import { InferenceServiceSpec, InferenceServiceStatus } from "./inferenceservice.js";
import { API_VERSION, InputMetadata, type Resource } from "./meta.js";
import { ModelSpec, ModelStatus } from "./model.js";
import { ProjectSpec, ProjectStatus } from "./project.js";
import { PromptSpec, PromptStatus } from "./prompt.js";
import { SweepSpec, SweepStatus } from "./sweep.js";
import { TrainingJobSpec, TrainingJobStatus } from "./trainingjob.js";
import { WorkspaceSpec, WorkspaceStatus } from "./workspace.js";

/** A column `loom get` prints (and, later, a CRD printer column). */
export interface PrinterColumn {
  name: string;
  /** Dotted path into the object, e.g. "status.phase". */
  path: string;
  wide?: boolean;
  type?: "string" | "integer" | "number" | "date";
  /** What `loom get` prints when the path is absent (default "<none>"): "0" for a count. */
  empty?: string;
}

/** Everything the platform knows about one kind: names, schemas, scope, how to print it. */
export interface KindDef {
  kind: string;
  singular: string;
  plural: string;
  shortNames: string[];
  /** Cluster-scoped kinds (Project) have no metadata.project. */
  namespaced: boolean;
  spec: z.ZodType;
  status: z.ZodType;
  columns: PrinterColumn[];
  /**
   * Where objects live: "store" (the resource store; a CRD on Kubernetes) or "registry" (a view
   * of the model registry's tables that Loom's API serves; no CRD).
   */
  storage?: "store" | "registry";
}

/** Kind names, defined once: manifests' `kind`, the store's key, the CRDs' kind. */
export const PROJECT = "Project";
export const TRAININGJOB = "TrainingJob";
export const SWEEP = "Sweep";
export const INFERENCESERVICE = "InferenceService";
export const MODEL = "Model";
export const WORKSPACE = "Workspace";
export const PROMPT = "Prompt";
export const APP = "App";
export const CLUSTER = "Cluster";

export const KINDS: readonly KindDef[] = [
  {
    kind: PROJECT,
    singular: "project",
    plural: "projects",
    shortNames: ["proj"],
    namespaced: false,
    spec: ProjectSpec,
    status: ProjectStatus,
    columns: [
      { name: "PHASE", path: "status.phase" },
      { name: "DESCRIPTION", path: "spec.description", wide: true },
    ],
  },
  {
    kind: TRAININGJOB,
    singular: "trainingjob",
    plural: "trainingjobs",
    shortNames: ["tj"],
    namespaced: true,
    spec: TrainingJobSpec,
    status: TrainingJobStatus,
    columns: [
      { name: "PHASE", path: "status.phase" },
      { name: "READY", path: "status.ready" },
      { name: "ATTEMPT", path: "status.attempts", type: "integer" },
      { name: "RESTARTS", path: "status.restarts", type: "integer", wide: true, empty: "0" },
      { name: "CHECKPOINT", path: "status.checkpoint.step", type: "integer", wide: true },
      // Why a job is where it is (BuildingEnvironment, InsufficientCapacity, WorkerFailed), shown
      // by default as kubectl shows a pod's STATUS reason (loom describe shows its message).
      { name: "REASON", path: "status.conditions[-1].reason" },
      { name: "NODE", path: "status.admission.node", wide: true },
    ],
  },
  {
    kind: SWEEP,
    singular: "sweep",
    plural: "sweeps",
    shortNames: [],
    namespaced: true,
    spec: SweepSpec,
    status: SweepStatus,
    columns: [
      { name: "PHASE", path: "status.phase" },
      { name: "ALGORITHM", path: "spec.algorithm" },
      { name: "RUNNING", path: "status.running", type: "integer" },
      { name: "SUCCEEDED", path: "status.succeeded", type: "integer" },
      { name: "STOPPED", path: "status.earlyStopped", type: "integer" },
      { name: "FAILED", path: "status.failed", type: "integer" },
      { name: "BEST", path: "status.best.objective", type: "number" },
      { name: "BEST-TRIAL", path: "status.best.name", wide: true },
      { name: "MODEL-VERSION", path: "status.model.version", wide: true },
    ],
  },
  {
    kind: INFERENCESERVICE,
    singular: "inferenceservice",
    plural: "inferenceservices",
    shortNames: ["isvc"],
    namespaced: true,
    spec: InferenceServiceSpec,
    status: InferenceServiceStatus,
    columns: [
      { name: "PHASE", path: "status.phase" },
      { name: "READY", path: "status.ready", type: "integer" },
      { name: "DESIRED", path: "status.desired", type: "integer" },
      { name: "LATEST", path: "status.latestReadyRevision" },
      { name: "MODEL", path: "spec.model", wide: true },
      { name: "URL", path: "status.url", wide: true },
    ],
  },
  {
    kind: WORKSPACE,
    singular: "workspace",
    plural: "workspaces",
    shortNames: ["ws"],
    namespaced: true,
    spec: WorkspaceSpec,
    status: WorkspaceStatus,
    columns: [
      { name: "PHASE", path: "status.phase" },
      { name: "IDE", path: "spec.ide" },
      { name: "URL", path: "status.url" },
      { name: "REASON", path: "status.conditions[-1].reason", wide: true },
      { name: "NODE", path: "status.node", wide: true },
    ],
  },
  {
    kind: APP,
    singular: "app",
    plural: "apps",
    shortNames: [],
    namespaced: true,
    spec: AppSpec,
    status: AppStatus,
    columns: [
      { name: "PHASE", path: "status.phase" },
      // "public" said plainly: anyone who has the URL can use the app.
      { name: "ACCESS", path: "spec.access" },
      { name: "READY", path: "status.ready", type: "integer", empty: "0" },
      { name: "URL", path: "status.url" },
      { name: "FRAMEWORK", path: "spec.framework", wide: true },
      { name: "LATEST", path: "status.latestReadyRevision", wide: true },
    ],
  },
  {
    kind: MODEL,
    singular: "model",
    plural: "models",
    shortNames: [],
    namespaced: true,
    spec: ModelSpec,
    status: ModelStatus,
    storage: "registry",
    columns: [
      { name: "LATEST", path: "status.latestVersion" },
      { name: "ALIASES", path: "status.aliasText" },
      { name: "SOURCE-JOB", path: "status.latestJob" },
      { name: "DESCRIPTION", path: "spec.description", wide: true },
    ],
  },
  {
    kind: PROMPT,
    singular: "prompt",
    plural: "prompts",
    shortNames: [],
    namespaced: true,
    spec: PromptSpec,
    status: PromptStatus,
    storage: "registry",
    columns: [
      { name: "LATEST", path: "status.latestVersion" },
      { name: "ALIASES", path: "status.aliasText" },
      { name: "DESCRIPTION", path: "spec.description", wide: true },
    ],
  },
  {
    // A member of the fleet (issue 23): cluster-scoped, admins only (its secret names a kubeconfig).
    kind: CLUSTER,
    singular: "cluster",
    plural: "clusters",
    shortNames: [],
    namespaced: false,
    spec: ClusterSpec,
    status: ClusterStatus,
    columns: [
      { name: "STATUS", path: "status.phase" },
      { name: "VERSION", path: "status.version.kubernetes" },
      { name: "POOLS", path: "status.capacityText" },
      { name: "FREE", path: "status.freeText" },
      { name: "LOOM", path: "status.version.loom", wide: true },
      { name: "LAST-SEEN", path: "status.lastSeen", type: "date", wide: true },
    ],
  },
];

/** Kinds kept in the resource store (and as CRDs on Kubernetes). */
export const STORED_KINDS: readonly KindDef[] = KINDS.filter((k) => (k.storage ?? "store") === "store");

const byName = new Map<string, KindDef>();
for (const k of KINDS) {
  for (const n of [k.kind.toLowerCase(), k.singular, k.plural, ...k.shortNames]) byName.set(n, k);
}

/** Resolves what a user typed ("tj", "trainingjobs", "TrainingJob") to a kind, or undefined. */
export function findKind(name: string): KindDef | undefined {
  return byName.get(name.toLowerCase());
}

export function kindByKind(kind: string): KindDef | undefined {
  return KINDS.find((k) => k.kind === kind);
}

export function knownKindsText(): string {
  return KINDS.map((k) => `${k.kind} (${[k.plural, ...k.shortNames].join(", ")})`).join(", ");
}

/** zod issues → field paths a user can find in their manifest ("spec.command", "spec.env.1X"). */
export function toFieldIssues(error: z.ZodError, prefix: string): FieldIssue[] {
  return error.issues.map((issue) => {
    const path = [prefix, ...issue.path.map(String)].filter(Boolean).join(".");
    let message = issue.message;
    if (issue.code === "invalid_type" && /received undefined/.test(issue.message))
      message = "required field is missing";
    if (issue.code === "unrecognized_keys") message = `unknown field(s): ${issue.keys.join(", ")}`;
    // A bad record key (label key, env var name) wraps the helpful message one level down.
    if (issue.code === "invalid_key" && issue.issues[0]) message = issue.issues[0].message;
    return { path, message };
  });
}

function fail(issues: FieldIssue[]): never {
  const summary = issues.map((i) => `${i.path}: ${i.message}`).join("; ");
  throw new ValidationError(`invalid manifest: ${summary}`, issues);
}

const Envelope = z.object({
  apiVersion: z.string(),
  kind: z.string(),
  metadata: InputMetadata,
  spec: z.unknown().optional(),
  status: z.unknown().optional(),
});

/**
 * Checks a manifest as a user wrote it and returns it normalised: defaults applied, server-owned
 * metadata dropped. Throws ValidationError naming every bad field.
 */
export function validateManifest(input: unknown): { def: KindDef; object: Resource } {
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    fail([{ path: "", message: "a manifest must be a mapping with apiVersion, kind, metadata and spec" }]);
  }
  const raw = input as Record<string, unknown>;
  if (typeof raw.kind !== "string" || raw.kind === "")
    fail([{ path: "kind", message: "required field is missing" }]);
  const def = kindByKind(raw.kind);
  if (!def) fail([{ path: "kind", message: `unknown kind "${raw.kind}"; known kinds: ${knownKindsText()}` }]);
  if (raw.apiVersion !== API_VERSION) {
    fail([
      {
        path: "apiVersion",
        message: `must be "${API_VERSION}" (got ${JSON.stringify(raw.apiVersion ?? null)})`,
      },
    ]);
  }
  const env = Envelope.safeParse(raw);
  if (!env.success) fail(toFieldIssues(env.error, ""));
  const meta = env.data.metadata;
  if (!def.namespaced && meta.project) {
    fail([
      { path: "metadata.project", message: `${def.kind} is not part of a project; remove metadata.project` },
    ]);
  }
  const spec = def.spec.safeParse(env.data.spec ?? {});
  if (!spec.success) fail(toFieldIssues(spec.error, "spec"));
  const metadata: Record<string, unknown> = { name: meta.name };
  if (def.namespaced && meta.project) metadata.project = meta.project;
  if (meta.labels) metadata.labels = meta.labels;
  if (meta.annotations) metadata.annotations = meta.annotations;
  return {
    def,
    object: { apiVersion: API_VERSION, kind: def.kind, metadata, spec: spec.data } as unknown as Resource,
  };
}

/** JSON Schema of a kind's spec (input form: what a user may write), for OpenAPI and, later, CRDs. */
export function specJsonSchema(def: KindDef): Record<string, unknown> {
  return z.toJSONSchema(def.spec, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
}

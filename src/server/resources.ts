import {
  AlreadyExistsError,
  BadRequestError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
} from "../api/errors.js";
import {
  findKind,
  type KindDef,
  knownKindsText,
  PROJECT,
  STORED_KINDS,
  validateManifest,
} from "../api/kinds.js";
import { API_VERSION, type Resource } from "../api/meta.js";
import { DEFAULT_PROJECT } from "../api/project.js";
import type { ListOptions, ResourceStore } from "../ports/store.js";
import { type FromWorkspace, runsFromWorkspace, sameWorkspace } from "./fromworkspace.js";

/**
 * What the API does with resources beyond storing them: validation and defaults, scope and
 * project checks, merge patches, and the rules about deleting projects.
 */
export class ResourceService {
  constructor(
    private readonly store: ResourceStore,
    /**
     * Finalizers given to new objects of a kind, so a controller need not write them on first
     * sight (one write less per TrainingJob). Only where those controllers run.
     */
    private readonly createFinalizers: Record<string, string[]> = {},
    /** spec.fromWorkspace of a TrainingJob, resolved at create (fromworkspace.ts). */
    private readonly workspaces?: FromWorkspace,
  ) {}

  kind(plural: string): KindDef {
    const def = findKind(plural);
    if (!def || def.plural !== plural)
      throw new NotFoundError(`unknown resource type "${plural}"; known: ${knownKindsText()}`);
    return def;
  }

  /** A kind that lives inside a project (the /projects/{project}/{plural} routes). */
  namespacedKind(plural: string): KindDef {
    const def = this.kind(plural);
    if (!def.namespaced) {
      throw new NotFoundError(
        `${def.plural} do not belong to a project: use /apis/loom.dev/v1alpha1/${def.plural}`,
      );
    }
    return def;
  }

  async get(def: KindDef, project: string | undefined, name: string): Promise<Resource> {
    return this.store.get(def.kind, scope(def, project), name);
  }

  async list(def: KindDef, opts: ListOptions) {
    if (def.namespaced && opts.project !== undefined) await this.requireProject(opts.project);
    const { project: _, ...rest } = opts;
    return this.store.list(def.kind, def.namespaced ? opts : rest);
  }

  async create(def: KindDef, project: string | undefined, body: unknown, dryRun: boolean): Promise<Resource> {
    let { object } = this.validateFor(def, project, body);
    if (def.namespaced) await this.requireProject(object.metadata.project!, true);
    let handle: string | undefined;
    if (runsFromWorkspace(object)) {
      if (!this.workspaces) throw new BadRequestError("spec.fromWorkspace is not supported here");
      if (!dryRun && (await this.exists(def, object.metadata.project!, object.metadata.name))) {
        throw new AlreadyExistsError(
          `${def.kind} "${object.metadata.project}/${object.metadata.name}" already exists`,
        );
      }
      ({ job: object, handle } = await this.workspaces.resolve(object, dryRun));
    }
    const finalizers = this.createFinalizers[def.kind];
    if (finalizers?.length) {
      object.metadata.finalizers = [...new Set([...(object.metadata.finalizers ?? []), ...finalizers])];
    }
    if (dryRun) {
      // As the store's create would: a dry run of a create must not say "created" for an object
      // that exists (`loom apply --dry-run` then predicts an update, as apply does).
      const project = scope(def, object.metadata.project);
      if (await this.exists(def, project, object.metadata.name)) {
        throw new AlreadyExistsError(
          `${def.kind} "${def.namespaced ? `${project}/` : ""}${object.metadata.name}" already exists`,
        );
      }
      return object;
    }
    if (handle === undefined) return this.store.create(object);
    // The snapshot is staged before the job exists (a refusal leaves no job behind) and named
    // by its uid once it does; the runtime's start waits for nothing: it is there by then.
    const snapshots = this.workspaces!.snapshots!;
    let created: Resource;
    try {
      created = await this.store.create(object);
    } catch (err) {
      await snapshots.discard(handle);
      throw err;
    }
    await snapshots.commit(handle, created.metadata.project!, created.metadata.uid!, created.metadata.name);
    return created;
  }

  async update(
    def: KindDef,
    project: string | undefined,
    name: string,
    body: unknown,
    dryRun: boolean,
  ): Promise<Resource> {
    const { object } = this.validateFor(def, project, body);
    if (object.metadata.name !== name) {
      throw new BadRequestError(
        `metadata.name "${object.metadata.name}" does not match the name in the URL ("${name}")`,
      );
    }
    const current = await this.store.get(def.kind, scope(def, project), name);
    sameWorkspace(current, object);
    const rv = (body as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
    const next: Resource = {
      ...object,
      metadata: {
        ...current.metadata,
        labels: object.metadata.labels,
        annotations: object.metadata.annotations,
        resourceVersion: rv ?? "",
      },
    };
    if (dryRun) return { ...next, status: current.status };
    return this.store.update(next);
  }

  /** JSON merge patch (RFC 7386) of labels, annotations and spec; retried if a writer races us. */
  async patch(
    def: KindDef,
    project: string | undefined,
    name: string,
    patch: unknown,
    dryRun: boolean,
  ): Promise<Resource> {
    if (!isPlainObject(patch)) throw new BadRequestError("a merge patch must be a JSON object");
    for (let i = 0; ; i++) {
      const current = await this.store.get(def.kind, scope(def, project), name);
      const merged = mergePatch(
        {
          apiVersion: current.apiVersion,
          kind: current.kind,
          metadata: { ...current.metadata },
          spec: current.spec,
        },
        patch,
      ) as Record<string, unknown>;
      const meta = (merged.metadata ?? {}) as Record<string, unknown>;
      meta.resourceVersion = current.metadata.resourceVersion;
      merged.metadata = meta;
      try {
        return await this.update(def, project, name, merged, dryRun);
      } catch (err) {
        if (err instanceof ConflictError && i < 5) continue;
        throw err;
      }
    }
  }

  async delete(
    def: KindDef,
    project: string | undefined,
    name: string,
    resourceVersion?: string,
  ): Promise<Resource> {
    if (def.kind === PROJECT) await this.checkProjectDeletable(name);
    return this.store.delete(def.kind, scope(def, project), name, { resourceVersion });
  }

  private async exists(def: KindDef, project: string, name: string): Promise<boolean> {
    try {
      await this.store.get(def.kind, project, name);
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  private validateFor(def: KindDef, project: string | undefined, body: unknown) {
    const result = validateManifest(body);
    if (result.def.kind !== def.kind) {
      throw new BadRequestError(
        `the body is a ${result.def.kind} but the URL is for ${def.plural}; send it to /${result.def.plural}`,
      );
    }
    if (def.namespaced) {
      const inBody = result.object.metadata.project;
      if (inBody && project && inBody !== project) {
        throw new BadRequestError(
          `metadata.project "${inBody}" does not match the project in the URL ("${project}")`,
        );
      }
      result.object.metadata.project = inBody ?? project ?? DEFAULT_PROJECT;
    }
    return result;
  }

  private async requireProject(project: string, forWrite = false): Promise<void> {
    let p: Resource;
    try {
      p = await this.store.get(PROJECT, "", project);
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new NotFoundError(
          `project "${project}" not found: create it first (kind: Project) or use -p default`,
        );
      }
      // A member may read a project's workloads without reading the Project itself (Kubernetes
      // RBAC): then the platform's own answer to the real request decides.
      if (err instanceof ForbiddenError) return;
      throw err;
    }
    if (forWrite && p.metadata.deletionTimestamp)
      throw new ForbiddenError(`project "${project}" is being deleted; nothing new can be created in it`);
  }

  /**
   * A project goes only when nothing is left in it: every kind the store keeps inside a project
   * counts (a Sweep or an InferenceService deleted from under its project would be orphaned).
   */
  private async checkProjectDeletable(name: string): Promise<void> {
    if (name === DEFAULT_PROJECT)
      throw new ForbiddenError(`the "${DEFAULT_PROJECT}" project cannot be deleted`);
    const left: KindDef[] = [];
    const counts: string[] = [];
    for (const def of STORED_KINDS.filter((k) => k.namespaced)) {
      const { items } = await this.store.list(def.kind, { project: name });
      if (items.length === 0) continue;
      left.push(def);
      counts.push(`${items.length} ${def.plural}`);
    }
    if (left.length > 0) {
      const commands = left.map((def) => `loom delete ${def.plural} --all -p ${name}`).join("; ");
      throw new ConflictError(
        `project "${name}" still has ${counts.join(", ")}: delete them first (${commands})`,
      );
    }
  }
}

/** Makes sure the default project exists; every platform's start calls it (idempotent). */
export async function ensureDefaultProject(store: ResourceStore): Promise<void> {
  try {
    await store.get(PROJECT, "", DEFAULT_PROJECT);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
    await store.create(
      validateManifest({
        apiVersion: API_VERSION,
        kind: PROJECT,
        metadata: { name: DEFAULT_PROJECT },
        spec: { description: "The project commands use when none is named." },
      }).object,
    );
  }
}

function scope(def: KindDef, project: string | undefined): string {
  return def.namespaced ? (project ?? DEFAULT_PROJECT) : "";
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** RFC 7386: objects merge recursively, null removes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return patch;
  const out: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

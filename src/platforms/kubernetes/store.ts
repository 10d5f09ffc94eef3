import type { Logger } from "pino";
import { BadRequestError, LoomError, NotFoundError } from "../../api/errors.js";
import { kindByKind } from "../../api/kinds.js";
import { API_VERSION, type ObjectMeta, type Resource } from "../../api/meta.js";
import type {
  ListOptions,
  ListResult,
  ResourceStore,
  StopWatch,
  WatchEvent,
  WatchOptions,
} from "../../ports/store.js";
import type { KubeClient } from "./client.js";
import { namespaceOf, projectOf } from "./naming.js";
import { watchCollection } from "./watch.js";

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: Record<string, unknown> & { name: string; namespace?: string; resourceVersion?: string };
  spec?: unknown;
  status?: unknown;
}

interface KubeList {
  metadata: { resourceVersion: string; continue?: string };
  items: KubeObject[];
}

/**
 * The ResourceStore port on a Kubernetes API server: Loom kinds are custom resources (see
 * `loom crds`), projects are namespaces. Watches are our own loop — resume from the last seen
 * revision after a server-side timeout, bookmarks, capped backoff on errors, and a 410 handed to
 * the caller to relist — rather than client-node's informer.
 */
export class KubeResourceStore implements ResourceStore {
  constructor(
    private readonly client: KubeClient,
    private readonly log: Logger,
  ) {}

  async get(kind: string, project: string, name: string): Promise<Resource> {
    try {
      return toLoom(await this.client.request<KubeObject>("GET", itemPath(kind, project, name)));
    } catch (err) {
      throw notFound(err, kind, project, name);
    }
  }

  async list(kind: string, opts: ListOptions = {}): Promise<ListResult> {
    const items: Resource[] = [];
    // Paged (a limit): one page of kube-apiserver's own, its continue handed back as ours (opaque
    // to both, and consistent: every page is read at the first page's revision). Unpaged: all of it.
    const paged = opts.limit !== undefined;
    let cont = opts.continue || undefined;
    let resourceVersion = "";
    do {
      let page: KubeList;
      try {
        page = await this.client.request<KubeList>("GET", collectionPath(kind, opts.project), {
          query: { labelSelector: opts.labelSelector || undefined, limit: opts.limit ?? 500, continue: cont },
        });
      } catch (err) {
        throw badContinue(err, opts.continue);
      }
      resourceVersion = page.metadata.resourceVersion;
      cont = page.metadata.continue || undefined;
      for (const o of page.items) if (isLoomObject(kind, o)) items.push(toLoom(o));
    } while (cont && !paged);
    items.sort(
      (a, b) =>
        (a.metadata.project ?? "").localeCompare(b.metadata.project ?? "") ||
        a.metadata.name.localeCompare(b.metadata.name),
    );
    return { items, resourceVersion, ...(paged && cont ? { continue: cont } : {}) };
  }

  async watch(
    kind: string,
    opts: WatchOptions,
    onEvent: (e: WatchEvent) => void,
    onEnd?: (err: Error) => void,
  ): Promise<StopWatch> {
    let rv = opts.resourceVersion;
    if (!rv) {
      const current = await this.list(kind, opts);
      for (const o of current.items) onEvent({ type: "ADDED", object: o });
      rv = current.resourceVersion;
    }
    return watchCollection<KubeObject>(
      this.client,
      this.log,
      collectionPath(kind, opts.project),
      { resourceVersion: rv, labelSelector: opts.labelSelector },
      (e) => {
        if (isLoomObject(kind, e.object)) onEvent({ type: e.type, object: toLoom(e.object) });
      },
      onEnd,
    );
  }

  async create(obj: Resource): Promise<Resource> {
    const { kind, project } = parts(obj);
    const body = toKube(obj);
    delete body.metadata.resourceVersion;
    try {
      return toLoom(
        await this.client.request<KubeObject>("POST", collectionPath(kind, project), {
          body,
          query: { fieldManager: "loom" },
        }),
      );
    } catch (err) {
      if (err instanceof NotFoundError && kindByKind(kind)?.namespaced) {
        throw new NotFoundError(
          `project "${project}" not found (no namespace ${namespaceOf(project)}): create the Project first`,
        );
      }
      throw err;
    }
  }

  async update(obj: Resource): Promise<Resource> {
    const applied = await this.applySpec(obj);
    // Finalizers that came with the object at create (a POST) belong to that create, not to
    // this apply: leaving them out of an apply keeps them, and a delete would wait forever.
    // Set the list the caller asked for, as a plain update of that one field.
    const wanted = obj.metadata.finalizers ?? [];
    const kept = applied.metadata.finalizers ?? [];
    if (kept.every((f) => wanted.includes(f))) return applied;
    const { kind, project, name } = parts(obj);
    return toLoom(
      await this.client
        .request<KubeObject>("PATCH", itemPath(kind, project, name), {
          body: { metadata: { finalizers: wanted, resourceVersion: applied.metadata.resourceVersion } },
          contentType: "application/merge-patch+json",
          query: { fieldManager: "loom" },
        })
        .catch((err: unknown) => {
          throw notFound(err, kind, project, name);
        }),
    );
  }

  /**
   * The status replaced whole: a PUT of the status subresource. A plain update, not a
   * server-side apply: the status is Loom's alone, and in bench:k8s a structured merge per write
   * made the status writes (4 per job) kube-apiserver's largest cost.
   */
  updateStatus(obj: Resource): Promise<Resource> {
    return this.writeAt(obj, (body, path) =>
      this.client.request<KubeObject>("PUT", `${path}/status`, { body, query: { fieldManager: "loom" } }),
    );
  }

  /**
   * Adds the finalizer alone: a merge patch of the finalizers list (the object's own entries kept)
   * with the resourceVersion as the precondition, so another writer's entry added meanwhile is a
   * 409 and a retry, never lost. Applying the whole job sent and re-validated the spec and made
   * Loom own every spec field (a user's own server-side apply then conflicted with "loom"); a
   * server-side apply of the finalizer alone cost kube-apiserver a structured merge per job.
   */
  async addFinalizer(obj: Resource, finalizer: string): Promise<Resource> {
    const { kind, project, name } = parts(obj);
    const current = obj.metadata.resourceVersion ? obj : await this.get(kind, project, name);
    const finalizers = current.metadata.finalizers ?? [];
    if (finalizers.includes(finalizer)) return current;
    try {
      return toLoom(
        await this.client.request<KubeObject>("PATCH", itemPath(kind, project, name), {
          body: {
            metadata: {
              finalizers: [...finalizers, finalizer],
              resourceVersion: current.metadata.resourceVersion,
            },
          },
          contentType: "application/merge-patch+json",
          query: { fieldManager: "loom" },
        }),
      );
    } catch (err) {
      throw notFound(err, kind, project, name);
    }
  }

  /** Server-side apply of the object's spec and metadata: `managedFields` tell an admin which fields Loom owns. */
  private applySpec(obj: Resource): Promise<Resource> {
    return this.writeAt(obj, (body, path) => {
      delete body.status;
      return this.client.request<KubeObject>("PATCH", path, {
        body,
        contentType: "application/apply-patch+yaml",
        query: { fieldManager: "loom", force: true },
      });
    });
  }

  /**
   * One write (field manager "loom") with the resourceVersion as a precondition, so that a stale
   * writer gets 409 Conflict instead of overwriting. A caller that sent no resourceVersion asked
   * for "last write wins": read the current one, write, retry conflicts.
   */
  private async writeAt(
    obj: Resource,
    send: (body: KubeObject, path: string) => Promise<KubeObject>,
  ): Promise<Resource> {
    const { kind, project, name } = parts(obj);
    for (let attempt = 0; ; attempt++) {
      const rv =
        obj.metadata.resourceVersion || (await this.get(kind, project, name)).metadata.resourceVersion;
      try {
        return toLoom(
          await send(
            toKube({ ...obj, metadata: { ...obj.metadata, resourceVersion: rv } }),
            itemPath(kind, project, name),
          ),
        );
      } catch (err) {
        const lastWriteWins = !obj.metadata.resourceVersion;
        if (lastWriteWins && err instanceof LoomError && err.code === "Conflict" && attempt < 5) continue;
        throw notFound(err, kind, project, name);
      }
    }
  }

  async delete(
    kind: string,
    project: string,
    name: string,
    opts: { resourceVersion?: string } = {},
  ): Promise<Resource> {
    const before = await this.get(kind, project, name);
    const body = {
      apiVersion: "v1",
      kind: "DeleteOptions",
      propagationPolicy: "Background",
      ...(opts.resourceVersion ? { preconditions: { resourceVersion: opts.resourceVersion } } : {}),
    };
    const res = await this.client
      .request<KubeObject>("DELETE", itemPath(kind, project, name), { body })
      .catch((err: unknown) => {
        throw notFound(err, kind, project, name);
      });
    // The server answers with the object when finalizers hold it, with a Status when it is gone.
    return res?.kind === kind ? toLoom(res) : before;
  }

  async close(): Promise<void> {}
}

function parts(obj: Resource) {
  return { kind: obj.kind, project: obj.metadata.project ?? "", name: obj.metadata.name };
}

function pluralOf(kind: string): string {
  const def = kindByKind(kind);
  if (!def) throw new NotFoundError(`unknown kind ${kind}`);
  return def.plural;
}

function collectionPath(kind: string, project: string | undefined): string {
  const def = kindByKind(kind);
  const plural = pluralOf(kind);
  if (def?.namespaced && project !== undefined && project !== "")
    return `/apis/${API_VERSION}/namespaces/${namespaceOf(project)}/${plural}`;
  return `/apis/${API_VERSION}/${plural}`;
}

function itemPath(kind: string, project: string, name: string): string {
  return `${collectionPath(kind, project)}/${encodeURIComponent(name)}`;
}

/** Namespaced Loom objects outside loom-* namespaces are not part of any project: ignore them. */
function isLoomObject(kind: string, o: KubeObject): boolean {
  return !kindByKind(kind)?.namespaced || projectOf(o.metadata.namespace) !== undefined;
}

/** kube-apiserver's refusal of a continue value it did not give, said as a list of ours says it. */
function badContinue(err: unknown, cont: string | undefined): unknown {
  if (cont && err instanceof BadRequestError)
    return new BadRequestError(
      `invalid continue token (${err.message}): pass the metadata.continue of the previous page unchanged, or list again without it`,
    );
  return err;
}

function notFound(err: unknown, kind: string, project: string, name: string): unknown {
  if (err instanceof NotFoundError) {
    return new NotFoundError(
      project ? `${kind} "${name}" not found in project "${project}"` : `${kind} "${name}" not found`,
    );
  }
  return err;
}

/** Loom's object → the custom resource: project becomes the namespace. */
export function toKube(obj: Resource): KubeObject {
  const m = obj.metadata;
  const metadata: KubeObject["metadata"] = { name: m.name };
  if (kindByKind(obj.kind)?.namespaced) metadata.namespace = namespaceOf(m.project ?? "default");
  for (const k of ["uid", "resourceVersion", "labels", "annotations", "finalizers"] as const) {
    const v = m[k];
    if (v !== undefined && v !== "" && !(Array.isArray(v) && v.length === 0))
      (metadata as Record<string, unknown>)[k] = v;
  }
  const out: KubeObject = { apiVersion: API_VERSION, kind: obj.kind, metadata, spec: obj.spec };
  if (obj.status !== undefined) out.status = obj.status;
  return out;
}

/** The custom resource → Loom's object. */
export function toLoom(o: KubeObject): Resource {
  const m = o.metadata as Record<string, unknown>;
  const metadata: ObjectMeta = {
    name: o.metadata.name,
    uid: String(m.uid ?? ""),
    resourceVersion: String(m.resourceVersion ?? ""),
    generation: Number(m.generation ?? 1),
    creationTimestamp: String(m.creationTimestamp ?? ""),
  };
  const project = projectOf(o.metadata.namespace);
  if (project !== undefined) metadata.project = project;
  if (m.deletionTimestamp) metadata.deletionTimestamp = String(m.deletionTimestamp);
  if (Array.isArray(m.finalizers) && m.finalizers.length) metadata.finalizers = m.finalizers as string[];
  if (m.labels) metadata.labels = m.labels as Record<string, string>;
  if (m.annotations) {
    const { "kubectl.kubernetes.io/last-applied-configuration": _, ...rest } = m.annotations as Record<
      string,
      string
    >;
    if (Object.keys(rest).length) metadata.annotations = rest;
  }
  const out: Resource = { apiVersion: o.apiVersion, kind: o.kind, metadata, spec: o.spec ?? {} };
  if (o.status !== undefined) out.status = o.status;
  return out;
}

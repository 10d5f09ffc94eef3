import { Readable } from "node:stream";
import type { ReadableStream } from "node:stream/web";
import type { Logger } from "pino";
import { parse } from "yaml";
import { CHECKPOINT_MEDIA_TYPE, type Cluster, fleetAttemptBase } from "../../api/cluster.js";
import {
  AlreadyExistsError,
  BadRequestError,
  ConflictError,
  ForbiddenError,
  LoomError,
  NotFoundError,
  UnauthorizedError,
} from "../../api/errors.js";
import { kindByKind, PROJECT, TRAININGJOB } from "../../api/kinds.js";
import type { Resource } from "../../api/meta.js";
import { packTar, unpackTar } from "../../lib/tar.js";
import {
  type CheckpointFiles,
  MAX_SYNCED_CHECKPOINT_BYTES,
  type MemberCluster,
  type MemberConnector,
  type MemberGateway,
} from "../../ports/fleet.js";
import type { LogOptions, WorkloadRef } from "../../ports/runtime.js";
import type { NodeCapacity } from "../../ports/scheduler.js";
import type { ListOptions, ListResult, ObjectEvent, ResourceStore } from "../../ports/store.js";
import { type MemberNodeUsage, readLoomUse } from "./memberuse.js";

const BASE = "/apis/loom.dev/v1alpha1";
/** A member is probed often: a request that has not answered in this long means unreachable. */
const REQUEST_TIMEOUT_MS = 5000;
/** The fleet's API keys in a member live this long; a new one is made well before (see KEY_RENEW_MS). */
const KEY_TTL_SECONDS = 24 * 3600;
const KEY_RENEW_MS = 12 * 3600 * 1000;
/** A checkpoint moves in one request: up to MAX_SYNCED_CHECKPOINT_BYTES, so given longer. */
const CHECKPOINT_TIMEOUT_MS = 120_000;
/** The most a checkpoint's answer may carry: its files and their tar headers. */
const MAX_CHECKPOINT_ANSWER_BYTES = MAX_SYNCED_CHECKPOINT_BYTES + (16 << 20);

/** The server and bearer token a kubeconfig's current context names (a Loom member's credential). */
export function serverAndToken(kubeconfig: string): { server: URL; token: string } {
  // biome-ignore lint/suspicious/noExplicitAny: a kubeconfig as YAML parses it
  const kc = (parse(kubeconfig) ?? {}) as Record<string, any>;
  const ctxName = kc["current-context"] ?? kc.contexts?.[0]?.name;
  const ctx = kc.contexts?.find((c: { name?: string }) => c.name === ctxName)?.context ?? {};
  const cluster = kc.clusters?.find((c: { name?: string }) => c.name === ctx.cluster)?.cluster;
  const user = kc.users?.find((u: { name?: string }) => u.name === ctx.user)?.user;
  if (!cluster?.server || !user?.token)
    throw new Error(
      "the kubeconfig of a Loom member (spec.api: loom) needs a current context whose cluster has a server (the member's Loom URL) and whose user has a token (a Loom admin token there)",
    );
  return { server: new URL(cluster.server), token: String(user.token) };
}

/**
 * A Loom API server (another `loom up`, or an operator's API) as a fleet member (issue 23): its
 * store through Loom's REST API, its nodes from `loom get nodes`, its events, and its gateway,
 * reached with a project API key this control plane makes there for each project it forwards.
 */
export class LoomMember implements MemberCluster {
  readonly store: LoomApiStore;
  readonly events: {
    listFor(ref: { kind: string; project: string; name: string }, limit?: number): Promise<ObjectEvent[]>;
  };
  private readonly keys = new Map<string, { key: string; made: number }>();
  /** The member serves no checkpoints (an operator's API answers 501): not asked again. */
  private noCheckpoints = false;

  constructor(
    private readonly api: LoomApi,
    private readonly cluster: string,
    private readonly log: Logger,
  ) {
    this.store = new LoomApiStore(api);
    this.events = {
      listFor: async (ref, limit = 50) => {
        const q = new URLSearchParams({ kind: ref.kind, name: ref.name, limit: String(limit) });
        const r = await api.request<{ items: ObjectEvent[] }>(
          "GET",
          `${BASE}/projects/${encodeURIComponent(ref.project)}/events?${q}`,
        );
        return r.items;
      },
    };
  }

  /** Why the member's own work on its nodes could not be counted at the last nodes() (undefined: it was). */
  usageError?: string;

  async nodes(holder: string): Promise<NodeCapacity[]> {
    const r = await this.api.request<{ items: MemberNode[] }>("GET", `${BASE}/nodes`);
    const { use, error } = await readLoomUse((path) => this.api.request("GET", path), BASE, r.items, holder);
    this.usageError = error;
    return r.items.map((n) => ({
      name: n.name,
      cpuMillis: n.capacity.cpuMillis,
      memoryBytes: n.capacity.memoryBytes,
      gpus: n.devices?.map((d) => d.id) ?? Array.from({ length: n.capacity.gpus }, (_, i) => `gpu-${i}`),
      ...(n.capacity.pods !== undefined ? { maxWorkers: n.capacity.pods } : {}),
      ...(n.pool && n.pool !== "default" ? { pool: n.pool } : {}),
      ...(n.gpuModel ? { gpuModel: n.gpuModel } : {}),
      ...(use.has(n.name) ? { usedByOthers: use.get(n.name)! } : {}),
    }));
  }

  /**
   * A worker's log, read from the member's API. Attempts are numbered as the control plane shows
   * them (after those the job made before it came here).
   */
  async logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable> {
    const copy = await this.store.get(TRAININGJOB, ref.project, ref.name);
    const base = fleetAttemptBase(copy);
    if (opts.attempt !== undefined && opts.attempt <= base)
      throw new BadRequestError(
        `attempt ${opts.attempt} of ${ref.name} ran before the job was placed in cluster ${this.cluster} (its attempts there are ${base + 1} on), and its log is not read from there`,
      );
    const q = new URLSearchParams({ worker: String(opts.worker) });
    if (opts.attempt !== undefined) q.set("attempt", String(opts.attempt - base));
    if (opts.follow) q.set("follow", "1");
    return this.api.stream(
      `${BASE}/projects/${encodeURIComponent(ref.project)}/trainingjobs/${encodeURIComponent(ref.name)}/log?${q}`,
    );
  }

  async probe(): Promise<{ kubernetes?: string; loom?: string }> {
    const v = await this.api.request<{ version?: string }>("GET", "/version");
    return v.version ? { loom: v.version } : { loom: "unknown" };
  }

  /**
   * The member's gateway is its Loom port (`/v1/*`, `/serving/P/S/*`). Requests go there with a
   * key of the project made in the member (viewer, API key only): it opens that project's
   * services and nothing else, so a request of another project is refused there too.
   */
  async gateway(project: string): Promise<MemberGateway> {
    const held = this.keys.get(project);
    let key = held?.key;
    if (!held || Date.now() - held.made > KEY_RENEW_MS) {
      await ensureProject(this.store, project);
      const made = await this.api.request<{ key: string }>(
        "POST",
        `${BASE}/projects/${encodeURIComponent(project)}/apikeys`,
        { name: `fleet-gateway-${this.cluster}`, ttl: KEY_TTL_SECONDS },
      );
      key = made.key;
      this.keys.set(project, { key, made: Date.now() });
      this.log.info({ project }, "made the fleet gateway's API key in the member");
    }
    const url = this.api.server;
    if (url.protocol !== "http:")
      throw new Error(
        `the member's gateway is ${url.origin}: the control plane's gateway forwards over HTTP only (put the members on a private network)`,
      );
    return {
      host: url.hostname,
      port: Number(url.port || 80),
      headers: { authorization: `Bearer ${key}` },
    };
  }

  /**
   * The copy's latest checkpoint, read through the member's API (a tar of its LOOM_CHECKPOINT_DIR,
   * regular files only, read again here as untrusted). Undefined while it has none, or where the
   * member serves none.
   */
  async checkpoint(ref: WorkloadRef): Promise<CheckpointFiles | undefined> {
    if (this.noCheckpoints) return undefined;
    let tar: Buffer;
    try {
      tar = await this.api.bytes("GET", checkpointPath(ref), undefined, MAX_CHECKPOINT_ANSWER_BYTES);
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      if (this.unsupported(err)) return undefined;
      throw err;
    }
    return unpackTar(tar, MAX_SYNCED_CHECKPOINT_BYTES);
  }

  /**
   * Seeds the copy's first attempt with the control plane's checkpoint (the member's own Loom
   * starts it once the files are there). Returns how many workers still wait for it.
   */
  async seed(ref: WorkloadRef, files: CheckpointFiles): Promise<number> {
    if (this.noCheckpoints) return 0;
    try {
      const answer = await this.api.bytes("PUT", checkpointPath(ref), packTar(files), 64 << 10);
      const waiting = (JSON.parse(answer.toString("utf8")) as { waiting?: unknown }).waiting;
      return typeof waiting === "number" ? waiting : 0;
    } catch (err) {
      // The copy is gone (or is another job's now): nothing waits for this seed.
      if (err instanceof NotFoundError) return 0;
      if (this.unsupported(err)) return 0;
      throw err;
    }
  }

  /** A member without the checkpoint routes' store (501): said once, then not asked again. */
  private unsupported(err: unknown): boolean {
    if (!(err instanceof LoomError) || err.code !== "NotImplemented") return false;
    this.noCheckpoints = true;
    this.log.warn(
      { err: err.message },
      "the member serves no checkpoints: its jobs are not synced (one that fails over starts from its own storage)",
    );
    return true;
  }

  /** This control plane's lease in the member (its own Loom fences the copies placed there by it). */
  async renewLease(holder: string, durationSeconds: number): Promise<void> {
    await this.api.request("PUT", `${BASE}/fleetleases/${encodeURIComponent(holder)}`, {
      leaseDurationSeconds: durationSeconds,
    });
  }

  close(): void {
    this.keys.clear();
  }
}

/** A job's checkpoint route in the member, for the copy by its uid there. */
function checkpointPath(ref: WorkloadRef): string {
  return `${BASE}/projects/${encodeURIComponent(ref.project)}/trainingjobs/${encodeURIComponent(ref.name)}/checkpoint?uid=${encodeURIComponent(ref.uid)}`;
}

interface MemberNode extends MemberNodeUsage {
  name: string;
  pool?: string;
  gpuModel?: string;
  capacity: { cpuMillis: number; memoryBytes: number; gpus: number; pods?: number };
  devices?: { id: string }[];
}

/** The project in the member (without a quota: the queue, and so the quota, is the control plane's). */
export async function ensureProject(store: ResourceStore, project: string): Promise<void> {
  try {
    await store.get(PROJECT, "", project);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
    await store
      .create({
        apiVersion: "loom.dev/v1alpha1",
        kind: PROJECT,
        metadata: { name: project },
        spec: {},
      } as never)
      .catch((e: unknown) => {
        if (!(e instanceof AlreadyExistsError)) throw e;
      });
  }
}

/** Loom's REST API with a bearer token; its Status answers become Loom's domain errors. */
export class LoomApi {
  constructor(
    readonly server: URL,
    private readonly token: string,
  ) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(new URL(path, this.server), {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    return this.answer<T>(res);
  }

  /**
   * A request whose body or answer is bytes (a checkpoint's tar), with a timeout for moving it;
   * an answer longer than maxBytes is refused rather than held.
   */
  async bytes(method: string, path: string, body: Buffer | undefined, maxBytes: number): Promise<Buffer> {
    const res = await fetch(new URL(path, this.server), {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body ? { "content-type": CHECKPOINT_MEDIA_TYPE } : {}),
      },
      // A Buffer of its own memory (packTar's), which fetch sends as it is.
      ...(body ? { body: body as Uint8Array<ArrayBuffer> } : {}),
      signal: AbortSignal.timeout(CHECKPOINT_TIMEOUT_MS),
    });
    if (!res.ok) return this.answer(res);
    const chunks: Buffer[] = [];
    let total = 0;
    // Leaving the loop (the throw) destroys the stream, and with it the answer's connection.
    for await (const chunk of await streamOf(res)) {
      total += (chunk as Uint8Array).length;
      if (total > maxBytes)
        throw new LoomError(
          "MemberError",
          502,
          `member ${this.server.origin}: an answer of more than ${maxBytes} bytes to ${method} ${path.split("?")[0]} is refused`,
        );
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  /** A streaming GET (a worker's log, followed or not). */
  async stream(path: string): Promise<Readable> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let res: Response;
    try {
      res = await fetch(new URL(path, this.server), {
        headers: { authorization: `Bearer ${this.token}` },
        signal: abort.signal,
      });
    } finally {
      clearTimeout(timer);
    }
    if (!res.ok) return this.answer(res);
    return streamOf(res);
  }

  private async answer<T>(res: Response): Promise<T> {
    const text = await res.text();
    // biome-ignore lint/suspicious/noExplicitAny: a JSON answer of the API
    let parsed: any;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (res.ok) return parsed as T;
    const message = `member ${this.server.origin}: ${parsed?.message ?? (text.slice(0, 200) || res.statusText)}`;
    throw errorOf(res.status, parsed?.reason, message);
  }
}

/** A streamed answer (a log): headers within the request timeout, the body as long as it lasts. */
async function streamOf(res: Response): Promise<Readable> {
  return res.body ? Readable.fromWeb(res.body as ReadableStream<Uint8Array>) : Readable.from([]);
}

function errorOf(status: number, reason: string | undefined, message: string): Error {
  if (status === 404) return new NotFoundError(message);
  if (status === 409)
    return reason === "AlreadyExists" ? new AlreadyExistsError(message) : new ConflictError(message);
  if (status === 401) return new UnauthorizedError(message);
  if (status === 403) return new ForbiddenError(message);
  if (status === 400 || status === 422) return new BadRequestError(message);
  if (status === 501) return new LoomError("NotImplemented", 501, message);
  return new LoomError("MemberError", 502, message);
}

/**
 * The ResourceStore port over a Loom API server: what the fleet needs of a member's store (get,
 * list, create, update, delete). No watch: the control plane reads members by polling.
 */
export class LoomApiStore implements ResourceStore {
  constructor(private readonly api: LoomApi) {}

  private path(kind: string, project: string, name?: string): string {
    const def = kindByKind(kind);
    if (!def) throw new BadRequestError(`unknown kind ${kind}`);
    const tail = name ? `/${encodeURIComponent(name)}` : "";
    if (!def.namespaced) return `${BASE}/${def.plural}${tail}`;
    return `${BASE}/projects/${encodeURIComponent(project)}/${def.plural}${tail}`;
  }

  get(kind: string, project: string, name: string): Promise<Resource> {
    return this.api.request("GET", this.path(kind, project, name));
  }

  async list(kind: string, opts: ListOptions = {}): Promise<ListResult> {
    const def = kindByKind(kind);
    if (!def) throw new BadRequestError(`unknown kind ${kind}`);
    const q = opts.labelSelector ? `?labelSelector=${encodeURIComponent(opts.labelSelector)}` : "";
    const path =
      opts.project === undefined || !def.namespaced
        ? `${BASE}/${def.plural}${q}`
        : `${this.path(kind, opts.project)}${q}`;
    const r = await this.api.request<{ items: Resource[]; metadata?: { resourceVersion?: string } }>(
      "GET",
      path,
    );
    return { items: r.items, resourceVersion: r.metadata?.resourceVersion ?? "0" };
  }

  watch(): Promise<() => void> {
    return Promise.reject(new Error("a Loom member's store is read by polling, not watched"));
  }

  create(obj: Resource): Promise<Resource> {
    const project = obj.metadata.project ?? "";
    return this.api.request("POST", this.path(obj.kind, project).replace(/\/$/, ""), obj);
  }

  update(obj: Resource): Promise<Resource> {
    return this.api.request("PUT", this.path(obj.kind, obj.metadata.project ?? "", obj.metadata.name), obj);
  }

  updateStatus(obj: Resource): Promise<Resource> {
    const path = `${this.path(obj.kind, obj.metadata.project ?? "", obj.metadata.name)}/status`;
    return this.api.request("PUT", path, obj);
  }

  delete(kind: string, project: string, name: string): Promise<Resource> {
    return this.api.request("DELETE", this.path(kind, project, name));
  }

  async close(): Promise<void> {}
}

/** Connects members that are Loom API servers (spec.api: loom) from the kubeconfig kept for them. */
export function loomMemberConnector(log: Logger): MemberConnector {
  return {
    connect: async (cluster: Cluster, kubeconfig: string) => {
      const { server, token } = serverAndToken(kubeconfig);
      const name = cluster.metadata.name;
      return new LoomMember(
        new LoomApi(server, token),
        name,
        log.child({ component: "fleet", cluster: name }),
      );
    },
  };
}

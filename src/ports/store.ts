import type { Resource } from "../api/meta.js";

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

export interface WatchEvent {
  type: WatchEventType;
  object: Resource;
}

export interface ListOptions {
  /** Only this project; undefined lists every project (and cluster-scoped kinds ignore it). */
  project?: string;
  labelSelector?: string;
  /** At most this many items, then `continue` (Kubernetes' paged list); a store may give all. */
  limit?: number;
  /** The previous page's `continue`: go on after its last item. */
  continue?: string;
}

export interface ListResult {
  items: Resource[];
  /**
   * The store's revision at the time of the list (of its first page, for every page): pass it to
   * watch to see every later change.
   */
  resourceVersion: string;
  /** Set when more items follow: pass it as `continue` for the next page. */
  continue?: string;
}

export interface WatchOptions extends ListOptions {
  /** Deliver every change after this revision. Omitted: only changes from now on. */
  resourceVersion?: string;
}

/** Stops a watch. Idempotent. */
export type StopWatch = () => void;

/**
 * The persistence port. Every platform implements it: SQLite embedded, CRDs on a Kubernetes API
 * server. Semantics follow Kubernetes: one monotonically increasing resourceVersion across the
 * store, optimistic concurrency on it, generation bumped on spec changes, finalizers delaying
 * deletion, watches that resume from a revision or fail with ExpiredError.
 */
export interface ResourceStore {
  /** Throws NotFoundError. */
  get(kind: string, project: string, name: string): Promise<Resource>;
  list(kind: string, opts?: ListOptions): Promise<ListResult>;
  /**
   * Calls onEvent for each change, in revision order, until stopped. Rejects with ExpiredError
   * when opts.resourceVersion is older than the retained history (the caller must relist).
   * onEnd is called if the watch ends by itself (connection lost, history expired): the caller
   * relists and watches again.
   */
  watch(
    kind: string,
    opts: WatchOptions,
    onEvent: (e: WatchEvent) => void,
    onEnd?: (err: Error) => void,
  ): Promise<StopWatch>;
  /** Assigns uid, resourceVersion, generation 1 and creationTimestamp. Throws AlreadyExistsError. */
  create(obj: Resource): Promise<Resource>;
  /**
   * Replaces spec, labels, annotations and finalizers (status is kept). With
   * metadata.resourceVersion set, a stale version throws ConflictError. An object being deleted
   * whose last finalizer is removed is deleted.
   */
  update(obj: Resource): Promise<Resource>;
  /** Replaces status only; same concurrency rule as update. */
  updateStatus(obj: Resource): Promise<Resource>;
  /**
   * Adds one finalizer and changes nothing else; same concurrency rule as update. Optional: a
   * store without it gets update() with the finalizer added. Kubernetes: applies the finalizer
   * alone, so Loom neither sends nor takes ownership of the user's spec.
   */
  addFinalizer?(obj: Resource, finalizer: string): Promise<Resource>;
  /**
   * Deletes at once, or — when finalizers remain — marks deletionTimestamp and returns the marked
   * object; controllers finish the job and remove their finalizer.
   */
  delete(kind: string, project: string, name: string, opts?: { resourceVersion?: string }): Promise<Resource>;
  close(): Promise<void>;
}

/** A human-readable record attached to an object: what happened and why (kubectl describe). */
export interface ObjectEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
  count: number;
  firstTimestamp: string;
  lastTimestamp: string;
}

export interface EventRef {
  kind: string;
  project: string;
  name: string;
  uid: string;
}

/** Records events about objects; repeated identical events are counted, not duplicated. */
export interface EventRecorder {
  record(ref: EventRef, type: "Normal" | "Warning", reason: string, message: string): Promise<void>;
  listFor(ref: Omit<EventRef, "uid"> & { uid?: string }, limit?: number): Promise<ObjectEvent[]>;
}

export type Role = "admin" | "editor" | "viewer";

/** What an API key may do at the gateway: these services (all of its project's when unset), this fast. */
export interface ApiKeyScope {
  services?: string[];
  /** Enforced by every gateway replica together (gateway/ratelimit.ts); unset: no limit. */
  rateLimit?: { requestsPerMinute?: number; tokensPerMinute?: number };
}

export interface TokenInfo {
  id: string;
  name: string;
  role: Role;
  /** Set: the token reaches this project only. */
  project?: string;
  /** An API key: reaches the inference gateway only, for its project (and these services, if set). */
  apiKey?: ApiKeyScope;
  /** When set (ISO time): refused from then on. */
  expiresAt?: string;
  /**
   * A workload's own credential (a training job's workers, a sweep trial, a replica): it may log to
   * its own runs and read what its spec references, nothing else; revoked when the workload ends.
   */
  workload?: WorkloadRef;
  /** The metadata.uid of `project` when the token was made (see TokenCreateOptions.projectUid). */
  projectUid?: string;
}

/** The workload a credential belongs to. */
export interface WorkloadRef {
  kind: string;
  project: string;
  name: string;
  uid: string;
}

/** What a new token is for; all optional (an unscoped token of its role that never expires). */
export interface TokenCreateOptions {
  /** The one project it reaches. */
  project?: string;
  /** That project's metadata.uid: a project deleted and re-created honours none of its old tokens. */
  projectUid?: string;
  /** An API key for the inference gateway (see TokenInfo.apiKey). */
  apiKey?: ApiKeyScope;
  /** Seconds until it is refused. */
  ttlSeconds?: number;
  /** The workload it belongs to (TokenInfo.workload); revoked with revokeWorkload when that ends. */
  workload?: WorkloadRef;
}

/** A token as listed: never its secret nor its hash. */
export interface TokenSummary extends TokenInfo {
  createdAt: string;
  /** Approximate (recorded at most once a minute). */
  lastUsedAt?: string;
}

/** Bearer tokens, stored only as hashes. */
export interface TokenStore {
  /**
   * Creates a token and returns its secret once. A string third argument is the older form of
   * `{ project }` (with apiKey as the fourth).
   */
  create(
    name: string,
    role: Role,
    opts?: TokenCreateOptions | string,
    apiKey?: ApiKeyScope,
  ): Promise<{ token: string; info: TokenInfo }>;
  /** The token's owner, or undefined if unknown, revoked or expired. */
  verify(token: string): Promise<TokenInfo | undefined>;
  /** Tokens (not API keys), or a project's API keys with `apiKeys`, oldest first. */
  list(filter?: { project?: string; apiKeys?: boolean }): Promise<TokenSummary[]>;
  /** Removes one token; false if there was none of that id. */
  revoke(id: string): Promise<boolean>;
  /** Removes every token of a workload (by its uid), or only its API keys with `apiKeys`; returns how many. */
  revokeWorkload(uid: string, opts?: { apiKeys?: boolean }): Promise<number>;
}

/** TokenCreateOptions from either form of TokenStore.create's arguments. */
export function tokenOptions(
  opts: TokenCreateOptions | string | undefined,
  apiKey: ApiKeyScope | undefined,
): TokenCreateOptions {
  const o: TokenCreateOptions = typeof opts === "string" ? { project: opts } : { ...(opts ?? {}) };
  if (apiKey && !o.apiKey) o.apiKey = apiKey;
  return o;
}

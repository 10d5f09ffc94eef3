/**
 * The audit log port: who did what to which object, from where, and how it ended. Every write
 * through Loom's API and every request refused for want of a credential or a permission is one
 * entry. Secrets never enter it: no headers but the user agent, no bodies but an object's name.
 */

/** Who made the request: the token as verified (absent from an entry when none was valid). */
export interface AuditPrincipal {
  /** The token's id (stable across renames, what `loom token revoke` names). */
  id: string;
  name: string;
  role: string;
  /** The one project the token reaches; absent for every project. */
  project?: string;
  /** True for a gateway API key. */
  apiKey?: boolean;
}

/** The object a request addressed; for paths outside Loom's resources, only what is known. */
export interface AuditObject {
  /** The plural (trainingjobs, projects, tokens, apikeys), or "mlflow", "gateway", … */
  kind?: string;
  project?: string;
  name?: string;
  /** status, log, scale, … */
  subresource?: string;
}

export interface AuditEntry {
  /** When the answer was sent (ms since the epoch). */
  time: number;
  principal?: AuditPrincipal;
  /** create, update, patch, delete, or the method lowercased where no object verb applies. */
  verb: string;
  method: string;
  /** The request path without its query (a query may carry anything). */
  path: string;
  object: AuditObject;
  /** The remote address and user agent. */
  source: { address: string; userAgent?: string };
  /** The HTTP status answered. */
  status: number;
  /** False when refused for authentication or authorization (401, 403). */
  allowed: boolean;
  /** The error message for 4xx and 5xx answers. */
  reason?: string;
}

/** An entry as stored: with its position in the log. */
export interface AuditRecord extends AuditEntry {
  id: number;
}

export interface AuditQuery {
  /** Entries about this project's objects, or made by a token scoped to it. */
  project?: string;
  /** Only entries at or after this time (ms since the epoch). */
  since?: number;
  /** The newest this many (default 500). */
  limit?: number;
}

/** What the log has done since it opened (Prometheus counters read these). */
export interface AuditCounts {
  written: number;
  /** Entries lost: the buffer was full (the store too slow or failing) or a batch failed. */
  dropped: number;
}

export interface AuditLog {
  /**
   * Queues an entry; never waits and never throws, so the request it describes is not slowed.
   * Entries are written in batches shortly after.
   */
  record(entry: AuditEntry): void;
  /** Entries matching the query, oldest first (the newest `limit` of them); flushes first. */
  list(query: AuditQuery): Promise<AuditRecord[]>;
  counts(): AuditCounts;
  /** Writes what is queued. */
  flush(): Promise<void>;
  /** Flushes and stops the log's timers; later entries are dropped. */
  close(): Promise<void>;
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "30m", "1h", "7d" in milliseconds; undefined when the text is not such a duration. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)([smhd])$/.exec(text.trim());
  return m ? Number(m[1]) * UNITS[m[2]!]! : undefined;
}

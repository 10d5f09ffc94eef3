/** Loom's API as the console calls it: same origin, the session cookie, the CSRF header on writes. */

export const BASE = "/apis/loom.dev/v1alpha1";

/** The list path of a kind: one project's, or every project's for a token that reaches them all. */
export function kindPath(plural: string, project: string | undefined): string {
  return project ? `${BASE}/projects/${encodeURIComponent(project)}/${plural}` : `${BASE}/${plural}`;
}

/** An API refusal, with the server's own message (which says what to do). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The CSRF cookie's value, which every write echoes in x-loom-csrf (double submit). */
export function csrfToken(): string {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "loom_csrf") return rest.join("=");
  }
  return "";
}

async function failure(res: Response): Promise<ApiError> {
  const text = await res.text();
  let message = text || res.statusText;
  try {
    const body = JSON.parse(text) as { message?: string };
    if (body.message) message = body.message;
  } catch {}
  return new ApiError(res.status, message);
}

/** One JSON request; throws ApiError with the server's message when refused. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (method !== "GET") headers["x-loom-csrf"] = csrfToken();
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

/** Reads a streamed response line by line (watch events, followed logs) until it ends or is aborted. */
export async function streamLines(
  path: string,
  onLines: (lines: string[]) => void,
  signal: AbortSignal,
): Promise<void> {
  const res = await fetch(path, { credentials: "same-origin", signal });
  if (!res.ok || !res.body) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const parts = (rest + value).split("\n");
    rest = parts.pop() ?? "";
    if (parts.length) onLines(parts);
  }
  if (rest) onLines([rest]);
}

export interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

export interface Resource {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    project?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
  };
  spec?: Record<string, unknown>;
  status?: { phase?: string; conditions?: Condition[] } & Record<string, unknown>;
}

export interface WorkerStatus {
  index: number;
  state: string;
  pid?: number;
  exitCode?: number;
  signal?: string;
  startTime?: string;
  finishTime?: string;
}

export interface Job extends Resource {
  status?: Resource["status"] & {
    attempts?: number;
    queuePosition?: number;
    ready?: string;
    restarts?: number;
    workers?: WorkerStatus[];
    startTime?: string;
    completionTime?: string;
    admission?: { node: string; workers?: number };
    checkpoint?: { time: string; step?: number };
  };
}

export interface Me {
  name: string;
  role: "admin" | "editor" | "viewer";
  project?: string;
  canWrite: boolean;
  admin: boolean;
  allProjects: boolean;
}

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "ERROR" | "BOOKMARK";
  object: T;
}

/** A resource's key in lists: project/name. */
export const keyOf = (r: Resource) => `${r.metadata.project ?? ""}/${r.metadata.name}`;

/** The condition of a type, if set. */
export const condition = (r: Resource, type: string) => r.status?.conditions?.find((c) => c.type === type);

/** "3m", "2h", "5d": how long ago a time was. */
export function age(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

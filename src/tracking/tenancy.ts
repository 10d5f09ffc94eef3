import type { TokenInfo } from "../ports/store.js";
import { MlflowError } from "./errors.js";
import type { KeyValue } from "./types.js";
import { WORKLOAD_UID_TAG } from "./workloads.js";

/**
 * Tenancy: a token scoped to a project reaches that project only, and a viewer's token only
 * reads. Unscoped tokens (the admin's) reach every project. (The server decides first, from the
 * route's rule; this holds for the handlers on their own.)
 */
export function authorize(principal: TokenInfo | undefined, project: string, write: boolean): void {
  if (!principal) throw new MlflowError("UNAUTHENTICATED", "missing bearer token: set MLFLOW_TRACKING_TOKEN");
  if (principal.apiKey)
    throw new MlflowError(
      "PERMISSION_DENIED",
      `API key "${principal.name}" reaches the inference gateway only; use a token for tracking`,
    );
  const reach = principal.workload?.project ?? principal.project;
  if (reach && reach !== project)
    throw new MlflowError(
      "PERMISSION_DENIED",
      `token "${principal.name}" is for project ${reach}; it cannot reach project ${project}`,
    );
  if (write && principal.role === "viewer" && !principal.workload)
    throw new MlflowError(
      "PERMISSION_DENIED",
      `token "${principal.name}" is a viewer's: it reads, it does not write`,
    );
}

/**
 * A workload's credential writes only to its own runs: those tagged loom.workload_uid with its
 * uid (the run Loom made for it, or one it created: creation tags it). Throws PERMISSION_DENIED.
 */
export function authorizeRunWrite(
  principal: TokenInfo,
  runId: string,
  tags: readonly KeyValue[] | undefined,
): void {
  const w = principal.workload;
  if (!w) return;
  const owner = tags?.find((t) => t.key === WORKLOAD_UID_TAG)?.value;
  if (owner !== w.uid)
    throw new MlflowError(
      "PERMISSION_DENIED",
      `the credential of ${w.kind} ${w.project}/${w.name} writes to its own runs only; run ${runId} is not one of them`,
    );
}

/** A workload's credential changes only traces it started (tagged with its uid), as for runs. */
export function authorizeTraceWrite(
  principal: TokenInfo,
  traceId: string,
  tags: Readonly<Record<string, string>> | undefined,
): void {
  const w = principal.workload;
  if (!w) return;
  if (tags?.[WORKLOAD_UID_TAG] !== w.uid)
    throw new MlflowError(
      "PERMISSION_DENIED",
      `the credential of ${w.kind} ${w.project}/${w.name} writes to its own traces only; trace ${traceId} is not one of them`,
    );
}

/**
 * A StartTraceV3 body sent with a workload's credential: its trace_info's tags get the workload's
 * uid (whatever was sent), so its later uploads and tag changes are known as its own.
 */
export function tagTraceForWorkload(principal: TokenInfo, fields: Record<string, unknown>): void {
  const w = principal.workload;
  if (!w) return;
  if (!fields.trace || typeof fields.trace !== "object") fields.trace = {};
  const trace = fields.trace as Record<string, unknown>;
  if (!trace.trace_info || typeof trace.trace_info !== "object") trace.trace_info = {};
  const info = trace.trace_info as Record<string, unknown>;
  const tags = info.tags && typeof info.tags === "object" && !Array.isArray(info.tags) ? info.tags : {};
  info.tags = { ...(tags as Record<string, unknown>), [WORKLOAD_UID_TAG]: w.uid };
}

/** The tags a run created with a workload's credential gets: its own, with the workload's uid (whatever was sent). */
export function tagsForWorkloadRun(principal: TokenInfo, tags: unknown): unknown {
  const w = principal.workload;
  if (!w) return tags;
  const sent = Array.isArray(tags) ? tags : [];
  return [
    ...sent.filter((t) => !(t && typeof t === "object" && (t as KeyValue).key === WORKLOAD_UID_TAG)),
    { key: WORKLOAD_UID_TAG, value: w.uid },
  ];
}

import type { Logger } from "pino";
import type { ModelAccess, WorkloadModels } from "../ports/models.js";
import type { WorkloadRef } from "../ports/runtime.js";
import type { WorkloadTracking } from "../ports/tracking.js";

/**
 * What a long-running workload (a Workspace, an App) is given to reach its project with no
 * configuration: the project's models (OPENAI_BASE_URL and a key file, ports/models.ts) and its
 * tracking (MLFLOW_TRACKING_URI and ~/.mlflow/credentials, ports/tracking.ts), one credential of
 * each per revision while this process lives, all revoked when the workload stops or goes.
 * Secrets are only ever files under the replica's private HOME; env holds their paths.
 */
export interface WorkloadAccessDeps {
  models?: WorkloadModels;
  tracking?: Pick<WorkloadTracking, "sessionCredentials" | "revokeCredentials">;
  log: Logger;
}

/**
 * The workload's access for a revision: env (no secret in it) and files, or undefined when the
 * platform gives none. Being unable to mint either never stops a workload: it starts without it.
 */
export async function revisionAccess(
  deps: WorkloadAccessDeps,
  ref: WorkloadRef,
  revision: string,
): Promise<ModelAccess | undefined> {
  const parts: ModelAccess[] = [];
  const what = ref.kind.toLowerCase();
  try {
    const models = await deps.models?.access(ref, revision);
    if (models) parts.push(models);
  } catch (err) {
    deps.log.warn({ err, [what]: ref.name }, `could not make the ${what}'s model key; starting without it`);
  }
  try {
    const tracking = await deps.tracking?.sessionCredentials?.(ref, revision);
    if (tracking) parts.push(tracking);
  } catch (err) {
    deps.log.warn(
      { err, [what]: ref.name },
      `could not make the ${what}'s tracking credential; starting without it`,
    );
  }
  if (parts.length === 0) return undefined;
  return {
    env: Object.assign({}, ...parts.map((p) => p.env)),
    files: parts.flatMap((p) => p.files),
  };
}

/** Revokes every credential the workload was given (models and tracking): when it stops or goes. */
export async function revokeAccess(deps: WorkloadAccessDeps, ref: WorkloadRef): Promise<void> {
  const what = ref.kind.toLowerCase();
  try {
    await deps.models?.revoke(ref);
  } catch (err) {
    deps.log.warn({ err, [what]: ref.name }, `could not revoke the ${what}'s model keys`);
  }
  try {
    await deps.tracking?.revokeCredentials(ref);
  } catch (err) {
    deps.log.warn({ err, [what]: ref.name }, `could not revoke the ${what}'s tracking credential`);
  }
}

import type { SecretFile, WorkloadRef } from "./runtime.js";

/**
 * Zero-configuration access to the project's models from inside a workload (a TrainingJob's
 * workers, a Workspace, an App): OPENAI_BASE_URL names Loom's gateway, and an API key limited to
 * the workload's project (made as `loom apikey create` makes one, so the gateway's per-key limits
 * and metrics count its calls) is a file, never an env var. The official openai Python client
 * reads its key only from OPENAI_API_KEY or its constructor: a sitecustomize.py on the workload's
 * PYTHONPATH bridges the two (see server/modelaccess.ts).
 */

/** Where, under the workload's HOME, its key is (Kubernetes: a key of its credentials Secret). */
export const MODEL_KEY_FILE = ".loom/openai-key";
/** The directory, under HOME, holding the sitecustomize.py bridge; first on PYTHONPATH. */
export const MODEL_PYTHON_DIR = ".loom/python";
/** Names the key file (a path, not a secret): what the bridge and other clients read. */
export const MODEL_KEY_ENV = "LOOM_OPENAI_KEY_FILE";

/** A workload's model access: env to set (no secret in it) and files under its HOME. */
export interface ModelAccess {
  env: Record<string, string>;
  files: SecretFile[];
}

export interface WorkloadModels {
  /**
   * The workload's access for one `session` (a job's attempt, a workspace's revision).
   * `exclusive`: a new key each call, the workload's earlier ones revoked (a job's attempt, as its
   * tracking token). Otherwise the same key for the same session while this process lives, and
   * earlier ones stay valid until `revoke` (a replica re-adopted after a restart keeps its key).
   */
  access(ref: WorkloadRef, session: string, opts?: { exclusive?: boolean }): Promise<ModelAccess>;
  /** Revokes every model key of the workload: call when it ends or stops. */
  revoke(ref: WorkloadRef): Promise<void>;
}

/**
 * The workload's env with model access: Loom's variables under the workload's own (a spec's
 * OPENAI_BASE_URL wins), and the bridge's directory first on PYTHONPATH before the spec's own.
 */
export function withModelAccess(
  env: Record<string, string>,
  access: ModelAccess | undefined,
): Record<string, string> {
  if (!access) return env;
  const ours = access.env.PYTHONPATH;
  const theirs = env.PYTHONPATH;
  return {
    ...access.env,
    ...env,
    ...(ours ? { PYTHONPATH: theirs ? `${ours}:${theirs}` : ours } : {}),
  };
}

import { createHash } from "node:crypto";
import { MODEL_KEY_ENV, MODEL_KEY_FILE, MODEL_PYTHON_DIR } from "../../ports/models.js";
import type { SecretFile, WorkloadRef } from "../../ports/runtime.js";
import { namespaceOf, ownerRef, workloadLabels } from "./naming.js";

/** Where a workload's credential files are mounted (a Secret volume, read-only). */
export const CREDENTIALS_DIR = "/var/run/loom/credentials";
/** The writable home Loom gives a pod with credentials, unless its spec sets HOME. */
const HOME_DIR = "/home/loom";
/** The Secret key of the mlflow client's credentials file, mounted at $HOME/.mlflow/credentials. */
export const MLFLOW_CREDENTIALS_KEY = "mlflow-credentials";
/** The Secret key of the bare token (for clients other than mlflow: read it, send it as Bearer). */
export const TOKEN_KEY = "token";
/** The Secret key of the workload's model API key (ports/models.ts), at CREDENTIALS_DIR/openai-key. */
export const MODEL_KEY = "openai-key";
/** The Secret key of the openai bridge (server/modelaccess.ts), mounted alone in MODEL_PYTHON_PATH. */
export const SITECUSTOMIZE_KEY = "sitecustomize.py";
/** The directory on PYTHONPATH holding only the bridge (not the key: nothing else there to import). */
export const MODEL_PYTHON_PATH = "/var/run/loom/python";

/**
 * Env vars that carry a credential. On Kubernetes a pod's env is readable by anyone who may read
 * the pod (project viewers), so these never reach a pod's env: they become files in its Secret.
 */
const CREDENTIAL_ENV = ["MLFLOW_TRACKING_TOKEN"] as const;

/** A workload's credentials: file name (a Secret key) to content. */
export type CredentialFiles = Record<string, string>;

/**
 * Splits a worker's env into what may be shown (the pod's env) and the credential files it
 * stands for. This is the adapter for a tracking port that still hands the token over as env
 * (MLFLOW_TRACKING_TOKEN): the token becomes the `token` file and an mlflow credentials file
 * (the mlflow client sends it as the Basic password), never an env var.
 */
export function splitCredentials(env: Record<string, string>): {
  env: Record<string, string>;
  files: CredentialFiles;
} {
  const visible: Record<string, string> = {};
  const files: CredentialFiles = {};
  for (const [name, value] of Object.entries(env)) {
    if (!(CREDENTIAL_ENV as readonly string[]).includes(name)) visible[name] = value;
    else if (!files[TOKEN_KEY]) Object.assign(files, tokenFiles(value));
  }
  return { env: visible, files };
}

/**
 * The credential files the tracking port hands a worker (paths under its HOME: the mlflow
 * client's `.mlflow/credentials`, the bare token at `.loom/token`) as the Secret's keys.
 */
export function secretFileCredentials(files: SecretFile[] | undefined): CredentialFiles {
  const out: CredentialFiles = {};
  for (const f of files ?? []) {
    if (f.path === ".mlflow/credentials") out[MLFLOW_CREDENTIALS_KEY] = f.data;
    else if (f.path === ".loom/token") out[TOKEN_KEY] = f.data.trim();
    else if (f.path === MODEL_KEY_FILE) out[MODEL_KEY] = f.data;
    else if (f.path === `${MODEL_PYTHON_DIR}/sitecustomize.py`) out[SITECUSTOMIZE_KEY] = f.data;
    else out[f.path.replace(/[^A-Za-z0-9._-]/g, "-")] = f.data;
  }
  return out;
}

/** The files one bearer token is given as: itself, and the mlflow client's credentials file. */
export function tokenFiles(token: string): CredentialFiles {
  return {
    [TOKEN_KEY]: token,
    [MLFLOW_CREDENTIALS_KEY]: `[mlflow]\nmlflow_tracking_username = loom\nmlflow_tracking_password = ${token}\n`,
  };
}

/**
 * The name of a workload's (or a serving revision's) credentials Secret; a name too long to keep
 * whole is cut and given a digest of itself, so two long names never share a Secret.
 */
export function credentialSecretName(owner: string): string {
  const suffix = "-credentials";
  if (owner.length + suffix.length <= 63) return `${owner}${suffix}`;
  const digest = createHash("sha256").update(owner).digest("hex").slice(0, 8);
  return `${owner.slice(0, 63 - suffix.length - 9)}-${digest}${suffix}`;
}

/**
 * One Secret per workload, owned by it: deleting the workload garbage-collects the Secret, and
 * the runtime deletes it when the workload ends. Project members have no access to Secrets.
 */
export function credentialSecret(ref: WorkloadRef, name: string, files: CredentialFiles) {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name,
      namespace: namespaceOf(ref.project),
      labels: workloadLabels(ref),
      ownerReferences: [ownerRef(ref)],
    },
    type: "Opaque",
    data: Object.fromEntries(
      Object.entries(files).map(([k, v]) => [k, Buffer.from(v, "utf8").toString("base64")]),
    ),
  };
}

/**
 * What a pod needs to see its credentials as files: the Secret mounted read-only at
 * CREDENTIALS_DIR (readable by the pod's group only), the mlflow file at
 * $HOME/.mlflow/credentials, a writable $HOME when the spec sets none, and env that names where
 * the files are (never what they hold).
 */
export function credentialMounts(
  secretName: string,
  files: CredentialFiles,
  workerEnv: Record<string, string>,
): { volumes: unknown[]; volumeMounts: unknown[]; env: Record<string, string> } {
  const home = workerEnv.HOME;
  const volumes: unknown[] = [
    { name: "loom-credentials", secret: { secretName, defaultMode: 0o440 } },
    ...(home ? [] : [{ name: "loom-home", emptyDir: {} }]),
  ];
  const volumeMounts: unknown[] = [
    ...(home ? [] : [{ name: "loom-home", mountPath: HOME_DIR }]),
    { name: "loom-credentials", mountPath: CREDENTIALS_DIR, readOnly: true },
    ...(files[MLFLOW_CREDENTIALS_KEY] !== undefined
      ? [
          {
            name: "loom-credentials",
            mountPath: `${(home ?? HOME_DIR).replace(/\/+$/, "")}/.mlflow/credentials`,
            subPath: MLFLOW_CREDENTIALS_KEY,
            readOnly: true,
          },
        ]
      : []),
    ...(files[SITECUSTOMIZE_KEY] !== undefined
      ? [
          {
            name: "loom-credentials",
            mountPath: `${MODEL_PYTHON_PATH}/${SITECUSTOMIZE_KEY}`,
            subPath: SITECUSTOMIZE_KEY,
            readOnly: true,
          },
        ]
      : []),
  ];
  return {
    volumes,
    volumeMounts,
    env: {
      ...(home ? {} : { HOME: HOME_DIR }),
      LOOM_CREDENTIALS_DIR: CREDENTIALS_DIR,
      ...(files[TOKEN_KEY] !== undefined ? { LOOM_TOKEN_FILE: `${CREDENTIALS_DIR}/${TOKEN_KEY}` } : {}),
      ...(files[MODEL_KEY] !== undefined ? { [MODEL_KEY_ENV]: `${CREDENTIALS_DIR}/${MODEL_KEY}` } : {}),
      ...modelPythonPath(files, workerEnv),
    },
  };
}

/**
 * PYTHONPATH with the bridge's directory where the workload's env names it under $(HOME) (as the
 * embedded platform lays it out): Kubernetes expands $(HOME) only from env listed before it.
 */
function modelPythonPath(files: CredentialFiles, workerEnv: Record<string, string>): Record<string, string> {
  const path = workerEnv.PYTHONPATH;
  if (files[SITECUSTOMIZE_KEY] === undefined || path === undefined) return {};
  return { PYTHONPATH: path.split(`$(HOME)/${MODEL_PYTHON_DIR}`).join(MODEL_PYTHON_PATH) };
}

import type { InferenceService, InferenceServiceSpec, RevisionStatus } from "../../api/inferenceservice.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import type { RevisionRuntime, WorkerSpec, WorkloadRef } from "../../ports/runtime.js";
import type { ModelResolver } from "../../ports/serving.js";
import { convergeRevision } from "../serving/revisions.js";
import { INFERENCESERVICE } from "./names.js";

/** The port model servers listen on where the platform gives each replica its own address. */
export const MODEL_PORT = 8080;

/** What every replica of a revision runs: its command, image and environment. */
export function replicaWorker(
  svc: InferenceService,
  rev: RevisionStatus,
  opts: { port: number; modelLocation: string; replica?: string; builtinCommand: string[] },
): Omit<WorkerSpec, "index"> {
  const spec = rev.spec as InferenceServiceSpec;
  const runtime = spec.runtime;
  return {
    command: runtime === "loom-tinygpt" ? opts.builtinCommand : runtime.command,
    ...(typeof runtime === "object" && runtime.image ? { image: runtime.image } : {}),
    ...(typeof runtime === "object" && runtime.workingDir ? { workingDir: runtime.workingDir } : {}),
    env: {
      PYTHONUNBUFFERED: "1",
      ...(typeof runtime === "object" ? runtime.env : {}),
      ...spec.env,
      PORT: String(opts.port),
      LOOM_MODEL_DIR: opts.modelLocation,
      LOOM_MODEL: spec.model,
      LOOM_MODEL_NAME: svc.metadata.name,
      ...(opts.replica ? { LOOM_REPLICA: opts.replica } : {}),
      LOOM_PROJECT: svc.metadata.project!,
      LOOM_WORKLOAD: svc.metadata.name,
      LOOM_WORKLOAD_KIND: "InferenceService",
      LOOM_REVISION: rev.name,
    },
    allocation: {
      node: "",
      cpuMillis: parseCpuMillis(spec.resources.cpu ?? 0) ?? 0,
      memoryBytes: parseMemoryBytes(spec.resources.memory ?? 0) ?? 0,
      gpus: Array.from(
        { length: spec.resources.gpu && spec.resources.gpu >= 1 ? spec.resources.gpu : 0 },
        (_, i) => `gpu-${i}`,
      ),
    },
    terminationGracePeriodSeconds: 30,
    // Kubernetes: the pods' tolerations, which Loom's scheduler reads; embedded: the replicas'.
    ...(spec.tolerations?.length ? { tolerations: spec.tolerations } : {}),
  };
}

/** The InferenceService as the owner of what the platform makes for its revisions. */
export function serviceRef(svc: InferenceService): WorkloadRef {
  return {
    kind: INFERENCESERVICE,
    project: svc.metadata.project!,
    name: svc.metadata.name,
    uid: svc.metadata.uid,
  };
}

/**
 * A revision through the platform's serving capability: apply the desired count (Kubernetes: to
 * its Deployment; embedded: to its supervised processes), read the running replicas back as the
 * ones the gateway routes to. Returns true while some wanted replica is not ready.
 */
export async function convergeOnPlatform(
  serving: RevisionRuntime,
  models: ModelResolver,
  svc: InferenceService,
  rev: RevisionStatus & { applied?: number },
  builtinCommand: string[],
): Promise<boolean> {
  const spec = rev.spec as InferenceServiceSpec;
  return convergeRevision(serving, serviceRef(svc), rev, async () => ({
    worker: replicaWorker(svc, rev, {
      port: MODEL_PORT,
      modelLocation: await models.resolve(svc.metadata.project!, spec.model),
      builtinCommand,
    }),
    port: MODEL_PORT,
    readinessPath: spec.readiness.path,
    readinessTimeoutSeconds: spec.readiness.timeoutSeconds,
    ...(spec.python ? { python: spec.python } : {}),
    ...(spec.resources.gpu ? { gpu: spec.resources.gpu } : {}),
  }));
}

/** A platform's model location for a reference: the reference itself (the image knows how to fetch it). */
export const passThroughModels: ModelResolver = {
  async resolve(_project, model) {
    return model;
  },
};

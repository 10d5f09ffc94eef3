import type { WorkloadRef } from "../../ports/runtime.js";

/** Each Loom project is one namespace: `loom-<project>`. */
export const NAMESPACE_PREFIX = "loom-";

/** The namespace that holds a project's objects. */
export function namespaceOf(project: string): string {
  return `${NAMESPACE_PREFIX}${project}`;
}

/** The project a namespace holds, or undefined for a namespace that is not a project's. */
export function projectOf(namespace: string | undefined): string | undefined {
  return namespace?.startsWith(NAMESPACE_PREFIX) ? namespace.slice(NAMESPACE_PREFIX.length) : undefined;
}

/** The labels on everything Loom makes for a workload (pods, Services, claims, Deployments). */
export const LABELS = {
  managedBy: "app.kubernetes.io/managed-by",
  name: "app.kubernetes.io/name",
  instance: "app.kubernetes.io/instance",
  component: "app.kubernetes.io/component",
  project: "loom.dev/project",
  workload: "loom.dev/workload",
  kind: "loom.dev/workload-kind",
  uid: "loom.dev/workload-uid",
  attempt: "loom.dev/attempt",
  worker: "loom.dev/worker-index",
} as const;

/** Which revision of an InferenceService a model pod runs. */
export const REVISION_LABEL = "loom.dev/revision";

/** A worker's stable hostname across attempts, behind the job's headless Service. */
export function podHostname(workload: string, index: number): string {
  return `${workload}-${index}`.slice(0, 63);
}

/** A worker pod's name: per attempt, so that attempts never collide. */
export function podName(workload: string, attempt: number, index: number): string {
  return `${workload}-a${attempt}-w${index}`.slice(0, 63);
}

/** The labels that tie an object to its workload (and let the runtime find it again). */
export function workloadLabels(ref: WorkloadRef): Record<string, string> {
  return {
    [LABELS.managedBy]: "loom",
    [LABELS.name]: ref.kind.toLowerCase(),
    [LABELS.instance]: ref.name,
    [LABELS.project]: ref.project,
    [LABELS.workload]: ref.name,
    [LABELS.kind]: ref.kind,
    [LABELS.uid]: ref.uid,
  };
}

/** The workload's object as the controlling owner: deleting it cascades. */
export function ownerRef(ref: WorkloadRef) {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: ref.kind,
    name: ref.name,
    uid: ref.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** The workload an object belongs to, from its labels; undefined for objects that are not Loom's. */
export function refFromLabels(labels: Record<string, string> | undefined): WorkloadRef | undefined {
  const uid = labels?.[LABELS.uid];
  const project = labels?.[LABELS.project];
  const name = labels?.[LABELS.workload];
  if (!uid || !project || !name) return undefined;
  return { kind: labels[LABELS.kind] ?? "TrainingJob", project, name, uid };
}

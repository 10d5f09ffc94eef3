import { z } from "zod";

export const GROUP = "loom.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** RFC 1123 label, as Kubernetes requires for names that become DNS names and namespaces. */
export const NAME_PATTERN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export const ResourceName = z
  .string()
  .max(63, "must be at most 63 characters")
  .regex(
    NAME_PATTERN,
    "must be lowercase letters, digits and '-', starting and ending with a letter or digit",
  );

/** What a user may write in metadata; the server owns uid, resourceVersion, generation and timestamps. */
export const InputMetadata = z.object({
  name: ResourceName,
  project: ResourceName.optional(),
  labels: z
    .record(
      z.string().regex(LABEL_KEY, "label keys are [prefix/]name with letters, digits, '-', '_', '.'"),
      z.string().max(63).regex(LABEL_VALUE, "label values are letters, digits, '-', '_', '.' (63 at most)"),
    )
    .optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  // Server-owned fields are accepted (so `get -o yaml | apply` round-trips) and then overwritten.
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  generation: z.number().optional(),
  creationTimestamp: z.string().optional(),
  deletionTimestamp: z.string().optional(),
  finalizers: z.array(z.string()).optional(),
});

export interface ObjectMeta {
  name: string;
  /** The owning project; absent for cluster-scoped kinds (Project itself). */
  project?: string;
  uid: string;
  resourceVersion: string;
  generation: number;
  creationTimestamp: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export const ConditionSchema = z.object({
  type: z.string(),
  status: z.enum(["True", "False", "Unknown"]),
  reason: z.string(),
  message: z.string(),
  lastTransitionTime: z.string(),
});
export type Condition = z.infer<typeof ConditionSchema>;

/** Every stored object has this shape, whatever its kind. */
export interface Resource<Spec = unknown, Status = unknown> {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec: Spec;
  status?: Status;
}

/** A reference that survives renames and re-creations: name plus uid. */
export interface ObjectKey {
  kind: string;
  /** "" for cluster-scoped kinds. */
  project: string;
  name: string;
}

export function keyOf(obj: Resource): ObjectKey {
  return { kind: obj.kind, project: obj.metadata.project ?? "", name: obj.metadata.name };
}

/** "project/name" (or "name" for cluster-scoped), the key work queues and messages use. */
export function displayKey(k: { project?: string; name: string }): string {
  return k.project ? `${k.project}/${k.name}` : k.name;
}

/**
 * Sets a condition, keeping lastTransitionTime when the status did not change (Kubernetes
 * convention: the time says when it flipped, not when it was last written).
 */
export function setCondition(
  conditions: Condition[] | undefined,
  next: Omit<Condition, "lastTransitionTime">,
  now: Date,
): Condition[] {
  const list = [...(conditions ?? [])];
  const i = list.findIndex((c) => c.type === next.type);
  const prev = i >= 0 ? list[i] : undefined;
  const lastTransitionTime =
    prev && prev.status === next.status ? prev.lastTransitionTime : now.toISOString();
  const cond: Condition = { ...next, lastTransitionTime };
  if (i >= 0) list[i] = cond;
  else list.push(cond);
  return list;
}

export function getCondition(conditions: Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

import { STORED_KINDS } from "../../api/kinds.js";
import type { ProjectInfo } from "../../ports/runtime.js";
import { namespaceOf } from "./naming.js";

const READ = ["get", "list", "watch"] as const;
const VERBS = {
  viewer: READ,
  editor: [...READ, "create", "update", "patch", "delete"],
  admin: [...READ, "create", "update", "patch", "delete", "deletecollection"],
} as const;

/**
 * Loom's namespaced kinds kept as custom resources, by name and nothing else: no wildcard, because a wildcard
 * also grants every subresource, and `status` is written by Loom's controllers only (an editor who
 * could write status.admission would run past the project's limit). As Kubernetes grants
 * `<kind>/status` only to controllers, only the operator's ClusterRole has it.
 */
export const MEMBER_RESOURCES = STORED_KINDS.filter((k) => k.namespaced).map((k) => k.plural);

/**
 * What members may read besides Loom's kinds. Never secrets (a workload's credentials live in
 * one), nor pods/exec, pods/attach or pods/portforward (a shell in a pod reads its mounted
 * credentials); pods are safe to read because their env holds no credential (credentials.ts).
 */
const MEMBER_CORE_READS = ["pods", "services", "events", "persistentvolumeclaims"];

/** The rules of a member Role: the role's verbs on Loom's kinds, reads on what runs them. */
export function memberRules(role: "viewer" | "editor" | "admin") {
  return [
    { apiGroups: ["loom.dev"], resources: [...MEMBER_RESOURCES], verbs: [...VERBS[role]] },
    { apiGroups: [""], resources: [...MEMBER_CORE_READS], verbs: [...READ] },
    { apiGroups: [""], resources: ["pods/log"], verbs: ["get"] },
    { apiGroups: ["events.k8s.io"], resources: ["events"], verbs: [...READ] },
  ];
}

/**
 * What a project is on Kubernetes: a namespace that enforces Pod Security "restricted", a
 * ResourceQuota from the project's limit (the deserved quota is the scheduler's business: work
 * may borrow beyond it, so the API server must not refuse it), a default-deny NetworkPolicy that admits traffic only
 * from inside the project, and one Role + RoleBinding per role for its members.
 */
export function namespaceObjects(
  project: ProjectInfo,
): { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }[] {
  const ns = namespaceOf(project.name);
  const labels = { "app.kubernetes.io/managed-by": "loom", "loom.dev/project": project.name };
  const objects: {
    apiVersion: string;
    kind: string;
    metadata: { name: string; namespace?: string };
    [k: string]: unknown;
  }[] = [
    {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: {
        name: ns,
        labels: {
          ...labels,
          "pod-security.kubernetes.io/enforce": "restricted",
          "pod-security.kubernetes.io/enforce-version": "latest",
          "pod-security.kubernetes.io/warn": "restricted",
          "pod-security.kubernetes.io/audit": "restricted",
        },
      } as { name: string },
    },
    {
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "loom-project-isolation", namespace: ns, labels } as {
        name: string;
        namespace: string;
      },
      spec: {
        // Model pods are left to their own policy: only Loom's gateway reaches them.
        podSelector: {
          matchExpressions: [{ key: "app.kubernetes.io/component", operator: "NotIn", values: ["model"] }],
        },
        policyTypes: ["Ingress"],
        // Only pods of this project may connect to its pods.
        ingress: [{ from: [{ podSelector: {} }] }],
      },
    },
  ];
  const hard: Record<string, string> = {};
  const limit = project.limit;
  if (limit?.cpu !== undefined) hard["requests.cpu"] = String(limit.cpu);
  if (limit?.memory !== undefined) hard["requests.memory"] = String(limit.memory);
  if (limit?.gpu !== undefined) hard["requests.nvidia.com/gpu"] = String(limit.gpu);
  if (Object.keys(hard).length > 0) {
    // A quota on requests makes the API server refuse pods without them: give such pods defaults.
    objects.push({
      apiVersion: "v1",
      kind: "LimitRange",
      metadata: { name: "loom-defaults", namespace: ns, labels } as { name: string; namespace: string },
      spec: { limits: [{ type: "Container", defaultRequest: { cpu: "100m", memory: "128Mi" } }] },
    });
    objects.push({
      apiVersion: "v1",
      kind: "ResourceQuota",
      metadata: { name: "loom-project-quota", namespace: ns, labels } as { name: string; namespace: string },
      spec: { hard },
    });
  }
  for (const role of ["viewer", "editor", "admin"] as const) {
    const members = project.members.filter((m) => m.role === role);
    objects.push({
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name: `loom-${role}`, namespace: ns, labels } as { name: string; namespace: string },
      rules: memberRules(role),
    });
    objects.push({
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: `loom-${role}`, namespace: ns, labels } as { name: string; namespace: string },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: `loom-${role}` },
      subjects: members.map((m) =>
        m.user
          ? { apiGroup: "rbac.authorization.k8s.io", kind: "User", name: m.user }
          : { apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: m.group! },
      ),
    });
  }
  return objects;
}

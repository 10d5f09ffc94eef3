import type { KubeClient } from "./client.js";

/** The least an object needs for its path: what `kubectl apply --server-side` would send. */
export interface AppliedObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [field: string]: unknown };
  [field: string]: unknown;
}

/** Server-side apply with field manager "loom": create or converge, idempotent. */
export async function applyObject(client: KubeClient, obj: AppliedObject): Promise<void> {
  await client.request("PATCH", objectPath(obj), {
    body: obj,
    contentType: "application/apply-patch+yaml",
    query: { fieldManager: "loom", force: true },
  });
}

function objectPath(obj: AppliedObject): string {
  const plural: Record<string, string> = {
    Namespace: "namespaces",
    ResourceQuota: "resourcequotas",
    LimitRange: "limitranges",
    NetworkPolicy: "networkpolicies",
    Role: "roles",
    RoleBinding: "rolebindings",
    Service: "services",
    PersistentVolumeClaim: "persistentvolumeclaims",
    Deployment: "deployments",
    Secret: "secrets",
  };
  const base = obj.apiVersion === "v1" ? "/api/v1" : `/apis/${obj.apiVersion}`;
  const ns = obj.metadata.namespace ? `/namespaces/${obj.metadata.namespace}` : "";
  return `${base}${ns}/${plural[obj.kind]}/${obj.metadata.name}`;
}

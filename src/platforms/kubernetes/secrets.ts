import { BadRequestError, NotFoundError } from "../../api/errors.js";
import type { SecretStore } from "../../ports/secrets.js";
import { applyObject } from "./apply.js";
import type { KubeClient } from "./client.js";

/** Loom's own namespace, where the operator keeps what is its alone (members' kubeconfigs). */
export const DEFAULT_SYSTEM_NAMESPACE = "loom-system";
/** The key a secret's value is kept under, as `kubectl create secret generic N --from-file=kubeconfig=FILE` writes it. */
export const SECRET_KEY = "kubeconfig";

interface KubeSecret {
  data?: Record<string, string>;
}

/**
 * Platform secrets (fleet members' kubeconfigs, issue 23) as core/v1 Secrets in Loom's own
 * namespace (loom-system), one key `kubeconfig` each: what a kubectl user would create by hand,
 * readable only by whoever RBAC lets read Secrets there (the operator, cluster admins). Loom's API
 * writes them and never reads them back.
 */
export class KubeSecretStore implements SecretStore {
  constructor(
    private readonly client: KubeClient,
    readonly namespace: string = DEFAULT_SYSTEM_NAMESPACE,
  ) {}

  async put(name: string, data: string): Promise<void> {
    try {
      await applyObject(this.client, {
        apiVersion: "v1",
        kind: "Secret",
        metadata: {
          name,
          namespace: this.namespace,
          labels: { "app.kubernetes.io/managed-by": "loom", "app.kubernetes.io/part-of": "loom" },
        },
        type: "Opaque",
        data: { [SECRET_KEY]: Buffer.from(data).toString("base64") },
      });
    } catch (err) {
      if (err instanceof NotFoundError)
        throw new BadRequestError(
          `there is no namespace ${this.namespace} to keep the secret in: install Loom's operator there first (deploy/operator.yaml or the Helm chart)`,
        );
      throw err;
    }
  }

  async get(name: string): Promise<string | undefined> {
    let secret: KubeSecret;
    try {
      secret = await this.client.request<KubeSecret>("GET", this.path(name));
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
    const value = secret.data?.[SECRET_KEY];
    // Only a Secret made for this (its `kubeconfig` key): a Cluster naming any other Secret in
    // Loom's namespace never gets its contents read, nor echoed back in an error.
    if (value === undefined)
      throw new Error(
        `secret ${this.namespace}/${name} has no "${SECRET_KEY}" key: make it with kubectl create secret generic ${name} -n ${this.namespace} --from-file=${SECRET_KEY}=FILE, or loom apply -f CLUSTER.yaml --kubeconfig-file FILE`,
      );
    return Buffer.from(value, "base64").toString("utf8");
  }

  async delete(name: string): Promise<void> {
    try {
      await this.client.request("DELETE", this.path(name));
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
  }

  private path(name: string): string {
    return `/api/v1/namespaces/${this.namespace}/secrets/${encodeURIComponent(name)}`;
  }
}

/**
 * Secrets the control plane holds for itself (a member cluster's kubeconfig): written by admins,
 * read only by the platform's own code, never served back over the API.
 */
export interface SecretStore {
  /** Creates or replaces the secret's data. */
  put(name: string, data: string): Promise<void>;
  /** The data, or undefined when there is no such secret. */
  get(name: string): Promise<string | undefined>;
  /** Removes it; no error when it is not there. */
  delete(name: string): Promise<void>;
}

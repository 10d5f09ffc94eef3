/** A public key a user registered (`loom ssh-key add`), as listed: never anyone else's. */
export interface SshKey {
  name: string;
  type: string;
  fingerprint: string;
  comment?: string;
  createdAt: string;
}

/**
 * Users' SSH public keys (issue 19: `loom ssh`). A user is a token's name: every token with that
 * name is the same person (an admin makes tokens, so names are not self-chosen). Workloads'
 * sshd (runtimes/loom-sshd) is given the keys of the users who may reach inside them: those who
 * may open Loom's tunnel to them, editors and admins of the project.
 */
export interface SshKeyStore {
  /** Registers a checked key (src/lib/sshkey.ts); ConflictError if the name or the key is taken. */
  add(
    user: string,
    name: string,
    key: { type: string; data: string; fingerprint: string; comment?: string },
  ): Promise<SshKey>;
  list(user: string): Promise<SshKey[]>;
  /** NotFoundError if the user has no key of that name. */
  delete(user: string, name: string): Promise<void>;
  /**
   * authorized_keys lines for a workload of `project`: the keys of every user holding a live
   * editor or admin token that reaches the project (not API keys, not workloads' credentials).
   */
  authorizedKeys(project: string): Promise<string[]>;
}

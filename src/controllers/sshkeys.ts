import type { Logger } from "pino";
import type { SecretFile } from "../ports/runtime.js";
import type { SshKeyStore } from "../ports/sshkeys.js";

/** Where a workload's authorized SSH keys are, under its private HOME (runtimes/loom-sshd reads it). */
export const SSH_KEYS_FILE = ".loom/ssh/authorized_keys";

/** The port runtimes/loom-sshd listens on inside a workload (127.0.0.1 of its own network). */
export const SSHD_PORT = 2222;

/**
 * The SSH keys of the project's editors and admins (`loom ssh-key add`), as a file for a
 * workload's sshd (LOOM_SSH_AUTHORIZED_KEYS_FILE): the people who may open Loom's tunnel to the
 * workload are the ones who may log in through it. A file, never env: nothing prints it. Read
 * when the workload starts: keys added later count from its next start. Being unable to read
 * them never stops a workload.
 */
export async function sshKeysFile(
  sshKeys: Pick<SshKeyStore, "authorizedKeys"> | undefined,
  log: Logger,
  project: string,
): Promise<{ env: Record<string, string>; files: SecretFile[] }> {
  if (!sshKeys) return { env: {}, files: [] };
  try {
    const keys = await sshKeys.authorizedKeys(project);
    return {
      env: { LOOM_SSH_AUTHORIZED_KEYS_FILE: `$(HOME)/${SSH_KEYS_FILE}` },
      files: [{ path: SSH_KEYS_FILE, data: keys.map((k) => `${k}\n`).join(""), mode: 0o600 }],
    };
  } catch (err) {
    log.warn({ err, project }, "could not read the project's SSH keys; starting without them");
    return { env: {}, files: [] };
  }
}

import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { readSecretFile, writeSecretFile } from "../platforms/embedded/datadir.js";
import type { TokenStore } from "../ports/store.js";

/**
 * Tokens workers log to tracking with: one per project, role editor (they write runs, they do not
 * administer), scoped to that project, kept in the data dir so a restart does not mint new ones.
 */
export function workloadTokens(tokens: TokenStore, dataDir: string): (project: string) => Promise<string> {
  const known = new Map<string, string>();
  return async (project) => {
    const cached = known.get(project);
    if (cached) return cached;
    const file = join(dataDir, "workload-tokens", project);
    let token = readSecretFile(file);
    if (!token || (await tokens.verify(token))?.project !== project) {
      token = (await tokens.create(`workloads@${project}`, "editor", project)).token;
      mkdirSync(dirname(file), { recursive: true });
      writeSecretFile(file, token);
    }
    known.set(project, token);
    return token;
  };
}

/** The admin token in the data dir, created on first start. */
export async function adminToken(
  tokens: TokenStore,
  dataDir: string,
): Promise<{ token: string; file: string; created: boolean }> {
  const file = join(dataDir, "admin-token");
  const existing = readSecretFile(file);
  if (existing && (await tokens.verify(existing))) return { token: existing, file, created: false };
  const token = (await tokens.create("admin", "admin")).token;
  writeSecretFile(file, token);
  return { token, file, created: true };
}

import { join } from "node:path";
import { NotFoundError } from "../api/errors.js";
import { PROJECT } from "../api/kinds.js";
import { readSecretFile, writeSecretFile } from "../platforms/embedded/datadir.js";
import type {
  ResourceStore,
  Role,
  TokenCreateOptions,
  TokenInfo,
  TokenStore,
  WorkloadRef,
} from "../ports/store.js";
import { tokenOptions } from "../ports/store.js";

/** Phases after which a workload runs nothing: its credential is refused from then on. */
const ENDED = new Set(["Succeeded", "Failed"]);

/**
 * The token store as the API uses it: a token scoped to a project records that project's uid
 * when made, and is refused once the project is gone or re-created under the same name; a
 * workload's token is refused once its object is gone, re-created, or finished, even if the
 * revoke that should have followed was lost (a crash between the status write and it).
 */
export function boundTokens(tokens: TokenStore, store: ResourceStore): TokenStore {
  const uidOf = async (kind: string, project: string, name: string) => {
    try {
      return await store.get(kind, project, name);
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  };
  return {
    async create(
      name: string,
      role: Role,
      scope?: TokenCreateOptions | string,
      key?: { services?: string[] },
    ) {
      const opts = tokenOptions(scope, key);
      if (opts.project && !opts.projectUid) {
        const project = await uidOf(PROJECT, "", opts.project);
        if (project) opts.projectUid = project.metadata.uid;
      }
      return tokens.create(name, role, opts);
    },
    async verify(token: string): Promise<TokenInfo | undefined> {
      const info = await tokens.verify(token);
      if (!info) return undefined;
      if (info.project && info.projectUid) {
        const project = await uidOf(PROJECT, "", info.project);
        if (project?.metadata.uid !== info.projectUid) return undefined;
      }
      if (info.workload) {
        const w = info.workload;
        const obj = await uidOf(w.kind, w.project, w.name);
        const phase = (obj?.status as { phase?: string } | undefined)?.phase;
        if (obj?.metadata.uid !== w.uid || (phase && ENDED.has(phase))) return undefined;
      }
      return info;
    },
    list: (filter) => tokens.list(filter),
    revoke: (id) => tokens.revoke(id),
    revokeWorkload: (uid, opts) => tokens.revokeWorkload(uid, opts),
  };
}

/**
 * Workloads' own credentials: one editor token per workload, scoped to its project and bound to
 * its uid; each attempt gets a new one (the last revoked, so one is live at a time), and the
 * workload's end revokes it. A Workspace's or App's (mintShared) is made beside the others: the
 * tracking side keeps one per revision, and all go when the workload stops or goes.
 */
export function workloadCredentials(tokens: TokenStore): {
  mint(ref: WorkloadRef): Promise<string>;
  mintShared(ref: WorkloadRef): Promise<string>;
  revoke(ref: WorkloadRef): Promise<void>;
} {
  const create = async (ref: WorkloadRef) => {
    const name = `${ref.kind.toLowerCase()}/${ref.name}`;
    return (await tokens.create(name, "editor", { project: ref.project, workload: ref })).token;
  };
  return {
    async mint(ref) {
      await tokens.revokeWorkload(ref.uid);
      return create(ref);
    },
    // A Workspace's or App's: beside its others (its model key, a re-adopted replica's token).
    mintShared: create,
    async revoke(ref) {
      await tokens.revokeWorkload(ref.uid);
    },
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

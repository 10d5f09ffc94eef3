import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import {
  type ApiKeyScope,
  type Role,
  type TokenCreateOptions,
  type TokenInfo,
  type TokenStore,
  type TokenSummary,
  tokenOptions,
  type WorkloadRef,
} from "../../ports/store.js";
import type { Schema, TokensTable } from "./db.js";

/** Secrets are never stored: only their SHA-256, so a copied database leaks no usable token. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** last_used_at is written at most this often per token: a verify is not a write each time. */
const LAST_USED_EVERY_MS = 60_000;
/** Expired tokens are kept this long (listed as expired), then pruned when a token is made. */
const KEEP_EXPIRED_MS = 24 * 3600_000;
const SWEEP_EVERY_MS = 60_000;

export class SqliteTokenStore implements TokenStore {
  private readonly now: () => Date;
  /** When expired tokens were last swept (ms); they are kept KEEP_EXPIRED_MS anyway. */
  private sweptAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly db: Kysely<Schema>,
    opts: { now?: () => Date } = {},
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  async create(
    name: string,
    role: Role,
    scope?: TokenCreateOptions | string,
    key?: ApiKeyScope,
  ): Promise<{ token: string; info: TokenInfo }> {
    const { project, projectUid, apiKey, ttlSeconds, workload } = tokenOptions(scope, key);
    // API keys look different (sk-…), as OpenAI's do: clients and secret scanners know the shape.
    const token = apiKey
      ? `sk-loom-${randomBytes(24).toString("base64url")}`
      : `loom_${randomBytes(24).toString("base64url")}`;
    const now = this.now();
    const expiresAt =
      ttlSeconds !== undefined ? new Date(now.getTime() + ttlSeconds * 1000).toISOString() : undefined;
    const info: TokenInfo = {
      id: randomUUID(),
      name,
      role,
      ...(project ? { project } : {}),
      ...(apiKey ? { apiKey } : {}),
      ...(expiresAt ? { expiresAt } : {}),
      ...(workload ? { workload } : {}),
      ...(project && projectUid ? { projectUid } : {}),
    };
    // Expired tokens long past are swept now and then, not on every create (two per job start).
    if (now.getTime() - this.sweptAt >= SWEEP_EVERY_MS) {
      this.sweptAt = now.getTime();
      await this.db
        .deleteFrom("tokens")
        .where("expires_at", "<", new Date(now.getTime() - KEEP_EXPIRED_MS).toISOString())
        .execute();
    }
    await this.db
      .insertInto("tokens")
      .values({
        id: info.id,
        name,
        role,
        hash: hashToken(token),
        created_at: now.toISOString(),
        project: project ?? null,
        kind: apiKey ? "apikey" : null,
        // The list alone, as before; with a rate limit the whole scope (read back by shape).
        services: apiKey?.rateLimit
          ? JSON.stringify(apiKey)
          : apiKey?.services
            ? JSON.stringify(apiKey.services)
            : null,
        expires_at: expiresAt ?? null,
        project_uid: info.projectUid ?? null,
        workload: workload ? JSON.stringify(workload) : null,
        workload_uid: workload?.uid ?? null,
        last_used_at: null,
      })
      .execute();
    return { token, info };
  }

  async verify(token: string): Promise<TokenInfo | undefined> {
    const row = await this.db
      .selectFrom("tokens")
      .selectAll()
      .where("hash", "=", hashToken(token))
      .executeTakeFirst();
    if (!row) return undefined;
    const now = this.now();
    if (row.expires_at && Date.parse(row.expires_at) <= now.getTime()) return undefined;
    if (!row.last_used_at || Date.parse(row.last_used_at) < now.getTime() - LAST_USED_EVERY_MS)
      await this.db
        .updateTable("tokens")
        .set({ last_used_at: now.toISOString() })
        .where("id", "=", row.id)
        .execute();
    return infoOf(row);
  }

  async list(filter: { project?: string; apiKeys?: boolean } = {}): Promise<TokenSummary[]> {
    let q = this.db.selectFrom("tokens").selectAll();
    q = filter.apiKeys ? q.where("kind", "=", "apikey") : q.where("kind", "is", null);
    if (filter.project !== undefined) q = q.where("project", "=", filter.project);
    const rows = await q.orderBy("created_at").orderBy("id").execute();
    return rows.map((r) => ({
      ...infoOf(r),
      createdAt: r.created_at,
      ...(r.last_used_at ? { lastUsedAt: r.last_used_at } : {}),
    }));
  }

  async revoke(id: string): Promise<boolean> {
    const r = await this.db.deleteFrom("tokens").where("id", "=", id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async revokeWorkload(uid: string, opts: { apiKeys?: boolean } = {}): Promise<number> {
    let q = this.db.deleteFrom("tokens").where("workload_uid", "=", uid);
    if (opts.apiKeys) q = q.where("kind", "=", "apikey");
    const r = await q.executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}

function infoOf(row: Selectable<TokensTable>): TokenInfo {
  return {
    id: row.id,
    name: row.name,
    role: row.role as Role,
    ...(row.project ? { project: row.project } : {}),
    ...(row.kind === "apikey"
      ? { apiKey: row.services ? apiKeyScope(JSON.parse(row.services) as unknown) : {} }
      : {}),
    ...(row.expires_at ? { expiresAt: row.expires_at } : {}),
    ...(row.workload ? { workload: JSON.parse(row.workload) as WorkloadRef } : {}),
    ...(row.project_uid ? { projectUid: row.project_uid } : {}),
  };
}

/** The `services` column: a list of service names, or a whole ApiKeyScope (one with a rate limit). */
function apiKeyScope(stored: unknown): ApiKeyScope {
  return Array.isArray(stored) ? { services: stored as string[] } : (stored as ApiKeyScope);
}

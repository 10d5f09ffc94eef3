import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { ApiKeyScope, Role, TokenInfo, TokenStore } from "../../ports/store.js";
import type { Schema } from "./db.js";

/** Secrets are never stored: only their SHA-256, so a copied database leaks no usable token. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export class SqliteTokenStore implements TokenStore {
  constructor(private readonly db: Kysely<Schema>) {}

  async create(
    name: string,
    role: Role,
    project?: string,
    apiKey?: ApiKeyScope,
  ): Promise<{ token: string; info: TokenInfo }> {
    // API keys look different (sk-…), as OpenAI's do: clients and secret scanners know the shape.
    const token = apiKey
      ? `sk-loom-${randomBytes(24).toString("base64url")}`
      : `loom_${randomBytes(24).toString("base64url")}`;
    const info: TokenInfo = {
      id: randomUUID(),
      name,
      role,
      ...(project ? { project } : {}),
      ...(apiKey ? { apiKey } : {}),
    };
    await this.db
      .insertInto("tokens")
      .values({
        id: info.id,
        name,
        role,
        hash: hashToken(token),
        created_at: new Date().toISOString(),
        project: project ?? null,
        kind: apiKey ? "apikey" : null,
        // The list alone, as before; with a rate limit the whole scope (read back by shape).
        services: apiKey?.rateLimit
          ? JSON.stringify(apiKey)
          : apiKey?.services
            ? JSON.stringify(apiKey.services)
            : null,
      })
      .execute();
    return { token, info };
  }

  async verify(token: string): Promise<TokenInfo | undefined> {
    const row = await this.db
      .selectFrom("tokens")
      .select(["id", "name", "role", "project", "kind", "services"])
      .where("hash", "=", hashToken(token))
      .executeTakeFirst();
    if (!row) return undefined;
    return {
      id: row.id,
      name: row.name,
      role: row.role as Role,
      ...(row.project ? { project: row.project } : {}),
      ...(row.kind === "apikey"
        ? { apiKey: row.services ? apiKeyScope(JSON.parse(row.services) as unknown) : {} }
        : {}),
    };
  }
}

/** The `services` column: a list of service names, or a whole ApiKeyScope (one with a rate limit). */
function apiKeyScope(stored: unknown): ApiKeyScope {
  return Array.isArray(stored) ? { services: stored as string[] } : (stored as ApiKeyScope);
}

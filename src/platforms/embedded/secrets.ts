import type { Kysely } from "kysely";
import type { SecretStore } from "../../ports/secrets.js";
import type { Schema } from "./db.js";

/** Platform secrets in the embedded database (mode 0600, as every token hash there). */
export class SqliteSecretStore implements SecretStore {
  constructor(
    private readonly db: Kysely<Schema>,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async put(name: string, data: string): Promise<void> {
    const updated_at = this.now().toISOString();
    await this.db
      .insertInto("secrets")
      .values({ name, data, updated_at })
      .onConflict((oc) => oc.column("name").doUpdateSet({ data, updated_at }))
      .execute();
  }

  async get(name: string): Promise<string | undefined> {
    const row = await this.db
      .selectFrom("secrets")
      .select("data")
      .where("name", "=", name)
      .executeTakeFirst();
    return row?.data;
  }

  async delete(name: string): Promise<void> {
    await this.db.deleteFrom("secrets").where("name", "=", name).execute();
  }
}

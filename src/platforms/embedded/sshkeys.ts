import type { Kysely } from "kysely";
import { AlreadyExistsError, NotFoundError } from "../../api/errors.js";
import type { SshKey, SshKeyStore } from "../../ports/sshkeys.js";
import type { Schema, SshKeysTable } from "./db.js";

/** Users' SSH public keys in the embedded database (table ssh_keys, migration 0010). */
export class SqliteSshKeyStore implements SshKeyStore {
  private readonly now: () => Date;
  /**
   * Whether any key is registered (this store is the table's one writer: the data dir is locked
   * to one process). Most installations have none, and every job's start asks for them.
   */
  private anyKeys: boolean | undefined;

  constructor(
    private readonly db: Kysely<Schema>,
    opts: { now?: () => Date } = {},
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  async add(
    user: string,
    name: string,
    key: { type: string; data: string; fingerprint: string; comment?: string },
  ): Promise<SshKey> {
    const same = await this.db
      .selectFrom("ssh_keys")
      .select(["name", "fingerprint"])
      .where("user", "=", user)
      .where((eb) => eb.or([eb("name", "=", name), eb("fingerprint", "=", key.fingerprint)]))
      .executeTakeFirst();
    if (same?.fingerprint === key.fingerprint)
      throw new AlreadyExistsError(`this key (${key.fingerprint}) is registered already, as "${same.name}"`);
    if (same)
      throw new AlreadyExistsError(
        `you have a key named "${name}" already: pick another name (--name), or loom ssh-key delete ${name} first`,
      );
    const row: SshKeysTable = {
      user,
      name,
      type: key.type,
      data: key.data,
      fingerprint: key.fingerprint,
      comment: key.comment ?? null,
      created_at: this.now().toISOString(),
    };
    await this.db.insertInto("ssh_keys").values(row).execute();
    this.anyKeys = true;
    return shown(row);
  }

  async list(user: string): Promise<SshKey[]> {
    const rows = await this.db
      .selectFrom("ssh_keys")
      .selectAll()
      .where("user", "=", user)
      .orderBy("name")
      .execute();
    return rows.map(shown);
  }

  async delete(user: string, name: string): Promise<void> {
    const res = await this.db
      .deleteFrom("ssh_keys")
      .where("user", "=", user)
      .where("name", "=", name)
      .executeTakeFirst();
    if (Number(res.numDeletedRows) === 0)
      throw new NotFoundError(`you have no SSH key named "${name}" (loom ssh-key list shows yours)`);
  }

  async authorizedKeys(project: string): Promise<string[]> {
    this.anyKeys ??=
      (await this.db.selectFrom("ssh_keys").select("name").limit(1).executeTakeFirst()) !== undefined;
    if (!this.anyKeys) return [];
    const now = this.now().toISOString();
    const rows = await this.db
      .selectFrom("ssh_keys as k")
      .innerJoin("tokens as t", "t.name", "k.user")
      .select(["k.user", "k.name", "k.type", "k.data"])
      .distinct()
      .where("t.kind", "is", null)
      .where("t.workload", "is", null)
      .where("t.role", "in", ["editor", "admin"])
      .where((eb) => eb.or([eb("t.project", "is", null), eb("t.project", "=", project)]))
      .where((eb) => eb.or([eb("t.expires_at", "is", null), eb("t.expires_at", ">", now)]))
      .orderBy("k.user")
      .orderBy("k.name")
      .execute();
    // The comment says whose key it is (sshd logs it): loom:USER/NAME.
    return rows.map((r) => `${r.type} ${r.data} loom:${r.user}/${r.name}`);
  }
}

function shown(r: SshKeysTable): SshKey {
  return {
    name: r.name,
    type: r.type,
    fingerprint: r.fingerprint,
    ...(r.comment ? { comment: r.comment } : {}),
    createdAt: r.created_at,
  };
}

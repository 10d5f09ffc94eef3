import { describe, expect, it } from "vitest";
import { openSqlite } from "./db.js";
import { SqliteSshKeyStore } from "./sshkeys.js";
import { SqliteTokenStore } from "./tokens.js";

const key = (n: number) => ({ type: "ssh-ed25519", data: `AAAA${n}`, fingerprint: `SHA256:${n}` });

describe("SqliteSshKeyStore", () => {
  it("keeps each user's keys to themselves, once by name and by key", async () => {
    const { db, close } = await openSqlite(":memory:");
    const keys = new SqliteSshKeyStore(db);
    await keys.add("alice", "laptop", key(1));
    await expect(keys.add("alice", "laptop", key(2))).rejects.toThrow(/named "laptop" already/);
    await expect(keys.add("alice", "other", key(1))).rejects.toThrow(/registered already, as "laptop"/);
    await keys.add("bob", "laptop", key(1)); // another user may hold the same name and key
    expect((await keys.list("alice")).map((k) => k.name)).toEqual(["laptop"]);
    await keys.delete("bob", "laptop");
    await expect(keys.delete("bob", "laptop")).rejects.toThrow(/no SSH key named "laptop"/);
    expect(await keys.list("alice")).toHaveLength(1);
    await close();
  });

  it("authorizes the keys of the project's live editors and admins only", async () => {
    const { db, close } = await openSqlite(":memory:");
    const tokens = new SqliteTokenStore(db);
    const keys = new SqliteSshKeyStore(db);
    await tokens.create("admin", "admin");
    await tokens.create("ed", "editor", { project: "p" });
    await tokens.create("viewer", "viewer", { project: "p" });
    await tokens.create("foreign", "editor", { project: "q" });
    await tokens.create("key", "editor", { project: "p", apiKey: {} });
    await tokens.create("job", "editor", {
      project: "p",
      workload: { kind: "TrainingJob", project: "p", name: "j", uid: "u" },
    });
    // None registered yet (answered without the join): then the first key is seen at once.
    expect(await keys.authorizedKeys("p")).toEqual([]);
    const expired = await tokens.create("gone", "editor", { project: "p", ttlSeconds: 1 });
    await db
      .updateTable("tokens")
      .set({ expires_at: "2000-01-01T00:00:00.000Z" })
      .where("id", "=", expired.info.id)
      .execute();
    for (const [i, user] of ["admin", "ed", "viewer", "foreign", "key", "job", "gone", "nobody"].entries())
      await keys.add(user, "k", key(i));
    expect(await keys.authorizedKeys("p")).toEqual([
      "ssh-ed25519 AAAA0 loom:admin/k",
      "ssh-ed25519 AAAA1 loom:ed/k",
    ]);
    expect(await keys.authorizedKeys("q")).toEqual([
      "ssh-ed25519 AAAA0 loom:admin/k",
      "ssh-ed25519 AAAA3 loom:foreign/k",
    ]);
    await close();
  });
});

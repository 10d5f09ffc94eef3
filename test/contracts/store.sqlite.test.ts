import { randomUUID } from "node:crypto";
import type { Resource } from "../../src/api/meta.js";
import { openSqlite } from "../../src/platforms/embedded/db.js";
import { SqliteResourceStore } from "../../src/platforms/embedded/store.js";
import { resourceStoreContract } from "./store.contract.js";

/** The ResourceStore contract on the embedded SQLite store (an in-memory database). */
resourceStoreContract(
  "sqlite",
  async () => {
    const database = await openSqlite(":memory:");
    // A short history, so that the expiry case can push a revision out of it (compaction runs
    // every 1,000 writes and keeps the last historySize changes).
    const store = await SqliteResourceStore.open(database.db, { historySize: 50 });
    const suffix = randomUUID().slice(0, 8);
    return {
      store,
      projects: [`a-${suffix}`, `b-${suffix}`],
      async expiredRevision() {
        const first = (await store.list("TrainingJob")).resourceVersion;
        let obj: Resource = await store.create({
          apiVersion: "loom.dev/v1alpha1",
          kind: "TrainingJob",
          metadata: {
            name: `churn-${suffix}`,
            project: `churn-${suffix}`,
            uid: "",
            resourceVersion: "",
            generation: 0,
            creationTimestamp: "",
          },
          spec: { command: ["churn"] },
        });
        for (let i = 0; i < 1000; i++) obj = await store.updateStatus({ ...obj, status: { n: i } });
        return first;
      },
      async close() {
        await store.close();
        await database.close();
      },
    };
  },
  {
    defaultsSpec: false,
    projectMustExist: false,
    expiredReportedBy: "rejection",
    deletedObjectVersion: "deletion",
  },
);

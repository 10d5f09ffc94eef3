import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Resource } from "../src/api/meta.js";
import { openSqlite } from "../src/platforms/embedded/db.js";
import { SqliteResourceStore } from "../src/platforms/embedded/store.js";
import { LoomProcess } from "./helpers.js";

/**
 * Objects that never passed Loom's validation (stored before the CRDs were strict, or by another
 * client) reach the controllers: each is marked Failed with reason Invalid naming the field, with
 * an event, and good work runs beside them. They are written straight into the embedded store,
 * past the API, while the server is down; then the server starts on that data dir.
 */

const tj = (name: string, spec: Record<string, unknown>): Resource =>
  ({
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name, project: "default" },
    spec: { command: ["true"], ...spec },
  }) as unknown as Resource;

/** [kind for the CLI, name, object, the field the condition must name]. */
const BAD: [string, string, Resource, string][] = [
  ["tj", "bad-two", tj("bad-two", { workers: "two" }), "spec.workers"],
  ["tj", "bad-range", tj("bad-range", { workers: { min: 3, max: 1 } }), "spec.workers.min"],
  ["tj", "bad-memory", tj("bad-memory", { resources: { memory: "lots" } }), "spec.resources.memory"],
  ["tj", "bad-nospec", { ...tj("bad-nospec", {}), spec: undefined } as unknown as Resource, "spec.command"],
  [
    "sweep",
    "bad-sweep",
    {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Sweep",
      metadata: { name: "bad-sweep", project: "default" },
      spec: {
        objective: { metric: "loss", goal: "minimize" },
        parameters: [{ name: "lr", uniform: { min: 0.1, max: 1 } }],
        template: { command: ["true"], workers: "two" },
      },
    } as unknown as Resource,
    "spec.template.workers",
  ],
  [
    "isvc",
    "bad-isvc",
    {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name: "bad-isvc", project: "default" },
      spec: { model: "models:/m@champion", runtime: 5, replicas: { min: 3, max: 1 } },
    } as unknown as Resource,
    "spec.runtime",
  ],
  [
    "project",
    "bad-project",
    {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "bad-project" },
      spec: { quota: { memory: "lots" } },
    } as unknown as Resource,
    "spec.quota.memory",
  ],
];

interface Obj {
  status?: {
    phase?: string;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

describe("invalid objects in the store (embedded)", () => {
  const loom = new LoomProcess();

  async function get(kind: string, name: string): Promise<Obj | undefined> {
    const r = await loom.cli(["get", kind, name, "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  }

  async function waitFor(kind: string, name: string, pred: (o: Obj) => boolean): Promise<Obj> {
    let last: Obj | undefined;
    for (let i = 0; i < 240; i++) {
      last = await get(kind, name);
      if (last && pred(last)) return last;
      await sleep(250);
    }
    throw new Error(
      `${kind}/${name} never got there: ${JSON.stringify(last?.status)}\n${loom.log.slice(-4000)}`,
    );
  }

  beforeAll(async () => {
    // A first start makes the data dir (and the default project); then the bad objects go in.
    await loom.start();
    await loom.kill();
    const database = await openSqlite(join(loom.dataDir, "loom.db"));
    const store = await SqliteResourceStore.open(database.db);
    for (const [, , obj] of BAD) await store.create(obj);
    await database.db.destroy();
    await loom.start();
  }, 120_000);

  afterAll(async () => {
    await loom.kill();
  });

  it.each(BAD)(
    "a %s %s is Failed/Invalid, naming the field, with an event",
    async (kind, name, _obj, field) => {
      const o = await waitFor(kind, name, (x) => x.status?.phase === "Failed");
      const cond = o.status?.conditions?.find((c) => c.type === "Valid");
      expect(cond).toMatchObject({ status: "False", reason: "Invalid" });
      expect(cond!.message).toContain(`${field}:`);
      const described = await loom.cli(["describe", kind, name]);
      expect(described.stdout).toMatch(/Invalid/);
    },
  );

  it("good work runs beside them, and the bad ones cost no retry loop", async () => {
    const yaml = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: good}
spec:
  command: [sh, -c, "echo fine"]
`;
    expect((await loom.cli(["apply", "-f", "-"], { input: yaml })).code).toBe(0);
    await waitFor("tj", "good", (x) => x.status?.phase === "Succeeded");
    // No reconcile of any of them threw (a throw is retried with backoff forever).
    expect(loom.log).not.toMatch(/TypeError/);
    const failed = loom.log.split("\n").filter((l) => l.includes("reconcile failed") && l.includes("bad-"));
    expect(failed).toEqual([]);
  });
});

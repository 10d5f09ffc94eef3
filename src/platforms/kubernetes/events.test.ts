import { describe, expect, it } from "vitest";
import type { KubeClient, RequestOptions } from "./client.js";
import { KubeEventRecorder } from "./events.js";

describe("core/v1 Events of Loom's objects", () => {
  it("a project's object's go in its namespace; a cluster-scoped one's (a Cluster) in default, as a Node's", async () => {
    const calls: { method: string; path: string; body?: unknown }[] = [];
    const client = {
      request: async (method: string, path: string, opts: RequestOptions = {}) => {
        calls.push({ method, path, body: opts.body });
        return method === "GET" ? { items: [] } : { metadata: { name: "e1" } };
      },
    } as unknown as KubeClient;
    const events = new KubeEventRecorder(client);
    await events.record(
      { kind: "TrainingJob", project: "p", name: "j", uid: "u1" },
      "Normal",
      "Admitted",
      "ok",
    );
    await events.record(
      { kind: "Cluster", project: "", name: "b", uid: "u2" },
      "Warning",
      "Unreachable",
      "down",
    );
    await events.listFor({ kind: "Cluster", project: "", name: "b" });
    expect(calls.map((c) => `${c.method} ${c.path}`)).toEqual([
      "POST /api/v1/namespaces/loom-p/events",
      "POST /api/v1/namespaces/default/events",
      "GET /api/v1/namespaces/default/events",
    ]);
    const involved = (i: number) =>
      (calls[i]!.body as { involvedObject: Record<string, unknown> }).involvedObject;
    expect(involved(0).namespace).toBe("loom-p");
    expect(involved(1)).not.toHaveProperty("namespace");
  });
});

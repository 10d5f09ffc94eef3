import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RouteApp, routeApp } from "../../../test/routeapp.js";
import { SqliteSecretStore } from "../../platforms/embedded/secrets.js";

// The fence around a member's kubeconfig (issue 23): admins write it, nobody reads it back.

const BASE = "/apis/loom.dev/v1alpha1";
const KUBECONFIG =
  "apiVersion: v1\nclusters:\n- name: b\n  cluster: {server: https://b.example:6443}\nusers:\n- name: u\n  user: {token: SECRET-TOKEN-123}\n";

describe("cluster routes", () => {
  let r: RouteApp;
  let secrets: SqliteSecretStore;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    r = await routeApp({
      name: "clusters",
      deps: (database) => {
        secrets = new SqliteSecretStore(database.db);
        return { secrets, console: false };
      },
    });
    tokens.admin = r.admin;
    tokens.editor = (await r.tokens.create("ed", "editor")).token;
    tokens.projectAdmin = (await r.tokens.create("pa", "admin", "default")).token;
  });

  afterAll(() => r.close());

  const call = (who: string, method: "GET" | "PUT" | "POST", url: string, payload?: unknown) =>
    r.call(tokens[who], method, url, payload);

  it("an admin registers a member and its kubeconfig; the secret is stored, and never in any answer", async () => {
    const put = await call("admin", "PUT", `${BASE}/clusters/b/kubeconfig`, { kubeconfig: KUBECONFIG });
    expect(put.statusCode).toBe(200);
    expect(put.body).not.toContain("SECRET-TOKEN");
    expect(await secrets.get("cluster-b-kubeconfig")).toBe(KUBECONFIG);
    const created = await call("admin", "POST", `${BASE}/clusters`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Cluster",
      metadata: { name: "b" },
      spec: { kubeconfigSecret: { name: "cluster-b-kubeconfig" } },
    });
    expect(created.statusCode).toBe(201);
    for (const url of [`${BASE}/clusters`, `${BASE}/clusters/b`]) {
      const r = await call("admin", "GET", url);
      expect(r.statusCode).toBe(200);
      expect(r.body).not.toContain("SECRET-TOKEN");
    }
    // There is no read route for the secret: the PUT's path answers GET with 404.
    expect((await call("admin", "GET", `${BASE}/clusters/b/kubeconfig`)).statusCode).toBe(404);
  });

  it("an editor or a project's admin may neither read members nor send a kubeconfig", async () => {
    for (const who of ["editor", "projectAdmin"]) {
      expect((await call(who, "GET", `${BASE}/clusters`)).statusCode).toBe(403);
      expect((await call(who, "GET", `${BASE}/clusters/b`)).statusCode).toBe(403);
      const put = await call(who, "PUT", `${BASE}/clusters/c/kubeconfig`, { kubeconfig: KUBECONFIG });
      expect(put.statusCode).toBe(403);
    }
    expect(await secrets.get("cluster-c-kubeconfig")).toBeUndefined();
  });

  it("a body that is not a kubeconfig, and a Cluster naming both sources, are refused with what to do", async () => {
    const bad = await call("admin", "PUT", `${BASE}/clusters/d/kubeconfig`, { kubeconfig: "hello" });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().message).toMatch(/--kubeconfig-file/);
    const both = await call("admin", "POST", `${BASE}/clusters`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Cluster",
      metadata: { name: "e" },
      spec: { platform: "self", kubeconfigSecret: { name: "x" } },
    });
    expect(both.statusCode).toBe(422);
    expect(both.json().message).toMatch(/name exactly one of platform: self or kubeconfigSecret/);
  });
});

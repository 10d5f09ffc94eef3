import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type RouteApp, routeApp } from "../../../test/routeapp.js";
import type { Resource } from "../../api/meta.js";
import type { SqliteResourceStore } from "../../platforms/embedded/store.js";
import type { TokenStore } from "../../ports/store.js";
import { boundTokens, workloadCredentials } from "../workloadtokens.js";
import { parseTtl } from "./tokens.js";

const BASE = "/apis/loom.dev/v1alpha1";
const project = (name: string) =>
  ({
    apiVersion: "loom.dev/v1alpha1",
    kind: "Project",
    metadata: { name, project: "" },
    spec: {},
  }) as unknown as Resource;

describe("token and API key routes", () => {
  let r: RouteApp;
  let store: SqliteResourceStore;
  let tokens: TokenStore;
  let admin: string;

  const call = (token: string, method: "GET" | "POST" | "DELETE", url: string, body?: unknown) =>
    r.call(token, method, url, body);
  const mint = async (role: "admin" | "editor" | "viewer", p?: string) =>
    (
      await call(admin, "POST", `${BASE}/tokens`, {
        name: `${role}-${p ?? "all"}`,
        role,
        ...(p ? { project: p } : {}),
      })
    ).json().token as string;

  beforeEach(async () => {
    r = await routeApp({ name: "tokens", tokens: (raw, s) => boundTokens(raw, s) });
    ({ store, tokens, admin } = r);
    await store.create(project("a"));
    await store.create(project("b"));
  });

  afterEach(() => r.close());

  it("parses ttls as seconds, m, h and d, and refuses others", () => {
    expect(parseTtl(undefined)).toBeUndefined();
    expect(parseTtl("30m")).toBe(1800);
    expect(parseTtl("12h")).toBe(43_200);
    expect(parseTtl("7d")).toBe(604_800);
    expect(parseTtl(90)).toBe(90);
    for (const bad of ["0", "-5", "1w", "1.5h", "", "400d", 1.5, true])
      expect(() => parseTtl(bad)).toThrow(/ttl must be/);
  });

  it("an admin lists tokens without secrets and revokes one: refused within a second", async () => {
    const created = await call(admin, "POST", `${BASE}/tokens`, { name: "ci", role: "viewer", ttl: "1h" });
    expect(created.statusCode).toBe(201);
    const { token, id, expiresAt } = created.json();
    expect(Date.parse(expiresAt) - Date.now()).toBeGreaterThan(3500_000);
    expect((await call(token, "GET", `${BASE}/projects`)).statusCode).toBe(200);
    const list = await call(admin, "GET", `${BASE}/tokens`);
    expect(list.json().items.map((t: { name: string }) => t.name)).toEqual(["admin", "ci"]);
    expect(list.json().items[1]).toMatchObject({ id, role: "viewer", expiresAt });
    expect(list.body).not.toContain(token);
    expect(list.body).not.toMatch(/projectUid|hash/);
    expect((await call(admin, "DELETE", `${BASE}/tokens/${id}`)).statusCode).toBe(204);
    expect((await call(admin, "DELETE", `${BASE}/tokens/${id}`)).statusCode).toBe(404);
    // The cache keeps a verified token for at most a second; revoke then wait that out.
    await new Promise((r) => setTimeout(r, 1100));
    const refused = await call(token, "GET", `${BASE}/projects`);
    expect(refused.statusCode).toBe(401);
    expect(refused.json().message).toMatch(/revoked or expired/);
  });

  it("bad ttls are 400 with a message", async () => {
    const r = await call(admin, "POST", `${BASE}/tokens`, { name: "x", role: "viewer", ttl: "forever" });
    expect(r.statusCode).toBe(400);
    expect(r.json().message).toMatch(/ttl must be/);
  });

  it("only an unscoped admin lists or revokes tokens", async () => {
    const victim = (await call(admin, "POST", `${BASE}/tokens`, { name: "v", role: "viewer" })).json().id;
    for (const t of [await mint("admin", "a"), await mint("editor"), await mint("viewer")]) {
      expect((await call(t, "GET", `${BASE}/tokens`)).statusCode).toBe(403);
      expect((await call(t, "DELETE", `${BASE}/tokens/${victim}`)).statusCode).toBe(403);
    }
    expect((await tokens.list()).some((t) => t.id === victim)).toBe(true);
  });

  it("a project's editor lists and revokes its own API keys, not another project's", async () => {
    const editorA = await mint("editor", "a");
    const keyA = (await call(editorA, "POST", `${BASE}/projects/a/apikeys`, { name: "k", ttl: "7d" })).json();
    expect(keyA).toMatchObject({
      name: "k",
      project: "a",
      id: expect.any(String),
      expiresAt: expect.any(String),
    });
    const keyB = (await call(admin, "POST", `${BASE}/projects/b/apikeys`, { name: "kb" })).json();
    const listed = await call(editorA, "GET", `${BASE}/projects/a/apikeys`);
    expect(listed.json().items).toMatchObject([{ id: keyA.id, name: "k" }]);
    expect(listed.body).not.toContain(keyA.key);
    // The attack: A's editor names B's key id under A's path, or B's path itself.
    expect((await call(editorA, "DELETE", `${BASE}/projects/a/apikeys/${keyB.id}`)).statusCode).toBe(404);
    expect((await call(editorA, "DELETE", `${BASE}/projects/b/apikeys/${keyB.id}`)).statusCode).toBe(403);
    expect((await call(editorA, "GET", `${BASE}/projects/b/apikeys`)).statusCode).toBe(403);
    expect((await call(await mint("viewer", "a"), "GET", `${BASE}/projects/a/apikeys`)).statusCode).toBe(403);
    expect((await call(editorA, "DELETE", `${BASE}/projects/a/apikeys/${keyA.id}`)).statusCode).toBe(204);
    expect((await tokens.list({ project: "b", apiKeys: true })).map((k) => k.id)).toEqual([keyB.id]);
  });

  it("a re-created project honours none of its old tokens or keys", async () => {
    const editorA = await mint("editor", "a");
    const key = (await call(admin, "POST", `${BASE}/projects/a/apikeys`, { name: "k" })).json().key;
    expect(await tokens.verify(key)).toBeDefined();
    expect((await call(editorA, "GET", `${BASE}/projects/a/trainingjobs`)).statusCode).toBe(200);
    await store.delete("Project", "", "a");
    await store.create(project("a"));
    await new Promise((r) => setTimeout(r, 1100));
    expect((await call(editorA, "GET", `${BASE}/projects/a/trainingjobs`)).statusCode).toBe(401);
    expect(await tokens.verify(key)).toBeUndefined();
    // A new token for the new project works.
    expect((await call(await mint("editor", "a"), "GET", `${BASE}/projects/a/trainingjobs`)).statusCode).toBe(
      200,
    );
  });

  it("a workload's token: one live at a time, refused once its job finishes or is re-created, and it manages no keys", async () => {
    const job = await store.create({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "j", project: "a" },
      spec: { command: ["true"] },
    } as unknown as Resource);
    const ref = { kind: "TrainingJob", project: "a", name: "j", uid: job.metadata.uid };
    const creds = workloadCredentials(tokens);
    const first = await creds.mint(ref);
    const second = await creds.mint(ref);
    expect(await tokens.verify(first)).toBeUndefined();
    expect(await tokens.verify(second)).toMatchObject({ role: "editor", project: "a", workload: ref });
    // Basic auth, as the mlflow client sends it from ~/.mlflow/credentials.
    const basic = `Basic ${Buffer.from(`loom:${second}`).toString("base64")}`;
    const viaBasic = await r.app.inject({
      method: "GET",
      // Its own object: what a workload's credential may read of Loom's API.
      url: `${BASE}/projects/a/trainingjobs/j`,
      headers: { authorization: basic },
    });
    expect(viaBasic.statusCode).toBe(200);
    expect((await call(second, "POST", `${BASE}/projects/a/apikeys`, { name: "steal" })).statusCode).toBe(
      403,
    );
    expect((await call(second, "GET", `${BASE}/projects/a/apikeys`)).statusCode).toBe(403);
    // Finished (even were the revoke lost): refused.
    await store.updateStatus({ ...job, status: { phase: "Succeeded" } });
    expect(await tokens.verify(second)).toBeUndefined();
    await creds.revoke(ref);
    expect(await tokens.list({ project: "a" })).toEqual([]);
  });
});

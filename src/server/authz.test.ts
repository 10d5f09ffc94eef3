import { describe, expect, it } from "vitest";
import { ForbiddenError } from "../api/errors.js";
import type { TokenInfo } from "../ports/store.js";
import { authorizeApi, bearerAuthenticator, tokenOfHeader } from "./authz.js";

const B = "/apis/loom.dev/v1alpha1";
const token = (role: TokenInfo["role"], project?: string): TokenInfo => ({
  id: "t",
  name: "t",
  role,
  ...(project ? { project } : {}),
});
const allowed = (t: TokenInfo, method: string, url: string) => {
  try {
    authorizeApi(t, method, url);
    return true;
  } catch (err) {
    if (err instanceof ForbiddenError) return false;
    throw err;
  }
};

describe("authorizeApi", () => {
  it("keeps a project-scoped token (a job's workers have one) inside its project", () => {
    const worker = token("editor", "team-a");
    expect(allowed(worker, "GET", `${B}/projects/team-a/trainingjobs`)).toBe(true);
    expect(allowed(worker, "POST", `${B}/projects/team-a/trainingjobs`)).toBe(true);
    expect(allowed(worker, "DELETE", `${B}/projects/team-a/sweeps/s?x=1`)).toBe(true);
    expect(allowed(worker, "GET", `${B}/projects/team-b/trainingjobs`)).toBe(false);
    expect(allowed(worker, "DELETE", `${B}/projects/team-b/trainingjobs/x`)).toBe(false);
    expect(allowed(worker, "GET", `${B}/projects/team-ab/trainingjobs`)).toBe(false);
    expect(allowed(worker, "GET", `${B}/trainingjobs`)).toBe(false); // every project's
    expect(allowed(worker, "GET", `${B}/usage/projects`)).toBe(false);
    expect(allowed(worker, "GET", `${B}/nodes`)).toBe(true);
    expect(() => authorizeApi(worker, "GET", `${B}/projects/team-b/trainingjobs`)).toThrow(
      /reaches project team-a only/,
    );
  });

  it("lets viewers read only, and only admins change projects", () => {
    const viewer = token("viewer");
    expect(allowed(viewer, "GET", `${B}/projects/p/trainingjobs`)).toBe(true);
    expect(allowed(viewer, "POST", `${B}/projects/p/trainingjobs`)).toBe(false);
    const editor = token("editor");
    expect(allowed(editor, "POST", `${B}/projects/p/trainingjobs`)).toBe(true);
    expect(allowed(editor, "GET", `${B}/projects`)).toBe(true);
    expect(allowed(editor, "POST", `${B}/projects`)).toBe(false);
    expect(allowed(editor, "PUT", `${B}/projects/p`)).toBe(false);
    expect(allowed(editor, "DELETE", `${B}/projects/p`)).toBe(false);
    expect(allowed(token("admin"), "DELETE", `${B}/projects/p`)).toBe(true);
    // A project admin changes its own project, not others.
    expect(allowed(token("admin", "p"), "PUT", `${B}/projects/p`)).toBe(true);
    expect(allowed(token("admin", "p"), "PUT", `${B}/projects/q`)).toBe(false);
    // Outside Loom's API (health, metrics, MLflow routes with their own rules): not judged here.
    expect(allowed(viewer, "POST", "/api/2.0/mlflow/runs/create")).toBe(true);
  });
});

describe("bearerAuthenticator", () => {
  const info = (expiresAt?: string): TokenInfo => ({
    id: "1",
    name: "t",
    role: "viewer",
    ...(expiresAt ? { expiresAt } : {}),
  });

  it("reads Bearer, and Basic with the token as the password (the mlflow credentials file)", () => {
    expect(tokenOfHeader("Bearer abc")).toBe("abc");
    expect(tokenOfHeader(`Basic ${Buffer.from("loom:abc").toString("base64")}`)).toBe("abc");
    expect(tokenOfHeader(`basic ${Buffer.from("u:a:b").toString("base64")}`)).toBe("a:b");
    for (const h of [
      undefined,
      "",
      "Bearer ",
      "Basic ",
      `Basic ${Buffer.from("nocolon").toString("base64")}`,
      "Token x",
    ])
      expect(tokenOfHeader(h)).toBeUndefined();
  });

  it("a revoked token is refused once the cache's second is up, an expired one at its expiry", async () => {
    let clock = 0;
    const live = new Map<string, TokenInfo>([
      ["a", info()],
      ["b", info(new Date(500).toISOString())],
    ]);
    let calls = 0;
    const auth = bearerAuthenticator(
      async (t) => {
        calls++;
        return live.get(t);
      },
      { now: () => clock },
    );
    expect(await auth("Bearer a")).toMatchObject({ name: "t" });
    expect(await auth("Bearer b")).toBeDefined();
    expect(calls).toBe(2);
    clock = 400;
    expect(auth("Bearer a")).toMatchObject({ name: "t" }); // cached: no verify
    expect(calls).toBe(2);
    live.delete("a");
    clock = 600; // past half its age: served from cache, checked again in the background
    expect(auth("Bearer a")).toMatchObject({ name: "t" });
    await new Promise((r) => setImmediate(r));
    await expect(async () => auth("Bearer a")).rejects.toThrow(/revoked or expired/);
    // b expired at 500: not served from the cache, and the store (which refuses it) is asked.
    live.delete("b");
    await expect(async () => auth("Bearer b")).rejects.toThrow(/revoked or expired/);
  });
});

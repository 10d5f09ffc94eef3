import { describe, expect, it } from "vitest";
import type { TokenInfo } from "../ports/store.js";
import { bearerAuthenticator, tokenOfHeader } from "./authz.js";

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
    // Revocation exists (loom token revoke, loom apikey revoke): the 401 says what to do next.
    await expect(async () => auth("Bearer a")).rejects.toThrow(
      /show which are live\). Ask an admin for a new one: loom token create NAME .* loom apikey create NAME -p PROJECT for the inference gateway/,
    );
    // b expired at 500: not served from the cache, and the store (which refuses it) is asked.
    live.delete("b");
    await expect(async () => auth("Bearer b")).rejects.toThrow(/revoked or expired/);
  });
});

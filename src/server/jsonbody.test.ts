import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { jsonTooDeep } from "../lib/json.js";
import { installJsonParsers } from "./jsonbody.js";

describe("JSON bodies", () => {
  it("counts depth by brackets outside strings only", () => {
    expect(jsonTooDeep(`${"[".repeat(64)}${"]".repeat(64)}`)).toBe(false);
    expect(jsonTooDeep(`${"[".repeat(65)}${"]".repeat(65)}`)).toBe(true);
    expect(jsonTooDeep(JSON.stringify({ s: "[".repeat(1000), t: '\\"{{{{' }))).toBe(false);
    expect(jsonTooDeep(`{"a":${'{"a":'.repeat(70)}1${"}".repeat(71)}`)).toBe(true);
  });

  it("a 10,000-level JSON or merge-patch body is a 400 with a message; __proto__ still refused", async () => {
    const app = Fastify();
    installJsonParsers(app);
    app.post("/x", async (req) => ({ got: req.body }));
    app.patch("/x", async (req) => ({ got: req.body }));
    const deep = `{"spec":${"[".repeat(10_000)}${"]".repeat(10_000)}}`;
    for (const [method, type] of [
      ["POST", "application/json"],
      ["PATCH", "application/merge-patch+json"],
    ] as const) {
      const res = await app.inject({ method, url: "/x", headers: { "content-type": type }, payload: deep });
      expect(res.statusCode).toBe(400);
      expect(res.json().message).toMatch(/deeper than 64 levels/);
      const ok = await app.inject({
        method,
        url: "/x",
        headers: { "content-type": type },
        payload: '{"a":[1]}',
      });
      expect(ok.json()).toEqual({ got: { a: [1] } });
      const proto = await app.inject({
        method,
        url: "/x",
        headers: { "content-type": type },
        payload: '{"__proto__":{"admin":true}}',
      });
      expect(proto.statusCode).toBe(400);
    }
    await app.close();
  });
});

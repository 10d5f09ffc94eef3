import { describe, expect, it } from "vitest";
import { BadRequestError } from "./errors.js";
import { parseLabelSelector } from "./selector.js";

const prod = { app: "llm", env: "prod", tier: "gpu" };
const dev = { app: "llm", env: "dev" };
const other = { app: "web" };

function matching(selector: string): string[] {
  const s = parseLabelSelector(selector);
  return Object.entries({ prod, dev, other, none: undefined })
    .filter(([, labels]) => s.matches(labels))
    .map(([name]) => name);
}

describe("parseLabelSelector", () => {
  it("matches everything when empty or absent", () => {
    expect(matching("")).toEqual(["prod", "dev", "other", "none"]);
    expect(parseLabelSelector(undefined).matches(undefined)).toBe(true);
    expect(matching("  ")).toEqual(["prod", "dev", "other", "none"]);
  });

  it("supports = and ==", () => {
    expect(matching("env=prod")).toEqual(["prod"]);
    expect(matching("env==prod")).toEqual(["prod"]);
    expect(matching(" env = dev ")).toEqual(["dev"]);
  });

  it("supports != (which matches objects without the label)", () => {
    expect(matching("env!=prod")).toEqual(["dev", "other", "none"]);
  });

  it("supports an empty value", () => {
    const s = parseLabelSelector("flag=");
    expect(s.matches({ flag: "" })).toBe(true);
    expect(s.matches({ flag: "x" })).toBe(false);
    expect(s.matches({})).toBe(false);
  });

  it("supports in and notin", () => {
    expect(matching("env in (prod,dev)")).toEqual(["prod", "dev"]);
    expect(matching("env in (staging)")).toEqual([]);
    expect(matching("env notin (prod)")).toEqual(["dev", "other", "none"]);
    expect(matching("env in ( prod , dev )")).toEqual(["prod", "dev"]);
  });

  it("supports existence and non-existence", () => {
    expect(matching("tier")).toEqual(["prod"]);
    expect(matching("!tier")).toEqual(["dev", "other", "none"]);
    expect(matching("! env")).toEqual(["other", "none"]);
  });

  it("ANDs terms, splitting only on commas outside parentheses", () => {
    expect(matching("app=llm,env in (prod,dev)")).toEqual(["prod", "dev"]);
    expect(matching("env in (prod,dev),!tier")).toEqual(["dev"]);
    expect(matching("app in (llm,web),env notin (dev,prod)")).toEqual(["other"]);
    expect(matching("app=llm,env!=dev,tier")).toEqual(["prod"]);
  });

  it("accepts prefixed keys", () => {
    const s = parseLabelSelector("loom.dev/role=trainer");
    expect(s.matches({ "loom.dev/role": "trainer" })).toBe(true);
    expect(s.matches({ role: "trainer" })).toBe(false);
  });

  it.each([
    "env=prod=x",
    "env in prod",
    "env in (prod",
    "=prod",
    "app=llm,,env=dev",
    "env is prod",
    "app=l m",
  ])("rejects %j with BadRequestError naming the term", (text) => {
    expect(() => parseLabelSelector(text)).toThrow(BadRequestError);
    try {
      parseLabelSelector(text);
    } catch (err) {
      expect((err as BadRequestError).httpStatus).toBe(400);
      expect((err as Error).message).toMatch(/invalid label selector term/);
    }
  });

  it.each(["!env=prod", "!env in (prod)"])("rejects a negated comparison %j", (text) => {
    expect(() => parseLabelSelector(text)).toThrow(BadRequestError);
  });
});

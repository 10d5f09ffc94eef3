import { describe, expect, it } from "vitest";
import { canonicalUrl } from "./paths.js";

describe("canonicalUrl", () => {
  it("decodes unreserved characters once, so the router and the authorizer read one path", () => {
    expect(canonicalUrl("/%61pis/loom.dev/v1alpha1/projects/B/x?a=%2F")).toEqual({
      url: "/apis/loom.dev/v1alpha1/projects/B/x?a=%2F",
    });
    expect(canonicalUrl("/%67ateway/v1/endpoints")).toEqual({ url: "/gateway/v1/endpoints" });
    expect(canonicalUrl("/a%2db/%7e")).toEqual({ url: "/a-b/~" });
    // Reserved characters stay encoded, hex upper-cased: one spelling.
    expect(canonicalUrl("/a%3ab/%c3%a9")).toEqual({ url: "/a%3Ab/%C3%A9" });
    expect(canonicalUrl("/a/b/")).toEqual({ url: "/a/b/" });
    expect(canonicalUrl("/")).toEqual({ url: "/" });
    // The openai client sends models.retrieve("team/chat") as /v1/models/team%2Fchat.
    expect(canonicalUrl("/v1/models/team%2fchat")).toEqual({ url: "/v1/models/team%2Fchat" });
    expect(canonicalUrl("/v1/%6dodels/team%2Fchat")).toEqual({ url: "/v1/models/team%2Fchat" });
  });

  it.each([
    ["/apis/a%2Fb", /encoded '\/'/],
    ["/apis/a%2fb", /encoded '\/'/],
    ["/apis/a%5Cb", /backslash/],
    ["/apis/a\\b", /backslash/],
    ["/apis/a%00", /control/],
    ["/apis/%2561", /encoded '%'/],
    ["/apis/%zz", /malformed/],
    ["/apis/%6", /malformed/],
    ["/apis/./x", /'\.' segment/],
    ["/apis/%2e/x", /'\.' segment/],
    ["/apis/../x", /'\.\.' segment/],
    ["/apis/%2E%2e/x", /'\.\.' segment/],
    ["/apis/.%2E", /'\.\.' segment/],
    ["/x/..", /'\.\.' segment/],
    ["//apis", /empty segment/],
    ["/apis//x", /empty segment/],
    ["http://h/apis", /starting with '\/'/],
    ["*", /starting with '\/'/],
    ["/a#b", /fragment/],
    ["/a b", /space/],
  ])("refuses %s", (raw, why) => {
    const got = canonicalUrl(raw);
    expect("refused" in got && got.refused).toMatch(why);
  });
});

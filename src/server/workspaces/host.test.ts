import { describe, expect, it } from "vitest";
import { parseWorkspaceHost, workspaceNameProblem, workspaceOrigin } from "./host.js";

describe("workspace origins' hosts", () => {
  it("parses NAME--PROJECT.ws.localhost with or without a port, in any case", () => {
    expect(parseWorkspaceHost("nb--team-a.ws.localhost:7471")).toEqual({ name: "nb", project: "team-a" });
    expect(parseWorkspaceHost("NB--Default.WS.localhost")).toEqual({ name: "nb", project: "default" });
    expect(parseWorkspaceHost("nb--default.ws.localhost.:80")).toEqual({ name: "nb", project: "default" });
    // The name ends at the first "--": a project may contain "--".
    expect(parseWorkspaceHost("nb--a--b.ws.localhost")).toEqual({ name: "nb", project: "a--b" });
  });

  it("names no workspace for anything else (the API's host, lookalikes, smuggled ports or paths)", () => {
    for (const h of [
      undefined,
      "",
      "localhost:7470",
      "127.0.0.1:7471",
      "ws.localhost",
      "nb.ws.localhost",
      "--default.ws.localhost",
      "nb--.ws.localhost",
      "nb--default.ws.localhost.evil.com",
      "nb--default.ws.localhostx",
      "nb--default.xws.localhost",
      "x.nb--default.ws.localhost",
      "nb--default.ws.localhost:7471:1",
      "nb--default.ws.localhost/x",
      "nb_x--default.ws.localhost",
      "-nb--default.ws.localhost",
      "user@nb--default.ws.localhost",
    ])
      expect(parseWorkspaceHost(h), String(h)).toBeUndefined();
  });

  it("round-trips the origin it makes", () => {
    const origin = workspaceOrigin("team-a", "nb", 7471);
    expect(origin).toBe("http://nb--team-a.ws.localhost:7471");
    expect(parseWorkspaceHost(new URL(origin).host)).toEqual({ name: "nb", project: "team-a" });
  });

  it("refuses names that cannot name an origin one way, saying why", () => {
    expect(workspaceNameProblem("default", "nb")).toBeUndefined();
    expect(workspaceNameProblem("default", "a--b")).toMatch(/contains "--".*rename/);
    expect(workspaceNameProblem("default", "Nb")).toMatch(/DNS label/);
    expect(workspaceNameProblem("Bad_Project", "nb")).toMatch(/project name/);
  });
});

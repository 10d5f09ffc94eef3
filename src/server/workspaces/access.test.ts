import { describe, expect, it } from "vitest";
import { ForbiddenError, UnauthorizedError } from "../../api/errors.js";
import type { TokenInfo } from "../../ports/store.js";
import { type WorkspaceAccess, workspaceAccessOn } from "./access.js";

/** A token table standing in for the store (the real one is exercised end to end). */
function setup() {
  const tokens = new Map<string, TokenInfo>([
    ["ed", { id: "1", name: "ed", role: "editor", project: "a" }],
    ["admin", { id: "2", name: "admin", role: "admin" }],
    ["viewer", { id: "3", name: "v", role: "viewer", project: "a" }],
    ["other", { id: "4", name: "o", role: "editor", project: "b" }],
    ["key", { id: "5", name: "k", role: "editor", project: "a", apiKey: {} }],
  ]);
  let t = 1_000_000;
  const access = workspaceAccessOn({ verify: async (tok) => tokens.get(tok) }, { now: () => t });
  return { tokens, access, advance: (ms: number) => (t += ms) };
}

const issue = (a: WorkspaceAccess, tokens: Map<string, TokenInfo>, tok: string, project = "a", name = "nb") =>
  a.issue(tok, tokens.get(tok)!, project, name);

describe("workspace tickets and sessions", () => {
  it("a ticket makes one session, for its workspace; the session checks out", async () => {
    const { access, tokens } = setup();
    const ticket = issue(access, tokens, "ed");
    const session = await access.redeem(ticket, "a", "nb");
    expect((await access.check(session, "a", "nb")).principal.name).toBe("ed");
  });

  it("a ticket works once: the second try is refused", async () => {
    const { access, tokens } = setup();
    const ticket = issue(access, tokens, "ed");
    await access.redeem(ticket, "a", "nb");
    await expect(access.redeem(ticket, "a", "nb")).rejects.toThrow(/used already/);
  });

  it("a ticket expires after 60 s", async () => {
    const { access, tokens, advance } = setup();
    const ticket = issue(access, tokens, "ed");
    advance(60_001);
    await expect(access.redeem(ticket, "a", "nb")).rejects.toThrow(/expired/);
  });

  it("a ticket presented at another workspace's origin is refused, and burnt", async () => {
    const { access, tokens } = setup();
    const ticket = issue(access, tokens, "ed");
    await expect(access.redeem(ticket, "a", "other")).rejects.toBeInstanceOf(ForbiddenError);
    await expect(access.redeem(ticket, "a", "nb")).rejects.toThrow(/used already/);
  });

  it("a session is refused at another workspace, when forged, and after 12 h", async () => {
    const { access, tokens, advance } = setup();
    const session = await access.redeem(issue(access, tokens, "admin"), "a", "nb");
    await expect(access.check(session, "a", "nb2")).rejects.toBeInstanceOf(ForbiddenError);
    await expect(access.check(session, "b", "nb")).rejects.toBeInstanceOf(ForbiddenError);
    await expect(access.check(`${session}x`, "a", "nb")).rejects.toBeInstanceOf(UnauthorizedError);
    await expect(access.check(undefined, "a", "nb")).rejects.toThrow(/not logged in.*loom open ws\/nb -p a/);
    advance(12 * 3600_000 + 1);
    await expect(access.check(session, "a", "nb")).rejects.toThrow(/expired/);
  });

  it("a revoked token ends its sessions at the next request", async () => {
    const { access, tokens, advance } = setup();
    const session = await access.redeem(issue(access, tokens, "ed"), "a", "nb");
    tokens.delete("ed");
    advance(1001); // past the authenticator's 1 s cache, as everywhere in the server
    await expect(access.check(session, "a", "nb")).rejects.toBeInstanceOf(UnauthorizedError);
    tokens.set("ed", { id: "1", name: "ed", role: "editor", project: "a" });
    await expect(access.check(session, "a", "nb")).rejects.toThrow(/not logged in/); // gone for good
  });

  it("a token that loses edit rights loses its sessions", async () => {
    const { access, tokens, advance } = setup();
    const session = await access.redeem(issue(access, tokens, "ed"), "a", "nb");
    tokens.set("ed", { id: "1", name: "ed", role: "viewer", project: "a" });
    advance(1001);
    await expect(access.check(session, "a", "nb")).rejects.toThrow(/may read, not change/);
  });

  it("viewers, other projects' members and API keys get no session even holding a ticket", async () => {
    const { access, tokens } = setup();
    await expect(access.redeem(issue(access, tokens, "viewer"), "a", "nb")).rejects.toBeInstanceOf(
      ForbiddenError,
    );
    await expect(access.redeem(issue(access, tokens, "other"), "a", "nb")).rejects.toBeInstanceOf(
      ForbiddenError,
    );
    await expect(access.redeem(issue(access, tokens, "key"), "a", "nb")).rejects.toBeInstanceOf(
      ForbiddenError,
    );
  });
});

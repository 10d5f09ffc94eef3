import { describe, expect, it } from "vitest";
import { ForbiddenError } from "../api/errors.js";
import type { TokenInfo } from "../ports/store.js";
import { mlflowRule } from "../tracking/routes.js";
import { type DecideOptions, decide } from "./authorize.js";
import { type Rule, rule } from "./routetable.js";

const token = (role: TokenInfo["role"], project?: string, extra: Partial<TokenInfo> = {}): TokenInfo => ({
  id: "t",
  name: "t",
  role,
  ...(project ? { project } : {}),
  ...extra,
});
const opts: DecideOptions = { kindOf: (p) => (p === "trainingjobs" ? "TrainingJob" : undefined) };
const allowed = (t: TokenInfo, r: Rule, params: Record<string, string> = {}, o = opts) => {
  try {
    decide(t, r, params, o);
    return true;
  } catch (err) {
    if (err instanceof ForbiddenError) return false;
    throw err;
  }
};
const objects = (verb: "read" | "write") => rule.project("objects", verb);

describe("decide", () => {
  it("keeps a project-scoped token inside its project, by the routed parameter", () => {
    const worker = token("editor", "team-a");
    expect(allowed(worker, objects("read"), { project: "team-a" })).toBe(true);
    expect(allowed(worker, objects("write"), { project: "team-a" })).toBe(true);
    expect(allowed(worker, objects("read"), { project: "team-b" })).toBe(false);
    expect(allowed(worker, objects("read"), { project: "team-ab" })).toBe(false);
    expect(allowed(worker, rule.global("objects"))).toBe(false);
    expect(allowed(worker, rule.cluster("nodes"))).toBe(true);
    expect(() => decide(worker, objects("read"), { project: "team-b" }, opts)).toThrow(
      /reaches project team-a only/,
    );
    // No project parameter: the default project (MLflow at the root).
    expect(allowed(worker, mlflowRule("GET", "runs/get"))).toBe(false);
    expect(allowed(token("editor", "default"), mlflowRule("GET", "runs/get"))).toBe(true);
  });

  it("lets viewers read only, and only unscoped admins change projects, tokens and metrics", () => {
    const viewer = token("viewer");
    expect(allowed(viewer, objects("read"), { project: "p" })).toBe(true);
    expect(allowed(viewer, objects("write"), { project: "p" })).toBe(false);
    expect(allowed(viewer, mlflowRule("POST", "runs/search"))).toBe(true);
    expect(allowed(viewer, mlflowRule("POST", "runs/create"))).toBe(false);
    const editor = token("editor");
    expect(allowed(editor, objects("write"), { project: "p" })).toBe(true);
    expect(allowed(editor, rule.global("projects"))).toBe(true);
    expect(allowed(editor, rule.admin("projects"))).toBe(false);
    expect(allowed(editor, rule.admin("metrics", "read"))).toBe(false);
    expect(allowed(token("admin"), rule.admin("projects"))).toBe(true);
    // A project's admin does not change its own Project (its quota is the cluster admin's to set).
    expect(allowed(token("admin", "p"), rule.admin("projects"))).toBe(false);
    expect(
      allowed(token("admin", "p"), rule.project("projects", "read", { projectParam: "name" }), { name: "p" }),
    ).toBe(true);
  });

  it("keeps status for the platform", () => {
    for (const t of [token("admin"), token("editor", "p"), token("admin", "p")])
      expect(allowed(t, rule.platform("status"), { project: "p" })).toBe(false);
    const platform = { ...opts, isPlatform: (p: TokenInfo) => p.name === "controller" };
    expect(allowed({ ...token("admin"), name: "controller" }, rule.platform("status"), {}, platform)).toBe(
      true,
    );
  });

  it("lets API keys reach the gateway only", () => {
    const key = token("viewer", "p", { apiKey: {} });
    expect(allowed(key, rule.gateway("inference", "write"))).toBe(true);
    expect(allowed(key, objects("read"), { project: "p" })).toBe(false);
    expect(allowed(key, mlflowRule("GET", "runs/get"), { project: "p" })).toBe(false);
    expect(allowed(key, rule.gatewayControl("gateway-authenticate", "read"))).toBe(false);
  });

  it("lets a workload read its own object and its project's tracking, nothing else", () => {
    const workload = { kind: "TrainingJob", project: "p", name: "j", uid: "u1" };
    const w = token("editor", "p", { workload });
    const own = rule.project("objects", "read", { workload: "own-object" });
    expect(allowed(w, own, { project: "p", plural: "trainingjobs", name: "j" })).toBe(true);
    expect(allowed(w, own, { project: "p", plural: "trainingjobs", name: "other" })).toBe(false);
    expect(allowed(w, own, { project: "p", plural: "sweeps", name: "j" })).toBe(false);
    expect(allowed(w, own, { project: "q", plural: "trainingjobs", name: "j" })).toBe(false);
    expect(allowed(w, objects("read"), { project: "p" })).toBe(false); // lists
    expect(allowed(w, objects("write"), { project: "p" })).toBe(false);
    expect(allowed(w, rule.cluster("nodes"))).toBe(false);
    expect(allowed(w, rule.gateway("inference", "write"))).toBe(false);
    expect(allowed(w, mlflowRule("POST", "runs/search"), { project: "p" })).toBe(true);
    expect(allowed(w, mlflowRule("POST", "runs/log-batch"), { project: "p" })).toBe(true); // its own runs: later
    expect(allowed(w, mlflowRule("POST", "runs/log-batch"), { project: "q" })).toBe(false);
    expect(allowed(w, mlflowRule("POST", "experiments/delete"), { project: "p" })).toBe(false);
    expect(allowed(w, mlflowRule("POST", "registered-models/create"), { project: "p" })).toBe(false);
  });
});

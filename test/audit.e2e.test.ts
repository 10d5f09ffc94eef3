import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobYaml, LoomProcess } from "./helpers.js";

/** The audit log through the real CLI against a real `loom up`: writes and refusals, who and what. */
describe("loom audit (embedded)", () => {
  const loom = new LoomProcess(["--audit-retention", "7d"]);
  let restarted: LoomProcess | undefined;
  beforeAll(() => loom.start());
  afterAll(async () => {
    await restarted?.stop();
    await loom.stop();
  });

  it("shows a create, a delete and a refused write, with who, verb, object, result and source", async () => {
    expect((await loom.cli(["apply", "-f", "-"], { input: jobYaml("audited", ["true"]) })).code).toBe(0);
    const deleted = await loom.cli(["delete", "tj", "audited", "--timeout", "30"]);
    expect(deleted.code, deleted.stderr).toBe(0);
    const minted = await loom.cli(["token", "create", "watcher", "--role", "viewer", "-p", "default"]);
    expect(minted.code, minted.stderr).toBe(0);
    const viewerToken = minted.stdout.trim();
    const refused = await loom.cli(["apply", "-f", "-"], {
      input: jobYaml("sneaky", ["true"]),
      env: { LOOM_TOKEN: viewerToken },
    });
    expect(refused.code).toBe(1);

    const shown = await loom.cli(["audit"]);
    expect(shown.code, shown.stderr).toBe(0);
    const lines = shown.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^TIME\s+WHO\s+VERB\s+OBJECT\s+RESULT\s+SOURCE$/);
    const row = (re: RegExp) => lines.find((l) => re.test(l));
    // Once: apply's dry run before the create changes nothing and is not recorded.
    const created = lines.filter((l) => /create\s+default\/trainingjobs\/audited\s/.test(l));
    expect(created).toHaveLength(1);
    expect(created[0]).toMatch(
      /admin \(admin\)\s+create\s+default\/trainingjobs\/audited\s+201\s+127\.0\.0\.1/,
    );
    expect(row(/admin \(admin\)\s+delete\s+default\/trainingjobs\/audited\s+200\s/)).toBeDefined();
    expect(row(/admin \(admin\)\s+create\s+tokens\/watcher\s+201\s/)).toBeDefined();
    expect(
      row(/watcher \(viewer of default\)\s+create\s+default\/trainingjobs\s+denied 403\s/),
    ).toBeDefined();
    // The token minted above is in no entry.
    expect(shown.stdout).not.toContain(viewerToken);

    const json = await loom.cli(["audit", "-p", "default", "--since", "1h", "-o", "json"]);
    expect(json.code, json.stderr).toBe(0);
    const items = JSON.parse(json.stdout) as { verb: string; allowed: boolean; reason?: string }[];
    expect(items.some((e) => !e.allowed && e.reason?.includes("may read, not change"))).toBe(true);
    expect(json.stdout).not.toContain(viewerToken);
    expect(JSON.parse((await loom.cli(["audit", "--limit", "1", "-o", "json"])).stdout)).toHaveLength(1);

    // The viewer may not read the log: one line saying what it takes.
    const denied = await loom.cli(["audit", "-p", "default"], { env: { LOOM_TOKEN: viewerToken } });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain("takes an admin token");
    const badSince = await loom.cli(["audit", "--since", "yesterday"]);
    expect(badSince.code).toBe(1);
    expect(badSince.stderr).toContain("since must be a duration");
  });

  it("keeps what was recorded across a stop and start (the queue is written on close)", async () => {
    expect((await loom.cli(["apply", "-f", "-"], { input: jobYaml("lastword", ["true"]) })).code).toBe(0);
    expect(await loom.kill("SIGTERM")).toBe(0);
    restarted = new LoomProcess([], loom.home);
    await restarted.start();
    const shown = await restarted.cli(["audit"]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/create\s+default\/trainingjobs\/lastword\s+201/);
  });

  it("refuses a retention that is not a duration, saying what to pass", async () => {
    const bad = await loom.cli(["up", "--data-dir", `${loom.home}/other`, "--audit-retention", "forever"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("--audit-retention must be a duration");
  });
});

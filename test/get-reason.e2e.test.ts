import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobYaml, LoomProcess } from "./helpers.js";

/**
 * A job waiting for its Python environment says so in plain `loom get tj` (REASON, as kubectl's
 * STATUS) and, with the progress and a rough duration, in `loom describe`. The build is held open
 * by an interpreter that waits for a file, so the test sees it in progress whatever the load.
 */
describe("why a job waits, without -o wide", () => {
  const loom = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-slowpy-"));
  const flag = join(dir, "go");
  const interpreter = join(dir, "python3");
  beforeAll(async () => {
    writeFileSync(
      interpreter,
      `#!/bin/sh\nwhile [ ! -e "${flag}" ]; do sleep 0.1; done\nexec /usr/bin/python3 "$@"\n`,
    );
    chmodSync(interpreter, 0o755);
    await loom.start();
  });
  afterAll(async () => {
    writeFileSync(flag, "");
    await loom.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("shows Pending BuildingEnvironment while the environment builds, then runs", async () => {
    const yaml = jobYaml("slowenv", ["true"], `  python: {interpreter: ${interpreter}}\n`);
    expect((await loom.cli(["apply", "-f", "-"], { input: yaml })).code).toBe(0);
    let table = "";
    for (let i = 0; i < 600 && !table.includes("BuildingEnvironment"); i++) {
      table = (await loom.cli(["get", "tj"])).stdout;
      if (!table.includes("BuildingEnvironment")) await sleep(100);
    }
    expect(table).toMatch(
      /^NAME +PHASE +READY +ATTEMPT +REASON +AGE\nslowenv +Pending +\S+ +\S+ +BuildingEnvironment +\d+s\n$/,
    );
    const described = (await loom.cli(["describe", "tj", "slowenv"])).stdout;
    expect(described).toMatch(
      /building the Python environment \(first use; cached afterwards\): \[.*\] creating the virtual environment, \d+s so far \(/,
    );
    writeFileSync(flag, "");
    const done = await loom.waitFor(
      "slowenv",
      (j) => /Succeeded|Failed/.test(j.status?.phase ?? ""),
      120_000,
    );
    expect(done.status?.phase, JSON.stringify(done.status?.conditions)).toBe("Succeeded");
  }, 180_000);
});

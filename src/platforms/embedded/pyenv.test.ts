import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import type { Preparation } from "../../ports/runtime.js";
import { environmentKey, PythonEnvironments, progressMessage } from "./pyenv.js";

const dir = mkdtempSync(join(tmpdir(), "loom-pyenv-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function until(envs: PythonEnvironments, spec: Parameters<PythonEnvironments["prepare"]>[0]) {
  const seen: Preparation[] = [];
  for (let i = 0; i < 1200; i++) {
    const p = envs.prepare(spec);
    seen.push(p);
    if (!("ready" in p) || p.ready) return seen;
    await sleep(100);
  }
  throw new Error("the environment never got ready");
}

describe("PythonEnvironments", () => {
  const envs = new PythonEnvironments(dir, pino({ level: "silent" }));
  const spec = { interpreter: "python3", requirements: [], systemSitePackages: false };

  it("builds a venv once, in the background, saying how far it got; then it is ready at once", async () => {
    const seen = await until(envs, spec);
    expect(seen[0]).toMatchObject({ ready: false });
    expect((seen[0] as { message: string }).message).toMatch(/building the Python environment .*\[.*\]/);
    expect(seen.at(-1)).toEqual({ ready: true });
    const location = envs.location(spec);
    expect(existsSync(join(location, "bin", "python"))).toBe(true);
    // A second server (or job) with the same content finds it built.
    expect(new PythonEnvironments(dir, pino({ level: "silent" })).prepare(spec)).toEqual({ ready: true });
  }, 130_000);

  it("keys environments by their content", () => {
    const other = { ...spec, systemSitePackages: true };
    expect(environmentKey(spec)).not.toBe(environmentKey(other));
    expect(environmentKey(spec)).toBe(environmentKey({ ...spec }));
  });

  it("says roughly how long a build takes: the last one here, once one has finished", async () => {
    await until(envs, spec);
    const other = { ...spec, systemSitePackages: true };
    const first = new PythonEnvironments(dir, pino({ level: "silent" })).prepare(other);
    expect((first as { message: string }).message).toMatch(/\d+s so far \(the last build here took \d+s\)/);
    // Both servers share the cache: the second waits for the first's build instead of racing it.
    const seen = await until(envs, other);
    expect((seen[0] as { message: string }).message).toMatch(/being built by process \d+/);
    expect(seen.at(-1)).toEqual({ ready: true });
  }, 130_000);

  it("takes over the build of a process that is gone (its lock names a dead pid)", async () => {
    const third = { ...spec, requirements: [], interpreter: "python3.11" };
    const location = envs.location(third);
    const gone = spawnSync("true").pid; // exited: its pid names no process now
    writeFileSync(`${location}.building`, String(gone));
    expect((await until(envs, third)).at(-1)).toEqual({ ready: true });
    expect(existsSync(`${location}.building`)).toBe(false);
  }, 130_000);

  it("names what pip is doing now, and a first build's rough size", () => {
    const b = { startedAt: 0, collected: 3, fetched: 1, current: "Downloading torch-2.4.0.whl (797.2 MB)" };
    expect(progressMessage(b, "/envs/x", 42_000)).toBe(
      "building the Python environment (first use; cached afterwards): [======>             ] " +
        "fetched 1 of 3 package(s) found so far (Downloading torch-2.4.0.whl (797.2 MB)), 42s so far " +
        "(seconds for a bare venv, minutes with large packages such as torch); log: /envs/x.log",
    );
    expect(progressMessage({ ...b, installing: 3, lastSeconds: 95 }, "/envs/x", 42_000)).toMatch(
      /installing 3 package\(s\), 42s so far \(the last build here took 95s\)/,
    );
  });

  it("reports a failed pip install with its log, and tries again next time", async () => {
    const bad = { ...spec, requirements: ["--definitely-not-a-pip-option"] };
    const seen = await until(envs, bad);
    const last = seen.at(-1) as { failed: string };
    expect(last.failed).toMatch(/pip install exited with code \d+; see .*\.log/);
    const log = last.failed.replace(/^.*see /, "");
    expect(readFileSync(log, "utf8")).toMatch(/no such option/);
    expect(envs.prepare(bad)).toMatchObject({ ready: false });
    // Let the retry finish too, so nothing writes into the directory while afterAll removes it.
    expect((await until(envs, bad)).at(-1)).toMatchObject({
      failed: expect.stringMatching(/pip install exited/),
    });
  }, 130_000);

  it("an existing venv is used as it is; a missing one is an error that names it", () => {
    expect(envs.prepare({ venv: envs.location(spec) })).toEqual({ ready: true });
    expect(envs.prepare({ venv: "/nonexistent/venv" })).toEqual({
      failed: "no virtual environment at /nonexistent/venv (/nonexistent/venv/bin/python is missing)",
    });
  });
});

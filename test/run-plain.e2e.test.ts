import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";

/**
 * `loom run -- COMMAND` without --from, as `kubectl run` / `runai submit` users try first: the
 * command runs as a TrainingJob from the current directory; -f prints its output and exits with
 * its outcome; flags that make no sense together are refused with what to do instead.
 */
describe("loom run -- COMMAND (embedded)", () => {
  const loom = new LoomProcess();
  let dir = "";
  beforeAll(async () => {
    await loom.start();
    dir = mkdtempSync(join(tmpdir(), "loom-run-plain-"));
    // The sandboxed job runs as its project's uid: the directory must be readable by it.
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, "data.txt"), "forty-two\n", { mode: 0o644 });
  }, 60_000);
  afterAll(async () => {
    await loom.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("-f runs the command in the current directory, prints its output and exits 0", async () => {
    const r = await loom.cli(
      [
        "run",
        "-f",
        "--framework",
        "none",
        "-e",
        "GREETING=hi",
        "--",
        "sh",
        "-c",
        'echo "$GREETING $(cat data.txt)"',
      ],
      { cwd: dir },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("hi forty-two");
    const name = /\/(loom-run-plain-\S+) created/.exec(r.stderr);
    expect(name, r.stderr).not.toBeNull();
    // Named after the directory, as `loom get` shows it.
    const list = await loom.cli(["get", "tj"]);
    expect(list.stdout).toMatch(/loom-run-plain-/);
  }, 120_000);

  it("-f exits 1 and says why when the command fails", async () => {
    const r = await loom.cli(["run", "-f", "--name", "fails", "--", "sh", "-c", "echo bye; exit 3"], {
      cwd: dir,
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("bye");
    expect(r.stderr).toMatch(/fails failed.*(exit|code).*3/i);
    expect(r.stderr).toContain("loom describe");
  }, 120_000);

  it("without -f it only submits, and says how to follow", async () => {
    const r = await loom.cli(["run", "--name", "quiet", "--", "true"], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/quiet created; follow it with: loom logs \S+quiet -f/);
    const job = await loom.job("quiet");
    expect(job.spec).toMatchObject({ command: ["true"], workingDir: dir });
  }, 60_000);

  it("refuses what cannot work, saying what to do", async () => {
    const none = await loom.cli(["run", "--"], { cwd: dir });
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/command|COMMAND/);
    const both = await loom.cli(["run", "--from", "ws/nb", "--image", "x", "--", "true"], { cwd: dir });
    expect(both.code).toBe(1);
    expect(both.stderr).toContain("leave out --image and --workdir");
    const env = await loom.cli(["run", "-e", "NOEQUALS", "--", "true"], { cwd: dir });
    expect(env.code).toBe(1);
    expect(env.stderr).toContain("--env takes KEY=VALUE");
    const workers = await loom.cli(["run", "-w", "0", "--", "true"], { cwd: dir });
    expect(workers.stderr).toContain("--workers must be a whole number of at least 1");
  }, 60_000);
});

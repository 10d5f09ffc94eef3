import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

/**
 * test/k8s scripts never wait on another build's or start's lock without a word: lock_fd (wait.sh)
 * says who holds it and keeps saying so until it gets it; ticking says a long build is still going.
 */

const waitSh = resolve(import.meta.dirname, "k8s", "wait.sh");
const dir = mkdtempSync(join(tmpdir(), "loom-k8s-wait-"));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

/** Runs a bash snippet with wait.sh sourced, log() to stderr, ticks every second. */
function bash(script: string): { child: ChildProcess; output: () => string; done: Promise<number | null> } {
  const child = spawn(
    "bash",
    ["-c", `set -euo pipefail; log() { echo "[t] $*" >&2; }; source "${waitSh}"; ${script}`],
    { env: { ...process.env, LOOM_K8S_PROGRESS_S: "1" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  children.push(child);
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const done = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  return { child, output: () => out, done };
}

async function until(cond: () => boolean, what: () => string): Promise<void> {
  for (let i = 0; i < 1200 && !cond(); i++) await new Promise((r) => setTimeout(r, 100));
  if (!cond()) throw new Error(`gave up waiting: ${what()}`);
}

describe("test/k8s waits say what they wait for", () => {
  it("a second build waiting on the lock names the holder (pid, start) and repeats until it gets it", async () => {
    const lock = join(dir, ".build.lock");
    const holder = bash(`exec 9>"${lock}"; lock_fd 9 "${lock}" "build of X"; echo held; sleep 600`);
    await until(() => holder.output().includes("held"), holder.output);
    const waiter = bash(`exec 9>"${lock}"; lock_fd 9 "${lock}" "build of X"; echo mine`);
    const waiting = () => waiter.output().match(/waiting for another build of X/g)?.length ?? 0;
    await until(() => waiting() >= 3, waiter.output);
    expect(waiter.output()).toMatch(
      new RegExp(
        `^\\[t\\] waiting for another build of X \\(pid ${holder.child.pid}, started \\d\\d:\\d\\d:\\d\\d, \\d+s ago: .+\\); waited \\d+s so far; lock: ${lock}$`,
        "m",
      ),
    );
    expect(waiter.output()).not.toContain("mine");
    holder.child.kill("SIGKILL");
    expect(await waiter.done).toBe(0);
    expect(waiter.output()).toMatch(/\[t\] got the lock after \d+s\nmine\n$/);
  }, 180_000);

  it("an uncontended lock is taken without a word", async () => {
    const lock = join(dir, ".free.lock");
    const r = bash(`exec 9>"${lock}"; lock_fd 9 "${lock}" "build of Y"; echo mine`);
    expect(await r.done).toBe(0);
    expect(r.output()).toBe("mine\n");
  });

  it("ticking says a long step is still going, with the last line of its log, and keeps its exit code", async () => {
    const log = join(dir, "build.log");
    const r = bash(
      `step() { echo "compiling pkg/a" >"${log}"; while ! grep -q stop "${log}"; do sleep 0.2; done; return 3; }; ticking "building Z" "${log}" step`,
    );
    await until(
      () => /still building Z: \d+s so far; last of .*: compiling pkg\/a/.test(r.output()),
      r.output,
    );
    await import("node:fs").then((fs) => fs.appendFileSync(log, "stop\n"));
    expect(await r.done).toBe(3);
  }, 180_000);
});

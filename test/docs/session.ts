import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { DocBlock } from "./blocks.js";

/** One step of a block: shell text run by bash, or `loom up`, which stays in the foreground. */
export type Step = { kind: "script"; text: string } | { kind: "up"; args: string };

/**
 * What the runner does with the commands a new user types that cannot (or need not) run again
 * inside a test run; every other command runs exactly as the doc shows it.
 * - `npm ci`: the dependencies of this checkout, installed by the test run's own `npm ci`.
 * - `npm test`: the suite that runs this test.
 * - `apt-get install P…`: checked, not installed: `dpkg -s P…` must pass.
 * - `loom up …`: started in the background on a free port (`--port` added), as the doc says it
 *   stays in the foreground; its output counts as the block's.
 */
export function steps(source: string): Step[] {
  const out: Step[] = [];
  let script: string[] = [];
  const flush = () => {
    if (script.length) out.push({ kind: "script", text: script.join("\n") });
    script = [];
  };
  for (const logical of logicalLines(source)) {
    const [first, ...rest] = logical.split("\n");
    const segments = first!.split(" && ");
    const kept: string[] = [];
    for (const [i, seg] of segments.entries()) {
      const cmd = seg.replace(/\s+#.*$/, "").trim();
      if (/^loom up(\s|$)/.test(cmd)) {
        if (i !== segments.length - 1 || rest.length)
          throw new Error(`"loom up" must end its line (it stays in the foreground): ${logical}`);
        if (kept.length) script.push(kept.join(" && "));
        flush();
        out.push({ kind: "up", args: cmd.slice("loom up".length).trim() });
        kept.length = 0;
        break;
      }
      if (/^npm (ci|test)(\s|$)/.test(cmd)) continue;
      const apt = /^apt-get install\s+(.*)$/.exec(cmd);
      kept.push(apt ? `dpkg -s ${apt[1]} >/dev/null` : seg);
    }
    if (kept.length) script.push([kept.join(" && "), ...rest].join("\n"));
  }
  flush();
  return out;
}

/** Lines joined across `\` continuations and here-documents. */
function logicalLines(source: string): string[] {
  const lines = source.split("\n");
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    while (line.endsWith("\\") && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
    const heredoc = /<<-?\s*'?(\w+)'?/.exec(line.replace(/\s+#.*$/, ""));
    if (heredoc) {
      const body: string[] = [];
      while (i + 1 < lines.length) {
        const next = lines[++i]!;
        body.push(next);
        if (next.trim() === heredoc[1]) break;
      }
      line = [line, ...body].join("\n");
    }
    if (line.trim() && !line.trim().startsWith("#")) out.push(line);
  }
  return out;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as { port: number }).port;
  await new Promise((ok) => server.close(ok));
  return port;
}

/**
 * A new user's machine for one doc: a fresh HOME (so `loom up`'s data dir and CLI context are
 * new), npm's global prefix in it, and `loom` on PATH the way the quick start puts it there
 * (`npm link --ignore-scripts` in the repository).
 */
export class DocSession {
  readonly dir = mkdtempSync(join(tmpdir(), "loom-docs-"));
  readonly env: NodeJS.ProcessEnv;
  private up: ChildProcess | undefined;
  upOutput = "";

  constructor(private readonly root: string) {
    const home = join(this.dir, "home");
    const prefix = join(this.dir, "npm-global");
    mkdirSync(home);
    mkdirSync(prefix);
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith("LOOM_") || k.startsWith("npm_")) delete env[k];
    // No node_modules/.bin of the test runner: only what the user's PATH would have.
    const path = (env.PATH ?? "").split(delimiter).filter((p) => !p.includes("node_modules"));
    this.env = {
      ...env,
      HOME: home,
      npm_config_prefix: prefix,
      PATH: [join(prefix, "bin"), ...path].join(delimiter),
    };
  }

  /** The quick start's step that puts `loom` on PATH, for docs that start after it. */
  async link(): Promise<void> {
    const r = await this.bash("npm link --ignore-scripts", 120_000);
    if (r.code !== 0) throw new Error(`npm link failed:\n${r.output}`);
  }

  /** Runs a block's steps in order; its output, and whether any step failed. */
  async run(block: DocBlock, timeoutMs: number): Promise<{ code: number; output: string }> {
    let output = "";
    for (const step of steps(block.source)) {
      if (step.kind === "up") {
        output += await this.startUp(step.args);
        continue;
      }
      const r = await this.bash(step.text, timeoutMs);
      output += r.output;
      if (r.code !== 0) return { code: r.code, output };
    }
    return { code: 0, output };
  }

  /** bash -e over the text, in the repository root (where the docs say to run them). */
  bash(text: string, timeoutMs: number): Promise<{ code: number; output: string }> {
    return new Promise((done) => {
      const proc = spawn("bash", ["-e", "-o", "pipefail", "-c", text], {
        cwd: this.root,
        env: this.env,
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      });
      let output = "";
      proc.stdout.on("data", (d: Buffer) => (output += d));
      proc.stderr.on("data", (d: Buffer) => (output += d));
      const timer = setTimeout(() => {
        output += `\n[doc-test: killed after ${timeoutMs / 1000} s]\n`;
        if (proc.pid) process.kill(-proc.pid, "SIGKILL");
      }, timeoutMs);
      proc.on("close", (code) => {
        clearTimeout(timer);
        done({ code: code ?? 1, output });
      });
    });
  }

  /** Starts `loom up ARGS --port FREE --workspace-port FREE` and waits for the line that says the CLI context is written. */
  private async startUp(args: string): Promise<string> {
    // A guide that continues another finds the `loom up` that one started still running.
    if (this.up && this.up.exitCode === null) return this.upOutput;
    const port = await freePort();
    // The workspaces' origin defaults to the API's port + 1, which another test may hold: a free one too.
    let origin = await freePort();
    while (origin === port) origin = await freePort();
    const originArg = /--workspace-port\b/.test(args) ? "" : ` --workspace-port ${origin}`;
    const proc = spawn("bash", ["-c", `exec loom up ${args} --port ${port}${originArg}`], {
      cwd: this.root,
      env: this.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.up = proc;
    let exited = false;
    proc.on("exit", () => (exited = true));
    proc.stdout!.on("data", (d: Buffer) => (this.upOutput += d));
    proc.stderr!.on("data", (d: Buffer) => (this.upOutput += d));
    // A bound on waiting (a cold start compiles nothing, but the machine may be loaded).
    for (let waited = 0; waited < 120_000 && !exited; waited += 200) {
      if (this.upOutput.includes("CLI context")) return this.upOutput;
      await sleep(200);
    }
    throw new Error(`loom up did not come up:\n${this.upOutput}`);
  }

  /** Deletes what the doc left running, stops `loom up` and removes the session's files. */
  async close(): Promise<void> {
    if (this.up && this.up.exitCode === null) {
      await this.bash(
        // Workspaces and apps too: their sandboxed servers outlive `loom up` (adopted at its next start).
        "loom delete sweeps --all || true; loom delete isvc --all || true; loom delete tj --all || true; " +
          "loom delete ws --all || true; loom delete apps --all || true",
        120_000,
      );
      const exited = new Promise((ok) => this.up!.once("exit", ok));
      this.up.kill("SIGTERM");
      await Promise.race([exited, sleep(30_000)]);
      if (this.up.exitCode === null) this.up.kill("SIGKILL");
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

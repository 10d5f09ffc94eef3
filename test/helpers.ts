import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin", "loom.js");

/**
 * spawnSync's status and output, without blocking this process while the command runs. A test
 * that blocks its event loop past a server's keep-alive timeout (a Python suite run with
 * spawnSync for a minute or more) and then fetches sends on the pooled connection the server
 * closed meanwhile: its HTTP client, blocked too, never saw the close nor ran its own idle timer
 * (fetch failed, cause: other side closed). Killed with SIGTERM after `timeout` ms, as spawnSync.
 */
export function spawnAsync(
  command: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeout?: number } = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((ok) => {
    const p = spawn(command, args, { env: opts.env, cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = opts.timeout ? setTimeout(() => p.kill("SIGTERM"), opts.timeout) : undefined;
    p.on("error", (err) => {
      clearTimeout(timer);
      ok({ status: null, stdout, stderr: `${stderr}${err.message}\n` });
    });
    p.on("close", (code) => {
      clearTimeout(timer);
      ok({ status: code, stdout, stderr });
    });
  });
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * A real `loom up` in its own process, with its own data dir and CLI config, driven through the
 * real CLI. Each test file gets its own, so files can run in parallel.
 */
export class LoomProcess {
  readonly dataDir: string;
  readonly configFile: string;
  url = "";
  token = "";
  private proc: ChildProcess | undefined;
  readonly home: string;
  log = "";

  /** Pass the home of an earlier LoomProcess to start a server on the same data dir. */
  constructor(
    private readonly extraArgs: string[] = [],
    home?: string,
  ) {
    this.home = home ?? mkdtempSync(join(tmpdir(), "loom-test-"));
    this.dataDir = join(this.home, "data");
    this.configFile = join(this.home, "config.yaml");
  }

  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.LOOM_URL;
    delete env.LOOM_TOKEN;
    return { ...env, LOOM_CONFIG: this.configFile, LOOM_LOG_LEVEL: "info", ...extra };
  }

  /** Starts the server and waits for the line with its URL; `env` adds to its environment. */
  async start(env: Record<string, string> = {}): Promise<void> {
    const proc = spawn(
      process.execPath,
      [BIN, "up", "--data-dir", this.dataDir, "--port", "0", ...this.extraArgs],
      {
        env: this.env(env),
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    this.proc = proc;
    let out = "";
    proc.stderr!.on("data", (d: Buffer) => {
      this.log += d.toString();
    });
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`loom up did not start: ${out}\n${this.log}`)), 30_000);
      proc.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const url = /is up at (\S+)/.exec(out)?.[1];
        const token = /admin token: (\S+)/.exec(out)?.[1];
        if (url && token) {
          clearTimeout(timer);
          this.url = url;
          this.token = token;
          ok();
        }
      });
      proc.on("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`loom up exited with ${code}: ${out}\n${this.log}`));
      });
    });
    proc.removeAllListeners("exit");
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** Sends a signal and waits for the process to be gone. */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return proc?.exitCode ?? null;
    const exited = new Promise<number | null>((ok) => proc.once("exit", (code) => ok(code)));
    proc.kill(signal);
    return exited;
  }

  /** Runs the real CLI against this server. */
  cli(
    args: string[],
    opts: { input?: string; env?: Record<string, string>; cwd?: string } = {},
  ): Promise<CliResult> {
    return new Promise((ok) => {
      const p = spawn(process.execPath, [BIN, ...args], {
        env: this.env(opts.env),
        cwd: opts.cwd ?? ROOT,
        stdio: ["pipe", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      p.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
      });
      p.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      p.stdin.end(opts.input ?? "");
      p.on("close", (code) => ok({ code: code ?? -1, stdout, stderr }));
    });
  }

  /** Starts a long-running CLI command (get -w, logs -f); read its output as it comes, kill it when done. */
  cliBackground(args: string[]): { proc: ChildProcess; output: () => string } {
    const p = spawn(process.execPath, [BIN, ...args], {
      env: this.env(),
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    p.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.stderr!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    return { proc: p, output: () => out };
  }

  /** REST call with the admin token (or the given one). */
  async api(
    method: string,
    path: string,
    body?: unknown,
    token: string | null = this.token,
  ): Promise<{ status: number; body: unknown }> {
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: res.status, body: parsed };
  }

  async job(name: string, project = "default"): Promise<Job> {
    const r = await this.api("GET", `/apis/loom.dev/v1alpha1/projects/${project}/trainingjobs/${name}`);
    if (r.status !== 200) throw new Error(`get ${name}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as Job;
  }

  /** Polls until the job satisfies the predicate. */
  async waitFor(
    name: string,
    pred: (j: Job) => boolean,
    timeoutMs = 30_000,
    project = "default",
  ): Promise<Job> {
    const deadline = Date.now() + timeoutMs;
    let last: Job | undefined;
    while (Date.now() < deadline) {
      try {
        last = await this.job(name, project);
        if (pred(last)) return last;
      } catch {}
      await sleep(100);
    }
    throw new Error(`timed out waiting for ${name}; last seen: ${JSON.stringify(last?.status)}`);
  }

  /** Polls a job's log (one worker's, of one attempt where given) until it matches. */
  async waitForLog(
    name: string,
    pattern: RegExp,
    opts: { project?: string; worker?: number; attempt?: number } = {},
    timeoutMs = 120_000,
  ): Promise<string> {
    const query = new URLSearchParams();
    if (opts.worker !== undefined) query.set("worker", String(opts.worker));
    if (opts.attempt !== undefined) query.set("attempt", String(opts.attempt));
    const path = `/apis/loom.dev/v1alpha1/projects/${opts.project ?? "default"}/trainingjobs/${name}/log?${query}`;
    let last: unknown;
    return until(
      `${pattern} in ${name}'s log`,
      async () => {
        last = (await this.api("GET", path).catch(() => undefined))?.body;
        return typeof last === "string" && pattern.test(last) ? last : undefined;
      },
      { ms: timeoutMs, every: 100, context: () => `last seen:\n${String(last).slice(-2000)}` },
    );
  }

  async stop(): Promise<void> {
    // Delete what the test left so no worker process outlives it.
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      await this.cli(["delete", "tj", "--all", "--timeout", "30"]).catch(() => undefined);
      await this.kill("SIGTERM");
    }
    rmSync(this.home, { recursive: true, force: true });
  }
}

export interface Job {
  metadata: { name: string; uid: string; resourceVersion: string; finalizers?: string[] };
  spec: Record<string, unknown>;
  status?: {
    phase?: string;
    attempts?: number;
    restarts?: number;
    ready?: string;
    checkpoint?: { time: string; step?: number };
    preemptions?: number;
    preemption?: { reason: string; for: string };
    conditions?: { type: string; status: string; reason: string; message: string }[];
    workers?: {
      index: number;
      state: string;
      pid?: number;
      exitCode?: number;
      signal?: string;
      startTime?: string;
    }[];
  };
}

export function jobYaml(name: string, command: string[], extra = ""): string {
  return `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata:
  name: ${name}
spec:
  command: ${JSON.stringify(command)}
${extra}`;
}

/**
 * Pids of live processes whose command line names `dir` (a server's sandboxed workloads name their
 * data dir in their launcher's arguments): what a test must see gone before it calls its server's
 * work done, since workloads outlive `loom up` by design (the next start adopts them). The
 * server's own process names its data dir too (`--data-dir`): leave out its pid while it runs.
 */
export function processesNaming(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir) && alive(pid)) pids.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** True while a process with this pid exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/**
 * Polls `probe` until it gives a value (not undefined), every `every` ms for at most `ms`; then
 * fails with `what` and the `context` (servers' logs, the object last seen) to read why.
 */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  opts: { ms: number; every: number; context: () => string | Promise<string> },
): Promise<T> {
  const end = Date.now() + opts.ms;
  while (Date.now() < end) {
    const v = await probe();
    if (v !== undefined) return v;
    await sleep(opts.every);
  }
  throw new Error(`timed out waiting for ${what}\n${await opts.context()}`);
}

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Logger } from "pino";
import { processAlive } from "../../lib/pid.js";
import type { Preparation, PythonEnvironmentSpec } from "../../ports/runtime.js";

/** Written last: an environment without it is a build that did not finish. */
const READY_MARKER = ".loom-ready";
/** How long the last build took, for the next one's "roughly how long" (a JSON number, seconds). */
const LAST_BUILD_FILE = "last-build-seconds";
/** How often the server's log says a build is still going (`loom up`'s terminal is never silent). */
const PROGRESS_LOG_MS = 10_000;
/** Locks this process holds (`<env>.building`): a lock naming this pid but not in here was left behind. */
const heldHere = new Set<string>();

export interface Build {
  startedAt: number;
  /** Packages pip has named so far (Collecting …), and those it has fetched. */
  collected: number;
  fetched: number;
  installing?: number;
  /** What pip is doing now ("Downloading torch-2.4.0-….whl (797.2 MB)"), for the message. */
  current?: string;
  /** How long the previous build in this cache took, in seconds, if one finished. */
  lastSeconds?: number;
  error?: string;
}

/**
 * Python environments for embedded workers, built once per content (interpreter, requirements,
 * system site packages) into a cache directory, so a job does not depend on what happens to be
 * installed. A build runs in the background; until it is done, `prepare` says how far it got.
 */
export class PythonEnvironments {
  private readonly builds = new Map<string, Build>();

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  /** The environment's directory (its bin/ goes first on the workers' PATH). */
  location(spec: PythonEnvironmentSpec): string {
    if ("venv" in spec) return spec.venv;
    return join(this.dir, environmentKey(spec));
  }

  prepare(spec: PythonEnvironmentSpec): Preparation {
    if ("venv" in spec) {
      return existsSync(join(spec.venv, "bin", "python"))
        ? { ready: true }
        : { failed: `no virtual environment at ${spec.venv} (${spec.venv}/bin/python is missing)` };
    }
    const key = environmentKey(spec);
    const dir = join(this.dir, key);
    if (existsSync(join(dir, READY_MARKER))) return { ready: true };
    const build = this.builds.get(key);
    if (build?.error) {
      // Failed: say so once, then let a later job try again (a registry may have been down).
      this.builds.delete(key);
      return { failed: build.error };
    }
    if (!build) {
      // Another server or job sharing this cache may be building the same content: building it
      // twice in one directory would remove the other's half-built venv under it.
      const holder = takeBuildLock(dir);
      if (holder !== undefined)
        return {
          ready: false,
          message: `the Python environment is being built by process ${holder} (log: ${dir}.log); waiting for it`,
        };
      this.start(key, dir, spec);
    }
    return { ready: false, message: progressMessage(this.builds.get(key)!, dir) };
  }

  private start(
    key: string,
    dir: string,
    spec: Extract<PythonEnvironmentSpec, { interpreter: string }>,
  ): void {
    const build: Build = {
      startedAt: Date.now(),
      collected: 0,
      fetched: 0,
      lastSeconds: this.lastBuildSeconds(),
    };
    this.builds.set(key, build);
    // Built in place (a venv's scripts name their own path, so it cannot be moved when done);
    // a leftover of an interrupted build is removed first.
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    const logFile = `${dir}.log`;
    const out = createWriteStream(logFile);
    // The log is for people: losing it (a removed data dir) must not take the server down.
    out.on("error", (err) => this.log.warn({ err, logFile }, "cannot write the environment's build log"));
    const steps = [
      [spec.interpreter, "-m", "venv", ...(spec.systemSitePackages ? ["--system-site-packages"] : []), dir],
      ...(spec.requirements.length > 0
        ? [
            [
              join(dir, "bin", "python"),
              "-m",
              "pip",
              "install",
              "--disable-pip-version-check",
              "--progress-bar",
              "off",
              ...spec.requirements,
            ],
          ]
        : []),
    ];
    this.log.info({ environment: key, requirements: spec.requirements }, "building a Python environment");
    // Builds take minutes with large packages: say how far it got every few seconds meanwhile.
    const ticker = setInterval(
      () => this.log.info({ environment: key }, progressMessage(build, dir)),
      PROGRESS_LOG_MS,
    );
    ticker.unref();
    const done = () => {
      clearInterval(ticker);
      out.end();
      releaseBuildLock(dir);
    };
    const run = (i: number): void => {
      if (i === steps.length) {
        try {
          writeFileSync(join(dir, READY_MARKER), JSON.stringify(spec));
        } catch (err) {
          build.error = `cannot mark the environment ready: ${(err as Error).message}`;
          done();
          return;
        }
        done();
        this.builds.delete(key);
        const seconds = Math.round((Date.now() - build.startedAt) / 1000);
        this.log.info({ environment: key, seconds }, "Python environment ready");
        try {
          writeFileSync(join(this.dir, LAST_BUILD_FILE), JSON.stringify(seconds));
        } catch {
          // Only the next build's estimate is lost.
        }
        return;
      }
      const [cmd, ...args] = steps[i]!;
      const child = spawn(cmd!, args, { stdio: ["ignore", "pipe", "pipe"] });
      for (const stream of [child.stdout, child.stderr]) {
        stream.pipe(out, { end: false });
        createInterface({ input: stream }).on("line", (line) => {
          const step = line.trim();
          if (/^(Collecting|Downloading|Using cached|Building wheel|Installing collected) /.test(step))
            build.current = step.length > 100 ? `${step.slice(0, 97)}...` : step;
          if (line.startsWith("Collecting ")) build.collected++;
          else if (/^\s*(Downloading|Using cached) /.test(line)) build.fetched++;
          const m = /^Installing collected packages: (.*)$/.exec(line);
          if (m) build.installing = m[1]!.split(",").length;
        });
      }
      child.on("error", (err) => {
        build.error = `${cmd} could not run: ${err.message}`;
        done();
      });
      child.on("exit", (code) => {
        if (build.error) return;
        if (code === 0) return run(i + 1);
        build.error = `${i === 0 ? "creating the virtual environment" : "pip install"} exited with code ${code}; see ${logFile}`;
        done();
        this.log.warn({ environment: key, error: build.error }, "Python environment build failed");
      });
    };
    run(0);
  }

  /** Seconds the last finished build in this cache took, if any. */
  private lastBuildSeconds(): number | undefined {
    try {
      const n = JSON.parse(readFileSync(join(this.dir, LAST_BUILD_FILE), "utf8"));
      return typeof n === "number" ? n : undefined;
    } catch {
      return undefined;
    }
  }
}

/**
 * Takes `<dir>.building` for this process (undefined), or names the live process that holds it.
 * A lock whose process is gone (a killed server) is taken over.
 */
function takeBuildLock(dir: string): number | undefined {
  const lock = `${dir}.building`;
  mkdirSync(join(dir, ".."), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lock, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      heldHere.add(lock);
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = Number(readFileOr(lock));
    const alive = holder === process.pid ? heldHere.has(lock) : processAlive(holder);
    if (alive) return holder;
    rmSync(lock, { force: true });
  }
  // Lost the race to take it over to another process: that one builds.
  return Number(readFileOr(lock)) || 0;
}

function releaseBuildLock(dir: string): void {
  const lock = `${dir}.building`;
  heldHere.delete(lock);
  rmSync(lock, { force: true });
}

function readFileOr(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

export function environmentKey(spec: Extract<PythonEnvironmentSpec, { interpreter: string }>): string {
  const content = JSON.stringify([spec.interpreter, spec.requirements, spec.systemSitePackages]);
  return createHash("sha256").update(content).digest("hex").slice(0, 16);
}

/**
 * A progress bar in words, for the EnvironmentReady condition (loom describe, loom get -o yaml)
 * and the server's log: how far, what pip is doing now, and roughly how long it takes.
 */
export function progressMessage(b: Build, dir: string, now = Date.now()): string {
  const seconds = Math.round((now - b.startedAt) / 1000);
  const width = 20;
  let bar: string;
  let what: string;
  if (b.installing !== undefined) {
    bar = "=".repeat(width - 1);
    what = `installing ${b.installing} package(s)`;
  } else {
    const done = b.collected === 0 ? 0 : b.fetched / b.collected;
    bar = "=".repeat(Math.floor(done * (width - 2)));
    what =
      b.collected === 0
        ? "creating the virtual environment"
        : `fetched ${b.fetched} of ${b.collected} package(s) found so far`;
  }
  const doing = b.current && b.installing === undefined ? ` (${b.current})` : "";
  const expect =
    b.lastSeconds === undefined
      ? "seconds for a bare venv, minutes with large packages such as torch"
      : `the last build here took ${b.lastSeconds}s`;
  return `building the Python environment (first use; cached afterwards): [${`${bar}>`.padEnd(width)}] ${what}${doing}, ${seconds}s so far (${expect}); log: ${dir}.log`;
}

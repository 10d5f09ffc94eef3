import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Logger } from "pino";
import { NETWORK_HELPER, type NetworkSetup, type NetworkTeardown } from "./netsetup.js";

/**
 * The helper process's program (CommonJS, run with `node -e`, so it needs no build step): reads
 * one JSON request per line, spawns it detached with its output appended to the log file, and
 * answers with the pid, later with the exit. Before spawning it makes the request's directories
 * and writes its files (the workload's state), so a start costs the server one round trip and no
 * file system calls of its own. When the server goes away (stdin closes) it exits;
 * the workers, detached, keep running, as they always have.
 */
const HELPER = `
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const out = (m) => process.stdout.write(JSON.stringify(m) + "\\n");
${NETWORK_HELPER}
// A sandboxed workload's own dirs and files belong to its project's uid. What is there already
// (an earlier attempt's checkpoints, or files from before sandboxing) is handed over too, once:
// a tree whose top is already owned is left alone. lchown: a link the workload made is not followed.
const ownTree = (path, uid, gid, create) => {
  if (!fs.existsSync(path)) {
    if (create !== "file") return; // lent only if there (a credential file)
    fs.writeFileSync(path, "");
  }
  const st = fs.lstatSync(path);
  if (st.uid === uid && st.gid === gid) return;
  const walk = (p) => {
    fs.lchownSync(p, uid, gid);
    const s = fs.lstatSync(p);
    if (s.isDirectory()) for (const n of fs.readdirSync(p)) walk(p + "/" + n);
  };
  walk(path);
};
// Spawns one request: made in order (a gang's first request prepares what the next use).
async function start(r) {
  let fd;
  try {
    for (const d of r.dirs ?? []) fs.mkdirSync(d, { recursive: true });
    for (const d of r.privateDirs ?? []) {
      fs.mkdirSync(d, { recursive: true, mode: 0o700 });
      fs.chmodSync(d, 0o700);
    }
    for (const o of r.owned ?? []) ownTree(o.path, o.uid, o.gid, o.create);
    for (const w of r.writes ?? []) fs.writeFileSync(w.path, w.data);
    for (const f of r.files ?? []) {
      fs.rmSync(f.path + ".tmp", { force: true });
      fs.writeFileSync(f.path + ".tmp", f.data, { mode: f.mode ?? 0o666 });
      fs.renameSync(f.path + ".tmp", f.path);
      if (f.owner !== undefined) fs.chownSync(f.path, f.owner, f.owner);
    }
    if (r.network) await setupNetwork(r.network);
    fd = fs.openSync(r.logFile, "a");
    const c = spawn(r.command, r.args, { cwd: r.cwd, env: r.env, detached: true, stdio: ["ignore", fd, fd] });
    c.on("error", (e) => out({ id: r.id, error: String(e) }));
    c.on("exit", (code, signal) => out({ id: r.id, exit: true, code, signal }));
    out({ id: r.id, pid: c.pid });
  } catch (e) {
    out({ id: r.id, error: String(e) });
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
let spawns = Promise.resolve();
const busy = new Set();
const aside = (r, p) => {
  busy.add(p);
  p.then(() => out({ id: r.id, done: true }), (e) => out({ id: r.id, error: String(e) }))
    .finally(() => busy.delete(p));
};
require("node:readline").createInterface({ input: process.stdin })
  .on("line", (line) => {
    const r = JSON.parse(line);
    // Namespaces ended or made ahead go beside the spawns, not in their line.
    if (r.teardown) return aside(r, Promise.resolve(r.teardown).then(teardownNetwork));
    if (r.prewarm) return aside(r, Promise.resolve(r.prewarm).then(prewarmNetwork));
    spawns = spawns.then(() => start(r));
  })
  // The server went: what was asked is finished first (a namespace half ended would be left).
  .on("close", () => Promise.allSettled([spawns, ...busy]).then(() => process.exit(0)));
`;

export interface SpawnRequest {
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  logFile: string;
  /** Made first, in the helper (off the server's event loop, and no round trip of their own). */
  dirs?: string[];
  /** Made 0700 (secrets go in them), after dirs. */
  privateDirs?: string[];
  /**
   * Written (to a fresh .tmp, made with `mode`, less the umask; then renamed) after the dirs, the
   * owned trees and the writes, before the process starts; given to `owner` where set (a
   * sandboxed workload's credential files, its project's uid).
   */
  files?: { path: string; data: string; mode?: number; owner?: number }[];
  /** Made after the files and before the process starts: the gang's network namespace and link. */
  network?: NetworkSetup;
  /**
   * Given to a uid after the dirs are made (the tree, where its top is not that uid's yet);
   * `create: "file"` makes an empty file first (a heartbeat file bound into a sandbox).
   */
  owned?: { path: string; uid: number; gid: number; create?: "file" }[];
  /** Written in place after the dirs (cgroup limit files, which cannot be renamed over). */
  writes?: { path: string; data: string }[];
}

interface Waiting {
  started: (pid: number | undefined, error?: string) => void;
  exited: (code: number | undefined, signal: string | undefined) => void;
  /** Its exit will not be reported: the helper died. */
  lost: () => void;
  pidKnown: boolean;
}

/**
 * Starts worker processes from a small helper process instead of from the server. Forking the
 * server itself copies its page tables: 9 ms of blocked event loop per worker in bench:scheduler,
 * a third of the server's CPU. The helper is small, so its forks are cheap, and they happen off
 * the server's thread. If the helper dies, the workers it started are watched by polling (as
 * re-adopted ones are), and the next spawn starts a new helper.
 */
export class Spawner {
  private helper: ChildProcess | undefined;
  private nextId = 1;
  private readonly waiting = new Map<number, Waiting>();

  constructor(private readonly log: Logger) {}

  /** Starts the process; resolves with its pid (undefined if it could not start) and a cancel. */
  spawn(
    req: SpawnRequest,
    exited: (code: number | undefined, signal: string | undefined) => void,
    lost: () => void,
  ): Promise<{ pid: number | undefined; error?: string; cancel: () => void }> {
    const helper = this.ensureHelper();
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, {
        started: (pid, error) => resolve({ pid, error, cancel: () => this.waiting.delete(id) }),
        exited,
        lost,
        pidKnown: false,
      });
      helper.stdin!.write(`${JSON.stringify({ id, ...req })}\n`);
    });
  }

  /** Ends a gang's network namespace (in the helper: a fork from the server blocks its loop). */
  teardown(t: NetworkTeardown): Promise<void> {
    return this.ask({ teardown: t });
  }

  /** Makes a pooled network namespace ahead of need (in the helper, beside its spawns). */
  prewarm(n: NetworkSetup): Promise<void> {
    return this.ask({ prewarm: n });
  }

  private ask(what: { teardown: NetworkTeardown } | { prewarm: NetworkSetup }): Promise<void> {
    const helper = this.ensureHelper();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, {
        started: (_pid, error) => (error ? reject(new Error(error)) : resolve()),
        exited: () => undefined,
        lost: () => undefined,
        pidKnown: false,
      });
      helper.stdin!.write(`${JSON.stringify({ id, ...what })}\n`);
    });
  }

  close(): void {
    this.waiting.clear();
    this.helper?.stdin?.end();
    this.helper = undefined;
  }

  private ensureHelper(): ChildProcess {
    if (this.helper) return this.helper;
    const helper = spawn(process.execPath, ["-e", HELPER], { stdio: ["pipe", "pipe", "inherit"] });
    this.helper = helper;
    createInterface({ input: helper.stdout! }).on("line", (line) => {
      const m = JSON.parse(line) as {
        id: number;
        pid?: number;
        error?: string;
        exit?: boolean;
        done?: boolean;
        code?: number | null;
        signal?: string | null;
      };
      const w = this.waiting.get(m.id);
      if (!w) return;
      if (m.done) {
        this.waiting.delete(m.id);
        w.started(undefined);
      } else if (m.exit) {
        this.waiting.delete(m.id);
        w.exited(m.code ?? undefined, m.signal ?? undefined);
      } else if (m.error && m.pid === undefined) {
        this.waiting.delete(m.id);
        w.started(undefined, m.error);
      } else if (m.pid !== undefined) {
        w.pidKnown = true;
        w.started(m.pid);
      }
    });
    helper.on("exit", (code, signal) => {
      if (this.helper === helper) this.helper = undefined;
      if (this.waiting.size === 0) return;
      this.log.warn(
        { code, signal, workers: this.waiting.size },
        "the spawn helper exited; watching its workers by polling",
      );
      const all = [...this.waiting.values()];
      this.waiting.clear();
      for (const w of all) {
        if (w.pidKnown) w.lost();
        else w.started(undefined, "the spawn helper exited before starting the worker");
      }
    });
    return helper;
  }
}

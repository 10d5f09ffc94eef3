import { type ChildProcess, spawn } from "node:child_process";
import { readlinkSync, statSync } from "node:fs";
import { connect, type Socket } from "node:net";

/**
 * Connections into a workload's own network namespace (netns.ts), for port-forward and ssh. The
 * host reaches a namespace only at its link's address, and only ports a replica exposes are
 * sent on to its loopback; a workspace's Jupyter or an sshd listens on 127.0.0.1 inside. So a
 * small Node helper runs in the namespace (`nsenter --net`), dials there, and hands the
 * connected socket back over its IPC channel (SCM_RIGHTS): from then on Loom's process reads
 * and writes the socket itself, with no process relaying bytes. One helper per namespace serves
 * every connection into it, and exits when idle or when the namespace's last process has gone.
 */

const HELPER = `
const net = require("node:net");
process.on("message", (m) => {
  const s = net.connect({ host: m.host, port: m.port });
  s.once("connect", () => { s.pause(); process.send({ id: m.id }, s, { keepOpen: false }); });
  s.once("error", (e) => process.send({ id: m.id, error: e.message }));
});
process.on("disconnect", () => process.exit(0));
`;

/** How long a helper with nothing to do stays. */
const IDLE_MS = 30_000;

interface Helper {
  child: ChildProcess;
  pending: Map<number, { resolve: (s: Socket) => void; reject: (e: Error) => void }>;
  idle?: NodeJS.Timeout;
}

/** Dials TCP ports inside other network namespaces, one helper per namespace. */
export class NamespaceDialer {
  private readonly helpers = new Map<string, Helper>();
  private nextId = 1;

  /** A connection to host:port in the network of process `pid` (which must be in it now). */
  dial(pid: number, host: string, port: number): Promise<Socket> {
    const ns = readlinkSync(`/proc/${pid}/ns/net`);
    const helper = this.helpers.get(ns) ?? this.start(ns, pid);
    if (helper.idle) clearTimeout(helper.idle);
    helper.idle = undefined;
    const id = this.nextId++;
    return new Promise<Socket>((resolve, reject) => {
      helper.pending.set(id, { resolve, reject });
      helper.child.send({ id, host, port });
    }).finally(() => this.idleSoon(ns, helper));
  }

  /**
   * Ends the helper in the namespace at `file` (a gang's, now ended): a pooled namespace is
   * handed to the next gang with no process of Loom's left in it either.
   */
  forget(file: string): void {
    if (this.helpers.size === 0) return;
    let ns: string;
    try {
      ns = `net:[${statSync(file).ino}]`;
    } catch {
      return;
    }
    const helper = this.helpers.get(ns);
    if (!helper) return;
    this.helpers.delete(ns);
    helper.child.kill("SIGKILL");
  }

  close(): void {
    for (const h of this.helpers.values()) h.child.kill("SIGKILL");
    this.helpers.clear();
  }

  private start(ns: string, pid: number): Helper {
    const child = spawn("nsenter", [`--net=/proc/${pid}/ns/net`, "--", process.execPath, "-e", HELPER], {
      stdio: ["ignore", "ignore", "ignore", "ipc"],
    });
    const helper: Helper = { child, pending: new Map() };
    child.on("message", (m: { id: number; error?: string }, handle?: unknown) => {
      const p = helper.pending.get(m.id);
      if (!p) return;
      helper.pending.delete(m.id);
      if (m.error || !handle) p.reject(new Error(m.error ?? "the namespace's helper sent no socket"));
      else {
        const sock = handle as Socket;
        sock.resume();
        p.resolve(sock);
      }
    });
    const gone = (why: string) => {
      if (this.helpers.get(ns) === helper) this.helpers.delete(ns);
      for (const p of helper.pending.values()) p.reject(new Error(why));
      helper.pending.clear();
    };
    child.on("error", (err) => gone(`cannot enter the workload's network: ${err.message}`));
    child.on("exit", () => gone("the workload's network has gone"));
    child.unref();
    (child.channel as { unref?: () => void } | undefined)?.unref?.();
    this.helpers.set(ns, helper);
    return helper;
  }

  private idleSoon(ns: string, helper: Helper): void {
    if (helper.pending.size > 0 || this.helpers.get(ns) !== helper) return;
    helper.idle = setTimeout(() => {
      if (helper.pending.size > 0) return;
      this.helpers.delete(ns);
      helper.child.kill();
    }, IDLE_MS);
    helper.idle.unref();
  }
}

/** A connection on this machine's own network. */
export function dialHere(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

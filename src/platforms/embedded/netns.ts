import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { networkInterfaces } from "node:os";
import { dirname, join } from "node:path";
import type { NetworkLink, NetworkSetup, NetworkTeardown } from "./relay.js";

/**
 * A network namespace per gang: all workers of one workload (a TrainingJob's gang, a sweep
 * trial, one replica) share one, with only a loopback of its own, so torch rendezvous and DDP
 * over 127.0.0.1 work between them and nothing else on the machine can reach their ports, nor
 * they anyone else's. Loom's API and gateway are reached from inside through the gang's relay
 * (relay.ts); a replica's port is reached from the host (the gateway) through the same relay.
 *
 * Lifetime: made by the spawn helper with the first worker of each attempt (kept if it is
 * there), removed (by the helper too) once every worker of the attempt has exited, and at
 * release. Namespaces are files under /run/netns (as `ip netns add` makes them, so
 * `ip netns list` shows them), named after the installation and the workload's uid, and so found
 * again after a restart: those of gangs that still exist are kept (their relay is restarted with
 * the next attempt if it died), the others removed. The runtime (runtime.ts) decides when; this
 * class says what and where.
 *
 * Where the kernel refuses (not root), every gang shares the machine's network, as before, and
 * `capability` says so.
 */

/** Whether workloads get a network of their own; `loom up` prints the reason when they do not. */
export interface NetworkCapability {
  isolated: boolean;
  reason: string;
}

/** How a worker joins its gang's network. */
export interface NetworkJoin {
  /**
   * Goes before the worker's command: enters the namespace, waits for the relay to listen
   * (at most 10 s), then execs the rest (same pid: the worker is still its process group's leader).
   */
  argvPrefix: string[];
  /** For the spawn helper, with the gang's first worker of an attempt. */
  setup: NetworkSetup;
}

/** Ports of a workload the host reaches (a replica's, for the gateway), from its workers' env. */
export const EXPOSE_ENV = "LOOM_EXPOSE_PORTS";

const WAIT =
  'i=0; while [ ! -e "$0" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; [ -e "$0" ] || echo "loom: the network relay did not start; Loom\'s API is unreachable" >&2; exec "$@"';

export interface GangNetworksOptions {
  instanceId: string;
  /** false: every workload shares the machine's network (as before this existed). */
  enabled?: boolean;
  /** Relay pid, ready and log files, and the API's unix socket (default /run/loom/<instance>). */
  runDir?: string;
}

/** The gangs' network namespaces of one installation. */
export class GangNetworks {
  readonly capability: NetworkCapability;
  private apiPort: number | undefined;
  private apiServer: Server | undefined;
  private readonly netnsDir = "/run/netns";
  /** Link addresses handed out, by workload uid (block index in LINK_RANGE). */
  private readonly links = new Map<string, number>();
  private readonly runDir: string;
  private readonly prefix: string;

  constructor(opts: GangNetworksOptions) {
    this.runDir = opts.runDir ?? join("/run/loom", opts.instanceId);
    this.prefix = `loom-${opts.instanceId.slice(0, 8)}-`;
    this.capability = opts.enabled === false ? { isolated: false, reason: "turned off" } : this.probe();
    if (this.capability.isolated) mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
  }

  /** The unix socket Loom's API answers on for relays. */
  get apiSocket(): string {
    return join(this.runDir, "api.sock");
  }

  /**
   * Answers relays on a unix socket, each connection handed to `server` (Loom's HTTP server,
   * whose gateway front takes it first) as if it came to its TCP port: no extra hop in Loom.
   */
  async serveApi(
    server: { emit(event: "connection", socket: unknown): unknown },
    port: number,
  ): Promise<void> {
    this.apiPort = port;
    if (!this.capability.isolated) return;
    rmSync(this.apiSocket, { force: true });
    const unix = createServer((socket) => server.emit("connection", socket));
    await new Promise<void>((ok, fail) => {
      unix.once("error", fail);
      unix.listen(this.apiSocket, ok);
    });
    // Only Loom's own relays (this user) connect: the socket is not the workloads' to use.
    chmodSync(this.apiSocket, 0o600);
    this.apiServer = unix;
  }

  /**
   * The address the host reaches a workload with exposed ports at (a replica's, which the
   * gateway dials), or undefined where workloads share the machine's network (then 127.0.0.1).
   * Kept for the uid until its network ends.
   */
  address(uid: string): string | undefined {
    if (!this.capability.isolated) return undefined;
    return linkAddresses(this.linkBlock(uid)).address;
  }

  /** The gang's network, or undefined where workloads share the machine's. */
  join(uid: string, expose: number[]): NetworkJoin | undefined {
    if (!this.capability.isolated) return undefined;
    const file = this.fileOf(uid);
    const readyFile = join(this.runDir, `${uid}.ready`);
    let link: NetworkLink | undefined;
    if (expose.length > 0) {
      // The host's end is named after the uid, so a restarted server finds it in use.
      const ifname = `lm${uid.replace(/-/g, "").slice(0, 13)}`;
      link = { ifname, ...linkAddresses(this.linkBlock(uid)), ports: expose };
    }
    return {
      argvPrefix: ["nsenter", `--net=${file}`, "--", "/bin/sh", "-c", WAIT, readyFile],
      setup: {
        file,
        pidFile: join(this.runDir, `${uid}.relay`),
        logFile: join(this.runDir, `${uid}.log`),
        relay: { apiPort: this.apiPort, apiSocket: this.apiSocket, readyFile },
        ...(link ? { link } : {}),
      },
    };
  }

  /** What the spawn helper does to end the gang's network, or undefined where there are none. */
  teardown(uid: string): NetworkTeardown | undefined {
    if (!this.capability.isolated) return undefined;
    // Its veth pair goes with the namespace (the kernel removes both ends).
    this.links.delete(uid);
    return {
      file: this.fileOf(uid),
      remove: ["ready", "relay", "log"].map((ext) => join(this.runDir, `${uid}.${ext}`)),
    };
  }

  /** After a restart: the uids of this installation's namespaces whose gang is gone. */
  orphans(live: Set<string>): string[] {
    return this.capability.isolated ? this.list().filter((uid) => !live.has(uid)) : [];
  }

  /** The namespace files of this installation's gangs (for tests and `loom up`'s cleanup). */
  list(): string[] {
    if (!existsSync(this.netnsDir)) return [];
    return readdirSync(this.netnsDir)
      .filter((n) => n.startsWith(this.prefix))
      .map((n) => n.slice(this.prefix.length));
  }

  close(): void {
    if (!this.apiServer) return;
    this.apiServer.close();
    this.apiServer = undefined;
    rmSync(this.apiSocket, { force: true });
  }

  /** A /30 in LINK_RANGE that no interface of this machine and no other workload uses. */
  private linkBlock(uid: string): number {
    const had = this.links.get(uid);
    if (had !== undefined) return had;
    const used = new Set(
      Object.values(networkInterfaces())
        .flat()
        .map((a) => a?.address),
    );
    const taken = new Set(this.links.values());
    const start = Math.floor(Math.random() * LINK_BLOCKS);
    for (let i = 0; i < LINK_BLOCKS; i++) {
      const block = (start + i) % LINK_BLOCKS;
      const a = linkAddresses(block);
      if (taken.has(block) || used.has(a.hostAddress) || used.has(a.address)) continue;
      this.links.set(uid, block);
      return block;
    }
    throw new Error(`no free /30 left in ${LINK_RANGE}/15 for a replica's link`);
  }

  private fileOf(uid: string): string {
    return join(this.netnsDir, `${this.prefix}${uid}`);
  }

  /** Makes and removes a namespace: the only sure way to know the kernel and tools allow it. */
  private probe(): NetworkCapability {
    if (process.getuid?.() !== 0) {
      return { isolated: false, reason: "Loom does not run as root: network namespaces need it" };
    }
    const file = join(this.netnsDir, `${this.prefix}probe-${process.pid}`);
    try {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, "");
      execFileSync("unshare", [`--net=${file}`, "ip", "link", "set", "lo", "up"], { stdio: "pipe" });
      execFileSync("umount", [file], { stdio: "pipe" });
      // Replicas are reached over a veth link, through a DNAT rule (relay.ts).
      execFileSync("nft", ["--version"], { stdio: "pipe" });
      return { isolated: true, reason: "each workload has a network namespace of its own" };
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
      return {
        isolated: false,
        reason: `cannot make a network namespace (${stderr || (err as Error).message})`,
      };
    } finally {
      rmSync(file, { force: true });
    }
  }
}

/**
 * Replicas' links take /30s of 198.18.0.0/15 (RFC 2544's benchmarking range: routed nowhere,
 * and not the link-local range, where cloud metadata services live).
 */
const LINK_RANGE = "198.18.0.0";
const LINK_BLOCKS = 2 ** 15;

function linkAddresses(block: number): { hostAddress: string; address: string } {
  const base = (198 << 24) + (18 << 16) + block * 4;
  const ip = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
  return { hostAddress: ip(base + 1), address: ip(base + 2) };
}

/** Ports a gang's workers ask the host to reach (EXPOSE_ENV, comma-separated). */
export function exposedPorts(workers: { env: Record<string, string> }[]): number[] {
  const ports = new Set<number>();
  for (const w of workers)
    for (const p of (w.env[EXPOSE_ENV] ?? "").split(",")) if (/^\d+$/.test(p)) ports.add(Number(p));
  return [...ports];
}

import { execFileSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import type { NetworkSetup, NetworkTeardown } from "./netsetup.js";

/**
 * A network namespace per gang: all workers of one workload (a TrainingJob's gang, a sweep
 * trial, one replica) share one, with a loopback of its own, so torch rendezvous and DDP over
 * 127.0.0.1 work between them and nothing else on the machine reaches their ports, nor they
 * anyone else's. Each namespace has one veth link to the host (netsetup.ts): through it a
 * workload reaches Loom's API and gateway (one port, at GATEWAY) and nothing else, and the
 * gateway reaches a replica's port. The kernel forwards; no process relays.
 *
 * Lifetime: made by the spawn helper with the first worker of an attempt (kept if it is there),
 * removed by the helper once every worker of the attempt has exited, and at release: the
 * runtime (runtime.ts) decides when, this class says what and where. Namespaces are files under
 * /run/netns (`ip netns list` shows them) named after the installation and the workload's uid,
 * so a restarted server finds them: those of gangs it still has are kept, the others removed.
 *
 * A pool (sandboxed gangs only): making a namespace with its link (three execs, a mount) and
 * ending it (an unmount, a link deleted, the kernel's own cleanup) cost about 13 ms of a job's
 * start in bench:scheduler (c). Sandboxed gangs without exposed ports take a namespace made
 * ahead of need (`pool-N`, its own link), entered through a symlink named after the gang; when
 * the gang ends its processes (those of its worker cgroups, which a sandboxed workload cannot
 * leave: netsetup.ts) are killed and the namespace goes back to the pool. That is safe
 * because a sandboxed workload has no capabilities: it cannot change its namespace's addresses,
 * routes or rules, and what it leaves (sockets) goes with its processes. Unsandboxed workloads
 * run as root, and replicas get a port rule, so theirs are made for them and ended, as before.
 *
 * Where namespaces cannot be made (not root, no `nft`), every gang shares the machine's network,
 * as before, and `capability` says so for `loom up` to print.
 */

/** Whether workloads get a network of their own; `loom up` prints the reason when they do not. */
export interface NetworkCapability {
  isolated: boolean;
  reason: string;
}

/** How a gang's workers join its network. */
export interface NetworkJoin {
  /** Goes before the worker's command: enters the namespace, then execs (the pid stays the shim's). */
  argvPrefix: string[];
  /** The namespace's file (a sandboxed worker's nsenter enters it after its shim). */
  netns: string;
  /** The worker's env with Loom's URL (http://127.0.0.1:<API port>) at the gateway. */
  env(env: Record<string, string>): Record<string, string>;
  /** For the spawn helper, with the first worker of an attempt. */
  setup: NetworkSetup;
}

/** Ports of a workload the host reaches (a replica's, for the gateway), from its workers' env. */
export const EXPOSE_ENV = "LOOM_EXPOSE_PORTS";

const NETNS_DIR = "/run/netns";

/**
 * Links take /30s of 198.18.0.0/15 (RFC 2544's benchmarking range: routed nowhere, and not the
 * link-local range, where cloud metadata services live); a namespace's address is the block's
 * second. Block 0 is the gateway's.
 */
const LINK_BLOCKS = 2 ** 15;

/**
 * The host's address for every namespace of every installation on this machine: a /32 on the
 * loopback (labelled lo:loom), added once by the first Loom and kept (others use it; removing it
 * would be the very address change that links without addresses avoid: netsetup.ts). Workers
 * reach Loom's API port here; the host's table sends it on to 127.0.0.1.
 */
export const GATEWAY = "198.18.0.1";

/** Pooled namespaces made ahead of need; at most POOL_KEEP idle ones are kept (each is a mount). */
const POOL_AHEAD = 2;
const POOL_KEEP = 8;
const POOL = "pool-";

export interface GangNetworksOptions {
  instanceId: string;
  /** false: every workload shares the machine's network (as before this existed). */
  enabled?: boolean;
}

/** The gangs' network namespaces of one installation. */
export class GangNetworks {
  readonly capability: NetworkCapability;
  private apiPort: number | undefined;
  /** File names in /run/netns: loom-<instance 8>-<uid>. */
  private readonly prefix: string;
  /** Host ends of links: lm<instance 4><uid 9> (15 characters, the kernel's limit). */
  private readonly ifPrefix: string;
  private readonly table: string;
  /** Link blocks handed out, by workload uid or pool slot. */
  private readonly links = new Map<string, number>();
  /** Pool slots ready (or being made) for the next gang. */
  private readonly free: string[] = [];
  /** The pool slot of each gang that has one. */
  private readonly taken = new Map<string, string>();
  /**
   * Gangs whose slot went back to the pool: their next teardown (the release after the gang's
   * end) is computed before the first is done, while the gang's symlink may still be there; it
   * must not follow that link and end a slot another gang may have taken by then.
   */
  private readonly returned = new Set<string>();
  private nextSlot = 0;

  constructor(opts: GangNetworksOptions) {
    const inst = opts.instanceId.replace(/-/g, "");
    this.prefix = `loom-${inst.slice(0, 8)}-`;
    this.ifPrefix = `lm${inst.slice(0, 4)}`;
    this.table = `loom_${inst.slice(0, 8)}`;
    this.capability = opts.enabled === false ? { isolated: false, reason: "turned off" } : this.probe();
    // Slots of an earlier run are not reused (what ran there is not known): new ones count on.
    for (const n of this.entries())
      if (n.startsWith(POOL)) this.nextSlot = Math.max(this.nextSlot, Number(n.slice(POOL.length)) + 1);
  }

  /**
   * Opens Loom's API port to the links, once it listens: the host's table sends a link's
   * connections to that port on to 127.0.0.1, and drops anything else links bring in or would
   * forward. Replaced whole at each start (the port may have changed).
   */
  openApi(port: number): void {
    this.apiPort = port;
    if (!this.capability.isolated) return;
    const links = `iifname "${this.ifPrefix}*"`;
    const rules = [
      `table ip ${this.table} {}`,
      `delete table ip ${this.table}`,
      `table ip ${this.table} {`,
      `  chain loom_pre { type nat hook prerouting priority dstnat; ${links} tcp dport ${port} dnat to 127.0.0.1; }`,
      `  chain loom_in { type filter hook input priority filter; ${links} ct state established,related accept; ${links} ip daddr 127.0.0.1 tcp dport ${port} accept; ${links} drop; }`,
      `  chain loom_fwd { type filter hook forward priority filter; ${links} drop; oifname "${this.ifPrefix}*" drop; }`,
      "}",
    ].join("\n");
    execFileSync("nft", ["-f", "-"], { input: rules, stdio: ["pipe", "ignore", "pipe"] });
  }

  /** Loom stops: its API's port closes to the links (workers that outlive it wait for the next). */
  close(): void {
    if (!this.capability.isolated || this.apiPort === undefined) return;
    try {
      execFileSync("nft", ["delete", "table", "ip", this.table], { stdio: "pipe" });
    } catch {
      // already gone
    }
  }

  /**
   * The address the host reaches a workload at (a replica's, which the gateway dials), or
   * undefined where workloads share the machine's network (then 127.0.0.1).
   */
  address(uid: string): string | undefined {
    if (!this.capability.isolated) return undefined;
    return linkAddresses(this.linkBlock(this.taken.get(uid) ?? uid)).address;
  }

  /**
   * The gang's network, or undefined where workloads share the machine's. `pooled`: the gang is
   * sandboxed, so it may take a namespace from the pool (where it exposes no port).
   */
  join(uid: string, expose: number[], pooled = false): NetworkJoin | undefined {
    if (!this.capability.isolated) return undefined;
    const slot = pooled && expose.length === 0 ? this.takeSlot(uid) : undefined;
    const file = this.fileOf(uid);
    const api = this.apiPort;
    return {
      argvPrefix: ["nsenter", `--net=${file}`, "--"],
      netns: file,
      env: (env) => (api === undefined ? env : atGateway(env, api)),
      setup: {
        file: this.fileOf(slot ?? uid),
        ifname: this.ifnameOf(slot ?? uid),
        ...linkAddresses(this.linkBlock(slot ?? uid)),
        ports: expose,
        ...(slot ? { link: file } : {}),
      },
    };
  }

  /** Namespaces for the pool to make now (in the spawn helper, beside its spawns), to keep some ahead. */
  prewarm(): NetworkSetup[] {
    if (!this.capability.isolated) return [];
    const out: NetworkSetup[] = [];
    while (this.free.length < POOL_AHEAD) {
      const slot = `${POOL}${this.nextSlot++}`;
      this.free.push(slot);
      out.push(this.slotSetup(slot));
    }
    return out;
  }

  /** What the spawn helper does to end the gang's network, or undefined where there are none. */
  teardown(uid: string): NetworkTeardown | undefined {
    if (!this.capability.isolated) return undefined;
    const slot = this.taken.get(uid);
    if (slot) {
      this.taken.delete(uid);
      this.returned.add(uid);
      const recycle = this.free.length < POOL_KEEP;
      if (!recycle) this.links.delete(slot);
      return { file: this.fileOf(slot), ifname: this.ifnameOf(slot), link: this.fileOf(uid), recycle };
    }
    this.links.delete(uid);
    if (this.returned.delete(uid)) return { file: this.fileOf(uid), ifname: this.ifnameOf(uid) };
    // A gang's symlink to a slot, left by an earlier run (its slot is ended: its history is not known).
    const target = this.linkTarget(uid);
    if (target) return { file: this.fileOf(target), ifname: this.ifnameOf(target), link: this.fileOf(uid) };
    return { file: this.fileOf(uid), ifname: this.ifnameOf(uid) };
  }

  /** The spawn helper has done `t`: a recycled slot is ready for the next gang. */
  ended(t: NetworkTeardown): void {
    if (!t.recycle) return;
    const slot = t.file.slice(t.file.lastIndexOf("/") + 1 + this.prefix.length);
    if (!this.free.includes(slot)) this.free.push(slot);
  }

  /** The pool's idle namespaces, to end when Loom stops (a restart would not reuse them). */
  drain(): NetworkTeardown[] {
    const out = this.free.map((slot) => ({ file: this.fileOf(slot), ifname: this.ifnameOf(slot) }));
    this.free.length = 0;
    return out;
  }

  /**
   * After a restart: the uids of this installation's namespaces whose gang is gone or has ended,
   * and pool slots of an earlier run that no live gang is in (ended as if they were gangs').
   */
  orphans(live: Set<string>): string[] {
    if (!this.capability.isolated) return [];
    // A slot a gang's symlink names goes with that gang (kept while it is live).
    const linked = new Set(this.list().map((uid) => this.linkTarget(uid)));
    const slots = this.entries().filter(
      (n) => n.startsWith(POOL) && !linked.has(n) && !this.free.includes(n),
    );
    return [...this.list().filter((uid) => !live.has(uid)), ...slots];
  }

  /** The uids whose namespace exists (for tests and orphans); pool slots are not listed. */
  list(): string[] {
    return this.entries().filter((n) => !n.startsWith(POOL));
  }

  private entries(): string[] {
    if (!existsSync(NETNS_DIR)) return [];
    return readdirSync(NETNS_DIR)
      .filter((n) => n.startsWith(this.prefix))
      .map((n) => n.slice(this.prefix.length));
  }

  /** The pool slot a gang's symlink names (one made by an earlier run), if it is one. */
  private linkTarget(uid: string): string | undefined {
    const file = this.fileOf(uid);
    try {
      if (!lstatSync(file).isSymbolicLink()) return undefined;
      const name = readlinkSync(file);
      return name.startsWith(this.prefix) ? name.slice(this.prefix.length) : undefined;
    } catch {
      return undefined;
    }
  }

  /** A slot for the gang: its own again (a later attempt), an idle one, or a new one. */
  private takeSlot(uid: string): string {
    const had = this.taken.get(uid);
    if (had) return had;
    const slot = this.free.shift() ?? `${POOL}${this.nextSlot++}`;
    this.taken.set(uid, slot);
    return slot;
  }

  private slotSetup(slot: string): NetworkSetup {
    return {
      file: this.fileOf(slot),
      ifname: this.ifnameOf(slot),
      ...linkAddresses(this.linkBlock(slot)),
      ports: [],
    };
  }

  /** The host end of the gang's link: lm<instance 4><uid 9>, or lm<instance 4>p<slot> for the pool's. */
  private ifnameOf(key: string): string {
    if (key.startsWith(POOL)) return `${this.ifPrefix}p${key.slice(POOL.length)}`;
    return `${this.ifPrefix}${key.replace(/-/g, "").slice(0, 9)}`;
  }

  private fileOf(key: string): string {
    return join(NETNS_DIR, `${this.prefix}${key}`);
  }

  /**
   * A /30 whose address no interface of this machine has and no route leads to (the links of
   * other installations here are routes only, their host ends have no address), that no other
   * gang of this one has; kept for the uid (or slot).
   */
  private linkBlock(uid: string): number {
    const had = this.links.get(uid);
    if (had !== undefined) return had;
    const used = new Set([
      ...Object.values(networkInterfaces())
        .flat()
        .map((a) => a?.address),
      ...routedAddresses(),
    ]);
    const taken = new Set(this.links.values());
    const start = Math.floor(Math.random() * LINK_BLOCKS);
    for (let i = 0; i < LINK_BLOCKS; i++) {
      const block = (start + i) % LINK_BLOCKS;
      const a = linkAddresses(block);
      if (block === 0 || taken.has(block) || used.has(a.address)) continue;
      this.links.set(uid, block);
      return block;
    }
    throw new Error("no free /30 left in 198.18.0.0/15 for a workload's network link");
  }

  /** Makes a namespace with a link, and an nft table: the only sure way to know all of it works. */
  private probe(): NetworkCapability {
    if (process.getuid?.() !== 0) {
      return { isolated: false, reason: "Loom does not run as root: network namespaces need it" };
    }
    const file = join(NETNS_DIR, `${this.prefix}probe-${process.pid}`);
    try {
      execFileSync("mkdir", ["-p", NETNS_DIR]);
      writeFileSync(file, "");
      const batch = `link set lo up\nlink add loom0 type veth peer name ${this.ifPrefix}probe netns ${process.pid}\n`;
      execFileSync("unshare", [`--net=${file}`, "ip", "-b", "-"], {
        input: batch,
        stdio: ["pipe", "pipe", "pipe"],
      });
      execFileSync("umount", [file], { stdio: "pipe" });
      execFileSync("nft", ["--version"], { stdio: "pipe" });
      addGateway();
      return { isolated: true, reason: "each workload has a network namespace of its own" };
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
      return {
        isolated: false,
        reason: `cannot make network namespaces (${stderr || (err as Error).message})`,
      };
    } finally {
      rmSync(file, { force: true });
    }
  }
}

/** Ports a gang's workers ask the host to reach (EXPOSE_ENV, comma-separated). */
export function exposedPorts(workers: { env: Record<string, string> }[]): number[] {
  const ports = new Set<number>();
  for (const w of workers)
    for (const p of (w.env[EXPOSE_ENV] ?? "").split(",")) if (/^\d+$/.test(p)) ports.add(Number(p));
  return [...ports];
}

/** Loom's URL in env values (MLFLOW_TRACKING_URI and the like) moved to the gateway. */
function atGateway(env: Record<string, string>, port: number): Record<string, string> {
  const loopback = new RegExp(`//(127\\.0\\.0\\.1|localhost):${port}(?=/|$)`, "g");
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) out[k] = v.replace(loopback, `//${GATEWAY}:${port}`);
  return out;
}

/** A link's addresses: the namespace end's, its MAC and the host end's (02: locally administered). */
function linkAddresses(block: number): { gateway: string; address: string; mac: string; hostMac: string } {
  const base = (198 << 24) + (18 << 16) + block * 4 + 2;
  const address = [base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255].join(".");
  const hex = (n: number) => n.toString(16).padStart(2, "0");
  const mac = (end: number) => `02:4c:${hex(block >>> 8)}:${hex(block & 255)}:00:${hex(end)}`;
  return { gateway: GATEWAY, address, mac: mac(2), hostMac: mac(1) };
}

/** Destinations of the host's /32 routes (/proc/net/route: little-endian hex): other links' namespaces. */
function routedAddresses(): string[] {
  let text: string;
  try {
    text = readFileSync("/proc/net/route", "utf8");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split("\n").slice(1)) {
    const [, dest, , , , , , mask] = line.split("\t");
    if (!dest || mask !== "FFFFFFFF") continue;
    const n = Number.parseInt(dest, 16);
    out.push([n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24].join("."));
  }
  return out;
}

/** GATEWAY on the host's loopback, unless there (another installation's, or this one's before). */
function addGateway(): void {
  // Listed under its label (lo:loom), as getifaddrs names a labelled IPv4 address.
  const all = Object.values(networkInterfaces()).flat();
  if (all.some((a) => a?.address === GATEWAY)) return;
  try {
    execFileSync("ip", ["addr", "add", `${GATEWAY}/32`, "dev", "lo", "label", "lo:loom"], { stdio: "pipe" });
  } catch (err) {
    // Added by another Loom starting at the same time.
    if (!String((err as { stderr?: Buffer }).stderr ?? "").includes("File exists")) throw err;
  }
}

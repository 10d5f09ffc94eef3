/**
 * The spawn helper's part of gang networks (netns.ts): making a gang's namespace and its link to
 * the host, and ending them. CommonJS text added to the helper's program (no build step, as the
 * helper's own), so the forks and execs happen off the server's event loop.
 *
 * A namespace has its own loopback (the gang's rendezvous and DDP) and one veth link to the
 * host: the namespace's end is "loom0" at x.x.x.2/32, the host's end is named after the
 * installation and the workload (lm<inst 4><uid 9>) and has no address at all. Each side has a
 * route to the other (x.x.x.2 from the host, the gateway from the namespace) and knows the
 * other's MAC (static neighbour entries: no ARP, whatever the host's arp_ignore). The host side
 * is reached at one address for every link of every installation, GATEWAY on the host's
 * loopback, added once (netns.ts). Why no address per link: every address added to or removed
 * from the host is an "IP address change" to Chromium, which then fails every request it has in
 * flight with ERR_NETWORK_CHANGED, so a console or app page being loaded failed whenever a
 * workload started or ended (seen in CI: an app's scripts did not load). Routes, neighbours and
 * links without addresses do not count. No process relays anything:
 * - out, to Loom: workers are told the API's URL at the gateway (netns.ts rewrites their env),
 *   and the host's table (netns.ts, hostRules) sends that port from a link to Loom's 127.0.0.1
 *   and drops everything else a link brings in or would forward;
 * - in, to a replica: the gateway dials x.x.x.2:<port>; a rule in the namespace sends that port
 *   to the replica's own 127.0.0.1 (so a server that binds only loopback is reached too).
 */

/** A gang's namespace and link, for the spawn helper. */
export interface NetworkSetup {
  /** The namespace's file (/run/netns/NAME): a bind mount, as `ip netns add` makes. */
  file: string;
  /** The host end's name (15 characters at most). */
  ifname: string;
  /** The host's address workers reach Loom at: the same for every link (GATEWAY, netns.ts). */
  gateway: string;
  /** The namespace's end: its address (a /32) and MAC, and the host end's MAC. */
  address: string;
  mac: string;
  hostMac: string;
  /** Ports the host reaches in the namespace (a replica's). */
  ports: number[];
  /**
   * A pooled namespace (netns.ts): `file` is the pool's, and this path (the gang's name,
   * /run/netns/loom-<inst>-<uid>) is made a symlink to it, so workers enter it by the gang's name.
   */
  link?: string;
}

/** What the spawn helper needs to end a gang's namespace. */
export interface NetworkTeardown {
  file: string;
  /** The host end of its link, removed with it (see teardownNetwork). */
  ifname: string;
  /** The gang's symlink to a pooled namespace, removed. */
  link?: string;
  /**
   * Keep the namespace for the pool: its processes are killed, and it stays (with its link) once
   * none is left. Only for namespaces whose workloads could not change them (sandboxed: no
   * capabilities, a uid of their own) and that no port rule was added to.
   */
  recycle?: boolean;
  /**
   * The gang's worker cgroups' process lists (`cgroup.procs`), where it had cgroups: every process
   * its sandboxes started is in them (the launcher or shim joins them before it enters the
   * namespace, and a workload cannot leave them: no capabilities, cgroupfs read-only), so a
   * recycled namespace is known empty from these few files instead of a look at every process
   * on the machine (7 ms of CPU per job with 136 processes, more on a busier machine). A file
   * that is gone is an empty cgroup (a cgroup with a process cannot be removed).
   */
  cgroups?: string[];
}

/**
 * `setupNetwork(n)` makes the namespace and its link unless both are there (a pooled one made
 * ahead of need, or a later attempt): `unshare --net=FILE ip -b -` (loopback up, the veth made
 * inside with its peer put in the helper's namespace, the inside address) and `ip -b -` for the
 * host's end: two execs, plus one for a replica's rule; then the gang's symlink, for a pooled one.
 * `prewarm` is the same without a gang. `teardownNetwork(t)` kills every process left in the
 * namespace (a namespace lives while a process is in it); a recycled one stays once none is left,
 * any other is unmounted and the host end of its link deleted.
 *
 * All of it is asynchronous (execFile, not execFileSync): the helper has one thread, and a
 * namespace made or ended blocked every other gang's spawns for the length of its execs. One make
 * at a time per namespace file (`making`): a spawn that needs a namespace being made ahead waits
 * for that, not for a second make.
 *
 * The link's deletion is not left to the kernel: it removes an unmounted namespace, and the link
 * with it, later, from a work queue; until then the host end's name stays taken, and the next
 * attempt's setup (made right after, as a first restart is) failed with "RTNETLINK answers:
 * File exists", its first worker not started. `ip link del` removes both ends before it
 * returns. Setup deletes a leftover of that name too (a namespace ended by an older Loom, or
 * by a crash before its teardown was done).
 */
export const NETWORK_HELPER = `
const { execFile } = require("node:child_process");
const netPath = require("node:path");
const isMounted = (f) => { try { return fs.statSync(f).dev !== fs.statSync(netPath.dirname(f)).dev; } catch { return false; } };
const runIn = (cmd, args, input) => new Promise((resolve, reject) => {
  const c = execFile(cmd, args, (err, _out, stderr) =>
    err ? reject(new Error(cmd + ": " + (String(stderr).trim() || err.message))) : resolve());
  c.stdin.end(input);
});
const pause = (ms) => new Promise((r) => setTimeout(r, ms));
// Both ends there, the host's with its route to the address asked for (a pool slot from before
// may differ): /proc/net/route has each route as "<iface> <destination, little-endian hex> ...".
const hexLE = (ip) => ip.split(".").reverse().map((b) => Number(b).toString(16).padStart(2, "0")).join("").toUpperCase();
const hasLink = (n) => {
  const want = n.ifname + "\\t" + hexLE(n.address) + "\\t";
  try { return fs.readFileSync("/proc/net/route", "utf8").split("\\n").some((l) => l.startsWith(want)); }
  catch { return false; }
};
const dropLink = async (ifname) => {
  if (!fs.existsSync("/sys/class/net/" + ifname)) return;
  // Gone meanwhile (the kernel's own removal of the namespace got there first): nothing to do.
  try { await runIn("ip", ["link", "del", ifname]); } catch {}
};
// SIGKILLs every process in the namespace; how many there were. Asynchronous: a look at every
// process of a busy machine took ~20 ms, the helper's thread blocked (no spawn) all along.
const killIn = async (file) => {
  const want = "net:[" + fs.statSync(file).ino + "]";
  const pids = (await fs.promises.readdir("/proc")).filter((e) => /^[0-9]+$/.test(e));
  const found = await Promise.all(pids.map((e) =>
    fs.promises.readlink("/proc/" + e + "/ns/net").then((ns) => ns === want, () => false)));
  let n = 0;
  for (let i = 0; i < pids.length; i++) {
    if (!found[i]) continue;
    try { process.kill(Number(pids[i]), "SIGKILL"); n++; } catch {}
  }
  return n;
};
// SIGKILLs every process of the gang's cgroups; how many there were, -1 where a list could not
// be read (then the namespace is not recycled on its word).
const killInCgroups = async (files) => {
  let n = 0;
  for (const f of files) {
    let text;
    try { text = await fs.promises.readFile(f, "utf8"); } catch (e) {
      if (e.code === "ENOENT") continue;
      return -1;
    }
    for (const p of text.split("\\n")) {
      if (!p) continue;
      try { process.kill(Number(p), "SIGKILL"); } catch {}
      n++;
    }
  }
  return n;
};
const making = new Map();
// Namespaces this helper made, with their address: a pooled one taken again needs no look at the
// machine's routes, only that it is still mounted.
const made = new Map();
async function makeNetwork(n) {
  if (made.get(n.file) === n.address && isMounted(n.file)) return;
  if (isMounted(n.file) && hasLink(n)) return void made.set(n.file, n.address);
  if (isMounted(n.file)) await endNetwork(n);
  await dropLink(n.ifname);
  fs.mkdirSync(netPath.dirname(n.file), { recursive: true });
  fs.writeFileSync(n.file, "");
  const inside = ["link set lo up",
    "link add loom0 address " + n.mac + " type veth peer name " + n.ifname + " address " + n.hostMac + " netns " + process.pid,
    "addr add " + n.address + "/32 dev loom0", "link set loom0 up",
    "route add " + n.gateway + "/32 dev loom0 src " + n.address,
    "neigh replace " + n.gateway + " lladdr " + n.hostMac + " dev loom0 nud permanent", ""].join("\\n");
  if (n.ports.length === 0) await runIn("unshare", ["--net=" + n.file, "ip", "-b", "-"], inside);
  else await runIn("unshare", ["--net=" + n.file, "/bin/sh", "-c",
    "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet && ip -b - && exec nft \\"$0\\"",
    "table ip loom { chain loom_pre { type nat hook prerouting priority dstnat; iifname \\"loom0\\" tcp dport { " +
      n.ports.join(", ") + " } dnat to 127.0.0.1; }; }"], inside);
  // No address on the host's end, not even IPv6's link-local one (addrgenmode none, before it is
  // up): see the top of this file.
  await runIn("ip", ["-b", "-"], ["link set " + n.ifname + " addrgenmode none", "link set " + n.ifname + " up",
    "route add " + n.address + "/32 dev " + n.ifname + " src " + n.gateway,
    "neigh replace " + n.address + " lladdr " + n.mac + " dev " + n.ifname + " nud permanent", ""].join("\\n"));
  // The host's end takes what the host's table sends to Loom's 127.0.0.1.
  fs.writeFileSync("/proc/sys/net/ipv4/conf/" + n.ifname + "/route_localnet", "1");
  made.set(n.file, n.address);
}
// One make (or end) at a time per namespace file, in the order asked.
function serially(file, f) {
  const p = (making.get(file) || Promise.resolve()).catch(() => {}).then(f);
  making.set(file, p);
  p.catch(() => {}).finally(() => { if (making.get(file) === p) making.delete(file); });
  return p;
}
async function setupNetwork(n) {
  await serially(n.file, () => makeNetwork(n));
  if (n.link) {
    fs.rmSync(n.link, { force: true });
    fs.symlinkSync(netPath.basename(n.file), n.link);
  }
}
const prewarmNetwork = (n) => serially(n.file, () => makeNetwork(n));
async function endNetwork(t) {
  made.delete(t.file);
  if (isMounted(t.file)) {
    await killIn(t.file);
    await runIn("umount", [t.file]);
  }
  fs.rmSync(t.file, { force: true });
  await dropLink(t.ifname);
}
function teardownNetwork(t) {
  if (t.link) fs.rmSync(t.link, { force: true });
  return serially(t.file, async () => {
    if (t.recycle && isMounted(t.file)) {
      // Kept once no process is left in it (those killed are gone at the next look).
      const look = t.cgroups ? () => killInCgroups(t.cgroups) : () => killIn(t.file);
      for (let i = 0; i < 5; i++) {
        const n = await look();
        if (n === 0) return;
        if (n < 0) break;
        await pause(10 * (i + 1));
      }
    }
    await endNetwork(t);
  });
}
`;

/**
 * The spawn helper's part of gang networks (netns.ts): making a gang's namespace and its link to
 * the host, and ending them. CommonJS text added to the helper's program (no build step, as the
 * helper's own), so the forks and execs happen off the server's event loop.
 *
 * A namespace has its own loopback (the gang's rendezvous and DDP) and one veth link to the
 * host, a /30: the namespace's end is "loom0" at x.x.x.2, the host's end is named after the
 * installation and the workload (lm<inst 4><uid 9>) at x.x.x.1. No process relays anything:
 * - out, to Loom: workers are told the API's URL at the host's end (netns.ts rewrites their
 *   env), and the host's table (netns.ts, hostRules) sends that port to Loom's 127.0.0.1 and
 *   drops everything else a link brings in or would forward;
 * - in, to a replica: the gateway dials x.x.x.2:<port>; a rule in the namespace sends that port
 *   to the replica's own 127.0.0.1 (so a server that binds only loopback is reached too).
 */

/** A gang's namespace and link, for the spawn helper. */
export interface NetworkSetup {
  /** The namespace's file (/run/netns/NAME): a bind mount, as `ip netns add` makes. */
  file: string;
  /** The host end's name (15 characters at most). */
  ifname: string;
  hostAddress: string;
  address: string;
  /** Ports the host reaches in the namespace (a replica's). */
  ports: number[];
}

/** What the spawn helper needs to end a gang's namespace. */
export interface NetworkTeardown {
  file: string;
  /** The host end of its link, removed with it (see teardownNetwork). */
  ifname: string;
}

/**
 * `setupNetwork(n)` makes the namespace and its link unless both are there (a later attempt):
 * `unshare --net=FILE ip -b -` (loopback up, the veth made inside with its peer put in the
 * helper's namespace, the inside address) and `ip -b -` for the host's end: two execs, plus
 * one for a replica's rule. `teardownNetwork(t)` kills every process left in the namespace (a
 * namespace lives while a process is in it), unmounts it, and deletes the host end of its link.
 *
 * That last step is not left to the kernel: it removes an unmounted namespace, and the link
 * with it, later, from a work queue; until then the host end's name stays taken, and the next
 * attempt's setup (made right after, as a first restart is) failed with "RTNETLINK answers:
 * File exists", its first worker not started. `ip link del` removes both ends before it
 * returns. Setup deletes a leftover of that name too (a namespace ended by an older Loom, or
 * by a crash before its teardown was done).
 */
export const NETWORK_HELPER = `
const { execFileSync } = require("node:child_process");
const netPath = require("node:path");
const isMounted = (f) => { try { return fs.statSync(f).dev !== fs.statSync(netPath.dirname(f)).dev; } catch { return false; } };
const runIn = (cmd, args, input) => execFileSync(cmd, args, { input, stdio: ["pipe", "ignore", "pipe"] });
const dropLink = (ifname) => {
  if (!fs.existsSync("/sys/class/net/" + ifname)) return;
  // Gone meanwhile (the kernel's own removal of the namespace got there first): nothing to do.
  try { runIn("ip", ["link", "del", ifname]); } catch {}
};
function setupNetwork(n) {
  if (isMounted(n.file) && fs.existsSync("/sys/class/net/" + n.ifname)) return;
  if (isMounted(n.file)) teardownNetwork(n);
  dropLink(n.ifname);
  fs.mkdirSync(netPath.dirname(n.file), { recursive: true });
  fs.writeFileSync(n.file, "");
  const inside = ["link set lo up", "link add loom0 type veth peer name " + n.ifname + " netns " + process.pid,
    "addr add " + n.address + "/30 dev loom0", "link set loom0 up", ""].join("\\n");
  if (n.ports.length === 0) runIn("unshare", ["--net=" + n.file, "ip", "-b", "-"], inside);
  else runIn("unshare", ["--net=" + n.file, "/bin/sh", "-c",
    "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet && ip -b - && exec nft \\"$0\\"",
    "table ip loom { chain loom_pre { type nat hook prerouting priority dstnat; iifname \\"loom0\\" tcp dport { " +
      n.ports.join(", ") + " } dnat to 127.0.0.1; }; }"], inside);
  runIn("ip", ["-b", "-"], ["addr add " + n.hostAddress + "/30 dev " + n.ifname, "link set " + n.ifname + " up", ""].join("\\n"));
  // The host's end takes what the host's table sends to Loom's 127.0.0.1.
  fs.writeFileSync("/proc/sys/net/ipv4/conf/" + n.ifname + "/route_localnet", "1");
}
function teardownNetwork(t) {
  if (isMounted(t.file)) {
    const want = "net:[" + fs.statSync(t.file).ino + "]";
    for (const e of fs.readdirSync("/proc")) {
      if (!/^[0-9]+$/.test(e)) continue;
      try { if (fs.readlinkSync("/proc/" + e + "/ns/net") === want) process.kill(Number(e), "SIGKILL"); } catch {}
    }
    execFileSync("umount", [t.file], { stdio: ["ignore", "ignore", "pipe"] });
  }
  fs.rmSync(t.file, { force: true });
  dropLink(t.ifname);
}
`;

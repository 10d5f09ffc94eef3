/**
 * What gives a gang's network namespace its only ways out and in, run by the spawn helper
 * (CommonJS strings, no build step, as the helper is).
 *
 * Out, to Loom: a namespace has only its own loopback. Its relay, one Node process per
 * namespace started inside it, listens on the namespace's 127.0.0.1:<API port> and pipes each
 * connection to the unix socket Loom's server also answers on (unix sockets are files: they
 * cross network namespaces), so a worker's MLFLOW_TRACKING_URI and the gateway's URL,
 * http://127.0.0.1:<API port>, work unchanged.
 *
 * In, to a replica: no process in the way (a relay added 0.13 to 0.25 ms per request here, more
 * than the gateway's whole budget). The namespace gets a veth link to the host, a /30 of its own,
 * a DNAT rule that sends the exposed port arriving on the link to the replica's 127.0.0.1, and a
 * rule that drops every connection the replica would open over the link: the gateway dials
 * <link address>:<port> (the replica's reported host), and the replica reaches nothing new.
 */

/** The relay's configuration, as JSON in its LOOM_RELAY variable. */
export interface RelayConfig {
  /** The API's port inside the namespace; absent when the server has not said where it listens. */
  apiPort?: number;
  /** The unix socket Loom's server answers on (the API and the gateway). */
  apiSocket: string;
  /** Written once the relay listens: workers wait for it before they start. */
  readyFile: string;
}

export const RELAY_ENV = "LOOM_RELAY";

export const RELAY = `
const net = require("node:net");
const fs = require("node:fs");
const c = JSON.parse(process.env.${RELAY_ENV});
const join = (a, b) => {
  a.setNoDelay(true); b.setNoDelay(true);
  a.pipe(b); b.pipe(a);
  const done = () => { a.destroy(); b.destroy(); };
  a.on("error", done); b.on("error", done); a.on("close", done); b.on("close", done);
};
const ready = () => fs.writeFileSync(c.readyFile, String(process.pid));
if (c.apiPort) {
  net.createServer((s) => join(s, net.connect(c.apiSocket)))
    .on("error", (e) => { console.error("relay: cannot listen on the API port:", String(e)); process.exit(1); })
    .listen({ host: "127.0.0.1", port: c.apiPort }, ready);
} else ready();
`;

/** What the spawn helper needs to make a gang's namespace and start its relay. */
export interface NetworkSetup {
  /** The namespace's file (/run/netns/NAME): a bind mount of the namespace, as `ip netns add` makes. */
  file: string;
  /** The relay's pid is written here (to find it again after a restart, and to stop it). */
  pidFile: string;
  logFile: string;
  relay: RelayConfig;
  /** A link to the host for a workload with exposed ports (a replica). */
  link?: NetworkLink;
}

/** A veth pair between the host and a namespace, and the ports the host reaches through it. */
export interface NetworkLink {
  /** The host end's name (15 characters at most); the namespace's end is always "loom0". */
  ifname: string;
  /** x.x.x.1 (the host's end) and x.x.x.2 (the namespace's) of a /30. */
  hostAddress: string;
  address: string;
  ports: number[];
}

/** What the spawn helper needs to end a gang's namespace. */
export interface NetworkTeardown {
  file: string;
  /** The relay's files, removed with it. */
  remove: string[];
}

/**
 * Code added to the spawn helper's program: `setupNetwork(n)` makes the namespace if it is not
 * there (`unshare --net=FILE ip link set lo up`: one fork, about 10 ms), starts its relay unless a
 * live one is found (after a restart, or for the next attempt), and links it to the host when
 * it has exposed ports (a replica: 5 execs, 20 to 50 ms, on a replica's start only).
 * It does not wait for the relay to listen (Node starts in tens of ms): workers wait for the
 * ready file instead, after they count as running.
 */
export const NETWORK_SETUP = `
const { execFileSync } = require("node:child_process");
const isMounted = (f) => { try { return fs.statSync(f).dev !== fs.statSync(require("node:path").dirname(f)).dev; } catch { return false; } };
const relayAlive = (n) => {
  try {
    const pid = Number(fs.readFileSync(n.pidFile, "utf8"));
    return fs.readlinkSync("/proc/" + pid + "/ns/net") === "net:[" + fs.statSync(n.file).ino + "]";
  } catch { return false; }
};
async function setupNetwork(n) {
  if (!isMounted(n.file)) {
    fs.mkdirSync(require("node:path").dirname(n.file), { recursive: true });
    fs.writeFileSync(n.file, "");
    execFileSync("unshare", ["--net=" + n.file, "ip", "link", "set", "lo", "up"], { stdio: ["ignore", "ignore", "pipe"] });
  }
  if (n.link && !fs.existsSync("/sys/class/net/" + n.link.ifname)) addLink(n.file, n.link);
  if (relayAlive(n)) return;
  fs.rmSync(n.relay.readyFile, { force: true });
  const log = fs.openSync(n.logFile, "a");
  let relay;
  try {
    relay = spawn("nsenter", ["--net=" + n.file, process.execPath, "-e", ${JSON.stringify("RELAY_PLACEHOLDER")}], {
      detached: true, stdio: ["ignore", log, log],
      env: { PATH: process.env.PATH || "/usr/bin:/bin", ${RELAY_ENV}: JSON.stringify(n.relay) },
    });
  } finally { fs.closeSync(log); }
  relay.on("error", () => undefined);
  relay.unref();
  fs.writeFileSync(n.pidFile, String(relay.pid));
}
// The namespace's end goes in it at once ("netns" takes the name /run/netns knows it by).
function addLink(file, l) {
  execFileSync("ip", ["-b", "-"], { input: [
    "link add " + l.ifname + " type veth peer name loom0 netns " + require("node:path").basename(file),
    "addr add " + l.hostAddress + "/30 dev " + l.ifname,
    "link set " + l.ifname + " up",
  ].join("\\n") + "\\n", stdio: ["pipe", "ignore", "pipe"] });
  const ports = l.ports.join(", ");
  execFileSync("nsenter", ["--net=" + file, "/bin/sh", "-c",
    "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet && echo 1 > /proc/sys/net/ipv4/conf/loom0/route_localnet" +
    " && ip addr add " + l.address + "/30 dev loom0 && ip link set loom0 up && nft -f -"], {
    input: "table ip loom {\\n" +
      "  chain in { type nat hook prerouting priority dstnat; iifname \\"loom0\\" tcp dport { " + ports + " } dnat to 127.0.0.1; }\\n" +
      "  chain out { type filter hook output priority filter; oifname \\"loom0\\" ct state new drop; }\\n}\\n",
    stdio: ["pipe", "ignore", "pipe"] });
}
// Every process in the namespace is killed (the relay, and anything that left its worker's
// process group): a namespace lives while a process is in it. Then its file is unmounted.
function teardownNetwork(t) {
  if (isMounted(t.file)) {
    const want = "net:[" + fs.statSync(t.file).ino + "]";
    for (const e of fs.readdirSync("/proc")) {
      if (!/^[0-9]+$/.test(e)) continue;
      try { if (fs.readlinkSync("/proc/" + e + "/ns/net") === want) process.kill(Number(e), "SIGKILL"); } catch {}
    }
    execFileSync("umount", [t.file], { stdio: ["ignore", "ignore", "pipe"] });
  }
  for (const f of [t.file, ...t.remove]) fs.rmSync(f, { force: true });
}
`.replace(JSON.stringify("RELAY_PLACEHOLDER"), JSON.stringify(RELAY));

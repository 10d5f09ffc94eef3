/**
 * The two programs that give a gang's network namespace its only ways out and in. Both are
 * CommonJS strings run with `node -e` (no build step), as the spawn helper is.
 *
 * A namespace has only its own loopback. Its relay is one process per namespace, started inside
 * it, that:
 * - listens on the namespace's 127.0.0.1:<API port> and relays each connection to the unix socket
 *   Loom's server also listens on (unix sockets are files: they cross network namespaces), so a
 *   worker's MLFLOW_TRACKING_URI and the gateway's URL, http://127.0.0.1:<API port>, work unchanged;
 * - accepts, on listening sockets the spawn helper made in the host's namespace and handed over
 *   (Node's IPC passes sockets), connections to an exposed port (a replica's), and relays each to
 *   the same port on the namespace's own loopback: the gateway dials 127.0.0.1:<port> as before.
 *
 * Both directions are plain stream pipes: one extra hop, no parsing.
 */

/** The relay's configuration, as JSON in its LOOM_RELAY variable. */
export interface RelayConfig {
  /** The API's port inside the namespace; absent when the server has not said where it listens. */
  apiPort?: number;
  /** The unix socket Loom's server answers on (the API and the gateway). */
  apiSocket: string;
  /** Written once the relay listens: workers wait for it before they start. */
  readyFile: string;
  /** How many listening sockets the helper hands over (one per exposed port). */
  exposed: number;
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
let waiting = c.exposed;
process.on("message", (m, server) => {
  if (!m || !m.expose || !server) return;
  server.on("connection", (s) => join(s, net.connect({ host: "127.0.0.1", port: m.expose })));
  if (--waiting <= 0 && process.connected) process.disconnect();
});
if (waiting <= 0 && process.connected) process.disconnect();
`;

/** What the spawn helper needs to make a gang's namespace and start its relay. */
export interface NetworkSetup {
  /** The namespace's file (/run/netns/NAME): a bind mount of the namespace, as `ip netns add` makes. */
  file: string;
  /** The relay's pid is written here (to find it again after a restart, and to stop it). */
  pidFile: string;
  logFile: string;
  relay: RelayConfig;
  /** Host loopback ports the helper listens on and hands to the relay (a replica's port). */
  expose: number[];
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
 * live one is found (after a restart, or for the next attempt), and hands it the host listeners.
 * It does not wait for the relay to listen (Node starts in tens of ms): workers wait for the
 * ready file instead, after they count as running.
 */
export const NETWORK_SETUP = `
const net = require("node:net");
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
  if (relayAlive(n)) return;
  fs.rmSync(n.relay.readyFile, { force: true });
  const log = fs.openSync(n.logFile, "a");
  let relay;
  try {
    relay = spawn("nsenter", ["--net=" + n.file, process.execPath, "-e", ${JSON.stringify("RELAY_PLACEHOLDER")}], {
      detached: true, stdio: ["ignore", log, log, "ipc"],
      env: { PATH: process.env.PATH || "/usr/bin:/bin", ${RELAY_ENV}: JSON.stringify({ ...n.relay, exposed: n.expose.length }) },
    });
  } finally { fs.closeSync(log); }
  relay.on("error", () => undefined);
  fs.writeFileSync(n.pidFile, String(relay.pid));
  try {
    for (const port of n.expose) {
      const server = net.createServer();
      await new Promise((ok, fail) => { server.once("error", fail); server.listen({ host: "127.0.0.1", port }, ok); });
      await new Promise((ok, fail) => relay.send({ expose: port }, server, (e) => (e ? fail(e) : ok())));
      server.close();
    }
  } catch (e) {
    relay.kill("SIGKILL");
    throw e;
  }
  relay.unref();
  if (relay.channel) relay.channel.unref();
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

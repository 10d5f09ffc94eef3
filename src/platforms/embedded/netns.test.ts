import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
} from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { EXPOSE_ENV, exposedPorts, GATEWAY, GangNetworks } from "./netns.js";
import { LocalRuntime } from "./runtime.js";
import { detectSandbox } from "./sandbox.js";

describe("GangNetworks", () => {
  it("shares the machine's network when turned off, and says so", () => {
    const n = new GangNetworks({ instanceId: "0123456789abcdef", enabled: false });
    expect(n.capability).toEqual({ isolated: false, reason: "turned off" });
    expect(n.join("u", [])).toBeUndefined();
    expect(n.address("u")).toBeUndefined();
    expect(n.teardown("u")).toBeUndefined();
    expect(n.orphans(new Set())).toEqual([]);
  });

  it("reads the ports a workload exposes from its workers' env", () => {
    expect(
      exposedPorts([{ env: { [EXPOSE_ENV]: "8080,9090" } }, { env: { [EXPOSE_ENV]: "8080" } }, { env: {} }]),
    ).toEqual([8080, 9090]);
    expect(exposedPorts([{ env: { [EXPOSE_ENV]: "x,1;2" } }])).toEqual([]);
  });

  it.runIf(process.getuid?.() === 0)("moves Loom's URL to the gateway, and only Loom's", () => {
    const n = new GangNetworks({ instanceId: "feedfacefeedface" });
    if (!n.capability.isolated) return;
    n.openApi(7470);
    try {
      const join = n.join("11112222-3333-4444-5555-666677778888", [8000])!;
      const { gateway, address, ifname, ports, mac, hostMac } = join.setup;
      expect(ifname).toBe("lmfeed111122223");
      expect(ifname.length).toBeLessThanOrEqual(15);
      expect(ports).toEqual([8000]);
      expect(gateway).toBe(GATEWAY);
      expect(address).toMatch(/^198\.1[89]\.\d+\.\d+$/);
      expect(mac).toMatch(/^02:4c:[0-9a-f]{2}:[0-9a-f]{2}:00:02$/);
      expect(hostMac).toBe(mac.replace(/02$/, "01"));
      expect(n.address("11112222-3333-4444-5555-666677778888")).toBe(address);
      const env = join.env({
        MLFLOW_TRACKING_URI: "http://127.0.0.1:7470/mlflow/projects/a",
        LOOM_URL: "http://localhost:7470",
        OTHER: "http://127.0.0.1:74701/",
        PLAIN: "127.0.0.1:7470",
      });
      expect(env).toEqual({
        MLFLOW_TRACKING_URI: `http://${GATEWAY}:7470/mlflow/projects/a`,
        LOOM_URL: `http://${GATEWAY}:7470`,
        OTHER: "http://127.0.0.1:74701/",
        PLAIN: "127.0.0.1:7470",
      });
      // Two gangs never share an address.
      expect(n.join("99998888-3333-4444-5555-666677778888", [])!.setup.address).not.toBe(address);
    } finally {
      n.close();
    }
  });
});

describe("pool slots", () => {
  // A gang's end returns its slot; the release that follows (computed before the helper removed
  // the gang's symlink) must not end that slot, which another gang may have taken meanwhile.
  it.runIf(process.getuid?.() === 0)("a gang's second teardown leaves its returned slot alone", () => {
    const n = new GangNetworks({ instanceId: randomUUID() });
    if (!n.capability.isolated) return;
    const uid = randomUUID();
    const j = n.join(uid, [], true)!;
    expect(j.setup.file).toMatch(/pool-\d+$/);
    expect(j.setup.link).toMatch(new RegExp(`${uid}$`));
    const first = n.teardown(uid)!;
    expect(first).toMatchObject({ file: j.setup.file, recycle: true });
    n.ended(first);
    const second = n.teardown(uid)!;
    expect(second.file).not.toBe(j.setup.file);
    expect(second.recycle).toBeUndefined();
    // A replica (a port rule) and an unsandboxed gang get a namespace of their own.
    expect(n.join(randomUUID(), [8000], true)!.setup.link).toBeUndefined();
    expect(n.join(randomUUID(), [], false)!.setup.link).toBeUndefined();
    // The next sandboxed gang takes the returned slot or one made ahead.
    expect(n.join(randomUUID(), [], true)!.setup.file).toMatch(/pool-\d+$/);
  });
});

describe("a gang's network across attempts", () => {
  // The kernel removes an ended namespace (and with it the host's end of its link) later, on a
  // work queue: a next attempt that made its namespace at once found the old link's name still
  // taken ("RTNETLINK answers: File exists"), and its first worker failed to start (code 127),
  // using up a restart the job never failed. Here the old namespace is held open (a descriptor
  // on it) across the restart, so that "later" is certain, not a matter of luck.
  it.runIf(process.getuid?.() === 0)(
    "starts every worker of an attempt begun while the last one's namespace is still going",
    async () => {
      const networks = new GangNetworks({ instanceId: randomUUID() });
      if (!networks.capability.isolated) return;
      const dataDir = mkdtempSync(join(tmpdir(), "loom-netns-"));
      const runtime = localRuntime({ dataDir, instanceId: randomUUID(), networks });
      const ref = { kind: "TrainingJob", project: "default", name: "restarts", uid: randomUUID() };
      const held: number[] = [];
      const failures: string[] = [];
      try {
        for (let attempt = 1; attempt <= 3; attempt++) {
          await runtime.start({
            ref,
            attempt,
            workers: [0, 1].map((index) => ({
              index,
              command: ["sleep", "600"],
              env: {},
              allocation: { node: "local", cpuMillis: 0, memoryBytes: 0, gpus: [] },
            })),
          });
          const workers = (await runtime.observe(ref))!.workers;
          for (const w of workers)
            if (w.state !== "Running") failures.push(`attempt ${attempt} worker ${w.index}: ${w.message}`);
          // The namespace itself, not its file (that would keep the file's mount busy instead).
          const pid = workers.find((w) => w.state === "Running")?.pid;
          if (pid !== undefined) held.push(openSync(`/proc/${pid}/ns/net`, "r"));
          // Stopped at once (grace 0); the next attempt as soon as every worker's exit is known.
          while (!(await runtime.stop(ref, 0))) await sleep(10);
        }
      } finally {
        for (const fd of held) closeSync(fd);
        await runtime.release(ref);
        await runtime.close();
        networks.close();
        rmSync(dataDir, { recursive: true, force: true });
      }
      expect(failures).toEqual([]);
    },
    60_000,
  );
});

describe("the host's addresses", () => {
  // Chromium takes any address added to or removed from the host as a network change and fails
  // every request it has in flight (ERR_NETWORK_CHANGED): an app's page loading while another
  // workload started lost its scripts (CI). A gang's link adds none, while both ways through it
  // still work: the host reaches a port in the gang, the gang reaches Loom's API port.
  it.runIf(process.getuid?.() === 0)(
    "stay as they are while a gang starts and ends, both ways through its link working",
    async () => {
      const instanceId = randomUUID();
      const networks = new GangNetworks({ instanceId });
      if (!networks.capability.isolated) return;
      const ifPrefix = `lm${instanceId.replace(/-/g, "").slice(0, 4)}`;
      const api = createServer((_req, res) => res.end("loom api"));
      await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
      const apiPort = (api.address() as AddressInfo).port;
      networks.openApi(apiPort);
      const monitor = spawn("ip", ["-o", "monitor", "address"], { stdio: ["ignore", "pipe", "ignore"] });
      let events = "";
      monitor.stdout.on("data", (d: Buffer) => {
        events += d.toString();
      });
      const dataDir = mkdtempSync(join(tmpdir(), "loom-netns-"));
      const runtime = localRuntime({ dataDir, instanceId, networks });
      const ref = { kind: "InferenceService", project: "default", name: "both-ways", uid: randomUUID() };
      const port = 20_000 + Math.floor(Math.random() * 20_000);
      const heard = join(dataDir, "heard");
      // Asks Loom's API (its URL moved to the gateway), writes down the answer, then serves.
      const worker = [
        "import os, urllib.request, http.server",
        "open(os.environ['HEARD'], 'w').write(urllib.request.urlopen(os.environ['LOOM_URL'], timeout=30).read().decode())",
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler).serve_forever()",
      ].join("\n");
      try {
        await runtime.start({
          ref,
          attempt: 1,
          workers: [
            {
              index: 0,
              command: ["python3", "-c", worker],
              env: {
                LOOM_URL: `http://127.0.0.1:${apiPort}/`,
                HEARD: heard,
                PORT: String(port),
                [EXPOSE_ENV]: String(port),
                PATH: process.env.PATH ?? "/usr/bin:/bin",
              },
              allocation: { node: "local", cpuMillis: 0, memoryBytes: 0, gpus: [] },
            },
          ],
        });
        await until("the gang asked Loom's API", () => readFileOrEmpty(heard) === "loom api");
        const address = networks.address(ref.uid)!;
        let served = "";
        for (let i = 0; i < 300 && !served; i++) {
          served = await fetch(`http://${address}:${port}/`).then(
            (r) => `${r.status}`,
            () => "",
          );
          if (!served) await sleep(50);
        }
        expect(served).toBe("200");
        const { ifname } = networks.join(ref.uid, [])!.setup;
        expect(existsSync(`/sys/class/net/${ifname}`)).toBe(true);
        while (!(await runtime.stop(ref, 0))) await sleep(10);
        await runtime.release(ref);
        await until(
          "the gang's link gone",
          () => !existsSync(`/sys/class/net/${networks.join(ref.uid, [])!.setup.ifname}`),
        );
      } finally {
        await runtime.close();
        networks.close();
        api.close();
        monitor.kill();
        rmSync(dataDir, { recursive: true, force: true });
      }
      expect(events.split("\n").filter((l) => l.includes(ifPrefix) || l.includes(GATEWAY))).toEqual([]);
    },
    60_000,
  );
});

describe("the pool of network namespaces", () => {
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  // A sandboxed gang takes a namespace made ahead; when it ends, anything of the gang left in that
  // namespace (here a process that left the gang's process group and PID namespace, as an escape
  // would: it is still in the gang's cgroup, which a workload cannot leave) is killed before the
  // namespace serves the next gang, and the pool goes when Loom stops. Where there are no cgroups
  // every process on the machine is looked at instead (a process of root's outside the gang too).
  it.runIf(process.getuid?.() === 0)(
    "hands a sandboxed gang a namespace made ahead, clears it for the next, and ends the pool at close",
    async () => {
      const instanceId = randomUUID();
      const networks = new GangNetworks({ instanceId });
      const support = detectSandbox();
      if (!networks.capability.isolated || !support.bwrap) return;
      const dataDir = mkdtempSync(join(tmpdir(), "loom-netns-"));
      const prefix = `loom-${instanceId.replace(/-/g, "").slice(0, 8)}-`;
      const slots = () => readdirSync("/run/netns").filter((n) => n.startsWith(`${prefix}pool-`));
      const runtime = localRuntime({ dataDir, instanceId, networks, sandbox: support });
      const gang = (name: string) => ({ kind: "TrainingJob", project: "default", name, uid: randomUUID() });
      const start = async (ref: ReturnType<typeof gang>) => {
        await runtime.start({
          ref,
          attempt: 1,
          workers: [
            {
              index: 0,
              command: ["sleep", "600"],
              env: {},
              allocation: { node: "local", cpuMillis: 0, memoryBytes: 0, gpus: [] },
            },
          ],
        });
        const w = (await runtime.observe(ref))!.workers[0]!;
        expect(w.state, w.message).toBe("Running");
        return w.pid!;
      };
      const a = gang("a");
      const b = gang("b");
      let stray: number | undefined;
      try {
        await until("the pool made ahead", () => slots().length >= 2);
        const pid = await start(a);
        const link = `/run/netns/${prefix}${a.uid}`;
        expect(lstatSync(link).isSymbolicLink()).toBe(true);
        const slot = readlinkSync(link);
        expect(slot).toMatch(/pool-\d+$/);
        const ns = `net:[${statSync(link).ino}]`;
        // The worker's shim joins its cgroups first, then enters the namespace (nsenter execs).
        await until("the worker in the slot's namespace", () => readlinkSync(`/proc/${pid}/ns/net`) === ns);
        // Left behind in the namespace, outside the gang's process group, in its cgroup.
        const layout = support.cgroups;
        const cgroup =
          layout?.version === "v1"
            ? join(layout.memory, `${a.uid}-a1-w0`, "tasks")
            : layout
              ? join(layout.root, `${a.uid}-a1-w0`, "cgroup.procs")
              : undefined;
        const enter = ["nsenter", `--net=${link}`, "--", "sleep", "600"];
        const s = cgroup
          ? spawn("/bin/sh", ["-c", 'echo 0 > "$0" && exec "$@"', cgroup, ...enter], {
              detached: true,
              stdio: "ignore",
            })
          : spawn(enter[0]!, enter.slice(1), { detached: true, stdio: "ignore" });
        stray = s.pid!;
        await until("the stray process in the namespace", () => {
          try {
            return readlinkSync(`/proc/${stray}/ns/net`) === ns;
          } catch {
            return false;
          }
        });
        while (!(await runtime.stop(a, 0))) await sleep(10);
        await until("the gang's link removed", () => !existsSync(link));
        await until(
          "the stray process killed",
          () => !alive(stray!) || readFileOrEmpty(`/proc/${stray}/stat`).includes(") Z "),
        );
        // The namespace itself stays, for the pool.
        expect(existsSync(`/run/netns/${slot}`)).toBe(true);
        expect(`net:[${statSync(`/run/netns/${slot}`).ino}]`).toBe(ns);
        const pidB = await start(b);
        expect(readlinkSync(`/proc/${pidB}/ns/net`)).toMatch(/^net:\[\d+\]$/);
        while (!(await runtime.stop(b, 0))) await sleep(10);
      } finally {
        if (stray !== undefined && alive(stray)) process.kill(stray, "SIGKILL");
        await runtime.release(a);
        await runtime.release(b);
        await runtime.close();
        networks.close();
        rmSync(dataDir, { recursive: true, force: true });
      }
      await until("the pool ended", () => slots().length === 0);
    },
    60_000,
  );
});

/** A runtime of one CPU and 1 GiB, silent, with the test's networks (and sandbox). */
function localRuntime(
  opts: Pick<
    ConstructorParameters<typeof LocalRuntime>[0],
    "dataDir" | "instanceId" | "networks" | "sandbox"
  >,
): LocalRuntime {
  return new LocalRuntime({
    cpuMillis: 1000,
    memoryBytes: 2 ** 30,
    gpus: [],
    log: pino({ level: "silent" }),
    ...opts,
  });
}

async function until(what: string, f: () => boolean): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (f()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function readFileOrEmpty(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

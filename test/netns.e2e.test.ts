import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobYaml, LoomProcess, ROOT } from "./helpers.js";
import { deadPort } from "./upstreams.js";

/**
 * One network namespace per gang (issue 17, point 3): a workload reaches Loom's API, the gateway
 * and its own gang's ports, and nothing else; a replica is reached through the gateway only.
 * Runs where network namespaces can be made (root); elsewhere `loom up` says it shares the network.
 */

/** The probe's directory, lent to the sandboxed jobs as their (read-only) working directory. */
const FIXTURES = join(ROOT, "test/fixtures/netns");
const PROBE = "probe.py";
const IN_FIXTURES = `  workingDir: ${FIXTURES}\n`;
const BASE = "/apis/loom.dev/v1alpha1";
const isolated = process.getuid?.() === 0;

/** Whether a TCP connection to 127.0.0.1:port is accepted, from this (the host's) network. */
function reachable(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      ok(true);
    });
    s.once("error", () => ok(false));
  });
}

describe.runIf(isolated)("network namespaces per gang", () => {
  const loom = new LoomProcess();
  let namespaces: () => string[];
  let listenerPort = 0;
  let replica = { host: "", port: 0 };
  let key = "";

  async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 60_000) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const v = await f();
      if (v !== undefined && v !== false) return v;
      await sleep(100);
    }
    throw new Error(`timed out waiting for ${what}\n${loom.log.slice(-3000)}`);
  }

  beforeAll(async () => {
    await loom.start();
    const prefix = `loom-${readFileSync(join(loom.dataDir, "instance-id"), "utf8").trim().slice(0, 8)}-`;
    namespaces = () =>
      existsSync("/run/netns")
        ? readdirSync("/run/netns")
            .filter((n) => n.startsWith(prefix))
            .map((n) => n.slice(prefix.length))
        : [];
    const k = await loom.cli(["apikey", "create", "app", "-p", "default"]);
    expect(k.code, k.stderr).toBe(0);
    key = k.stdout.trim();
    // Another workload listening on a port of its own.
    listenerPort = await deadPort();
    const listener = await loom.cli(["apply", "-f", "-"], {
      input: jobYaml("listener", ["/usr/bin/python3", PROBE, "listen", String(listenerPort)], IN_FIXTURES),
    });
    expect(listener.code, listener.stderr).toBe(0);
    // A replica, behind the gateway.
    const r = await loom.api("POST", `${BASE}/projects/default/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name: "echo" },
      spec: {
        model: ROOT,
        runtime: {
          command: ["/usr/bin/python3", join(ROOT, "test/fixtures/serving/slow_server.py")],
          env: { SLOW_SECONDS: "0" },
        },
        replicas: { min: 1, max: 1 },
        readiness: { path: "/health", timeoutSeconds: 60 },
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    replica = await until("a ready replica", async () => {
      const table = JSON.stringify((await loom.api("GET", "/gateway/v1/endpoints")).body);
      const m = /"host":"([\d.]+)","port":(\d+)/.exec(table);
      return m ? { host: m[1]!, port: Number(m[2]) } : undefined;
    });
    await until(
      "the listener job running",
      async () => (await loom.job("listener")).status?.phase === "Running",
    );
  }, 120_000);

  afterAll(async () => {
    await loom.cli(["delete", "isvc", "--all", "--timeout", "30"]).catch(() => undefined);
    // The replica stops after its drain: its namespace goes with it.
    await until("every namespace removed", () => namespaces().length === 0, 30_000).catch(() => undefined);
    await loom.stop();
  }, 60_000);

  it("keeps another workload's port off the host's loopback", async () => {
    const uid = (await loom.job("listener")).metadata.uid;
    expect(namespaces()).toContain(uid);
    // Its log says it listens, yet nothing on the host reaches it: the port is in its namespace.
    await until("the listener listening", async () => {
      const log = await loom.cli(["logs", "tj/listener"]);
      return log.stdout.includes(`listening on ${listenerPort}`);
    });
    expect(await reachable(listenerPort)).toBe(false);
  }, 60_000);

  it("lets a gang talk within itself, to the API and the gateway, and to nothing else", async () => {
    const gangPort = await deadPort();
    // A service of the machine's that listens on every interface (sshd, a database...): the link
    // to Loom must not reach it.
    const service = createServer((s) => s.end("ok"));
    await new Promise<void>((ok) => service.listen(0, "0.0.0.0", ok));
    const servicePort = (service.address() as { port: number }).port;
    const yaml = jobYaml(
      "gang",
      ["/usr/bin/python3", PROBE, "gang"],
      `${IN_FIXTURES}  workers: 2\n  env: {GANG_PORT: "${gangPort}", FOREIGN: "${listenerPort},${replica.port},${replica.host}:${replica.port},api:${servicePort}"}\n`,
    );
    const applied = await loom.cli(["apply", "-f", "-"], { input: yaml });
    expect(applied.code, applied.stderr).toBe(0);
    const job = await loom.waitFor(
      "gang",
      (j) => ["Succeeded", "Failed"].includes(j.status?.phase ?? ""),
      90_000,
    );
    const logs = await loom.cli(["logs", "tj/gang"]);
    service.close();
    expect(job.status?.phase, logs.stdout).toBe("Succeeded");
    expect(logs.stdout).toContain("gang peer says ok");
    expect(logs.stdout).toContain(`foreign ${listenerPort}: ConnectionRefusedError`);
    expect(logs.stdout).toContain(`foreign ${replica.port}: ConnectionRefusedError`);
    // The replica's own address (the gateway's way in) is no route from another workload.
    expect(logs.stdout).toMatch(new RegExp(`foreign ${replica.host}:${replica.port}: OSError`));
    expect(logs.stdout).toMatch(
      new RegExp(`foreign api:${servicePort}: (TimeoutError|OSError|socket.timeout)`),
    );
    expect(logs.stdout).not.toContain("reached foreign port");
    expect(logs.stdout).toContain("api /healthz: 200");
    expect(logs.stdout).toContain("gateway /v1/models: 401");
    expect(logs.stdout).toContain("log-metric: 200");
    // Its workers have all exited: its namespace is gone (not only once the job is deleted).
    await until("the gang's namespace removed", () => !namespaces().includes(job.metadata.uid));
  }, 120_000);

  it("serves the replica through the gateway, on a link of its own", async () => {
    // Not the host's loopback: an address of its link, which only the host reaches.
    expect(replica.host).toMatch(/^198\.1[89]\./);
    expect(await reachable(replica.port)).toBe(false);
    const res = await fetch(`${loom.url}/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "echo", prompt: "hi", max_tokens: 1 }),
    });
    expect(res.status, await res.text()).toBe(200);
  }, 30_000);

  it("removes a deleted job's namespace", async () => {
    const uid = (await loom.job("listener")).metadata.uid;
    const del = await loom.cli(["delete", "tj", "listener", "--timeout", "30"]);
    expect(del.code, del.stderr).toBe(0);
    await until("the listener's namespace removed", () => !namespaces().includes(uid));
  }, 60_000);
});

describe.runIf(isolated)("network namespaces across a restart", () => {
  const first = new LoomProcess();
  let second: LoomProcess | undefined;

  afterAll(async () => {
    await (second ?? first).stop();
  }, 60_000);

  it("keeps a running gang's namespace and removes one no workload accounts for", async () => {
    await first.start();
    const prefix = `loom-${readFileSync(join(first.dataDir, "instance-id"), "utf8").trim().slice(0, 8)}-`;
    const port = await deadPort();
    const applied = await first.cli(["apply", "-f", "-"], {
      input: jobYaml("sleeper", ["/usr/bin/python3", PROBE, "listen", String(port)], IN_FIXTURES),
    });
    expect(applied.code, applied.stderr).toBe(0);
    const job = await first.waitFor("sleeper", (j) => j.status?.phase === "Running", 60_000);
    const uid = job.metadata.uid;
    const pid = job.status!.workers![0]!.pid!;
    expect(existsSync(`/run/netns/${prefix}${uid}`)).toBe(true);
    expect(await first.kill("SIGKILL")).toBe(null);
    // A namespace left by a crash that no workload accounts for.
    const stray = `/run/netns/${prefix}00000000-0000-0000-0000-000000000000`;
    writeFileSync(stray, "");
    execFileSync("unshare", [`--net=${stray}`, "true"]);
    second = new LoomProcess([], first.home);
    await second.start();
    for (let i = 0; i < 100 && existsSync(stray); i++) await sleep(100);
    expect(existsSync(stray)).toBe(false);
    // The running worker was re-adopted, still in its namespace.
    expect(readlinkSync(`/proc/${pid}/ns/net`)).toBe(`net:[${statSync(`/run/netns/${prefix}${uid}`).ino}]`);
    const del = await second.cli(["delete", "tj", "sleeper", "--timeout", "30"]);
    expect(del.code, del.stderr).toBe(0);
    for (let i = 0; i < 100 && existsSync(`/run/netns/${prefix}${uid}`); i++) await sleep(100);
    expect(existsSync(`/run/netns/${prefix}${uid}`)).toBe(false);
  }, 120_000);
});

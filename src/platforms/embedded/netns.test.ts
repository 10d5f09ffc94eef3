import { randomUUID } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { EXPOSE_ENV, exposedPorts, GangNetworks } from "./netns.js";
import { LocalRuntime } from "./runtime.js";

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

  it.runIf(process.getuid?.() === 0)("moves Loom's URL to the link's host end, and only Loom's", () => {
    const n = new GangNetworks({ instanceId: "feedfacefeedface" });
    if (!n.capability.isolated) return;
    n.openApi(7470);
    try {
      const join = n.join("11112222-3333-4444-5555-666677778888", [8000])!;
      const { hostAddress, address, ifname, ports } = join.setup;
      expect(ifname).toBe("lmfeed111122223");
      expect(ifname.length).toBeLessThanOrEqual(15);
      expect(ports).toEqual([8000]);
      expect(hostAddress).toMatch(/^198\.1[89]\.\d+\.\d+$/);
      expect(n.address("11112222-3333-4444-5555-666677778888")).toBe(address);
      const env = join.env({
        MLFLOW_TRACKING_URI: "http://127.0.0.1:7470/mlflow/projects/a",
        LOOM_URL: "http://localhost:7470",
        OTHER: "http://127.0.0.1:74701/",
        PLAIN: "127.0.0.1:7470",
      });
      expect(env).toEqual({
        MLFLOW_TRACKING_URI: `http://${hostAddress}:7470/mlflow/projects/a`,
        LOOM_URL: `http://${hostAddress}:7470`,
        OTHER: "http://127.0.0.1:74701/",
        PLAIN: "127.0.0.1:7470",
      });
      // Two gangs never share a link's addresses.
      expect(n.join("99998888-3333-4444-5555-666677778888", [])!.setup.hostAddress).not.toBe(hostAddress);
    } finally {
      n.close();
    }
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
      const runtime = new LocalRuntime({
        dataDir,
        instanceId: randomUUID(),
        cpuMillis: 1000,
        memoryBytes: 2 ** 30,
        gpus: [],
        log: pino({ level: "silent" }),
        networks,
      });
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

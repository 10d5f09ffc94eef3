import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toSchedNode } from "../../controllers/admission/snapshot.js";
import type { GangSpec } from "../../ports/runtime.js";
import { coreScheduler } from "../../ports/scheduler.js";
import { machineGpus } from "./gpus.js";
import { registerGpuMetrics } from "./gpuusage.js";
import { LocalRuntime } from "./runtime.js";
import { detectSandbox } from "./sandbox.js";

const UUID = (i: number) => `GPU-${i}f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0`;
const row = (i: number, extra = "0, 0") =>
  `${i}, ${UUID(i)}, NVIDIA H100 80GB HBM3, 81559, ${extra}, 00000000:${18 + i}:00.0, 550.54.15, Disabled, 0`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "loom-gpus-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/**
 * No GPU on this machine: a stand-in nvidia-smi prints, per query, what the test put in its files
 * (which the test rewrites mid-run to make a device vanish or fail), in nvidia-smi's own format.
 */
function fakeSmi(gpus: string[]): { bin: string; set: (rows: string[]) => void } {
  const bin = join(dir, "nvidia-smi");
  const set = (rows: string[]) => writeFileSync(join(dir, "gpus.csv"), `${rows.join("\n")}\n`);
  set(gpus);
  writeFileSync(join(dir, "apps.csv"), "");
  writeFileSync(
    bin,
    `#!/bin/sh
case "$1" in
  -L) exit 0 ;;
  --query-gpu=*) cat "${dir}/gpus.csv" ;;
  --query-compute-apps=*) cat "${dir}/apps.csv" ;;
esac
`,
  );
  chmodSync(bin, 0o755);
  return { bin, set };
}

/** A stand-in nvidia-cuda-mps-control: records the daemon's environment and writes its pid file. */
function fakeMps(): string {
  const bin = join(dir, "mps-control");
  writeFileSync(
    bin,
    `#!/bin/sh
[ "$1" = "-d" ] || exit 0
echo "$CUDA_VISIBLE_DEVICES $CUDA_MPS_PIPE_DIRECTORY" >> "${dir}/mps-started"
echo $$ > "$CUDA_MPS_PIPE_DIRECTORY/nvidia-cuda-mps-control.pid"
`,
  );
  chmodSync(bin, 0o755);
  return bin;
}

const log = pino({ level: "silent" });

/** One worker of project p holding these devices. */
function gangOn(gpus: string[], command: string[], gpuShare?: number): GangSpec {
  return {
    ref: { kind: "TrainingJob", project: "p", name: "j", uid: randomUUID() },
    attempt: 1,
    workers: [
      {
        index: 0,
        command,
        env: {},
        allocation: {
          node: "n",
          cpuMillis: 100,
          memoryBytes: 2 ** 28,
          gpus,
          ...(gpuShare ? { gpuShare } : {}),
        },
      },
    ],
  };
}

describe("real GPUs (a stand-in nvidia-smi)", () => {
  it("discovers devices, and marks one that vanishes, fails a field or logs an XID unhealthy: new work avoids it", async () => {
    const smi = fakeSmi([row(0), row(1), row(2), row(3)]);
    let kernel = "[ 10.0] NVRM: Xid (PCI:0000:20:00): 79, pid=0, old news from before Loom started\n";
    const g = await machineGpus({
      dataDir: dir,
      nvidiaSmi: smi.bin,
      mpsControl: join(dir, "absent"),
      kernelLog: async () => kernel,
      log,
    });
    const inv = g.inventory!;
    expect(g.host.ids()).toEqual(["0", "1", "2", "3"]);
    expect(g.line).toMatch(/^4 × NVIDIA H100 80GB HBM3; CUDA MPS unavailable/);
    expect(g.host.model).toBe("NVIDIA H100 80GB HBM3");
    expect(g.host.memoryBytes).toBe(81559 * 2 ** 20);
    // Device 1 vanishes, 2 answers with an error, 3 gets a (new) XID 79.
    smi.set([row(0), row(2, "[GPU requires reset], 0"), row(3)]);
    kernel += "[ 99.0] NVRM: Xid (PCI:0000:21:00): 79, pid=0, GPU has fallen off the bus.\n";
    await inv.refresh();
    expect(g.host.ids()).toEqual(["0"]);
    const reasons = Object.fromEntries(inv.devices().map((d) => [d.id, d.reason ?? "ok"]));
    expect(reasons).toEqual({
      "0": "ok",
      "1": "gone from nvidia-smi's listing",
      "2": "nvidia-smi reports errors: memory.used: [GPU requires reset]",
      "3": "the driver logged XID 79: pid=0, GPU has fallen off the bus.",
    });
    // Back in the listing is not healthy again: it stays out until Loom restarts.
    smi.set([row(0), row(1), row(2), row(3)]);
    await inv.refresh();
    expect(g.host.ids()).toEqual(["0"]);
    // The scheduler places a 1-GPU job on the one healthy device only.
    const rt = new LocalRuntime({
      dataDir: join(dir, "rt"),
      instanceId: randomUUID(),
      cpuMillis: 4000,
      memoryBytes: 2 ** 32,
      gpus: [],
      gpuHost: g.host,
      log,
    });
    const node = (await rt.nodes())[0]!;
    expect(node.gpus).toEqual(["0"]);
    expect(node.gpuDevices!.filter((d) => !d.healthy).map((d) => d.id)).toEqual(["1", "2", "3"]);
    await rt.close();
    g.close();
  });

  it("without MPS, fractional requests get whole GPUs unless the admin allows unenforced sharing", async () => {
    const smi = fakeSmi([row(0)]);
    const whole = await machineGpus({
      dataDir: dir,
      nvidiaSmi: smi.bin,
      mpsControl: join(dir, "absent"),
      log,
    });
    expect(whole.host.sharing).toBe("whole");
    expect(whole.host.sharingReason).toMatch(/not installed.*get whole GPUs.*--gpu-sharing unenforced/);
    const loose = await machineGpus({
      dataDir: dir,
      nvidiaSmi: smi.bin,
      mpsControl: join(dir, "absent"),
      allowUnenforced: true,
      log,
    });
    expect(loose.host.sharing).toBe("unenforced");
    // Two gpu: 0.5 workloads on a node of one GPU: one at a time under "whole", both at once unenforced.
    const twoHalves = (sharing: "whole" | "unenforced") => {
      const node = toSchedNode({
        name: "n",
        cpuMillis: 8000,
        memoryBytes: 2 ** 34,
        gpus: ["0"],
        gpuSharing: sharing,
      });
      const pending = ["a", "b"].map((name, i) => ({
        name,
        project: "p",
        priority: 0,
        createdAt: i,
        preemptible: true,
        pods: [{ cpuMillis: 100, memoryBytes: 2 ** 20, gpu: 0.5 }],
      }));
      const d = coreScheduler.schedule({
        nodes: [node],
        projects: [{ name: "p", deserved: { gpu: 1 }, overQuotaWeight: 1 }],
        running: [],
        pending,
      } as never);
      return d.bind.map((b) => b.placements.map((p) => p.gpus));
    };
    expect(twoHalves("whole")).toEqual([[[{ device: "0", share: 1 }]]]);
    expect(twoHalves("unenforced")).toHaveLength(2);
    whole.close();
    loose.close();
  });

  it("with MPS: one daemon per GPU by UUID; a share's worker gets its pipes, a memory limit and a thread percentage", async () => {
    const smi = fakeSmi([row(0), row(1)]);
    const g = await machineGpus({ dataDir: dir, nvidiaSmi: smi.bin, mpsControl: fakeMps(), log });
    expect(g.host.sharing).toBe("mps");
    const pipe0 = join(dir, "gpu-mps", "0", "pipe");
    expect(readFileSync(join(dir, "mps-started"), "utf8").trim().split("\n")).toEqual([
      `${UUID(0)} ${pipe0}`,
      `${UUID(1)} ${join(dir, "gpu-mps", "1", "pipe")}`,
    ]);
    expect(g.host.env({ gpus: ["0"], gpuShare: 0.5 })).toEqual({
      CUDA_VISIBLE_DEVICES: UUID(0),
      CUDA_MPS_PIPE_DIRECTORY: pipe0,
      CUDA_MPS_LOG_DIRECTORY: join(dir, "gpu-mps", "0", "log"),
      CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: "50",
      CUDA_MPS_PINNED_DEVICE_MEM_LIMIT: `0=${Math.floor(81559 / 2)}M`,
    });
    // A whole GPU is not an MPS client, and is named by UUID.
    expect(g.host.env({ gpus: ["0", "1"] })).toEqual({ CUDA_VISIBLE_DEVICES: `${UUID(0)},${UUID(1)}` });
    expect(g.host.binds({ gpus: ["1"], gpuShare: 0.25 })).toEqual([
      join(dir, "gpu-mps", "1", "pipe"),
      join(dir, "gpu-mps", "1", "log"),
    ]);
    // A next server finds the daemons running (their pid files) and starts none.
    rmSync(join(dir, "mps-started"));
    writeFileSync(join(pipe0, "nvidia-cuda-mps-control.pid"), String(process.pid));
    writeFileSync(join(dir, "gpu-mps", "1", "pipe", "nvidia-cuda-mps-control.pid"), String(process.pid));
    const again = await machineGpus({ dataDir: dir, nvidiaSmi: smi.bin, mpsControl: fakeMps(), log });
    expect(again.host.sharing).toBe("mps");
    expect(() => readFileSync(join(dir, "mps-started"))).toThrow();
    g.close();
    again.close();
  });

  it("keeps virtual GPUs as before where nvidia-smi is missing or --gpus N is given", async () => {
    const none = await machineGpus({ dataDir: dir, nvidiaSmi: join(dir, "absent"), log });
    expect(none.host.ids()).toEqual([]);
    expect(none.line).toBe("none");
    const virt = await machineGpus({ dataDir: dir, declared: 2, log });
    expect(virt.host.ids()).toEqual(["0", "1"]);
    expect(virt.host.sharing).toBe("unenforced");
    expect(virt.host.env({ gpus: ["1"], gpuShare: 0.5 })).toEqual({ CUDA_VISIBLE_DEVICES: "1" });
  });

  it("exports per-device and per-worker use in /metrics, and tells workspace culling when a device computes", async () => {
    const smi = fakeSmi([row(0, "40210, 97")]);
    const g = await machineGpus({ dataDir: dir, nvidiaSmi: smi.bin, mpsControl: join(dir, "absent"), log });
    const rt = new LocalRuntime({
      dataDir: join(dir, "rt"),
      instanceId: randomUUID(),
      cpuMillis: 4000,
      memoryBytes: 2 ** 32,
      gpus: [],
      gpuHost: g.host,
      log,
    });
    const spec = gangOn(["0"], ["sleep", "600"]);
    try {
      await rt.start(spec);
      const pid = (await rt.observe(spec.ref))!.workers[0]!.pid!;
      // nvidia-smi reports the worker's process (a host pid) on device 0.
      writeFileSync(join(dir, "apps.csv"), `${pid}, ${UUID(0)}, 2048\n`);
      await g.inventory!.refresh();
      const registry = new Registry();
      registerGpuMetrics(registry, () => rt.gpuStatus());
      const text = await registry.metrics();
      expect(text).toMatch(
        /loom_gpu_utilization_percent\{gpu="0",uuid="GPU-0f2e[^"]*",model="NVIDIA H100 80GB HBM3"\} 97/,
      );
      expect(text).toMatch(/loom_gpu_memory_used_bytes\{gpu="0"[^}]*\} 42163240960/);
      expect(text).toMatch(/loom_gpu_healthy\{gpu="0"[^}]*\} 1/);
      expect(text).toContain(
        `loom_gpu_workload_memory_used_bytes{gpu="0",project="p",workload="j",worker="0"} ${2048 * 2 ** 20}`,
      );
      // Workspace culling reads the same sample: 97% is busy; a device it does not know, no answer.
      expect(await g.activity(["0"])).toBe(true);
      expect(await g.activity(["7"])).toBeUndefined();
    } finally {
      await rt.release(spec.ref);
      await rt.close();
      g.close();
    }
  });

  const support = detectSandbox();
  it.runIf(!!support.bwrap && support.privileged)(
    "lends a sandboxed worker only its own /dev/nvidiaN and its GPU's MPS pipes: another's device cannot be seen or opened",
    async () => {
      // Real character devices (NVIDIA's major, 195), in a /dev of the test's own.
      const dev = join(dir, "dev");
      mkdirSync(dev);
      const nodes: [string, number][] = [
        ["nvidia0", 0],
        ["nvidia1", 1],
        ["nvidiactl", 255],
        ["nvidia-uvm", 254],
      ];
      for (const [name, minor] of nodes) {
        const r = spawnSync("mknod", ["-m", "0666", join(dev, name), "c", "195", String(minor)]);
        expect(r.status, String(r.stderr)).toBe(0);
      }
      const smi = fakeSmi([row(0), row(1)]);
      const g = await machineGpus({
        dataDir: join(dir, "rt"),
        nvidiaSmi: smi.bin,
        mpsControl: fakeMps(),
        devRoot: dev,
        log,
      });
      const rt = new LocalRuntime({
        dataDir: join(dir, "rt"),
        instanceId: randomUUID(),
        cpuMillis: 4000,
        memoryBytes: 2 ** 32,
        gpus: [],
        gpuHost: g.host,
        sandbox: support,
        log,
      });
      const otherPipes = join(dir, "rt", "gpu-mps", "1", "pipe");
      const spec = gangOn(
        ["0"],
        [
          "sh",
          "-c",
          `echo "cvd=$CUDA_VISIBLE_DEVICES"; echo $(ls ${dev}); ` +
            `test -c ${dev}/nvidia0 && echo own-is-a-device; ` +
            `(exec 3<${dev}/nvidia1) 2>/dev/null && echo OTHER-OPENED || echo other-not-openable; ` +
            `test -d "$CUDA_MPS_PIPE_DIRECTORY" && test -w "$CUDA_MPS_PIPE_DIRECTORY" && echo own-mps-pipes; ` +
            `test -e ${otherPipes} && echo OTHER-PIPES || echo other-pipes-hidden`,
        ],
        0.5,
      );
      try {
        await rt.start(spec);
        let w = (await rt.observe(spec.ref))!.workers[0]!;
        for (let i = 0; i < 400 && w.state === "Running"; i++) {
          await new Promise((r) => setTimeout(r, 50));
          w = (await rt.observe(spec.ref))!.workers[0]!;
        }
        let out = "";
        for await (const chunk of await rt.logs(spec.ref, { worker: 0 })) out += String(chunk);
        expect(out.trim().split("\n")).toEqual([
          `cvd=${UUID(0)}`,
          "nvidia-uvm nvidia0 nvidiactl",
          "own-is-a-device",
          "other-not-openable",
          "own-mps-pipes",
          "other-pipes-hidden",
        ]);
        expect(w.state, w.message).toBe("Succeeded");
      } finally {
        await rt.release(spec.ref);
        await rt.close();
        g.close();
      }
    },
  );
});

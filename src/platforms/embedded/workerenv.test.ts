import { describe, expect, it } from "vitest";
import type { GangSpec } from "../../ports/runtime.js";
import { INSTANCE_ENV, WORKER_KEY_ENV, workerEnv, workerKey } from "./workerenv.js";
import { WorkloadFiles } from "./workloadfiles.js";

describe("workerEnv", () => {
  const spec = {
    ref: { uid: "0123456789ab", name: "job", project: "p" },
    attempt: 3,
    workers: [{ index: 1, command: ["true"], env: { FOO: "bar" }, allocation: { gpus: ["0", "2"] } }],
  } as unknown as GangSpec;
  const files = new WorkloadFiles("/data");

  it("sets the worker's paths, devices and markers over its own env, and never passes the server's token", () => {
    const before = process.env.LOOM_TOKEN;
    process.env.LOOM_TOKEN = "secret";
    try {
      const env = workerEnv(spec, spec.workers[0]!, files, "inst", undefined);
      expect(env).toMatchObject({
        FOO: "bar",
        LOOM_WORKLOAD_DIR: "/data/workloads/0123456789ab/work",
        LOOM_CHECKPOINT_DIR: "/data/workloads/0123456789ab/checkpoint",
        LOOM_ATTEMPT_DIR: "/data/workloads/0123456789ab/attempt-3",
        LOOM_HEARTBEAT_FILE: "/data/workloads/0123456789ab/attempt-3/worker-1.heartbeat",
        LOOM_RAY_TEMP_DIR: "/tmp/loom-ray-01234567-a3-w1",
        CUDA_VISIBLE_DEVICES: "0,2",
        [INSTANCE_ENV]: "inst",
        [WORKER_KEY_ENV]: workerKey("0123456789ab", 3, 1),
      });
      expect(env.LOOM_TOKEN).toBeUndefined();
    } finally {
      if (before === undefined) delete process.env.LOOM_TOKEN;
      else process.env.LOOM_TOKEN = before;
    }
  });

  it("puts the job's Python environment first on PATH", () => {
    const env = workerEnv(spec, spec.workers[0]!, files, "inst", "/envs/abc");
    expect(env.VIRTUAL_ENV).toBe("/envs/abc");
    expect(env.PATH?.startsWith("/envs/abc/bin:")).toBe(true);
  });
});

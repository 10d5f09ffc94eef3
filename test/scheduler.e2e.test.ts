import { afterAll, beforeAll, describe } from "vitest";
import { LoomProcess } from "./helpers.js";
import { schedulerScenarios } from "./scenarios.js";

/** The scheduler's scenarios on the embedded platform: `loom up --gpus 8`, real processes. */
describe("scheduler scenarios on the embedded platform (8 virtual GPUs)", () => {
  const loom = new LoomProcess(["--gpus", "8"]);
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());
  schedulerScenarios(() => ({
    name: "embedded",
    loom: (args, input) => loom.cli(args, { input }),
    workersGone: async () => true,
    logs: async (project, job) => (await loom.cli(["logs", `tj/${job}`, "-p", project])).stdout,
  }));
});

import { defineConfig } from "vitest/config";
import LongestFirstSequencer from "./test/sequencer.js";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two cores: end-to-end files start real servers and processes; more in parallel only adds noise.
    maxWorkers: 2,
    // The longest files start first (test/durations.json on CI), so both workers end together.
    sequence: { sequencer: LongestFirstSequencer },
    reporters: ["default", "./test/summary-reporter.ts"],
    globalSetup: ["./test/global-setup.ts"],
  },
});

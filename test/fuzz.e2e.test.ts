import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";

/**
 * Fuzzing: schemathesis (PyPI) generates requests from /openapi.json (Loom's API and the MLflow
 * routes) against a real `loom up` with the admin token; no answer may be a server error (≥ 500).
 * .ci/run installs it into ~/.cache/loom/schemathesis; LOOM_SCHEMATHESIS names another binary.
 * Fixed seed, so a failure reproduces with the command this test prints.
 */

const SEED = 17;
/** Per operation in the fuzzing phase; the coverage phase adds its boundary cases on top. */
const MAX_EXAMPLES = 10;
const MIN_CASES = 5000;

function findSchemathesis(): string | undefined {
  const candidates = [
    process.env.LOOM_SCHEMATHESIS,
    join(homedir(), ".cache", "loom", "schemathesis", "bin", "schemathesis"),
    ...(process.env.PATH ?? "").split(delimiter).map((d) => join(d, "schemathesis")),
  ];
  return candidates.find((c): c is string => !!c && existsSync(c));
}

const bin = findSchemathesis();
const skipReason =
  "schemathesis is not installed: python3 -m venv ~/.cache/loom/schemathesis && ~/.cache/loom/schemathesis/bin/pip install schemathesis==4.32.5 (as .ci/run does)";
if (!bin) console.warn(`fuzz.e2e: skipped: ${skipReason}`);

describe.skipIf(!bin)(
  `fuzzing /openapi.json with schemathesis${bin ? "" : ` (skipped: ${skipReason})`}`,
  () => {
    const loom = new LoomProcess();
    beforeAll(async () => {
      await loom.start();
    }, 60_000);
    afterAll(async () => {
      await loom.stop();
    });

    it(`answers ${MIN_CASES}+ generated requests with no server error`, async () => {
      const args = [
        "run",
        `${loom.url}/openapi.json`,
        "--header",
        `Authorization: Bearer ${loom.token}`,
        "--checks",
        "not_a_server_error",
        "--max-examples",
        String(MAX_EXAMPLES),
        "--seed",
        String(SEED),
        "--phases",
        "coverage,fuzzing",
        // The MLflow routes under /mlflow/projects/{project} are the same handlers as under /api;
        // fuzzing them again would mostly meet 404s for random project names.
        "--exclude-path-regex",
        "^/mlflow/projects/",
        // One worker: as fast here, and schemathesis' generation is not thread-safe everywhere.
        "--workers",
        "1",
        // No example database left in the checkout; the seed alone makes a run repeat.
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
      ];
      const { code, output } = await new Promise<{ code: number | null; output: string }>((ok) => {
        // In the server's throwaway home: schemathesis keeps a cache in its working directory.
        const p = spawn(bin!, args, { cwd: loom.home, stdio: ["ignore", "pipe", "pipe"] });
        let output = "";
        p.stdout.on("data", (d: Buffer) => {
          output += d.toString();
        });
        p.stderr.on("data", (d: Buffer) => {
          output += d.toString();
        });
        p.on("close", (c) => ok({ code: c, output }));
      });
      const reproduce = `reproduce: ${bin} ${args.map((a) => (a.includes(" ") ? `'${a}'` : a)).join(" ")}`;
      const failures = output.includes("FAILURES")
        ? output.slice(output.indexOf("FAILURES"))
        : output.slice(-4000);
      const why = `${failures}\n${reproduce}\nserver log:\n${loom.log.slice(-4000)}`;
      // A server error (ST101), or any other failed check, fails the test. An error inside
      // schemathesis itself (its ERRORS section, e.g. a generation glitch) only warns.
      expect(output, why).not.toMatch(/ST101|Server error/);
      expect(output.includes("FAILURES"), why).toBe(false);
      if (code !== 0)
        console.warn(`schemathesis exited ${code} without a failed check:\n${output.slice(-3000)}`);
      const generated = Number(/(\d+) generated/.exec(output)?.[1] ?? 0);
      expect(generated, output.slice(-2000)).toBeGreaterThanOrEqual(MIN_CASES);
      console.info(`schemathesis: ${generated} generated cases, no server error`);
      // The server is still up and answering.
      expect((await loom.api("GET", "/healthz", undefined, null)).status).toBe(200);
    }, 420_000);
  },
);

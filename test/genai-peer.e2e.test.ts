import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT, spawnAsync } from "./helpers.js";
import { mlflowPython, mlflowServer } from "./tracking-client.js";

/**
 * The same client scripts (prompts, traces) against the real `mlflow server` and against Loom:
 * what Loom answers is what MLflow answers, as far as the official client can tell. The server
 * comes from the full `mlflow` package in the venv bench:tracking also uses (test/tracking-client.ts
 * mlflowServer: built once, before the tests in CI, by .ci/run).
 */
const SCRIPTS = [
  ["test/fixtures/tracking/prompts_suite.py", /OK 16 checks/],
  ["test/fixtures/tracking/traces_suite.py", /OK 22 checks/],
] as const;

async function run(python: string, script: string, uri: string, token: string, suffix: string) {
  // Not spawnSync: the test's fetches after it would reuse a socket the server closed meanwhile.
  const r = await spawnAsync(python, [join(ROOT, script)], {
    env: { ...process.env, MLFLOW_TRACKING_URI: uri, MLFLOW_TRACKING_TOKEN: token, SUFFIX: suffix },
    timeout: 180_000,
  });
  return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((ok) => srv.listen(0, "127.0.0.1", ok));
  const port = (srv.address() as { port: number }).port;
  await new Promise((ok) => srv.close(ok));
  return port;
}

describe("the same MLflow 3 GenAI client scripts against the real mlflow server and against Loom", () => {
  const loom = new LoomProcess();
  let python = "";
  let peer: ChildProcess | undefined;
  let peerUrl = "";
  const dir = mkdtempSync(join(tmpdir(), "loom-mlflow-peer-"));
  let server = "";
  beforeAll(async () => {
    python = mlflowPython();
    server = mlflowServer();
    await loom.start();
    const port = await freePort();
    peer = spawn(
      server,
      [
        "server",
        "--backend-store-uri",
        `sqlite:///${join(dir, "mlflow.db")}`,
        "--default-artifact-root",
        join(dir, "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        String(port),
        "--workers",
        "1",
      ],
      {
        cwd: dir,
        env: { ...process.env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION: "false" },
        stdio: "ignore",
        detached: true,
      },
    );
    peerUrl = `http://127.0.0.1:${port}`;
    // Up when it answers (no bound on how long that takes on a loaded machine, beyond the hook's).
    for (;;) {
      const ok = await fetch(`${peerUrl}/health`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (peer.exitCode !== null) throw new Error(`mlflow server exited with ${peer.exitCode}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }, 600_000);
  afterAll(async () => {
    if (peer?.pid) process.kill(-peer.pid, "SIGTERM");
    await loom.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [script, ok] of SCRIPTS)
    it(`${script.split("/").at(-1)}: passes against mlflow server, and against Loom`, async () => {
      const mlflow = await run(python, script, peerUrl, "unused", "peer");
      expect(mlflow.code, `against mlflow server:\n${mlflow.out}`).toBe(0);
      expect(mlflow.out).toMatch(ok);
      const ours = await run(python, script, loom.url, loom.token, "loom");
      expect(ours.code, `against Loom:\n${ours.out}`).toBe(0);
      expect(ours.out).toMatch(ok);
    }, 400_000);
});

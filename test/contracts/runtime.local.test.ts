import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { EmbeddedRuntime } from "../../src/platforms/embedded/platform.js";
import { findProcessesByEnv } from "../../src/platforms/embedded/procfs.js";
import { LocalRevisions } from "../../src/platforms/embedded/replicas.js";
import { LocalRuntime } from "../../src/platforms/embedded/runtime.js";
import type { WorkerSpec } from "../../src/ports/runtime.js";
import { runtimeContract } from "./runtime.contract.js";

/**
 * The Runtime contract on the embedded runtime: workers are process groups on this machine,
 * service replicas supervised processes (LocalRevisions) composed into the same Runtime.
 */
runtimeContract(
  "local",
  async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "loom-runtime-contract-"));
    const instanceId = `contract-${randomUUID()}`;
    const runtimes: EmbeddedRuntime[] = [];
    const log = pino({ level: "silent" });
    const project = "contract";
    return {
      project,
      async newRuntime() {
        const processes = new LocalRuntime({
          dataDir,
          instanceId,
          cpuMillis: 4000,
          memoryBytes: 8 * 2 ** 30,
          gpus: [],
          log,
          pollMs: 50,
        });
        const replicas = new LocalRevisions({
          runtime: processes,
          events: { record: async () => {}, listFor: async () => [] },
          log,
          stateDir: join(dataDir, "revisions"),
          node: (await processes.nodes())[0]!.name,
          drainMs: 50,
          graceSeconds: 5,
        });
        const rt = new EmbeddedRuntime(processes, replicas);
        runtimes.push(rt);
        return rt;
      },
      async newRef(name) {
        return { kind: "TrainingJob", project, name, uid: randomUUID() };
      },
      worker(b): Pick<WorkerSpec, "command" | "env"> {
        if ("serves" in b)
          return {
            command: [
              process.execPath,
              "-e",
              "require('node:http').createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT), '127.0.0.1')",
            ],
            env: {},
          };
        if ("runs" in b) return { command: ["sh", "-c", "echo ready; exec sleep 300"], env: {} };
        return {
          command: ["sh", "-c", 'printf "%s" "$CONTRACT_OUTPUT"; exit "$CONTRACT_CODE"'],
          env: { CONTRACT_OUTPUT: b.output ?? "", CONTRACT_CODE: String(b.exit) },
        };
      },
      async placeReplicas(rt) {
        // Replicas that ask for resources wait for Loom's scheduler; the test plays it, through
        // the runtime's external-work port (as on Kubernetes).
        const nodes = await rt.nodes();
        for (const w of rt.external?.().pending ?? []) {
          if (w.project !== project) continue;
          await rt.bindExternal?.(
            w.id,
            w.pods.map((_, pod) => ({ pod, node: nodes[0]!.name, gpus: [] })),
          );
        }
      },
      async close() {
        for (const rt of runtimes) await rt.close();
        // Anything still carrying this instance's marker was left by a failed case.
        for (const p of findProcessesByEnv("LOOM_INSTANCE", instanceId)) process.kill(p.pid, "SIGKILL");
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
  // Embedded: the worker's own output; exits recorded in state.json; every worker on loopback.
  { workerOutput: true, stoppedAttempt: "kept", endpoints: "loopback-ports", replicaPorts: "per-replica" },
);

/**
 * bench:gateway part 3's cost of a trace, measured where it is paid rather than as throughput
 * (which a loaded 2-core machine shared with wrk and the upstream cannot resolve): the gateway's
 * event loop per traced request, from the recorder's record() to the batch written, for
 * bench-sized exchanges (the part's request body and the upstream's completion), in 256-request
 * batches as the recorder flushes them. Then the read side: the first search after them (which,
 * since traces are written raw, builds their records).
 *
 *   npx tsx bench/gateway-trace-cpu.ts            # this checkout
 *   LOOM_ROOT=/tmp/old npx tsx bench/gateway-trace-cpu.ts   # another checkout's sources
 *
 * Prints one JSON line per round: event-loop active µs per trace (performance.eventLoopUtilization,
 * the gateway's thread only), and the process's CPU µs per trace (every thread, a writer thread's
 * included).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";

const root = process.env.LOOM_ROOT ?? process.cwd();
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const BATCHES = Number(process.env.BATCHES ?? 100);
const BATCH = 256;

const load = async (path: string) => import(pathToFileURL(join(root, path)).href);
const { openSqlite } = await load("src/platforms/embedded/db.ts");
const { TraceStore } = await load("src/tracking/traces.ts");
const { GatewayTraceRecorder } = await load("src/server/gatewaytraces.ts");

const requestBody = Buffer.from(JSON.stringify({ model: "bench", prompt: "hello", max_tokens: 1 }));
const completion = Buffer.from(
  `{"id":"cmpl-bench","object":"text_completion","created":1700000000,"model":"bench","choices":[{"index":0,"text":" world","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}`,
);

for (let round = 1; round <= ROUNDS; round++) {
  const dir = mkdtempSync(join(tmpdir(), "loom-tracecpu-"));
  const database = await openSqlite(join(dir, "loom.db"));
  const store = new TraceStore(database.db);
  const recorder = new GatewayTraceRecorder({ traces: store, experiment: async () => "1" });
  const record = () => {
    const now = Date.now();
    recorder.record({
      project: "default",
      service: "bench",
      revision: "bench-1",
      caller: "bench-key",
      status: 200,
      usage: { promptTokens: 2, completionTokens: 1 },
      // As the gateway hands it over: the request body it buffered, a copy of the answer.
      capture: {
        request: requestBody,
        response: Buffer.from(completion),
        startedMs: now,
        endedMs: now,
        complete: true,
      },
    });
  };
  // Warm: the writer (a thread, on old checkouts) started, the statements prepared, the JIT done.
  for (let i = 0; i < 2 * BATCH; i++) record();
  await recorder.flush();

  const n = BATCHES * BATCH;
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let b = 0; b < BATCHES; b++) {
    for (let i = 0; i < BATCH; i++) record();
    await recorder.flush();
  }
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;

  // The read side: the next search (on this checkout, it builds the records first).
  const readElu0 = performance.eventLoopUtilization();
  const readCpu0 = process.cpuUsage();
  const found = await store.search("default", { experimentIds: ["1"], maxResults: 1 });
  const readElu = performance.eventLoopUtilization(readElu0);
  const readCpu = process.cpuUsage(readCpu0);
  await recorder.close();
  await database.close();
  rmSync(dir, { recursive: true, force: true });
  const us = (x: number) => Math.round(x * 10) / 10;
  console.log(
    JSON.stringify({
      root,
      round,
      traces: n,
      found: found.traces.length,
      eventLoopUsPerTrace: us((elu.active * 1000) / n),
      processCpuUsPerTrace: us((cpu.user + cpu.system) / n),
      wallUsPerTrace: us((wall * 1000) / n),
      firstReadEventLoopUsPerTrace: us((readElu.active * 1000) / (n + 2 * BATCH)),
      firstReadCpuUsPerTrace: us((readCpu.user + readCpu.system) / (n + 2 * BATCH)),
      load: (await import("node:os")).loadavg().map((l) => Math.round(l * 10) / 10),
    }),
  );
}

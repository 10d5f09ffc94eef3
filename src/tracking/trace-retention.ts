import { rm } from "node:fs/promises";
import { join } from "node:path";
import { type TraceStore, traceArtifactPath } from "./traces.js";

/** Removes traces' spans (their artifact directories) from the local artifact store. */
export async function removeTraceSpans(
  artifactsDir: string,
  traces: { project: string; experiment_id: number | string; trace_id: string }[],
): Promise<void> {
  for (const t of traces)
    await rm(join(artifactsDir, t.project, traceArtifactPath(t.experiment_id, t.trace_id)), {
      recursive: true,
      force: true,
    });
}

/** One retention sweep: traces older than maxAgeMs go, records and spans. Returns how many. */
export async function sweepTraces(
  traces: TraceStore,
  artifactsDir: string,
  maxAgeMs: number,
): Promise<number> {
  const gone = await traces.sweep(maxAgeMs);
  await removeTraceSpans(artifactsDir, gone);
  return gone.length;
}

/**
 * `loom up --trace-retention`: sweeps now and then every intervalMs (an hour by default, or
 * the retention itself when shorter) until stopped. A failed sweep is logged and tried again.
 */
export function startTraceRetention(opts: {
  traces: TraceStore;
  artifactsDir: string;
  maxAgeMs: number;
  intervalMs?: number;
  log?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}): () => void {
  const every = opts.intervalMs ?? Math.min(3_600_000, Math.max(1_000, opts.maxAgeMs));
  let running = false;
  const run = () => {
    if (running) return;
    running = true;
    sweepTraces(opts.traces, opts.artifactsDir, opts.maxAgeMs)
      .then((n) => {
        if (n > 0) opts.log?.info({ removed: n }, `removed ${n} trace(s) past the trace retention`);
      })
      .catch((err) => opts.log?.warn({ err }, "trace retention sweep failed; trying again at the next"))
      .finally(() => {
        running = false;
      });
  };
  const timer = setInterval(run, every);
  timer.unref();
  run();
  return () => clearInterval(timer);
}

import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { gatewayRows, type PackedBatch } from "./traces-gateway.js";

/**
 * The gateway's trace writer thread: turns packed batches of traced requests into MLflow trace
 * records (JSON parsing, span building) and hands them back for the main thread to write (its
 * SQLite connection, or PostgreSQL's pool). Given a SQLite file it can insert them itself on a
 * connection of its own, but Loom does not ask it to: a second writer on the file made the main
 * connection's deferred transactions fail with SQLITE_BUSY.
 */

/** A batch for the thread: its items as JSON (one string copies faster than many objects clone). */
export interface WriterRequest {
  id: number;
  items: string;
  data: Uint8Array;
}

export type WriterAnswer =
  | { id: number; written: number; failed: number }
  | { id: number; rows: [string, unknown[]][]; failed: number }
  | { id: number; error: string };

const COLUMNS = [
  "project",
  "trace_id",
  "experiment_id",
  "client_request_id",
  "request_time",
  "execution_ms",
  "state",
  "request_preview",
  "response_preview",
  "body",
  "spans",
] as const;

const file = (workerData as { file?: string } | undefined)?.file;
const insertAll = file ? openWriter(file) : undefined;

function openWriter(path: string) {
  const db = new Database(path);
  // The API's connection writes too: wait for its lock rather than fail (its writes are short).
  db.pragma("busy_timeout = 5000");
  db.pragma("synchronous = NORMAL");
  const insert = db.prepare(
    `INSERT OR REPLACE INTO tr_traces (${COLUMNS.join(", ")}) VALUES (${COLUMNS.map((c) => `@${c}`).join(", ")})`,
  );
  return db.transaction((rows: Record<string, unknown>[]) => {
    for (const r of rows) insert.run(r);
  });
}

parentPort?.on("message", (m: WriterRequest) => {
  try {
    const batch: PackedBatch = { items: JSON.parse(m.items) as PackedBatch["items"], data: m.data };
    const { rows, failed } = gatewayRows(batch);
    if (insertAll) {
      const all = [...rows.values()].flat();
      // IMMEDIATE: take the write lock first, so the transaction never fails half-way on it.
      insertAll.immediate(all as unknown as Record<string, unknown>[]);
      parentPort!.postMessage({ id: m.id, written: all.length, failed } satisfies WriterAnswer);
    } else parentPort!.postMessage({ id: m.id, rows: [...rows], failed } satisfies WriterAnswer);
  } catch (err) {
    parentPort!.postMessage({ id: m.id, error: String((err as Error)?.stack ?? err) } satisfies WriterAnswer);
  }
});

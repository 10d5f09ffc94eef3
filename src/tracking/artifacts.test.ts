import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import Fastify, { type FastifyInstance } from "fastify";
import type { Kysely } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { openSqlite } from "../platforms/embedded/db.js";
import type { TokenInfo } from "../ports/store.js";
import { installJsonParsers } from "../server/jsonbody.js";
import { sqliteTracking, trackingOn } from "./db.js";
import { trackingRoutes } from "./routes.js";

/**
 * Temp files of uploads that a crash cut off: the server removes them when it starts, says how
 * many in its log, and uploads keep working after.
 */
describe("artifact uploads interrupted by a crash", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  /** A server on `dir`, its log lines collected. */
  async function start(dir: string) {
    const sqlite = await openSqlite(":memory:");
    cleanup.push(() => sqlite.close());
    const t = trackingOn(sqliteTracking(sqlite.db as unknown as Kysely<unknown>));
    const lines: Record<string, unknown>[] = [];
    const stream = new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
        done();
      },
    });
    const app: FastifyInstance = Fastify({ logger: { level: "info", stream } });
    cleanup.push(() => app.close());
    installJsonParsers(app);
    app.addHook("onRequest", async (req) => {
      req.principal = { name: "admin", role: "admin" } as TokenInfo;
    });
    await trackingRoutes(app, { ...t, artifactsDir: dir, projectExists: async (p) => p === "p" });
    await app.ready();
    return { app, t, lines };
  }

  it("removes the stale temp files at start-up, logs how many, and a new upload still lands", async () => {
    const dir = mkdtempSync(join(tmpdir(), "loom-artifacts-"));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    // What a crashed server left: two half-written uploads from before this process started
    // (dated back, as a crash before this start would have left them), in nested directories.
    const stale = [
      join(dir, "p", "1", "run1", "artifacts", "model", "model.bin.upload-4242-1700000000000"),
      join(dir, "p", "1", "run1", "artifacts", "notes.txt.upload-1-1700000000001"),
    ];
    const old = new Date(Date.now() - 3600_000);
    for (const f of stale) {
      mkdirSync(join(f, ".."), { recursive: true });
      writeFileSync(f, "half an upload");
      utimesSync(f, old, old);
    }
    // Not temp files, or not stale: a real artifact, and an upload being written right now.
    const artifact = join(dir, "p", "1", "run1", "artifacts", "model", "weights.bin");
    writeFileSync(artifact, "w");
    utimesSync(artifact, old, old);
    const inFlight = join(dir, "p", "1", "run1", "artifacts", "live.bin.upload-77-1700000000002");
    writeFileSync(inFlight, "streaming");

    const { app, t, lines } = await start(dir);

    for (const f of stale) expect(existsSync(f), f).toBe(false);
    expect(existsSync(artifact)).toBe(true);
    expect(existsSync(inFlight)).toBe(true);
    const said = lines.find((l) => String(l.msg).includes("interrupted before this start"));
    expect(said).toMatchObject({ removed: 2, failed: 0, dir });
    expect(said?.msg).toContain("removed 2 temp file(s)");

    // A fresh upload works and reads back; its temp file is gone.
    const exp = await t.store.createExperiment("p", "e");
    const url = `/mlflow/projects/p/api/2.0/mlflow-artifacts/artifacts/${exp}/r/artifacts/out.txt`;
    const put = await app.inject({ method: "PUT", url, payload: "fresh" });
    expect(put.statusCode).toBe(200);
    expect((await app.inject({ method: "GET", url })).body).toBe("fresh");
    expect(readFileSync(join(dir, "p", exp, "r", "artifacts", "out.txt"), "utf8")).toBe("fresh");
    const listed = await app.inject({
      method: "GET",
      url: `/mlflow/projects/p/api/2.0/mlflow-artifacts/artifacts?path=${exp}/r/artifacts`,
    });
    expect(listed.json()).toEqual({ files: [{ path: "out.txt", is_dir: false, file_size: 5 }] });
  });

  it("logs nothing on a clean start, and refuses an upload named like a temp file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "loom-artifacts-"));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const { app, t, lines } = await start(dir);
    expect(lines.filter((l) => String(l.msg).includes("interrupted"))).toEqual([]);
    const exp = await t.store.createExperiment("p", "e");
    // Such a name would be hidden from listings and taken for a crash's leftover by the sweep.
    const r = await app.inject({
      method: "PUT",
      url: `/mlflow/projects/p/api/2.0/mlflow-artifacts/artifacts/${exp}/r/a.upload-1-2`,
      payload: "x",
    });
    expect(r.statusCode).toBe(400);
    expect(r.json().message).toContain("reserved for uploads in flight");
  });
});

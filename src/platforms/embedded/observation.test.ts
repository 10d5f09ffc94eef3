import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CheckpointReports } from "./observation.js";
import { WorkloadFiles } from "./workloadfiles.js";

describe("CheckpointReports", () => {
  let dataDir: string;
  let files: WorkloadFiles;
  const uid = "u1";

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), "loom-ckpt-"));
    files = new WorkloadFiles(dataDir);
    mkdirSync(files.checkpointDir(uid), { recursive: true });
  });
  afterEach(() => rmSync(dataDir, { recursive: true, force: true }));

  /** Writes loom.json with the given step and modification time (seconds). */
  function report(step: number, mtime: number): void {
    const file = join(files.checkpointDir(uid), "loom.json");
    writeFileSync(file, JSON.stringify({ step }));
    utimesSync(file, mtime, mtime);
  }

  it("says a checkpoint moved once per new loom.json, whether or not the job read it meanwhile", () => {
    const reports = new CheckpointReports(files);
    expect(reports.moved(uid)).toBe(false); // none yet
    report(10, 1000);
    expect(reports.moved(uid)).toBe(true);
    expect(reports.moved(uid)).toBe(false); // announced, not yet read: not again
    expect(reports.of(uid)).toEqual({ time: new Date(1_000_000).toISOString(), step: 10 });
    expect(reports.moved(uid)).toBe(false);
    report(20, 1001);
    expect(reports.of(uid)?.step).toBe(20); // read before any poll saw it: nothing to announce
    expect(reports.moved(uid)).toBe(false);
    report(30, 1002);
    expect(reports.moved(uid)).toBe(true);
    reports.forget(uid);
    expect(reports.moved(uid)).toBe(true); // a new start (a restarted server) looks afresh
  });
});

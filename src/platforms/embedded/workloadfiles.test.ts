import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { type GangRecord, StateWriter, WorkloadFiles } from "./workloadfiles.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function files(): WorkloadFiles {
  const d = mkdtempSync(join(tmpdir(), "loom-wf-"));
  dirs.push(d);
  return new WorkloadFiles(d);
}
const gang = (uid: string): GangRecord => ({
  ref: { uid, name: "job", project: "p" } as GangRecord["ref"],
  attempt: 2,
  workers: [{ index: 0 }],
});

describe("WorkloadFiles", () => {
  it("reads the shim's exit code, and nothing from an empty or missing file", () => {
    const f = files();
    const g = gang("u1");
    mkdirSync(f.attemptDir("u1", 2), { recursive: true });
    expect(f.readExitFile(g, 0)).toBeUndefined();
    writeFileSync(join(f.attemptDir("u1", 2), "worker-0.exit"), "");
    expect(f.readExitFile(g, 0)).toBeUndefined();
    writeFileSync(join(f.attemptDir("u1", 2), "worker-0.exit"), "143");
    expect(f.readExitFile(g, 0)).toBe(143);
  });

  it("reads a sandboxed worker's code from bwrap's JSON status, and none while it still runs", () => {
    const f = files();
    const g = gang("u2");
    mkdirSync(f.attemptDir("u2", 2), { recursive: true });
    const file = join(f.attemptDir("u2", 2), "worker-0.exit");
    const started = '{ "child-pid": 4242, "pid-namespace": 4026532243 }\n';
    writeFileSync(file, started);
    expect(f.readExitFile(g, 0)).toBeUndefined();
    writeFileSync(file, `${started}{ "exit-code": 137 }\n`);
    expect(f.readExitFile(g, 0)).toBe(137);
  });

  it("knows no activity until a worker writes its log or heartbeat", () => {
    const f = files();
    const g = gang("u1");
    mkdirSync(f.attemptDir("u1", 2), { recursive: true });
    expect(f.lastActivity(g)).toBeUndefined();
    writeFileSync(join(f.attemptDir("u1", 2), "worker-0.heartbeat"), "");
    expect(f.lastActivity(g)).toBeInstanceOf(Date);
  });
});

describe("StateWriter", () => {
  it("writes the latest state, once per burst of saves, and nothing for a released workload", async () => {
    const f = files();
    let current: GangRecord | undefined = gang("u1");
    const w = new StateWriter(f, () => current, pino({ level: "silent" }));
    w.persist(current!);
    current!.attempt = 3;
    const first = w.save("u1");
    current!.attempt = 4;
    expect(w.save("u1")).toBe(first); // joins the write in flight, which writes again
    await first;
    expect(JSON.parse(readFileSync(f.stateFile("u1"), "utf8")).attempt).toBe(4);
    current = undefined;
    await w.save("u1");
    await w.settled("u1");
    expect(JSON.parse(readFileSync(f.stateFile("u1"), "utf8")).attempt).toBe(4);
  });
});

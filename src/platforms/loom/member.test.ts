import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addTrainingJob, type RouteApp, routeApp } from "../../../test/routeapp.js";
import { FLEET_SEED_ANNOTATION } from "../../api/cluster.js";
import type { Resource } from "../../api/meta.js";
import { DirMemberCheckpoints } from "../embedded/membercheckpoints.js";
import { WorkloadFiles } from "../embedded/workloadfiles.js";
import { LoomApi, LoomMember } from "./member.js";

// A Loom member's checkpoints as the control plane moves them (issue 23): LoomMember over a real
// Loom API on a loopback socket, the member's side the embedded platform's own directories.

const log = pino({ level: "silent" });

async function listening(r: RouteApp): Promise<URL> {
  await r.app.listen({ host: "127.0.0.1", port: 0 });
  return new URL(`http://127.0.0.1:${(r.app.server.address() as { port: number }).port}`);
}

const refOf = (job: Resource) => ({
  kind: "TrainingJob",
  project: "default",
  name: job.metadata.name,
  uid: job.metadata.uid,
});

describe("LoomMember checkpoints", () => {
  let r: RouteApp;
  let files: WorkloadFiles;
  let member: LoomMember;
  const job = (name: string, seed?: number) =>
    addTrainingJob(
      r.store,
      "default",
      name,
      seed !== undefined ? { [FLEET_SEED_ANNOTATION]: String(seed) } : undefined,
    );

  beforeAll(async () => {
    r = await routeApp({
      name: "loom-member",
      deps: (_db, dir) => {
        files = new WorkloadFiles(join(dir, "data"));
        return { memberCheckpoints: new DirMemberCheckpoints(files), console: false };
      },
    });
    member = new LoomMember(new LoomApi(await listening(r), r.admin), "m", log);
  });

  afterAll(() => r.close());

  it("reads a copy's checkpoint once it has a loom.json, and seeds a copy's first attempt", async () => {
    const running = await job("running");
    expect(await member.checkpoint(refOf(running))).toBeUndefined();
    const dir = files.checkpointDir(running.metadata.uid);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "weights"), "w9");
    writeFileSync(join(dir, "loom.json"), '{"step": 9}');
    const read = await member.checkpoint(refOf(running));
    expect([...(read?.keys() ?? [])].sort()).toEqual(["loom.json", "weights"]);
    expect(read?.get("weights")?.toString()).toBe("w9");
    // Another job of the same name (deleted, made again) is not the copy asked for.
    expect(await member.checkpoint({ ...refOf(running), uid: "another" })).toBeUndefined();

    const copy = await job("copy", 9);
    expect(await member.seed(refOf(copy), read!)).toBe(0);
    const seeded = files.checkpointDir(copy.metadata.uid);
    expect(readFileSync(join(seeded, "weights"), "utf8")).toBe("w9");
    expect(existsSync(files.seedMark(copy.metadata.uid))).toBe(true);
    // The copy went meanwhile: nothing waits.
    expect(await member.seed({ ...refOf(copy), name: "gone" }, read!)).toBe(0);
  });

  it("a member that serves no checkpoints (501) is asked once, then left alone", async () => {
    const bare = await routeApp({ name: "loom-member-bare", deps: () => ({ console: false }) });
    try {
      let requests = 0;
      bare.app.addHook("onRequest", async () => {
        requests++;
      });
      const url = await listening(bare);
      const m = new LoomMember(new LoomApi(url, bare.admin), "bare", log);
      const ref = { kind: "TrainingJob", project: "default", name: "x", uid: "u" };
      expect(await m.checkpoint(ref)).toBeUndefined();
      expect(requests).toBe(1);
      expect(await m.seed(ref, new Map([["loom.json", Buffer.from('{"step":1}')]]))).toBe(0);
      expect(await m.checkpoint(ref)).toBeUndefined();
      expect(requests).toBe(1);
    } finally {
      await bare.close();
    }
  });
});

import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addProject, addTrainingJob, type RouteApp, routeApp } from "../../../test/routeapp.js";
import { FLEET_SEED_ANNOTATION } from "../../api/cluster.js";
import type { Resource } from "../../api/meta.js";
import { packTar, unpackTar } from "../../lib/tar.js";
import { DirMemberCheckpoints } from "../../platforms/embedded/membercheckpoints.js";
import { WorkloadFiles } from "../../platforms/embedded/workloadfiles.js";

// The fences around a job's checkpoint files in a Loom member (issue 23): the fleet's credential
// (an unscoped admin) and the project's editors read and seed them; nobody else, and nothing a
// seed names or a link the job left carries a byte out of the job's own directory.

const BASE = "/apis/loom.dev/v1alpha1";
const TAR = { "content-type": "application/x-tar" };
const path = (project: string, name: string, uid?: string) =>
  `${BASE}/projects/${project}/trainingjobs/${name}/checkpoint${uid ? `?uid=${uid}` : ""}`;
const checkpoint = (step: number, extra: Record<string, string> = {}) =>
  new Map<string, Buffer>([
    ["loom.json", Buffer.from(JSON.stringify({ step }))],
    ...Object.entries(extra).map(([k, v]) => [k, Buffer.from(v)] as [string, Buffer]),
  ]);

describe("checkpoint routes", () => {
  let r: RouteApp;
  let files: WorkloadFiles;
  let outside: string;
  const tokens: Record<string, string> = {};
  const jobs: Record<string, Resource> = {};

  const job = async (project: string, name: string, seed?: number) => {
    const annotations = seed !== undefined ? { [FLEET_SEED_ANNOTATION]: String(seed) } : undefined;
    jobs[`${project}/${name}`] = await addTrainingJob(r.store, project, name, annotations);
  };
  const dirOf = (key: string) => files.checkpointDir(jobs[key]!.metadata.uid);
  const seed = (who: string, project: string, name: string, body: Buffer) =>
    r.call(tokens[who], "PUT", path(project, name), body, TAR);

  beforeAll(async () => {
    r = await routeApp({
      name: "checkpoints",
      deps: (_db, dir) => {
        files = new WorkloadFiles(join(dir, "data"));
        return { memberCheckpoints: new DirMemberCheckpoints(files), console: false };
      },
    });
    outside = mkdtempSync(join(tmpdir(), "loom-ckpt-outside-"));
    for (const project of ["alpha", "beta"]) await addProject(r.store, project);
    tokens.admin = r.admin;
    tokens.alphaEditor = (await r.tokens.create("ae", "editor", "alpha")).token;
    tokens.alphaViewer = (await r.tokens.create("av", "viewer", "alpha")).token;
    tokens.betaEditor = (await r.tokens.create("be", "editor", "beta")).token;
    tokens.alphaKey = (await r.tokens.create("ak", "viewer", "alpha", {})).token;
    await job("alpha", "train", 12);
    await job("alpha", "mine", 3);
    await job("alpha", "plain");
    await job("alpha", "started", 5);
    await job("alpha", "evil", 1);
    await job("alpha", "linked");
    await job("beta", "train", 7);
  });

  afterAll(() => r.close());

  it("the fleet's admin seeds a copy once (loom.json last, then the mark) and reads its checkpoint back", async () => {
    const put = await seed("admin", "alpha", "train", packTar(checkpoint(12, { "sub/model.pt": "weights" })));
    expect(put.statusCode, put.body).toBe(200);
    expect(put.json()).toEqual({ kind: "CheckpointSeed", waiting: 0 });
    const dir = dirOf("alpha/train");
    expect(readFileSync(join(dir, "sub/model.pt"), "utf8")).toBe("weights");
    expect(existsSync(files.seedMark(jobs["alpha/train"]!.metadata.uid))).toBe(true);
    // A retry after the workers went on writes nothing over what they wrote.
    writeFileSync(join(dir, "loom.json"), JSON.stringify({ step: 20 }));
    expect((await seed("admin", "alpha", "train", packTar(checkpoint(12)))).statusCode).toBe(200);
    const got = await r.app.inject({
      method: "GET",
      url: path("alpha", "train", jobs["alpha/train"]!.metadata.uid),
      headers: { authorization: `Bearer ${tokens.admin}` },
    });
    expect(got.statusCode).toBe(200);
    expect(got.headers["content-type"]).toMatch(/application\/x-tar/);
    expect(got.headers["x-loom-checkpoint-step"]).toBe("20");
    const back = unpackTar(got.rawPayload);
    expect([...back.keys()].sort()).toEqual(["loom.json", "sub/model.pt"]);
  });

  it("a project's editor reads and seeds its own jobs; a viewer, an API key, another project's editor and no token are refused", async () => {
    const ok = await seed("alphaEditor", "alpha", "mine", packTar(checkpoint(3)));
    expect(ok.statusCode, ok.body).toBe(200);
    expect((await r.call(tokens.alphaEditor, "GET", path("alpha", "mine"))).statusCode).toBe(200);
    for (const who of ["alphaViewer", "alphaKey", "betaEditor"]) {
      const read = await r.call(tokens[who], "GET", path("alpha", "mine"));
      expect(read.statusCode, `${who} GET`).toBe(403);
      expect(read.body).not.toContain("step");
      const write = await seed(who, "alpha", "train", packTar(checkpoint(99)));
      expect(write.statusCode, `${who} PUT`).toBe(403);
    }
    // beta's editor reaches its own job of the same name, never alpha's.
    const own = await seed("betaEditor", "beta", "train", packTar(checkpoint(7)));
    expect(own.statusCode).toBe(200);
    expect(JSON.parse(readFileSync(join(dirOf("alpha/train"), "loom.json"), "utf8")).step).toBe(20);
    expect((await r.call(undefined, "GET", path("alpha", "mine"))).statusCode).toBe(401);
  });

  it("a seed whose names leave the directory is refused, and nothing is written anywhere", async () => {
    const uid = jobs["alpha/evil"]!.metadata.uid;
    const escaped = join(files.checkpointDir(uid), "..", "..", "escaped");
    for (const name of ["../../escaped", "/etc/loom-escaped", "sub/../../../escaped"]) {
      const res = await seed("admin", "alpha", "evil", packTar(checkpoint(1, { [name]: "pwned" })));
      expect(res.statusCode, `${name}: ${res.body}`).toBe(400);
      expect(res.json().message).toMatch(/leaves the checkpoint directory/);
    }
    expect(existsSync(escaped)).toBe(false);
    expect(existsSync("/etc/loom-escaped")).toBe(false);
    expect(existsSync(join(files.checkpointDir(uid), "loom.json"))).toBe(false);
    expect(existsSync(files.seedMark(uid))).toBe(false);
    // Not a tar, and a checkpoint without its loom.json, say what to send.
    const junk = await seed("admin", "alpha", "evil", Buffer.alloc(1024, 7));
    expect(junk.statusCode).toBe(400);
    expect(junk.json().message).toMatch(/not a tar stream/);
    const noReport = await seed("admin", "alpha", "evil", packTar(new Map([["model.pt", Buffer.from("w")]])));
    expect(noReport.statusCode).toBe(400);
    expect(noReport.json().message).toMatch(/needs a loom.json/);
    const json = await r.call(tokens.admin, "PUT", path("alpha", "evil"), { step: 1 });
    expect(json.statusCode).toBe(400);
    expect(json.json().message).toMatch(/content-type: application\/x-tar/);
  });

  it("serves no link the job left in its checkpoint directory, nor what it points at", async () => {
    const dir = dirOf("alpha/linked");
    mkdirSync(join(dir, "sub"), { recursive: true });
    writeFileSync(join(dir, "loom.json"), JSON.stringify({ step: 4 }));
    writeFileSync(join(dir, "sub", "model.pt"), "weights");
    mkdirSync(join(outside, "keys"));
    writeFileSync(join(outside, "keys", "id_rsa"), "THE-SERVER-KEY");
    writeFileSync(join(outside, "secret"), "THE-SECRET");
    symlinkSync(join(outside, "secret"), join(dir, "secret"));
    symlinkSync(join(outside, "keys"), join(dir, "keys"));
    const got = await r.call(tokens.admin, "GET", path("alpha", "linked"));
    expect(got.statusCode).toBe(200);
    expect([...unpackTar(got.rawPayload).keys()].sort()).toEqual(["loom.json", "sub/model.pt"]);
    expect(got.body).not.toContain("THE-SECRET");
    expect(got.body).not.toContain("THE-SERVER-KEY");
  });

  it("says why where there is nothing to read or seed", async () => {
    const none = await r.call(tokens.admin, "GET", path("alpha", "plain"));
    expect(none.statusCode).toBe(404);
    expect(none.json().message).toMatch(/no checkpoint yet \(no loom.json/);
    const unseeded = await seed("admin", "alpha", "plain", packTar(checkpoint(1)));
    expect(unseeded.statusCode).toBe(400);
    expect(unseeded.json().message).toMatch(/waits for no checkpoint/);
    const other = await r.call(tokens.admin, "GET", path("alpha", "train", "not-its-uid"));
    expect(other.statusCode).toBe(404);
    expect(other.json().message).toMatch(/not the one asked for/);
    // Its first attempt started (the seed came too late): nothing is written, nothing waits.
    const started = jobs["alpha/started"]!;
    await r.store.updateStatus({ ...started, status: { phase: "Running", attempts: 1 } });
    const late = await seed("admin", "alpha", "started", packTar(checkpoint(5)));
    expect(late.json()).toEqual({ kind: "CheckpointSeed", waiting: 0 });
    expect(existsSync(join(files.checkpointDir(started.metadata.uid), "loom.json"))).toBe(false);
  });
});

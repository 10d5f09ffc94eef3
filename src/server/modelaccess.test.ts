import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NotFoundError } from "../api/errors.js";
import { type OpenedDatabase, openSqlite } from "../platforms/embedded/db.js";
import { SqliteTokenStore } from "../platforms/embedded/tokens.js";
import { MODEL_KEY_ENV, MODEL_KEY_FILE, withModelAccess } from "../ports/models.js";
import type { ResourceStore } from "../ports/store.js";
import { LocalWorkloadTracking } from "../tracking/workloads.js";
import { SITECUSTOMIZE, workloadModels } from "./modelaccess.js";
import { boundTokens, workloadCredentials } from "./workloadtokens.js";

const job = { kind: "TrainingJob", project: "team", name: "train", uid: "uid-1" };

describe("workloadModels: a workload's key for its project's models", () => {
  let database: OpenedDatabase;
  let tokens: SqliteTokenStore;
  beforeEach(async () => {
    database = await openSqlite(":memory:");
    tokens = new SqliteTokenStore(database.db);
  });
  afterEach(() => database.close());

  const keyOf = (files: { path: string; data: string }[]) =>
    files.find((f) => f.path === MODEL_KEY_FILE)!.data.trim();

  it("gives the gateway's URL and where the key is in env, and the key (an API key of the project, bound to the workload) only as a 0600 file", async () => {
    const models = workloadModels(tokens, () => "http://127.0.0.1:7470/");
    const access = await models.access(job, "attempt-1", { exclusive: true });
    const key = keyOf(access.files);
    expect(access.env).toEqual({
      OPENAI_BASE_URL: "http://127.0.0.1:7470/v1",
      [MODEL_KEY_ENV]: "$(HOME)/.loom/openai-key",
      PYTHONPATH: "$(HOME)/.loom/python",
    });
    expect(JSON.stringify(access.env)).not.toContain(key);
    expect(access.files.find((f) => f.path === MODEL_KEY_FILE)!.mode).toBe(0o600);
    expect(access.files.find((f) => f.path === ".loom/python/sitecustomize.py")!.data).toBe(SITECUSTOMIZE);
    expect(await tokens.verify(key)).toMatchObject({
      name: "trainingjob/train",
      role: "viewer",
      project: "team",
      apiKey: {},
      workload: job,
    });
    // Listed among the project's keys, as `loom apikey create` makes them.
    expect((await tokens.list({ project: "team", apiKeys: true })).map((k) => k.name)).toEqual([
      "trainingjob/train",
    ]);
  });

  it("exclusive: a fresh key each time, earlier ones revoked; otherwise one per session, kept until revoke", async () => {
    const models = workloadModels(tokens, () => "http://loom");
    const first = keyOf((await models.access(job, "attempt-1", { exclusive: true })).files);
    // Exclusive: fresh each time (an attempt started again), the earlier one revoked.
    const again1 = keyOf((await models.access(job, "attempt-1", { exclusive: true })).files);
    expect(again1).not.toBe(first);
    const second = keyOf((await models.access(job, "attempt-2", { exclusive: true })).files);
    expect(second).not.toBe(again1);
    for (const k of [first, again1]) expect(await tokens.verify(k)).toBeUndefined();
    expect(await tokens.verify(second)).toBeDefined();
    expect((await tokens.list({ project: "team", apiKeys: true })).length).toBe(1);

    const ws = { kind: "Workspace", project: "team", name: "ws", uid: "uid-ws" };
    const a = keyOf((await models.access(ws, "rev-a")).files);
    expect(keyOf((await models.access(ws, "rev-a")).files)).toBe(a);
    // A restarted server (a new instance) mints anew; the re-adopted replica's key still works.
    const b = keyOf((await workloadModels(tokens, () => "http://loom").access(ws, "rev-a")).files);
    expect(await tokens.verify(a)).toBeDefined();
    expect(await tokens.verify(b)).toBeDefined();
    await models.revoke(ws);
    expect(await tokens.verify(a)).toBeUndefined();
    expect(await tokens.verify(b)).toBeUndefined();
    // The job's key is another workload's: untouched. And a revoked session mints a fresh key.
    expect(await tokens.verify(second)).toBeDefined();
    const again = keyOf((await models.access(ws, "rev-a")).files);
    expect(again).not.toBe(a);
  });

  it("revoke takes the model keys only; the tracking token's mint and revoke take everything of the workload", async () => {
    const models = workloadModels(tokens, () => "http://loom");
    const tracking = workloadCredentials(tokens);
    const token = await tracking.mint(job);
    const key = keyOf((await models.access(job, "attempt-1", { exclusive: true })).files);
    await models.revoke(job);
    expect(await tokens.verify(token)).toBeDefined();
    expect(await tokens.verify(key)).toBeUndefined();
    const key2 = keyOf((await models.access(job, "attempt-2", { exclusive: true })).files);
    await tracking.revoke(job);
    expect(await tokens.verify(key2)).toBeUndefined();
  });

  it("a key is refused once its workload is finished, gone or re-created (boundTokens), even unrevoked", async () => {
    let obj: { metadata: { uid: string }; status?: { phase?: string } } | undefined = {
      metadata: { uid: job.uid },
      status: { phase: "Running" },
    };
    const store = {
      get: async (kind: string) => {
        if (kind === "Project") return { metadata: { uid: "p-uid" } };
        if (!obj) throw new NotFoundError("gone");
        return obj;
      },
    } as unknown as ResourceStore;
    const bound = boundTokens(tokens, store);
    const key = keyOf((await workloadModels(bound, () => "http://loom").access(job, "attempt-1")).files);
    expect(await bound.verify(key)).toMatchObject({ apiKey: {}, projectUid: "p-uid" });
    obj.status = { phase: "Succeeded" };
    expect(await bound.verify(key)).toBeUndefined();
    obj = { metadata: { uid: "another" }, status: { phase: "Running" } };
    expect(await bound.verify(key)).toBeUndefined();
    obj = undefined;
    expect(await bound.verify(key)).toBeUndefined();
  });
});

describe("withModelAccess", () => {
  const access = {
    env: { OPENAI_BASE_URL: "http://loom/v1", PYTHONPATH: "$(HOME)/.loom/python" },
    files: [],
  };
  it("puts the bridge first on the spec's PYTHONPATH; the spec's own OPENAI_BASE_URL wins", () => {
    expect(withModelAccess({ A: "1" }, access)).toEqual({ ...access.env, A: "1" });
    expect(withModelAccess({ PYTHONPATH: "/src", OPENAI_BASE_URL: "http://mine/v1" }, access)).toEqual({
      OPENAI_BASE_URL: "http://mine/v1",
      PYTHONPATH: "$(HOME)/.loom/python:/src",
    });
    expect(withModelAccess({ A: "1" }, undefined)).toEqual({ A: "1" });
  });
});

/** The bridge itself, in the machine's Python: what openai.OpenAI() would see. */
describe("the sitecustomize.py bridge", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loom-bridge-"));
    mkdirSync(join(dir, "bridge"));
    mkdirSync(join(dir, "theirs"));
    writeFileSync(join(dir, "bridge", "sitecustomize.py"), SITECUSTOMIZE);
    writeFileSync(join(dir, "key"), "sk-loom-secret\n");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const run = (code: string, env: Record<string, string> = {}) => {
    const r = spawnSync("python3", ["-c", code], {
      encoding: "utf8",
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        PYTHONPATH: `${join(dir, "bridge")}:${join(dir, "theirs")}`,
        [MODEL_KEY_ENV]: join(dir, "key"),
        ...env,
      },
    });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.trim();
  };

  it("gives os.environ the key, but not the process's initial environment nor its children", () => {
    const out = run(
      [
        "import os, subprocess",
        "print(os.environ.get('OPENAI_API_KEY'))",
        "print('secret' in open('/proc/self/environ', encoding='latin1').read())",
        "print(subprocess.run(['sh', '-c', '[ -n \"$OPENAI_API_KEY\" ] && echo set || echo unset'], capture_output=True, text=True).stdout.strip())",
      ].join("\n"),
    );
    expect(out.split("\n")).toEqual(["sk-loom-secret", "False", "unset"]);
  });

  it("leaves the key out of os.environ's copies: a child given env=os.environ.copy() (Jupyter's kernels, terminals) never holds it", () => {
    const out = run(
      [
        "import os, subprocess",
        "sh = '[ -n \"$OPENAI_API_KEY\" ] && echo set || echo unset'",
        "print(subprocess.run(['sh', '-c', sh], env=os.environ.copy(), capture_output=True, text=True).stdout.strip())",
        "print(subprocess.run(['sh', '-c', sh], env={**os.environ, 'X': '1'}, capture_output=True, text=True).stdout.strip())",
        "print('OPENAI_API_KEY' in os.environ, 'OPENAI_API_KEY' in dict(os.environ), os.getenv('OPENAI_API_KEY'))",
        // A value the program sets itself is its own: copied as usual.
        "os.environ['OPENAI_API_KEY'] = 'mine'",
        "print(os.environ.copy().get('OPENAI_API_KEY'))",
      ].join("\n"),
    );
    expect(out.split("\n")).toEqual(["unset", "unset", "True False sk-loom-secret", "mine"]);
  });

  it("leaves a spec's own OPENAI_API_KEY alone, and does nothing without a key file", () => {
    expect(run("import os; print(os.environ['OPENAI_API_KEY'])", { OPENAI_API_KEY: "mine" })).toBe("mine");
    expect(
      run("import os; print(os.environ.get('OPENAI_API_KEY'))", { [MODEL_KEY_ENV]: join(dir, "none") }),
    ).toBe("None");
  });

  it("runs the next sitecustomize on the path (a venv's or a distribution's), once", () => {
    writeFileSync(
      join(dir, "theirs", "sitecustomize.py"),
      "import builtins\nbuiltins.CHAINED = getattr(builtins, 'CHAINED', 0) + 1\n",
    );
    expect(run("import builtins, os; print(builtins.CHAINED, os.environ['OPENAI_API_KEY'])")).toBe(
      "1 sk-loom-secret",
    );
  });
});

describe("tracking credentials for a Workspace's or App's revision (sessionCredentials)", () => {
  let database: OpenedDatabase;
  let tokens: SqliteTokenStore;
  const ws = { kind: "Workspace", project: "team", name: "nb", uid: "ws-uid" };
  beforeEach(async () => {
    database = await openSqlite(":memory:");
    tokens = new SqliteTokenStore(database.db);
  });
  afterEach(() => database.close());

  const tokenOf = (files: { path: string; data: string }[]) =>
    /mlflow_tracking_password = (\S+)/.exec(files.find((f) => f.path === ".mlflow/credentials")!.data)![1]!;

  it("the project's URI and file paths in env, the token only in 0600 files; one per revision; models' key untouched; all revoked together", async () => {
    // The store is never used for credentials.
    const tracking = new LocalWorkloadTracking(
      {} as never,
      () => "http://127.0.0.1:7470",
      workloadCredentials(tokens),
    );
    const models = workloadModels(tokens, () => "http://127.0.0.1:7470");
    const key = (await models.access(ws, "nb-ws1")).files.find((f) => f.path === MODEL_KEY_FILE)!.data.trim();
    const creds = await tracking.sessionCredentials(ws, "nb-ws1");
    const token = tokenOf(creds.files);
    expect(creds.env).toEqual({
      MLFLOW_TRACKING_URI: "http://127.0.0.1:7470/mlflow/projects/team",
      LOOM_TOKEN_FILE: "$(HOME)/.loom/token",
      LOOM_MLFLOW_CREDENTIALS: "$(HOME)/.mlflow/credentials",
    });
    expect(JSON.stringify(creds.env)).not.toContain(token);
    for (const f of creds.files) expect(f.mode).toBe(0o600);
    expect(creds.files.find((f) => f.path === ".loom/token")!.data).toBe(`${token}\n`);
    expect(await tokens.verify(token)).toMatchObject({ role: "editor", project: "team", workload: ws });
    // Re-applied (every second for a workspace): the same token, no new one.
    expect(tokenOf((await tracking.sessionCredentials(ws, "nb-ws1")).files)).toBe(token);
    // A new revision: a new token; the old one stays valid (its replica may still be stopping),
    // and minting never revoked the model key.
    const next = tokenOf((await tracking.sessionCredentials(ws, "nb-ws2")).files);
    expect(next).not.toBe(token);
    expect(await tokens.verify(token)).toBeDefined();
    expect(await tokens.verify(key)).toBeDefined();
    // Stopped or deleted: everything the workload holds is refused, and a start mints anew.
    await tracking.revokeCredentials(ws);
    await models.revoke(ws);
    for (const t of [token, next, key]) expect(await tokens.verify(t)).toBeUndefined();
    const after = tokenOf((await tracking.sessionCredentials(ws, "nb-ws2")).files);
    expect(after).not.toBe(next);
    expect(await tokens.verify(after)).toBeDefined();
  });

  it("the default project's URI is the server's root", async () => {
    const tracking = new LocalWorkloadTracking({} as never, () => "http://h:1", workloadCredentials(tokens));
    const creds = await tracking.sessionCredentials({ ...ws, project: "default" }, "r");
    expect(creds.env.MLFLOW_TRACKING_URI).toBe("http://h:1");
  });
});

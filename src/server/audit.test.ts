import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance, InjectOptions } from "fastify";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteAuditLog } from "../platforms/embedded/audit.js";
import { type OpenedDatabase, openSqlite } from "../platforms/embedded/db.js";
import { SqliteEventRecorder } from "../platforms/embedded/events.js";
import { LocalRuntime } from "../platforms/embedded/runtime.js";
import { SqliteResourceStore } from "../platforms/embedded/store.js";
import { SqliteTokenStore } from "../platforms/embedded/tokens.js";
import type { AuditRecord } from "../ports/audit.js";
import { buildApp } from "./app.js";
import { objectOf } from "./audit.js";

const BASE = "/apis/loom.dev/v1alpha1";
const JOBS = `${BASE}/projects/default/trainingjobs`;
const job = (name: string) => ({
  apiVersion: "loom.dev/v1alpha1",
  kind: "TrainingJob",
  metadata: { name },
  spec: { command: ["python", "train.py"] },
});

describe("audit log over HTTP", () => {
  let dataDir: string;
  let database: OpenedDatabase;
  let runtime: LocalRuntime;
  let app: FastifyInstance;
  let audit: SqliteAuditLog;
  let metrics: Registry;
  const secrets: string[] = [];
  let admin: string;
  let editor: string;
  let viewer: string;
  let projectAdmin: string;

  function call(method: InjectOptions["method"], url: string, token: string | undefined, body?: unknown) {
    return app.inject({
      method,
      url,
      headers: { "user-agent": "audit-test/1", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      ...(body === undefined ? {} : { payload: body as InjectOptions["payload"] }),
    });
  }

  /** Every stored row, raw, as one string: what a copied database would show. */
  async function storedText(): Promise<string> {
    await audit.flush();
    return JSON.stringify(await database.db.selectFrom("audit").selectAll().execute());
  }

  beforeEach(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "loom-audit-"));
    database = await openSqlite(":memory:");
    const store = await SqliteResourceStore.open(database.db);
    const tokens = new SqliteTokenStore(database.db);
    const mint = async (name: string, role: "admin" | "editor" | "viewer", project?: string) => {
      const { token } = await tokens.create(name, role, project);
      secrets.push(token);
      return token;
    };
    admin = await mint("root", "admin");
    editor = await mint("ed", "editor", "default");
    viewer = await mint("vi", "viewer", "default");
    projectAdmin = await mint("pa", "admin", "default");
    const log = pino({ level: "silent" });
    runtime = new LocalRuntime({
      dataDir,
      instanceId: `audit-test-${Math.random().toString(36).slice(2)}`,
      cpuMillis: 1000,
      memoryBytes: 2 ** 30,
      gpus: [],
      log,
      pollMs: 50,
    });
    audit = new SqliteAuditLog(database.db);
    metrics = new Registry();
    app = await buildApp({
      store,
      tokens,
      events: new SqliteEventRecorder(database.db),
      runtime,
      metrics,
      log,
      version: "0.0.0-test",
      audit,
    });
  });

  afterEach(async () => {
    await app.close(); // closes (flushes) the audit log too
    await runtime.close();
    await database.close();
    rmSync(dataDir, { recursive: true, force: true });
    secrets.length = 0;
  });

  it("records a create, a delete and refused requests with who, verb, object, source and result", async () => {
    expect((await call("POST", `${JOBS}?dryRun=All`, editor, job("j1"))).statusCode).toBe(201); // changes nothing
    // A second dryRun makes it a real write (the routes read "All" only): it must not pass for a dry run.
    expect((await call("POST", `${JOBS}?dryRun=All&dryRun=x`, editor, job("j0"))).statusCode).toBe(201);
    expect((await call("POST", JOBS, editor, job("j1"))).statusCode).toBe(201);
    expect((await call("GET", `${JOBS}/j1`, editor)).statusCode).toBe(200); // reads are not audited
    expect((await call("DELETE", `${JOBS}/j1`, editor)).statusCode).toBe(200);
    expect((await call("POST", JOBS, viewer, job("j2"))).statusCode).toBe(403);
    expect((await call("GET", `${BASE}/projects/other/trainingjobs`, editor)).statusCode).toBe(403);
    expect((await call("POST", JOBS, undefined, job("j3"))).statusCode).toBe(401);

    const items = await audit.list({});
    const view = items.map((e) => [
      e.principal?.name ?? "-",
      e.verb,
      `${e.object.project}/${e.object.kind}/${e.object.name ?? ""}`,
      e.status,
      e.allowed,
    ]);
    expect(view).toEqual([
      ["ed", "create", "default/trainingjobs/j0", 201, true],
      ["ed", "create", "default/trainingjobs/j1", 201, true],
      ["ed", "delete", "default/trainingjobs/j1", 200, true],
      // Refused before its body was read (authorization is decided on the path): no name.
      ["vi", "create", "default/trainingjobs/", 403, false],
      ["ed", "get", "other/trainingjobs/", 403, false],
      ["-", "create", "default/trainingjobs/", 401, false],
    ]);
    const [, created, , denied] = items as [AuditRecord, AuditRecord, AuditRecord, AuditRecord];
    expect(created.principal).toMatchObject({ name: "ed", role: "editor", project: "default" });
    expect(created.principal?.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.source).toEqual({ address: "127.0.0.1", userAgent: "audit-test/1" });
    expect(created.reason).toBeUndefined();
    expect(denied.reason).toContain("may read, not change");
    expect(items[5]!.reason).toContain("missing bearer token");
  });

  it("records requests refused before routing, on paths no route serves, and never a secret", async () => {
    const forged = "loom_not-a-real-token-but-a-secret-all-the-same";
    // A bad token on a path that does not exist: refused in the onRequest hook, before routing.
    expect((await call("DELETE", "/%61pis/whatever", forged)).statusCode).toBe(401);
    // A token create: its answer carries the new token; only its name is recorded.
    const made = await call("POST", `${BASE}/tokens`, admin, { name: "ci-bot", role: "editor" });
    expect(made.statusCode).toBe(201);
    const minted = made.json<{ token: string }>().token;
    const key = await call("POST", `${BASE}/projects/default/apikeys`, editor, { name: "app-key" });
    expect(key.statusCode).toBe(201);
    const apiKey = key.json<{ key: string }>().key;
    // A refused request whose body carries a token (a project editor cannot make tokens): audited,
    // without the token.
    expect((await call("POST", `${BASE}/tokens`, editor, { name: "x", token: admin })).statusCode).toBe(403);
    // An API key used on Loom's API: refused.
    expect((await call("POST", JOBS, apiKey, job("k"))).statusCode).toBe(403);

    const items = await audit.list({});
    expect(
      items.map((e) => [e.principal?.name ?? "-", e.verb, e.object.kind, e.object.name, e.status]),
    ).toEqual([
      ["-", "delete", undefined, undefined, 401],
      ["root", "create", "tokens", "ci-bot", 201],
      ["ed", "create", "apikeys", "app-key", 201],
      ["ed", "create", "tokens", undefined, 403],
      ["app-key", "create", "trainingjobs", undefined, 403],
    ]);
    // Recorded as served: the one canonical spelling the router and the authorizer saw.
    expect(items[0]!.path).toBe("/apis/whatever");
    expect(items[4]!.principal?.apiKey).toBe(true);
    const stored = await storedText();
    for (const secret of [forged, minted, apiKey, ...secrets]) expect(stored).not.toContain(secret);
    expect(stored).not.toMatch(/Bearer|loom_[A-Za-z0-9_-]{20}|sk-loom-/);
  });

  it("serves the log to an admin, a project's admin its project's part, and no one else", async () => {
    await call("POST", JOBS, editor, job("mine"));
    await call("POST", `${BASE}/projects`, admin, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "other" },
      spec: {},
    });
    await call("POST", `${BASE}/projects/other/trainingjobs`, admin, job("theirs"));
    const names = (r: { json: () => { items: AuditRecord[] } }) => r.json().items.map((e) => e.object.name);

    const all = await call("GET", `${BASE}/audit`, admin);
    expect(all.statusCode).toBe(200);
    expect(names(all)).toEqual(["mine", "other", "theirs"]);
    expect(names(await call("GET", `${BASE}/audit?project=other`, admin))).toEqual(["other", "theirs"]);
    expect(names(await call("GET", `${BASE}/audit?limit=1`, admin))).toEqual(["theirs"]);
    expect(names(await call("GET", `${BASE}/audit?since=1h`, admin))).toHaveLength(3);
    expect(names(await call("GET", `${BASE}/audit?since=2000-01-01T00:00:00Z`, admin))).toHaveLength(3);
    expect(names(await call("GET", `${BASE}/audit?since=2999-01-01T00:00:00Z`, admin))).toEqual([]);
    expect((await call("GET", `${BASE}/audit?since=yesterday`, admin)).statusCode).toBe(400);
    expect((await call("GET", `${BASE}/audit?limit=0`, admin)).statusCode).toBe(400);

    // The project's admin: its own project, not the cluster-wide log nor another project's.
    const own = await call("GET", `${BASE}/projects/default/audit`, projectAdmin);
    expect(own.statusCode).toBe(200);
    expect(names(own)).toEqual(["mine"]);
    expect((await call("GET", `${BASE}/audit`, projectAdmin)).statusCode).toBe(403);
    expect((await call("GET", `${BASE}/projects/other/audit`, projectAdmin)).statusCode).toBe(403);
    // Editors and viewers read objects, not the log.
    expect((await call("GET", `${BASE}/projects/default/audit`, editor)).statusCode).toBe(403);
    expect((await call("GET", `${BASE}/audit`, viewer)).statusCode).toBe(403);
    expect((await call("GET", `${BASE}/audit`, undefined)).statusCode).toBe(401);
  });

  it("counts the entries written in loom_audit_records_total", async () => {
    await call("POST", JOBS, editor, job("m1"));
    await call("POST", JOBS, viewer, job("m2"));
    await audit.flush();
    const text = await metrics.metrics();
    expect(text).toContain('loom_audit_records_total{outcome="written"} 2');
    expect(text).toContain('loom_audit_records_total{outcome="dropped"} 0');
  });
});

describe("objectOf", () => {
  it("names Loom's objects, their subresources, creates by body name, and MLflow's areas", () => {
    expect(objectOf(`${BASE}/projects/p/trainingjobs/j/status`, undefined)).toEqual({
      kind: "trainingjobs",
      project: "p",
      name: "j",
      subresource: "status",
    });
    expect(objectOf(`${BASE}/projects/p/sweeps`, { metadata: { name: "s" } })).toEqual({
      kind: "sweeps",
      project: "p",
      name: "s",
    });
    expect(objectOf(`${BASE}/projects`, { metadata: { name: "new" } })).toEqual({
      kind: "projects",
      project: "new",
      name: "new",
    });
    expect(objectOf(`${BASE}/projects/p`, undefined)).toEqual({ kind: "projects", project: "p", name: "p" });
    expect(objectOf(`${BASE}/tokens`, { name: "bot", token: "x" })).toEqual({ kind: "tokens", name: "bot" });
    expect(objectOf("/api/2.0/mlflow/runs/log-batch", {})).toEqual({ kind: "mlflow/runs" });
    expect(objectOf("/mlflow/projects/p/api/2.0/mlflow/registered-models/create", {})).toEqual({
      kind: "mlflow/registered-models",
      project: "p",
    });
    expect(objectOf("/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m.pt", {})).toEqual({
      kind: "mlflow-artifacts",
    });
    expect(objectOf("/healthz", {})).toEqual({});
  });
});

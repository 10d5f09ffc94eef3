import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from "fastify";
import { pino } from "pino";
import { Registry } from "prom-client";
import { validateManifest } from "../src/api/kinds.js";
import type { Resource } from "../src/api/meta.js";
import { type OpenedDatabase, openSqlite } from "../src/platforms/embedded/db.js";
import { SqliteEventRecorder } from "../src/platforms/embedded/events.js";
import { LocalRuntime } from "../src/platforms/embedded/runtime.js";
import { SqliteResourceStore } from "../src/platforms/embedded/store.js";
import { SqliteTokenStore } from "../src/platforms/embedded/tokens.js";
import type { ResourceStore, TokenStore } from "../src/ports/store.js";
import { type AppDeps, buildApp } from "../src/server/app.js";

/** Loom's API over an in-memory database and a local runtime, for route tests (`app.inject`, no socket). */
export interface RouteApp {
  app: FastifyInstance;
  database: OpenedDatabase;
  store: SqliteResourceStore;
  events: SqliteEventRecorder;
  runtime: LocalRuntime;
  /** The token store the app checks (the raw one, or what `opts.tokens` made of it). */
  tokens: TokenStore;
  /** A temporary directory (the runtime's data dir is `dir`/data). */
  dir: string;
  /** An admin token, made before the app was built. */
  admin: string;
  /** A request with a bearer token; the body is sent as JSON. */
  call(
    token: string | undefined,
    method: InjectOptions["method"],
    url: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

/**
 * The setup every route test repeated: SQLite in memory, store, tokens (an admin one minted),
 * events, a LocalRuntime that runs nothing, and buildApp with `deps` on top (secrets, console, audit…).
 */
export async function routeApp(
  opts: {
    name?: string;
    /** Wraps the raw token store (e.g. boundTokens). */
    tokens?: (raw: SqliteTokenStore, store: SqliteResourceStore) => TokenStore;
    /** Made before buildApp, from the database (for stores that share it: secrets, audit). */
    deps?: (database: OpenedDatabase, dir: string) => Partial<AppDeps>;
  } = {},
): Promise<RouteApp> {
  const dir = mkdtempSync(join(tmpdir(), `loom-${opts.name ?? "routes"}-`));
  const database = await openSqlite(":memory:");
  const store = await SqliteResourceStore.open(database.db);
  const raw = new SqliteTokenStore(database.db);
  const tokens = opts.tokens ? opts.tokens(raw, store) : raw;
  const admin = (await tokens.create("admin", "admin")).token;
  const events = new SqliteEventRecorder(database.db);
  const log = pino({ level: "silent" });
  const runtime = new LocalRuntime({
    dataDir: join(dir, "data"),
    instanceId: `${opts.name ?? "routes"}-test-${Math.random().toString(36).slice(2)}`,
    cpuMillis: 1000,
    memoryBytes: 2 ** 30,
    gpus: [],
    log,
    pollMs: 50,
  });
  const app = await buildApp({
    store,
    tokens,
    events,
    runtime,
    metrics: new Registry(),
    log,
    version: "0.0.0-test",
    ...(opts.deps?.(database, dir) ?? {}),
  });
  return {
    app,
    database,
    store,
    events,
    runtime,
    tokens,
    dir,
    admin,
    call: (token, method, url, body, headers = {}) =>
      app.inject({
        method,
        url,
        headers: { ...(token === undefined ? {} : { authorization: `Bearer ${token}` }), ...headers },
        ...(body === undefined ? {} : { payload: body as InjectOptions["payload"] }),
      }),
    async close() {
      await app.close();
      await runtime.close();
      await store.close();
      await database.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Creates a project as the API would (no quota). */
export function addProject(store: ResourceStore, name: string): Promise<Resource> {
  return store.create(
    validateManifest({ apiVersion: "loom.dev/v1alpha1", kind: "Project", metadata: { name }, spec: {} })
      .object,
  );
}

/** Creates a TrainingJob in `project` that runs `true`, with these annotations. */
export function addTrainingJob(
  store: ResourceStore,
  project: string,
  name: string,
  annotations?: Record<string, string>,
): Promise<Resource> {
  return store.create(
    validateManifest({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name, project, ...(annotations ? { annotations } : {}) },
      spec: { command: ["true"] },
    }).object,
  );
}

import { execFile } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Kysely } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, beforeEach } from "vitest";
import { openSqlite } from "../src/platforms/embedded/db.js";
import { openTrackingDatabase, sqliteTracking, type TrackingDatabase } from "../src/tracking/db.js";

const run = promisify(execFile);

/** A PostgreSQL server of the test's own: initdb into a temp dir, on 127.0.0.1 and a free port. */
export interface ThrowawayPostgres {
  /** postgres://loom@127.0.0.1:PORT/ (append a database name). */
  baseUrl: string;
  /** Makes a database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Runs SQL on a database (to look at what Loom wrote). */
  query<T = Record<string, unknown>>(database: string, text: string, values?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

const MISSING =
  "the PostgreSQL tests need PostgreSQL's server binaries (initdb, pg_ctl, postgres): install them " +
  "(Debian/Ubuntu: apt-get install postgresql), or point LOOM_PG_BINDIR at their directory";

/** Where initdb and pg_ctl are: LOOM_PG_BINDIR, Debian's /usr/lib/postgresql/N/bin (newest), or PATH. */
function binDir(): string {
  const candidates: string[] = [];
  if (process.env.LOOM_PG_BINDIR) candidates.push(process.env.LOOM_PG_BINDIR);
  const debian = "/usr/lib/postgresql";
  if (existsSync(debian))
    candidates.push(
      ...readdirSync(debian)
        .filter((v) => /^\d+(\.\d+)?$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
        .map((v) => join(debian, v, "bin")),
    );
  candidates.push(...(process.env.PATH ?? "").split(":").filter(Boolean));
  const found = candidates.find((d) => existsSync(join(d, "initdb")) && existsSync(join(d, "pg_ctl")));
  if (!found) throw new Error(MISSING);
  return found;
}

/** initdb refuses root: as root, the servers run as the postgres user (Debian's package makes it). */
function runAs(): { uid: number; gid: number; prefix: string[] } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .map((l) => l.split(":"))
    .find((f) => f[0] === "postgres");
  if (!passwd)
    throw new Error(
      `running as root, and initdb refuses root: the tests run PostgreSQL as the "postgres" user, which does not exist (${MISSING})`,
    );
  return { uid: Number(passwd[2]), gid: Number(passwd[3]), prefix: ["runuser", "-u", "postgres", "--"] };
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => ok(port));
    });
  });
}

export async function startPostgres(): Promise<ThrowawayPostgres> {
  const bin = binDir();
  const as = runAs();
  // As root, under /tmp: the postgres user must reach it (TMPDIR may be root's own).
  const dir = mkdtempSync(join(as ? "/tmp" : tmpdir(), "loom-pg-"));
  if (as) chownSync(dir, as.uid, as.gid);
  const data = join(dir, "data");
  const exec = async (cmd: string, args: string[]) => {
    const [file, ...rest] = [...(as?.prefix ?? []), join(bin, cmd), ...args];
    try {
      return await run(file!, rest, { cwd: dir, timeout: 120_000 });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`${cmd} ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}${e.stderr ?? ""}`);
    }
  };
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    await exec("initdb", [
      "-D",
      data,
      "-U",
      "loom",
      "--auth=trust",
      "--encoding=UTF8",
      // Byte order for text, as SQLite compares it (and independent of the machine's locales).
      "--locale=C",
      "--no-sync",
    ]);
  } catch (err) {
    cleanup();
    throw err;
  }
  let port = 0;
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    const options = [
      `-p ${port}`,
      "-c listen_addresses=127.0.0.1",
      `-c unix_socket_directories=${dir}`,
      // Throwaway: durability is not what is tested.
      "-c fsync=off",
      "-c synchronous_commit=off",
      "-c full_page_writes=off",
    ].join(" ");
    try {
      await exec("pg_ctl", [
        "-D",
        data,
        "-l",
        join(dir, "server.log"),
        "-w",
        "-t",
        "60",
        "-o",
        options,
        "start",
      ]);
      break;
    } catch (err) {
      const log = existsSync(join(dir, "server.log")) ? readFileSync(join(dir, "server.log"), "utf8") : "";
      if (attempt < 2 && /in use|could not bind/i.test(log)) continue;
      cleanup();
      throw new Error(`${(err as Error).message}\n${log}`);
    }
  }
  const baseUrl = `postgres://loom@127.0.0.1:${port}/`;
  const query = async <T>(database: string, text: string, values: unknown[] = []): Promise<T[]> => {
    const client = new pg.Client({ connectionString: `${baseUrl}${database}` });
    await client.connect();
    try {
      return (await client.query(text, values)).rows as T[];
    } finally {
      await client.end();
    }
  };
  let stopped = false;
  return {
    baseUrl,
    async createDatabase(name) {
      await query("postgres", `create database "${name}"`);
      return `${baseUrl}${name}`;
    },
    query,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await exec("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"]);
      } finally {
        cleanup();
      }
    },
  };
}

export interface OpenedTracking {
  database: TrackingDatabase;
  /** The PostgreSQL server behind it, if any. */
  server?: ThrowawayPostgres;
  close(): Promise<void>;
}

/**
 * Tracking's backends, for tests that run on each: Loom's SQLite database (in memory), and
 * PostgreSQL (a throwaway server per open).
 */
export const TRACKING_BACKENDS: { name: string; open(): Promise<OpenedTracking> }[] = [
  {
    name: "SQLite",
    async open() {
      const sqlite = await openSqlite(":memory:");
      return {
        database: sqliteTracking(sqlite.db as unknown as Kysely<unknown>),
        close: () => sqlite.close(),
      };
    },
  },
  {
    name: "PostgreSQL",
    async open() {
      const server = await startPostgres();
      try {
        const database = await openTrackingDatabase(await server.createDatabase("tracking"));
        return {
          database,
          server,
          async close() {
            await database.close();
            await server.stop();
          },
        };
      } catch (err) {
        await server.stop();
        throw err;
      }
    },
  },
];

/**
 * Opens the backend for the enclosing describe block and closes it after. When it cannot be
 * opened (no PostgreSQL installed), every test of the block fails with the reason: a failing
 * beforeAll alone would leave them skipped, which reads as passing.
 */
export function useTrackingBackend(backend: (typeof TRACKING_BACKENDS)[number]): () => OpenedTracking {
  let opened: OpenedTracking | undefined;
  let failure: unknown;
  beforeAll(async () => {
    try {
      opened = await backend.open();
    } catch (err) {
      failure = err;
    }
  });
  beforeEach(() => {
    if (failure) throw failure;
  });
  afterAll(() => opened?.close());
  return () => opened!;
}

/** Runs `setup` once for the enclosing describe block; its failure fails every test (see above). */
export function setUpOnce(setup: () => Promise<void>, timeoutMs?: number): void {
  let failure: unknown;
  beforeAll(async () => {
    try {
      await setup();
    } catch (err) {
      failure = err;
    }
  }, timeoutMs);
  beforeEach(() => {
    if (failure) throw failure;
  });
}

/**
 * Counts, not times: what one TrainingJob's life costs the embedded server, in writes and
 * reconciles (issue 16's bench goals; the machine is shared, so times would be noise).
 *
 *   node --import tsx bench/writes.ts            # LOOM_BENCH_WRITES_JOBS (200) /bin/true jobs
 *
 * The server runs here (`loom up`'s composition root, as bench:scheduler (c)); the client runs
 * in a child process, so this process's CPU time is the server's alone. Prints per job: the
 * TrainingJob writes the watch saw (creates included), the events stored (by reason), the
 * reconciles per controller from /metrics, and the server's CPU seconds. Appends nothing to
 * RESULTS.md: it is a tool for comparing one change with the one before it.
 */
import { spawn } from "node:child_process";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { cleanupAll, tempDir } from "./report.js";

const JOBS = Number(process.env.LOOM_BENCH_WRITES_JOBS ?? 200);
const CONCURRENCY = 16;
const PROJECT = "default";

interface ClientFigures {
  created: number;
  watchEvents: number;
  byType: Record<string, number>;
  succeeded: number;
  failed: number;
  /** The commonest sequences of writes one job saw, each write as a short tag. */
  sequences: [string, number][];
}

/** One write as a tag: its type, phase, and what it carries (admission, finalizer, workers). */
function tag(type: string, o: WatchedJob): string {
  const s = o.status ?? {};
  const bits = [type[0], s.phase ?? "-"];
  if (s.admission) bits.push("adm");
  if (o.metadata.finalizers?.length) bits.push("fin");
  if (s.workers?.length) bits.push(`w:${s.workers.map((w) => w.state[0]).join("")}`);
  return bits.join(" ");
}

interface WatchedJob {
  metadata: { name: string; finalizers?: string[] };
  status?: { phase?: string; admission?: unknown; workers?: { state: string }[] };
}

/** The client: a watch opened first, then JOBS creates (16 in flight), until every job ended. */
async function client(url: string, token: string, jobs: number): Promise<ClientFigures> {
  const base = new URL(url);
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  const path = `/apis/loom.dev/v1alpha1/projects/${PROJECT}/trainingjobs`;
  const list = await fetch(`${url}${path}`, { headers });
  const rv = ((await list.json()) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
  const byType: Record<string, number> = {};
  const ended = new Map<string, string>();
  let watchEvents = 0;
  const seqs = new Map<string, string[]>();
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((r) => {
    finish = r;
  });
  const watch = httpRequest(
    { host: base.hostname, port: base.port, path: `${path}?watch=1&resourceVersion=${rv}`, headers },
    (res) => {
      res.setEncoding("utf8");
      let buf = "";
      res.on("data", (chunk: string) => {
        buf += chunk;
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line.trim()) continue;
          const e = JSON.parse(line) as { type: string; object: WatchedJob };
          if (e.type === "BOOKMARK") continue;
          watchEvents++;
          byType[e.type] = (byType[e.type] ?? 0) + 1;
          const name = e.object.metadata.name;
          seqs.set(name, [...(seqs.get(name) ?? []), tag(e.type, e.object)]);
          const phase = e.object.status?.phase;
          if (phase === "Succeeded" || phase === "Failed") ended.set(e.object.metadata.name, phase);
          if (ended.size >= jobs) finish();
        }
      });
    },
  );
  watch.on("error", () => undefined);
  watch.end();
  await new Promise((r) => setTimeout(r, 200));
  let next = 0;
  let created = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < jobs) {
        const i = next++;
        const res = await fetch(`${url}${path}`, {
          method: "POST",
          headers,
          body: JSON.stringify({
            apiVersion: "loom.dev/v1alpha1",
            kind: "TrainingJob",
            metadata: { name: `writes-${String(i).padStart(5, "0")}` },
            spec: { command: ["/bin/true"], resources: { cpu: 1 } },
          }),
        });
        if (res.status === 201) created++;
        await res.arrayBuffer();
      }
    }),
  );
  const timer = setTimeout(finish, 300_000);
  await finished;
  clearTimeout(timer);
  // Writes after the last job ended (a finished job's stragglers) still count: wait a moment.
  await new Promise((r) => setTimeout(r, 1000));
  watch.destroy();
  const values = [...ended.values()];
  const counts = new Map<string, number>();
  for (const seq of seqs.values()) counts.set(seq.join(" | "), (counts.get(seq.join(" | ")) ?? 0) + 1);
  return {
    created,
    watchEvents,
    byType,
    succeeded: values.filter((p) => p === "Succeeded").length,
    failed: values.filter((p) => p === "Failed").length,
    sequences: [...counts].sort((a, b) => b[1] - a[1]).slice(0, 5),
  };
}

function runClient(url: string, token: string): Promise<ClientFigures> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", fileURLToPath(import.meta.url), "client", url, token, String(JOBS)],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString("utf8");
    });
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve(JSON.parse(out) as ClientFigures) : reject(new Error(`client exited ${code}`)),
    );
  });
}

async function server(): Promise<void> {
  const { createLogger } = await import("../src/lib/log.js");
  const { startEmbedded } = await import("../src/main/embedded.js");
  const dataDir = tempDir("loom-bench-writes-");
  const s = await startEmbedded({ dataDir, port: 0, gpus: 0, log: createLogger("warn") });
  try {
    const cpu0 = process.cpuUsage();
    const figures = await runClient(s.url, s.adminToken);
    const cpu = process.cpuUsage(cpu0);
    const metrics = await (
      await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${s.adminToken}` } })
    ).text();
    const reconciles: Record<string, number> = {};
    const re = /^loom_reconcile_duration_seconds_count\{controller="([^"]+)",result="([^"]+)"\} (\S+)$/gm;
    for (const m of metrics.matchAll(re)) reconciles[m[1]!] = (reconciles[m[1]!] ?? 0) + Number(m[3]);
    await s.close();
    const db = new Database(join(dataDir, "loom.db"), { readonly: true });
    const events = db
      .prepare("SELECT reason, SUM(count) AS n FROM events WHERE kind = 'TrainingJob' GROUP BY reason")
      .all() as { reason: string; n: number }[];
    db.close();
    const per = (n: number) => (n / JOBS).toFixed(2);
    console.log(
      `jobs ${JOBS}: created ${figures.created}, succeeded ${figures.succeeded}, failed ${figures.failed}`,
    );
    console.log(
      `TrainingJob writes on the watch: ${per(figures.watchEvents)} per job (${Object.entries(figures.byType)
        .map(([t, n]) => `${t} ${per(n)}`)
        .join(", ")})`,
    );
    const eventTotal = events.reduce((a, e) => a + e.n, 0);
    console.log(
      `events: ${per(eventTotal)} per job (${events.map((e) => `${e.reason} ${per(e.n)}`).join(", ")})`,
    );
    console.log(
      `reconciles per job: ${Object.entries(reconciles)
        .filter(([, n]) => n > 0)
        .map(([c, n]) => `${c} ${per(n)}`)
        .join(", ")}`,
    );
    for (const [seq, n] of figures.sequences) console.log(`  ${n} jobs: ${seq}`);
    console.log(
      `server CPU: ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s, ${((cpu.user + cpu.system) / 1e3 / JOBS).toFixed(2)} ms per job`,
    );
  } finally {
    await s.close().catch(() => undefined);
    await cleanupAll();
  }
}

if (process.argv[2] === "client") {
  const [, , , url, token, jobs] = process.argv;
  client(url!, token!, Number(jobs))
    .then((f) => {
      process.stdout.write(JSON.stringify(f));
      process.exit(0);
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
} else {
  server()
    .then(() => process.exit(0))
    .catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
}

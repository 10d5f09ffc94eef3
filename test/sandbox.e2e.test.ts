import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findProcessesByEnv } from "../src/platforms/embedded/procfs.js";
import { detectSandbox } from "../src/platforms/embedded/sandbox.js";
import { LoomProcess } from "./helpers.js";

/**
 * The sandbox escape suite (issue 17, point 3), embedded, on a real `loom up`: a job in project
 * B tries what a job in B could do before sandboxing (read loom.db and the admin token, A's
 * files and A's processes' environment, write outside its own dirs, take more memory than it
 * asked for). Each attempt fails, and B's own work (PyTorch DDP between its workers, logging to
 * tracking) still succeeds.
 */

const support = detectSandbox();
/** The suite needs what CI has (root, bubblewrap, writable cgroups); elsewhere it says why it skips. */
const usable = !!support.bwrap && support.privileged && !!support.cgroups;

/** Tries every escape it is told of and prints one JSON line: what each attempt gave. */
const ATTACK = `
import json, os, signal, sys
t = json.loads(os.environ["TARGETS"])
out = {}
def attempt(name, fn):
    try:
        r = fn()
        out[name] = "OK " + (repr(r)[:200] if r is not None else "")
    except Exception as e:
        out[name] = "DENIED " + type(e).__name__ + ": " + str(e)[:120]
def read(p):
    with open(p, "rb") as f:
        return f.read(64)
def write(p):
    with open(p, "ab") as f:
        f.write(b"x")
attempt("read loom.db", lambda: read(t["db"]))
attempt("write loom.db", lambda: write(t["db"]))
attempt("read admin token", lambda: read(t["adminToken"]))
attempt("read CLI config", lambda: read(t["config"]))
attempt("list data dir", lambda: os.listdir(t["dataDir"]))
attempt("list workloads", lambda: os.listdir(t["dataDir"] + "/workloads"))
attempt("list artifacts", lambda: os.listdir(t["artifacts"]))
attempt("read A's artifact", lambda: read(t["artifact"]))
attempt("read A's workdir file", lambda: read(t["aWork"] + "/secret.txt"))
attempt("list A's checkpoints", lambda: os.listdir(t["aCheckpoint"]))
attempt("write A's workdir", lambda: write(t["aWork"] + "/planted"))
attempt("write data dir", lambda: write(t["dataDir"] + "/planted"))
attempt("write /usr", lambda: write("/usr/planted"))
attempt("write /etc", lambda: write("/etc/planted"))
attempt("write code dir", lambda: write(os.getcwd() + "/planted"))
attempt("read /etc/shadow", lambda: read("/etc/shadow"))
attempt("signal A's worker", lambda: os.kill(t["aPid"], 0))
seen = []
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    for f in ("environ", "cmdline"):
        try:
            data = read("/proc/%s/%s" % (p, f)) + open("/proc/%s/%s" % (p, f), "rb").read()
        except Exception:
            continue
        if t["aSecret"][::-1].encode() in data or t["aMarker"][::-1].encode() in data:
            seen.append("%s/%s" % (p, f))
out["A's /proc entries readable"] = seen
out["pids visible"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out["uid"] = os.getuid()
attempt("own workdir", lambda: write(os.environ["LOOM_WORKLOAD_DIR"] + "/mine"))
attempt("own checkpoint", lambda: write(os.environ["LOOM_CHECKPOINT_DIR"] + "/mine"))
attempt("own /tmp", lambda: write("/tmp/mine"))
attempt("own /dev/shm", lambda: write("/dev/shm/mine"))
print("ATTACK " + json.dumps(out), flush=True)
`;

/** Two workers: gloo all-reduce over loopback, then rank 0 logs the sum to the job's tracking run. */
const DDP = `
import json, os, urllib.request
import torch, torch.distributed as dist
dist.init_process_group("gloo")
x = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(x)
print("ALLREDUCE", x.item(), flush=True)
if dist.get_rank() == 0:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    for name in ("MLFLOW_TRACKING_TOKEN_FILE", "LOOM_TOKEN_FILE"):
        if not token and os.environ.get(name):
            token = open(os.environ[name]).read().strip()
    body = json.dumps({"run_id": os.environ["MLFLOW_RUN_ID"], "key": "allreduce", "value": x.item(), "timestamp": 0, "step": 0}).encode()
    req = urllib.request.Request(os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/log-metric", data=body, method="POST",
        headers={"content-type": "application/json", "authorization": "Bearer " + token})
    urllib.request.urlopen(req).read()
dist.barrier()
dist.destroy_process_group()
`;

const MEMORY_HOG = "x = bytearray(512 * 1024 * 1024)\nprint('not killed', len(x), flush=True)\n";

function job(name: string, project: string, spec: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name, project },
    spec: { failurePolicy: { maxRestarts: 0 }, ...spec },
  });
}

describe.skipIf(!usable)("sandbox escape suite (embedded)", () => {
  const loom = new LoomProcess();
  const code = mkdtempSync(join(tmpdir(), "loom-sandbox-code-"));
  let victimUid = "";
  let victimPid = 0;
  const SECRET = `a-secret-${process.pid}`;

  const apply = async (manifest: string) => {
    const r = await loom.cli(["apply", "-f", "-"], { input: manifest });
    expect(r.code, r.stderr).toBe(0);
  };
  const logs = async (name: string, project: string) =>
    (await loom.cli(["logs", `tj/${name}`, "-p", project])).stdout;

  beforeAll(async () => {
    // The code dir is lent read-only; a project's uid must be able to read it.
    chmodSync(code, 0o755);
    writeFileSync(join(code, "attack.py"), ATTACK);
    writeFileSync(join(code, "ddp.py"), DDP);
    writeFileSync(join(code, "hog.py"), MEMORY_HOG);
    await loom.start();
    for (const p of ["sbx-a", "sbx-b"])
      await apply(`apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: ${p}}\n`);
    // A's workload: keeps a secret in its env, its work dir and its checkpoint dir, and runs on.
    await apply(
      job("victim", "sbx-a", {
        command: [
          "sh",
          "-c",
          'echo "$A_SECRET" > "$LOOM_WORKLOAD_DIR/secret.txt"; echo x > "$LOOM_CHECKPOINT_DIR/ckpt"; exec sleep 600',
        ],
        env: { A_SECRET: SECRET },
        resources: { cpu: "100m", memory: "64Mi" },
      }),
    );
    const running = await loom.waitFor(
      "victim",
      (j) => j.status?.ready === "1/1" || j.status?.phase === "Failed",
      60_000,
      "sbx-a",
    );
    expect(running.status?.phase, JSON.stringify(running.status)).not.toBe("Failed");
    victimUid = running.metadata.uid;
    victimPid = findProcessesByEnv("LOOM_WORKLOAD_UID", victimUid)[0]?.pid ?? 0;
    expect(victimPid, "A's worker process").toBeGreaterThan(0);
    // One of A's artifacts, uploaded through tracking as A's users would (under A's experiment).
    const experiment = (running.status as { tracking?: { experimentId: string } }).tracking?.experimentId;
    const put = await fetch(
      `${loom.url}/mlflow/projects/sbx-a/api/2.0/mlflow-artifacts/artifacts/${experiment}/secret/a.txt`,
      {
        method: "PUT",
        headers: { authorization: `Bearer ${loom.token}` },
        body: SECRET,
      },
    );
    expect(put.status, await put.text()).toBeLessThan(300);
  }, 120_000);

  afterAll(async () => {
    await loom.cli(["delete", "tj", "--all", "-p", "sbx-a", "--timeout", "30"]).catch(() => undefined);
    await loom.cli(["delete", "tj", "--all", "-p", "sbx-b", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
    rmSync(code, { recursive: true, force: true });
  });

  it("keeps the data dir 0700 and the database and admin token 0600", () => {
    const mode = (p: string) => statSync(p).mode & 0o777;
    expect(mode(loom.dataDir)).toBe(0o700);
    expect(mode(join(loom.dataDir, "loom.db"))).toBe(0o600);
    const token = readdirSync(loom.dataDir).find((f) => f.includes("token"));
    expect(token, "an admin token file in the data dir").toBeDefined();
    expect(mode(join(loom.dataDir, token!))).toBe(0o600);
  });

  it("a job in B can read nothing of Loom's or A's, see no process of A's, write nowhere but its own dirs", async () => {
    const artifacts = join(loom.dataDir, "artifacts");
    const artifact = findFile(artifacts, "a.txt");
    expect(artifact, "A's artifact on disk").toBeDefined();
    const targets = {
      db: join(loom.dataDir, "loom.db"),
      adminToken: join(loom.dataDir, readdirSync(loom.dataDir).find((f) => f.includes("token"))!),
      config: loom.configFile,
      dataDir: loom.dataDir,
      artifacts,
      artifact,
      aWork: join(loom.dataDir, "workloads", victimUid, "work"),
      aCheckpoint: join(loom.dataDir, "workloads", victimUid, "checkpoint"),
      aPid: victimPid,
      // Reversed: this job's own environ (and its sandbox init's) must not match what it looks for.
      aSecret: [...SECRET].reverse().join(""),
      aMarker: [...`LOOM_WORKLOAD_UID=${victimUid}`].reverse().join(""),
    };
    await apply(
      job("attacker", "sbx-b", {
        command: ["python3", "attack.py"],
        workingDir: code,
        env: { TARGETS: JSON.stringify(targets) },
        resources: { cpu: "500m", memory: "256Mi" },
      }),
    );
    const done = await loom.waitFor(
      "attacker",
      (j) => /Succeeded|Failed/.test(j.status?.phase ?? ""),
      60_000,
      "sbx-b",
    );
    const log = await logs("attacker", "sbx-b");
    expect(done.status?.phase, log).toBe("Succeeded");
    const line = /ATTACK (.*)/.exec(log)?.[1];
    expect(line, log).toBeDefined();
    const r = JSON.parse(line!) as Record<string, unknown>;
    for (const name of [
      "read loom.db",
      "write loom.db",
      "read admin token",
      "read CLI config",
      "list artifacts",
      "read A's artifact",
      "read A's workdir file",
      "list A's checkpoints",
      "write A's workdir",
      "write data dir",
      "write /usr",
      "write /etc",
      "write code dir",
      "read /etc/shadow",
      "signal A's worker",
    ]) {
      expect(String(r[name]), `${name}: ${r[name]}`).toMatch(/^DENIED/);
    }
    // The data dir's path exists inside only as the skeleton holding the job's own binds.
    expect(String(r["list data dir"])).toMatch(/^(DENIED|OK \['workloads'\])/);
    expect(String(r["list workloads"])).not.toContain(victimUid);
    expect(r["A's /proc entries readable"]).toEqual([]);
    // Its own PID namespace: bwrap's init, the worker, nothing of the machine's.
    expect((r["pids visible"] as number[]).length).toBeLessThan(6);
    expect(r.uid).toBeGreaterThanOrEqual(200_000);
    for (const name of ["own workdir", "own checkpoint", "own /tmp", "own /dev/shm"])
      expect(String(r[name]), name).toMatch(/^OK/);
  }, 120_000);

  it("a job in B that takes more memory than it asked for is OOM-killed, and its status says so", async () => {
    await apply(
      job("hog", "sbx-b", {
        command: ["python3", "hog.py"],
        workingDir: code,
        resources: { cpu: "500m", memory: "96Mi" },
      }),
    );
    const done = await loom.waitFor(
      "hog",
      (j) => /Succeeded|Failed/.test(j.status?.phase ?? ""),
      60_000,
      "sbx-b",
    );
    expect(done.status?.phase).toBe("Failed");
    expect(JSON.stringify(done.status)).toMatch(/out of memory/);
    expect(await logs("hog", "sbx-b")).not.toMatch(/not killed/);
  }, 90_000);

  it("B's own work still succeeds: PyTorch DDP between its two workers, logging to tracking", async () => {
    await apply(
      job("ddp", "sbx-b", {
        workers: 2,
        framework: "pytorch",
        command: ["python3", "ddp.py"],
        workingDir: code,
        python: { interpreter: "/usr/bin/python3", systemSitePackages: true },
        resources: { cpu: "500m", memory: "1Gi" },
      }),
    );
    const done = await loom.waitFor(
      "ddp",
      (j) => /Succeeded|Failed/.test(j.status?.phase ?? ""),
      300_000,
      "sbx-b",
    );
    const log = await logs("ddp", "sbx-b");
    expect(done.status?.phase, log).toBe("Succeeded");
    expect(log).toMatch(/ALLREDUCE 3\.0/);
    const runId = (done.status as { tracking?: { runId: string } }).tracking?.runId;
    const run = await loom.api("GET", `/mlflow/projects/sbx-b/api/2.0/mlflow/runs/get?run_id=${runId}`);
    expect(JSON.stringify(run.body)).toMatch(/"key":"allreduce","value":3/);
  }, 320_000);
});

function findFile(dir: string, name: string): string | undefined {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const found = findFile(p, name);
      if (found) return found;
    } else if (e.name === name) return p;
  }
  return undefined;
}

it.runIf(!usable)("sandbox escape suite: skipped, this machine cannot sandbox", () => {
  console.warn(`sandbox escape suite skipped: ${support.unavailable ?? "not root or no writable cgroups"}`);
});

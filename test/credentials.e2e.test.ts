import type { ChildProcess } from "node:child_process";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobYaml, LoomProcess } from "./helpers.js";

/**
 * Credentials' lifecycle on a real `loom up`, through the real CLI and two `loom gateway`
 * replicas: expiry, revocation (seen by every replica), binding to the project's uid, and a
 * job's own credential, which is a file (not in /proc/PID/environ) and dies with the job.
 */
const BASE = "/apis/loom.dev/v1alpha1";

describe("credentials: expiry, revocation, project binding, workload tokens", () => {
  const loom = new LoomProcess();
  const gateways: ChildProcess[] = [];

  async function startGateway(): Promise<string> {
    const tokenFile = join(loom.home, "gateway-token");
    writeFileSync(tokenFile, loom.token);
    const g = loom.cliBackground(["gateway", "--api", loom.url, "--token-file", tokenFile, "--port", "0"]);
    gateways.push(g.proc);
    for (let i = 0; i < 300; i++) {
      const url = /serving at (\S+),/.exec(g.output())?.[1];
      if (url && (await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200) return url;
      if (g.proc.exitCode !== null) break;
      await sleep(100);
    }
    throw new Error(`loom gateway did not start: ${g.output()}`);
  }

  /** Polls until `refused` holds; returns how long that took (ms). */
  async function until(refused: () => Promise<boolean>, boundMs = 60_000): Promise<number> {
    const t0 = performance.now();
    while (!(await refused())) {
      if (performance.now() - t0 > boundMs) throw new Error("still accepted");
      await sleep(20);
    }
    return performance.now() - t0;
  }

  const models = async (url: string, key: string) =>
    (await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;

  beforeAll(async () => {
    await loom.start();
  });
  afterAll(async () => {
    for (const g of gateways) g.kill("SIGTERM");
    await loom.stop();
  });

  it("loom token create --ttl 2s: accepted, then refused after it expires", async () => {
    const created = await loom.cli(["token", "create", "short", "--role", "viewer", "--ttl", "2s"]);
    expect(created.code, created.stderr).toBe(0);
    const token = created.stdout.trim();
    const expiresAt = Date.now() + 1000; // at least this long left (created before now)
    const first = await loom.api("GET", `${BASE}/projects`, undefined, token);
    if (Date.now() < expiresAt) expect(first.status).toBe(200);
    const listed = await loom.cli(["token", "list"]);
    expect(listed.stdout).toMatch(/short\s+viewer\s+\*\s+\S+\s+(in \d+s|expired)\s+/);
    expect(listed.stdout).not.toContain(token);
    await until(async () => (await loom.api("GET", `${BASE}/projects`, undefined, token)).status === 401);
    const r = await loom.api("GET", `${BASE}/projects`, undefined, token);
    expect(JSON.stringify(r.body)).toMatch(/revoked or expired/);
  });

  it("loom apikey revoke: refused by both gateway replicas within a second", async () => {
    const urls = [await startGateway(), await startGateway()];
    const k = await loom.cli(["apikey", "create", "app", "-p", "default"]);
    expect(k.code, k.stderr).toBe(0);
    const key = k.stdout.trim();
    for (const url of urls) expect(await models(url, key)).toBe(200);
    const id = (/^(\S+)\s+app\s/m.exec((await loom.cli(["apikey", "list"])).stdout) ?? [])[1]!;
    // Keep both replicas' caches warm, as steady traffic does, right up to the revoke.
    for (const url of urls) expect(await models(url, key)).toBe(200);
    const revoked = await loom.cli(["apikey", "revoke", id]);
    expect(revoked.code, revoked.stderr).toBe(0);
    const latencies = await Promise.all(
      urls.map((url) => until(async () => (await models(url, key)) === 401)),
    );
    console.log(
      `revocation seen by the gateway replicas after ${latencies.map((ms) => `${ms.toFixed(0)} ms`).join(", ")}`,
    );
    const tokens = await loom.cli(["apikey", "list"]);
    expect(tokens.stdout).not.toContain(id);
  });

  it("a project deleted and re-created honours none of its old tokens", async () => {
    const project = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "again" },
      spec: {},
    };
    expect((await loom.api("POST", `${BASE}/projects`, project)).status).toBe(201);
    const t = await loom.cli(["token", "create", "dev", "-p", "again"]);
    const token = t.stdout.trim();
    expect((await loom.api("GET", `${BASE}/projects/again/trainingjobs`, undefined, token)).status).toBe(200);
    expect((await loom.api("DELETE", `${BASE}/projects/again`)).status).toBeLessThan(300);
    await until(async () => (await loom.api("GET", `${BASE}/projects/again`)).status === 404);
    expect((await loom.api("POST", `${BASE}/projects`, project)).status).toBe(201);
    await until(
      async () =>
        (await loom.api("GET", `${BASE}/projects/again/trainingjobs`, undefined, token)).status === 401,
    );
  });

  it("a job's credential is a 0600 file, not in /proc/PID/environ, and refused once the job ends", async () => {
    const script = [
      'cat "$LOOM_TOKEN_FILE"',
      'echo "mode $(stat -c %a "$HOME") $(stat -c %a "$HOME/.mlflow/credentials") $(stat -c %a "$LOOM_TOKEN_FILE")"',
      'grep -c mlflow_tracking_password "$HOME/.mlflow/credentials"',
      'echo "env:$(env | grep -c "$(cat "$LOOM_TOKEN_FILE")")"',
      'while [ ! -e "$LOOM_WORKLOAD_DIR/go" ]; do sleep 0.1; done',
    ].join("; ");
    const applied = await loom.cli(["apply", "-f", "-"], { input: jobYaml("cj1", ["sh", "-c", script]) });
    expect(applied.code, applied.stderr).toBe(0);
    const running = await loom.waitFor("cj1", (j) => j.status?.workers?.[0]?.pid !== undefined, 60_000);
    let log = "";
    await until(async () => {
      const l = await loom.cli(["logs", "tj", "cj1", "--worker", "0"]);
      log = l.stdout + l.stderr + JSON.stringify((await loom.job("cj1")).status);
      return log.includes("env:");
    }, 20_000).catch((err) => {
      throw new Error(
        `${(err as Error).message}: log ${JSON.stringify(log)}; server ${loom.log.slice(-3000)}`,
      );
    });
    const [token, modes, , env] = log.trim().split("\n");
    expect(token).toMatch(/^loom_/);
    expect(modes).toBe("mode 700 600 600");
    expect(env).toBe("env:0");
    const pid = running.status!.workers![0]!.pid!;
    expect(readFileSync(`/proc/${pid}/environ`, "latin1")).not.toContain(token!);
    expect(readFileSync(`/proc/${pid}/environ`, "latin1")).toContain("MLFLOW_TRACKING_URI=");
    // While the job runs its token logs to tracking (as the mlflow client does, Basic auth).
    const basic = `Basic ${Buffer.from(`loom:${token}`).toString("base64")}`;
    const search = () =>
      fetch(`${loom.url}/api/2.0/mlflow/experiments/search`, {
        method: "POST",
        headers: { authorization: basic, "content-type": "application/json" },
        body: JSON.stringify({ max_results: 10 }),
      }).then((r) => r.status);
    expect(await search()).toBe(200);
    const workDir = join(loom.dataDir, "workloads", running.metadata.uid, "work");
    expect(statSync(workDir).isDirectory()).toBe(true);
    writeFileSync(join(workDir, "go"), "");
    await loom.waitFor("cj1", (j) => j.status?.phase === "Succeeded", 60_000);
    await until(async () => (await search()) === 401);
  }, 120_000);
});

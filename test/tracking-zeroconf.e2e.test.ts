import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findProcessesByEnv } from "../src/platforms/embedded/procfs.js";
import { LoomProcess } from "./helpers.js";
import { jupyterMlflowVenv } from "./jupyter.js";
import { KernelSocket } from "./kernelsocket.js";
import { mlflowPython } from "./tracking-client.js";

/**
 * Zero-configuration tracking for Workspaces and Apps (issues 19 and 20, point 7) on a real
 * `loom up`: a JupyterLab kernel, a JupyterLab terminal and an App log a param and a metric with
 * the official mlflow client and no setup at all (MLFLOW_TRACKING_URI from Loom, the token in
 * ~/.mlflow/credentials: in a workspace a link from its persistent home to the replica's private
 * file). Read back through Loom's API. The token is in no process's environment, nor in describe
 * or the server's log; it is refused on another project's tracking, and after the workloads go.
 */
const BASE = "/apis/loom.dev/v1alpha1";

/** Logs to the experiment `zeroconf` with no configuration; prints the run's id. */
const LOG = (where: string) =>
  [
    "import mlflow",
    'mlflow.set_experiment("zeroconf")',
    `with mlflow.start_run(run_name="from-${where}") as run:`,
    `    mlflow.log_param("where", "${where}")`,
    '    mlflow.log_metric("answer", 42)',
    'print("RUN", run.info.run_id)',
  ].join("\n");

/** Every tracking token Loom wrote for a replica (~/.mlflow/credentials under its private HOME). */
function tokensOnDisk(dataDir: string): string[] {
  return filesOnDisk(dataDir, join(".mlflow", "credentials")).map(
    (text) => /mlflow_tracking_password = (\S+)/.exec(text)?.[1] ?? "",
  );
}

/** The contents of `path` under every replica's private HOME. */
function filesOnDisk(dataDir: string, path: string): string[] {
  const root = join(dataDir, "workloads");
  return readdirSync(root)
    .map((uid) => join(root, uid, "home", path))
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f, "utf8").trim());
}

describe("zero-configuration tracking from Workspaces and Apps (embedded)", () => {
  const loom = new LoomProcess();
  let jupyter = "";
  let client = "";

  async function until<T>(what: string, get: () => Promise<T | undefined>, ms = 240_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await get();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${loom.log.slice(-3000)}`);
      await sleep(200);
    }
  }

  /** A tracking call with a workload's token as the mlflow client sends it (Basic, user loom). */
  const tracking = async (project: string, token: string) =>
    (
      await fetch(`${loom.url}/mlflow/projects/${project}/api/2.0/mlflow/experiments/search?max_results=1`, {
        headers: { authorization: `Basic ${Buffer.from(`loom:${token}`).toString("base64")}` },
      })
    ).status;

  /** The runs of experiment `zeroconf` in `project`, read back through Loom's API. */
  async function runs(project: string) {
    const exp = await loom.api(
      "GET",
      `/mlflow/projects/${project}/api/2.0/mlflow/experiments/get-by-name?experiment_name=zeroconf`,
    );
    if (exp.status !== 200) return [];
    const id = (exp.body as { experiment: { experiment_id: string } }).experiment.experiment_id;
    const r = await loom.api("POST", `/mlflow/projects/${project}/api/2.0/mlflow/runs/search`, {
      experiment_ids: [id],
    });
    type Run = {
      info: { run_name: string; run_id: string };
      data: { params?: { key: string; value: string }[]; metrics?: { key: string; value: number }[] };
    };
    return ((r.body as { runs?: Run[] }).runs ?? []).map((x) => ({
      name: x.info.run_name,
      id: x.info.run_id,
      params: Object.fromEntries((x.data.params ?? []).map((p) => [p.key, p.value])),
      metrics: Object.fromEntries((x.data.metrics ?? []).map((m) => [m.key, m.value])),
    }));
  }

  beforeAll(async () => {
    jupyter = jupyterMlflowVenv();
    client = join(mlflowPython(), "..", "..");
    await loom.start();
    for (const p of ["alpha", "beta"]) {
      const project = `apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: ${p}}\n`;
      expect((await loom.cli(["apply", "-f", "-"], { input: project })).code).toBe(0);
    }
  }, 1_200_000);

  afterAll(async () => {
    await loom.cli(["delete", "ws", "--all", "-p", "alpha", "--timeout", "30"]).catch(() => undefined);
    await loom.cli(["delete", "app", "--all", "-p", "alpha", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  }, 120_000);

  it("a JupyterLab kernel and terminal, and an App, log with no setup; the token is a file only, for its project only, revoked when they go", async () => {
    const ws = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: nb, project: alpha}
spec: {ide: jupyter, python: {venv: ${jupyter}}}
`;
    const app = `apiVersion: loom.dev/v1alpha1
kind: App
metadata: {name: logger, project: alpha}
spec:
  framework: custom
  python: {venv: ${client}}
  replicas: {min: 1, max: 1}
  command: ${JSON.stringify(["sh", "-c", 'python3 -c "$LOG" > logged.txt 2>&1; exec python3 -m http.server $PORT --bind $HOST'])}
  env: {LOG: ${JSON.stringify(LOG("app"))}}
`;
    for (const y of [ws, app]) {
      const applied = await loom.cli(["apply", "-p", "alpha", "-f", "-"], { input: y });
      expect(applied.code, applied.stderr).toBe(0);
    }
    type Ws = { status?: { phase?: string; replica?: { host?: string; port?: number } } };
    const w = await until("the workspace Running", async () => {
      const body = (await loom.api("GET", `${BASE}/projects/alpha/workspaces/nb`)).body as Ws;
      return body.status?.phase === "Running" ? body : undefined;
    });
    const host = w.status!.replica!.host!;
    const base = `http://${host}:${w.status!.replica!.port}`;
    const headers = { host: "nb--alpha.ws.localhost:7471" };
    const lab = await fetch(`${base}/lab`, { headers });
    const xsrf = /_xsrf=([^;]+)/.exec(lab.headers.get("set-cookie") ?? "")?.[1];
    expect(xsrf).toBeTruthy();
    const writeHeaders = {
      ...headers,
      "content-type": "application/json",
      cookie: `_xsrf=${xsrf}`,
      "x-xsrftoken": decodeURIComponent(xsrf!),
    };

    // A kernel, as a notebook runs one: mlflow with no configuration.
    const kernel = await fetch(`${base}/api/kernels`, { method: "POST", headers: writeHeaders, body: "{}" });
    expect(kernel.status).toBeLessThan(300);
    const { id } = (await kernel.json()) as { id: string };
    const ks = await KernelSocket.open(base, `/api/kernels/${id}/channels`, `_xsrf=${xsrf}`, host);
    const msg = ks.execute(LOG("kernel"), "zeroconf");
    const reply = await ks.next(
      (m) => m.parent_header.msg_id === msg && m.header.msg_type === "execute_reply",
      120_000,
    );
    const streamed = ks
      .all()
      .filter(
        (
          m,
        ): m is {
          parent_header: { msg_id?: string };
          header: { msg_type: string };
          content: { text?: string };
        } =>
          !Array.isArray(m) && (m as { parent_header?: { msg_id?: string } }).parent_header?.msg_id === msg,
      )
      .map((m) => `${m.header.msg_type}: ${m.content.text ?? JSON.stringify(m.content)}`)
      .join("\n");
    expect(reply.content.status, streamed).toBe("ok");
    await ks.close();

    // A terminal, as a user types in one.
    const term = await fetch(`${base}/api/terminals`, { method: "POST", headers: writeHeaders, body: "{}" });
    expect(term.status).toBeLessThan(300);
    const { name: terminal } = (await term.json()) as { name: string };
    const ts = await KernelSocket.open(base, `/terminals/websocket/${terminal}`, "", host);
    ts.send(["stdin", `python -c '${LOG("terminal")}'\r`]);
    const printed = () =>
      ts
        .all()
        .filter((m): m is [string, string] => Array.isArray(m) && m[0] === "stdout")
        .map((m) => m[1])
        .join("");
    await until(
      "the terminal's run",
      async () => (/RUN [0-9a-f]{32}/.test(printed()) ? true : undefined),
      120_000,
    );

    // All three runs, read back through Loom, in the workload's project only.
    const logged = await until("the three runs", async () => {
      const r = await runs("alpha");
      return r.length === 3 ? r : undefined;
    });
    expect(logged.map((r) => r.name).sort()).toEqual(["from-app", "from-kernel", "from-terminal"]);
    for (const r of logged) {
      expect(r.params.where).toBe(r.name.replace("from-", ""));
      expect(r.metrics.answer).toBe(42);
    }
    expect(await runs("beta")).toEqual([]);

    // Tokens are files only: in no process's environment (the kernel's and terminal's included).
    const tokens = tokensOnDisk(loom.dataDir);
    expect(tokens.length).toBe(2);
    // Nor the model keys (Jupyter starts kernels and terminals with a copy of os.environ, where
    // the bridge put the key for openai.OpenAI(): the copy leaves it out).
    const keys = filesOnDisk(loom.dataDir, join(".loom", "openai-key"));
    expect(keys.length).toBe(2);
    const procs = [
      ...findProcessesByEnv("LOOM_WORKLOAD", "nb"),
      ...findProcessesByEnv("LOOM_WORKLOAD", "logger"),
    ];
    // The server, its kernel, the terminal's shell and its python; the app's shell and server.
    expect(procs.length).toBeGreaterThanOrEqual(4);
    for (const p of procs) {
      const environ = readFileSync(`/proc/${p.pid}/environ`, "latin1");
      for (const t of [...tokens, ...keys]) expect(environ, `pid ${p.pid}`).not.toContain(t);
      expect(p.env.get("MLFLOW_TRACKING_URI")).toMatch(/\/mlflow\/projects\/alpha$/);
    }
    // The workspace's persistent home holds a link (a path), never the token.
    const link = join(loom.dataDir, "homes", "alpha", "nb", ".mlflow", "credentials");
    expect(readFileSync(link, "utf8")).toMatch(/mlflow_tracking_password/);
    const shown =
      (await loom.cli(["describe", "ws/nb", "-p", "alpha"])).stdout +
      (await loom.cli(["describe", "app/logger", "-p", "alpha"])).stdout +
      JSON.stringify((await loom.api("GET", `${BASE}/projects/alpha/workspaces/nb`)).body) +
      printed() +
      loom.log;
    for (const t of tokens) expect(shown).not.toContain(t);

    // Each token works on its project's tracking, and is refused on another project's.
    for (const t of tokens) {
      expect(await tracking("alpha", t)).toBe(200);
      expect([401, 403]).toContain(await tracking("beta", t));
    }

    // Gone with the workloads.
    await ts.close();
    expect((await loom.cli(["delete", "ws/nb", "-p", "alpha", "--timeout", "60"])).code).toBe(0);
    expect((await loom.cli(["delete", "app/logger", "-p", "alpha", "--timeout", "60"])).code).toBe(0);
    for (const t of tokens)
      await until(
        "the token refused",
        async () => ((await tracking("alpha", t)) === 401 ? true : undefined),
        60_000,
      );
  }, 1_200_000);
});

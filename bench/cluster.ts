/**
 * Shared by the benchmarks that need a real Kubernetes control plane: a private cluster from
 * test/k8s/up.sh in its own state dir (never the tests' default one), kubectl, and an HTTPS
 * keep-alive client that counts its own requests.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Nodes up.sh is asked for; more are added by BenchCluster.addNodes (see there). */
const UP_SH_NODES = 10;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command without blocking the event loop (so watchdogs and scrapes keep running). */
export function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; echoStderr?: boolean } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (opts.echoStderr) process.stderr.write(d);
    });
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          stderr += `\n(timed out after ${opts.timeoutMs} ms)`;
          child.kill("SIGKILL");
        }, opts.timeoutMs)
      : undefined;
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${stderr}${String(err)}` });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}

export interface Versions {
  kubernetes: string;
  etcd: string;
  kwok: string;
  line: string;
}

/**
 * A control plane of our own: etcd, kube-apiserver, controller-manager, scheduler and kwok with
 * `nodes` fake nodes, in a fresh temp state dir. stop() takes it down and removes the dir.
 */
export class BenchCluster {
  private stopped = false;

  private constructor(
    readonly state: string,
    readonly kubeconfig: string,
    readonly bin: string,
    readonly server: string,
  ) {}

  /**
   * Builds the binaries if needed (not timed by callers: call binDir() first), then starts the
   * cluster. up.sh brings up at most UP_SH_NODES nodes; the bench adds the rest (see addNodes).
   */
  static async start(nodes: number, onStart?: (c: BenchCluster) => void): Promise<BenchCluster> {
    const state = mkdtempSync(join(tmpdir(), "loom-bench-k8s-"));
    const first = Math.min(nodes, UP_SH_NODES);
    const env = { ...process.env, LOOM_K8S_STATE: state, LOOM_K8S_NODES: String(first) };
    const placeholder = new BenchCluster(state, "", "", "");
    // Registered before up.sh runs, so a half-started cluster is stopped too.
    onStart?.(placeholder);
    const up = await run("bash", [join(ROOT, "test/k8s/up.sh")], { env, timeoutMs: 300_000 });
    if (up.code !== 0) {
      await placeholder.stop();
      throw new Error(
        `test/k8s/up.sh failed (exit ${up.code}): ${up.stderr.trim().split("\n").slice(-8).join(" | ")}`,
      );
    }
    const kubeconfig = up.stdout.trim().split("\n").at(-1)!;
    const clusterEnv = Object.fromEntries(
      readFileSync(join(state, "cluster.env"), "utf8")
        .trim()
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    ) as Record<string, string>;
    const cluster = new BenchCluster(
      state,
      kubeconfig,
      clusterEnv.LOOM_K8S_BIN!,
      clusterEnv.LOOM_K8S_SERVER!,
    );
    placeholder.stopped = true;
    onStart?.(cluster);
    if (nodes > first) await cluster.addNodes(first, nodes);
    return cluster;
  }

  /**
   * Creates kwok-node-FROM..TO-1 exactly as test/k8s/up.sh's ensure_nodes does, and waits until
   * every kwok node is Ready. up.sh cannot do this for ~50 nodes or more: it waits with
   * `kubectl wait --for=condition=Ready node -l type=kwok --timeout=5s`, and kubectl applies that
   * 5 s to all nodes together, checking them one after another, so the wait never succeeds.
   */
  async addNodes(from: number, to: number, timeoutMs = 180_000): Promise<void> {
    const items = [];
    for (let i = from; i < to; i++) {
      const name = `kwok-node-${i}`;
      const cidr = `10.${128 + Math.floor(i / 256)}.${i % 256}.0/24`;
      const resources = {
        cpu: "32",
        memory: "256Gi",
        pods: "110",
        "nvidia.com/gpu": "8",
        "ephemeral-storage": "1Ti",
      };
      items.push({
        apiVersion: "v1",
        kind: "Node",
        metadata: {
          name,
          annotations: { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
          labels: {
            type: "kwok",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/role": "agent",
            "node-role.kubernetes.io/agent": "",
          },
        },
        spec: { podCIDR: cidr, podCIDRs: [cidr] },
        status: {
          addresses: [
            { type: "InternalIP", address: "127.0.0.1" },
            { type: "Hostname", address: name },
          ],
          capacity: resources,
          allocatable: resources,
          nodeInfo: { architecture: "amd64", operatingSystem: "linux" },
        },
      });
    }
    await this.kubectlOk(
      ["create", "--validate=false", "-f", "-"],
      JSON.stringify({ apiVersion: "v1", kind: "List", items }),
    );
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const out = await this.kubectlOk([
        "get",
        "nodes",
        "-l",
        "type=kwok",
        "-o",
        'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
      ]);
      const ready = out.split("\n").filter((l) => l.trim() === "True").length;
      if (ready >= to) return;
      if (Date.now() > deadline)
        throw new Error(`only ${ready} of ${to} kwok nodes Ready after ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /** The bin dir of the cached binaries, building what is missing (minutes when cold). */
  static async binDir(): Promise<string> {
    const r = await run("bash", [join(ROOT, "test/k8s/build.sh")], { echoStderr: true });
    if (r.code !== 0)
      throw new Error(`test/k8s/build.sh failed (exit ${r.code}): ${r.stderr.trim().slice(-500)}`);
    return r.stdout.trim().split("\n").at(-1)!;
  }

  get env(): NodeJS.ProcessEnv {
    return { ...process.env, LOOM_K8S_STATE: this.state };
  }

  kubectl(args: string[], input?: string, timeoutMs = 120_000): Promise<RunResult> {
    return run(join(this.bin, "kubectl"), ["--kubeconfig", this.kubeconfig, ...args], { input, timeoutMs });
  }

  /** kubectl that throws with its stderr on failure. */
  async kubectlOk(args: string[], input?: string, timeoutMs?: number): Promise<string> {
    const r = await this.kubectl(args, input, timeoutMs);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr.trim().slice(0, 500)}`);
    return r.stdout;
  }

  /** A client-certificate kubeconfig for any user and groups (test/k8s/user-kubeconfig.sh). */
  async userKubeconfig(name: string, ...groups: string[]): Promise<string> {
    const r = await run("bash", [join(ROOT, "test/k8s/user-kubeconfig.sh"), name, ...groups], {
      env: this.env,
    });
    if (r.code !== 0) throw new Error(`user-kubeconfig.sh ${name}: ${r.stderr.trim()}`);
    return r.stdout.trim().split("\n").at(-1)!;
  }

  /** Loom's CRDs (`loom crds`), applied server-side and waited for until Established. */
  async installLoomCrds(): Promise<void> {
    const crds = await run(process.execPath, [join(ROOT, "bin/loom.js"), "crds"]);
    if (crds.code !== 0) throw new Error(`loom crds: ${crds.stderr}`);
    await this.kubectlOk(["apply", "--server-side", "--force-conflicts", "-f", "-"], crds.stdout);
    await this.kubectlOk(
      [
        "wait",
        "--for=condition=Established",
        "crd/trainingjobs.loom.dev",
        "crd/projects.loom.dev",
        "--timeout=60s",
      ],
      undefined,
      70_000,
    );
  }

  /** Component name → pid, from the state dir's pids file. */
  pids(): Map<string, number> {
    const out = new Map<string, number>();
    const file = join(this.state, "pids");
    if (!existsSync(file)) return out;
    for (const line of readFileSync(file, "utf8").split("\n")) {
      const [name, pid] = line.trim().split(/\s+/);
      if (name && pid) out.set(name, Number(pid));
    }
    return out;
  }

  logFile(component: string): string {
    return join(this.state, "logs", `${component}.log`);
  }

  versions(): Versions {
    return versionsOf(this.bin);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await run("bash", [join(ROOT, "test/k8s/down.sh")], { env: this.env, timeoutMs: 120_000 });
    if (process.env.LOOM_BENCH_KEEP_STATE) console.log(`  kept the cluster's state dir ${this.state}`);
    else rmSync(this.state, { recursive: true, force: true });
  }
}

/** Versions of the binaries in a bin dir from test/k8s/build.sh. */
export function versionsOf(bin: string): Versions {
  const first = (cmd: string, args: string[], re: RegExp) => {
    const r = spawnSync(join(bin, cmd), args, { encoding: "utf8", timeout: 10_000 });
    return re.exec(`${r.stdout}\n${r.stderr}`)?.[1] ?? "unknown";
  };
  const kubernetes = first("kube-apiserver", ["--version"], /Kubernetes (v\S+)/);
  const etcd = first("etcd", ["--version"], /etcd Version: (\S+)/);
  const kwok = first("kwok", ["--version"], /(v\d+\.\d+\.\d+\S*)/);
  const go = first("etcd", ["--version"], /Go Version: (go\S+)/);
  return {
    kubernetes,
    etcd,
    kwok,
    line: `kube-apiserver/controller-manager/scheduler ${kubernetes}, etcd ${etcd}, kwok ${kwok}${go !== "unknown" ? ` (etcd built with ${go})` : ""}`,
  };
}

/** TLS material and server of a kubeconfig's current context, via @kubernetes/client-node. */
export interface KubeTarget {
  server: string;
  ca?: string;
  cert?: string;
  key?: string;
  token?: string;
}

export async function kubeTarget(kubeconfig: string): Promise<KubeTarget> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error(`no cluster in ${kubeconfig}`);
  const opts: https.RequestOptions & { headers?: Record<string, string> } = {};
  await kc.applyToHTTPSOptions(opts);
  const str = (b: unknown) => (b === undefined || b === null ? undefined : String(b));
  const auth = opts.headers?.Authorization ?? opts.headers?.authorization;
  return {
    server: cluster.server,
    ca: str(opts.ca),
    cert: str(opts.cert),
    key: str(opts.key),
    token: auth?.startsWith("Bearer ") ? auth.slice(7) : undefined,
  };
}

export interface KubeResponse {
  status: number;
  body: string;
}

/**
 * HTTPS keep-alive to the API server with a fixed socket pool. Counts every request it sends
 * (watches included), so a benchmark can subtract its own requests from the server's totals.
 */
export class KubeHttp {
  private readonly agent: https.Agent;
  private readonly url: URL;
  requests = 0;

  constructor(
    private readonly target: KubeTarget,
    maxSockets = 32,
  ) {
    this.url = new URL(target.server);
    this.agent = new https.Agent({
      keepAlive: true,
      maxSockets,
      maxFreeSockets: maxSockets,
      ca: target.ca,
      cert: target.cert,
      key: target.key,
    });
  }

  private headers(body: string | undefined, contentType: string): Record<string, string | number> {
    const h: Record<string, string | number> = { accept: "application/json" };
    if (this.target.token) h.authorization = `Bearer ${this.target.token}`;
    if (body !== undefined) {
      h["content-type"] = contentType;
      h["content-length"] = Buffer.byteLength(body);
    }
    return h;
  }

  send(
    method: string,
    path: string,
    body?: unknown,
    contentType = "application/json",
  ): Promise<KubeResponse> {
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    this.requests++;
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: this.url.hostname,
          port: this.url.port,
          method,
          path,
          agent: this.agent,
          headers: this.headers(payload, contentType),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  }

  async json<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const res = await this.send(method, path, body, contentType);
    if (res.status >= 400)
      throw new Error(`${method} ${path}: HTTP ${res.status}: ${res.body.slice(0, 300)}`);
    return JSON.parse(res.body) as T;
  }

  /**
   * A watch on a collection from `resourceVersion`, on its own connection; resumes from the last
   * revision seen if the stream ends early. Returns a stop function once the first stream is open.
   */
  async watch<T extends { metadata?: { resourceVersion?: string } }>(
    path: string,
    resourceVersion: string,
    onEvent: (type: string, obj: T) => void,
    query = "",
  ): Promise<() => void> {
    let stopped = false;
    let rv = resourceVersion;
    let current: { destroy(): void } | undefined;
    const open = () =>
      new Promise<void>((resolve, reject) => {
        this.requests++;
        const sep = path.includes("?") ? "&" : "?";
        const req = https.request(
          {
            host: this.url.hostname,
            port: this.url.port,
            method: "GET",
            path: `${path}${sep}watch=1&allowWatchBookmarks=true&timeoutSeconds=1800&resourceVersion=${rv}${query}`,
            agent: false,
            ca: this.target.ca,
            cert: this.target.cert,
            key: this.target.key,
            headers: this.headers(undefined, ""),
          },
          (res) => {
            if (res.statusCode !== 200) {
              reject(new Error(`watch ${path}: HTTP ${res.statusCode}`));
              res.resume();
              return;
            }
            resolve();
            res.setEncoding("utf8");
            let buf = "";
            res.on("data", (chunk: string) => {
              buf += chunk;
              let nl = buf.indexOf("\n");
              while (nl >= 0) {
                const line = buf.slice(0, nl);
                buf = buf.slice(nl + 1);
                nl = buf.indexOf("\n");
                if (!line.trim()) continue;
                const e = JSON.parse(line) as { type: string; object: T };
                if (e.type === "ERROR") {
                  console.error(`  watch ${path}: ${line.slice(0, 300)}`);
                  continue;
                }
                rv = e.object.metadata?.resourceVersion ?? rv;
                if (e.type !== "BOOKMARK") onEvent(e.type, e.object);
              }
            });
            const again = () => {
              if (!stopped) setTimeout(() => void open().catch(() => undefined), 200);
            };
            res.on("end", again);
            res.on("error", () => undefined);
          },
        );
        current = req;
        req.on("error", (err) => {
          if (!stopped) reject(err);
        });
        req.end();
      });
    await open();
    return () => {
      stopped = true;
      current?.destroy();
    };
  }

  close(): void {
    this.agent.destroy();
  }
}

/** One sample of a Prometheus text exposition: labels and value. */
export interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** Every sample of `name` (exact metric name) in a Prometheus text exposition. */
export function samples(text: string, name: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== "{" && rest[0] !== " ") continue;
    let labels: Record<string, string> = {};
    let valuePart = rest;
    if (rest[0] === "{") {
      const end = rest.lastIndexOf("}");
      labels = Object.fromEntries(
        [...rest.slice(1, end).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]),
      );
      valuePart = rest.slice(end + 1);
    }
    const value = Number(valuePart.trim().split(" ")[0]);
    if (!Number.isNaN(value)) out.push({ labels, value });
  }
  return out;
}

/** CPU seconds (user + system) a process has used so far, from /proc; undefined if it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 (1-based) of the whole line: 12 and 13 here.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

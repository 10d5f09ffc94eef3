import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingHttpHeaders, request } from "node:http";
import { type AddressInfo, connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT } from "./helpers.js";
import { operatorCluster, type Selector, selects, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * Issue 19 on the real Kubernetes API server: a Workspace applied through Loom becomes what the
 * API server holds — a Deployment of one whose pod Pod Security "restricted" admits, a
 * PersistentVolumeClaim NAME-home owned by the Workspace that outlives stop and start, a Service
 * selecting the pod, and a NetworkPolicy under which only Loom's gateway pods reach it. Pods run
 * on kwok nodes (nothing really runs: the test reads what the API server holds and what the
 * Workspace's status tells its user). The operator runs under deploy/operator.yaml's
 * ServiceAccount, so every request it makes is judged by that least-privilege ClusterRole.
 * Its own cluster (beside LOOM_K8S_STATE's), since an operator elsewhere would reconcile it too.
 */
const NS = "loom-default";

interface Obj {
  metadata: {
    name: string;
    uid: string;
    labels?: Record<string, string>;
    ownerReferences?: { kind: string; name: string; uid: string; controller?: boolean }[];
    deletionTimestamp?: string;
  };
  // biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
  spec: any;
  // biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
  status?: any;
}

describe("Workspace on Kubernetes", () => {
  let cluster: TestCluster;
  let operator: ReturnType<typeof startOperator>;
  const cli = new LoomProcess();
  const loom = (args: string[], input?: string) =>
    cli.cli(["--kubeconfig", cluster.kubeconfig, ...args], { input });
  const get = (args: string[]): Obj | undefined => {
    const r = cluster.kubectl(["get", ...args, "-n", NS, "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };
  const list = (kind: string, selector: string): Obj[] =>
    (
      JSON.parse(cluster.kubectl(["get", kind, "-n", NS, "-l", selector, "-o", "json"]).stdout) as {
        items: Obj[];
      }
    ).items;

  async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
    let last: T | undefined;
    for (let i = 0; i < 240; i++) {
      last = await probe();
      if (last !== undefined) return last;
      await sleep(500);
    }
    throw new Error(`timed out waiting for ${what}\n${operator.log().slice(-3000)}`);
  }

  /** The Workspace as Loom's API returns it, once `pred` holds. */
  const workspace = (pred: (w: Obj) => boolean) =>
    until("the workspace", async () => {
      const r = await loom(["get", "ws", "lab", "-o", "json"]);
      const w = r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
      return w && pred(w) ? w : undefined;
    });

  const manifest = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: lab}
spec:
  ide: none
  command: [python3, -m, http.server, $PORT, --bind, $HOST]
  image: python:3.12-slim
  resources: {cpu: 500m, memory: 512Mi}
  home: {size: 2Gi}
`;

  let ws: Obj;
  let apiUrl = "";
  let originPort = 0;
  let adminToken = "";

  /** Loom's API on the operator, as a user (a token of the operator's own token store). */
  async function api(method: string, path: string, body?: unknown, token = adminToken) {
    const res = await fetch(`${apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
  }

  /** A request to the operator's user-content origin with any Host (as a browser resolving *.localhost sends). */
  function origin(path: string, host: string, cookie?: string) {
    return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((ok, fail) => {
      const req = request(
        { host: "127.0.0.1", port: originPort, path, headers: { host, ...(cookie ? { cookie } : {}) } },
        (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () => ok({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on("error", fail);
      req.end();
    });
  }

  beforeAll(async () => {
    const own = operatorCluster("workspace", { crds: ["workspaces.loom.dev"] });
    cluster = own.cluster;
    const dataDir = mkdtempSync(join(tmpdir(), "loom-operator-ws-"));
    // With a data dir the operator serves the API and the user-content origin (issue 19).
    operator = startOperator(own.operatorKubeconfig, ["--data-dir", dataDir, "--port", "0"]);
    await operator.ready;
    apiUrl = /API and MLflow tracking at (\S+)/.exec(operator.stdout())?.[1] ?? "";
    originPort = Number(/ws\.localhost:(\d+)/.exec(operator.stdout())?.[1] ?? 0);
    expect(originPort, operator.stdout()).toBeGreaterThan(0);
    adminToken = readFileSync(/admin token in (\S+)\)/.exec(operator.stdout())![1]!, "utf8").trim();
    await until("namespace loom-default", () =>
      cluster.kubectl(["get", "ns", NS]).code === 0 ? true : undefined,
    );
    // A workspace left by an earlier run of this file on the same cluster goes first.
    await loom(["delete", "ws", "lab", "--timeout", "60"]);
    await until("the old workspace's claim to go", () => (get(["pvc", "lab-home"]) ? undefined : true));
    const applied = await loom(["apply", "-f", "-"], manifest);
    expect(applied.stderr).toBe("");
    expect(applied.stdout).toContain("workspace.loom.dev/lab created");
    ws = await workspace((w) => w.status?.phase === "Running");
  }, 300_000);

  afterAll(async () => {
    await loom(["delete", "ws", "--all", "--timeout", "60"]).catch(() => undefined);
    await operator?.stop();
    await cli.stop();
  });

  const deployment = () => get(["deployment", ws.status.revision]);
  const pods = () =>
    list("pods", `loom.dev/workload-uid=${ws.metadata.uid}`).filter((p) => !p.metadata.deletionTimestamp);

  it("runs as a Deployment of one, owned by the Workspace, whose pod Pod Security 'restricted' admits", async () => {
    const ns = JSON.parse(cluster.kubectl(["get", "ns", NS, "-o", "json"]).stdout) as Obj;
    expect(ns.metadata.labels).toMatchObject({
      "pod-security.kubernetes.io/enforce": "restricted",
      "pod-security.kubernetes.io/enforce-version": "latest",
    });
    // The namespace does enforce it: a pod that is not restricted is refused by the API server.
    const rogue = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "rogue", namespace: NS },
      spec: { containers: [{ name: "c", image: "python:3.12-slim", securityContext: { privileged: true } }] },
    };
    const refused = cluster.kubectl(["create", "--dry-run=server", "-f", "-"], {
      input: JSON.stringify(rogue),
    });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/violates PodSecurity "restricted:latest"/);

    const d = deployment();
    expect(d, operator.log().slice(-2000)).toBeDefined();
    expect(d!.spec.replicas).toBe(1);
    expect(d!.metadata.ownerReferences).toEqual([
      expect.objectContaining({ kind: "Workspace", name: "lab", uid: ws.metadata.uid, controller: true }),
    ]);
    const [pod] = await until("the workspace's pod", () => {
      const p = pods();
      return p.length ? p : undefined;
    });
    expect(pods()).toHaveLength(1);
    // Its pod, as the API server admitted it: restricted in every field PSA checks.
    expect(pod!.spec.schedulerName).toBe("loom");
    expect(pod!.spec.automountServiceAccountToken).toBe(false);
    expect(pod!.spec.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    const c = pod!.spec.containers[0];
    expect(c.securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
      runAsNonRoot: true,
    });
    expect(c.securityContext.privileged).toBeUndefined();
    expect(c.image).toBe("python:3.12-slim");
    // The server listens where the Service and the gateway reach it: every address, port 8888.
    const env = Object.fromEntries(
      (c.env as { name: string; value: string }[]).map((e) => [e.name, e.value]),
    );
    expect(env).toMatchObject({
      PORT: "8888",
      HOST: "0.0.0.0",
      HOME: "/home/loom",
      LOOM_WORKLOAD_KIND: "Workspace",
    });
    expect(c.command.slice(-6)).toEqual(["python3", "-m", "http.server", "$PORT", "--bind", "$HOST"]);
    expect(c.readinessProbe.httpGet).toMatchObject({ path: "/", port: 8888 });
    expect(c.resources.requests).toMatchObject({ cpu: "500m" });
    // The home: the Workspace's claim, mounted as the working directory.
    expect(pod!.spec.volumes).toContainEqual({
      name: "home",
      persistentVolumeClaim: { claimName: "lab-home" },
    });
    expect(c.volumeMounts).toContainEqual(expect.objectContaining({ name: "home", mountPath: "/home/loom" }));
    expect(c.workingDir).toBe("/home/loom");
    expect(pod!.spec.securityContext.fsGroup).toBe(1000);
  });

  it("says what a user should see: Running once kwok reports the pod ready, on the node Loom bound it to", async () => {
    const pod = pods()[0]!;
    expect(pod.spec.nodeName).toMatch(/^kwok-node-/);
    expect(ws.status).toMatchObject({
      phase: "Running",
      node: pod.spec.nodeName,
      replica: { id: pod.metadata.name, ready: true, port: 8888 },
    });
    expect(ws.status.conditions).toContainEqual(
      expect.objectContaining({
        type: "Ready",
        status: "True",
        reason: "Ready",
        message: "the server answers",
      }),
    );
    // Its own origin, served by the operator.
    expect(ws.status.url).toBe(`http://lab--default.ws.localhost:${originPort}/`);
    const table = await loom(["get", "ws"]);
    expect(table.stdout).toMatch(/lab\s+Running\s+none/);
  });

  it("keeps its home in a PersistentVolumeClaim NAME-home owned by the Workspace", () => {
    const pvc = get(["pvc", "lab-home"]);
    expect(pvc).toBeDefined();
    expect(pvc!.metadata.ownerReferences).toEqual([
      expect.objectContaining({ kind: "Workspace", name: "lab", uid: ws.metadata.uid, controller: true }),
    ]);
    expect(pvc!.spec.accessModes).toEqual(["ReadWriteOnce"]);
    expect(pvc!.spec.resources.requests.storage).toBe("2Gi");
    expect(pvc!.metadata.labels).toMatchObject({ "loom.dev/workload-uid": ws.metadata.uid });
  });

  it("has a Service that selects its pod, and a NetworkPolicy under which only Loom's gateway pods reach it", () => {
    const pod = pods()[0]!;
    const svc = get(["service", ws.status.revision]);
    expect(svc).toBeDefined();
    expect(selects({ matchLabels: svc!.spec.selector }, pod.metadata.labels!)).toBe(true);
    expect(svc!.spec.ports).toEqual([expect.objectContaining({ port: 80, targetPort: 8888 })]);
    expect(svc!.metadata.ownerReferences?.[0]).toMatchObject({ kind: "Workspace", uid: ws.metadata.uid });
    // Every policy of the namespace that selects the pod, and whom their ingress admits. Policies
    // add up: one that selects the pod and admits anyone else would open it.
    const policies = (
      JSON.parse(cluster.kubectl(["get", "networkpolicy", "-n", NS, "-o", "json"]).stdout) as { items: Obj[] }
    ).items;
    const applying = policies.filter((p) => selects(p.spec.podSelector, pod.metadata.labels!));
    expect(applying.map((p) => p.metadata.name)).toEqual(["lab-ws-gateway-only"]);
    const policy = applying[0]!;
    expect(policy.spec.policyTypes).toEqual(["Ingress"]);
    expect(policy.metadata.ownerReferences?.[0]).toMatchObject({ kind: "Workspace", uid: ws.metadata.uid });
    const peers = (
      policy.spec.ingress as { from: { namespaceSelector: Selector; podSelector: Selector }[] }[]
    ).flatMap((r) => r.from);
    expect(peers).toHaveLength(1);
    expect(policy.spec.ingress[0].ports).toEqual([{ protocol: "TCP", port: 8888 }]);
    const admits = (nsName: string, labels: Record<string, string>) =>
      peers.some(
        (p) =>
          selects(p.namespaceSelector, { "kubernetes.io/metadata.name": nsName }) &&
          selects(p.podSelector, labels),
      );
    const name = "app.kubernetes.io/name";
    expect(admits("loom-system", { [name]: "loom-operator" })).toBe(true);
    expect(admits("loom-system", { [name]: "loom-gateway" })).toBe(true);
    // Not another pod of the project (a job's worker), nor anything else in loom-system, nor a
    // pod that calls itself the gateway in another namespace.
    expect(admits(NS, { [name]: "trainingjob", "loom.dev/project": "default" })).toBe(false);
    expect(admits(NS, { [name]: "loom-gateway" })).toBe(false);
    expect(admits("loom-system", { [name]: "something-else" })).toBe(false);
    expect(admits("kube-system", { [name]: "loom-operator" })).toBe(false);
  });

  describe("its origin, served by the operator (issue 19 on Kubernetes)", () => {
    const BASE = "/apis/loom.dev/v1alpha1";
    const host = (name: string) => `${name}--default.ws.localhost:${originPort}`;
    const tokenFor = async (name: string, role: string, project: string) => {
      const res = await api("POST", `${BASE}/tokens`, { name, role, project });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      return res.body.token as string;
    };
    const login = (token: string, name = "lab") =>
      api("POST", `${BASE}/projects/default/workspaces/${name}/login`, {}, token);
    /** A session cookie through the real ticket exchange. */
    const sessionFor = async (token: string, name = "lab") => {
      const link = await login(token, name);
      expect(link.status, JSON.stringify(link.body)).toBe(200);
      const url = new URL(link.body.url as string);
      const res = await origin(url.pathname + url.search, url.host);
      expect(res.status, res.body).toBe(302);
      return /loom_ws=([^;]+)/.exec(String(res.headers["set-cookie"]))![1]!;
    };
    let editor = "";

    beforeAll(async () => {
      editor = await tokenFor("ed", "editor", "default");
      const other = {
        apiVersion: "loom.dev/v1alpha1",
        kind: "Project",
        metadata: { name: "other" },
        spec: {},
      };
      expect([201, 409]).toContain((await api("POST", `${BASE}/projects`, other)).status);
      // A second workspace, for a session that must not open the first.
      const lab2 = {
        apiVersion: "loom.dev/v1alpha1",
        kind: "Workspace",
        metadata: { name: "lab2" },
        spec: { ide: "none", command: ["python3", "-m", "http.server", "$PORT"], image: "python:3.12-slim" },
      };
      expect([201, 409]).toContain((await api("POST", `${BASE}/projects/default/workspaces`, lab2)).status);
    }, 60_000);

    it("loom open ws/NAME against the operator's API prints a one-time link to the workspace's origin", async () => {
      const r = await cli.cli(["open", "ws/lab", "--no-browser"], {
        env: { LOOM_URL: apiUrl, LOOM_TOKEN: editor },
      });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toMatch(
        new RegExp(`^http://lab--default\\.ws\\.localhost:${originPort}/_loom/login\\?ticket=[\\w-]{20,}$`),
      );
    });

    it("the link sets a host-only HttpOnly cookie, and an authorized request reaches the proxy: kwok's pod has no process, so 502 says so", async () => {
      const link = await login(editor);
      const url = new URL(link.body.url as string);
      const res = await origin(url.pathname + url.search, url.host);
      expect(res.status).toBe(302);
      const cookie = String(res.headers["set-cookie"]);
      expect(cookie).toMatch(/^loom_ws=[^;]+; HttpOnly; SameSite=Lax; Path=\//);
      expect(cookie).not.toMatch(/Domain=/i);
      const sid = /loom_ws=([^;]+)/.exec(cookie)![1]!;
      // Past every check, to the workspace's Service (REVISION.loom-default.svc): a name only the
      // cluster's DNS resolves, and kwok runs no server behind it. What a user sees is the reason.
      const page = await origin("/", host("lab"), `loom_ws=${sid}`);
      expect(page.status, page.body).toBe(502);
      expect(page.body).toContain("Workspace lab does not answer");
      expect(page.body).toMatch(/ENOTFOUND|EAI_AGAIN/);
      expect(page.body).toContain("loom logs ws/lab -p default");
    });

    it("refuses no cookie, a forged one, and another workspace's session before anything is proxied", async () => {
      const none = await origin("/", host("lab"));
      expect(none.status).toBe(401);
      expect(none.body).toContain("loom open ws/lab -p default");
      expect((await origin("/", host("lab"), "loom_ws=forged-value")).status).toBe(401);
      const sid2 = await sessionFor(editor, "lab2");
      const moved = await origin("/", host("lab"), `loom_ws=${sid2}`);
      expect(moved.status).toBe(403);
      expect(moved.body).toContain("another workspace");
    });

    it("loom port-forward ws/NAME tunnels TCP through the API server's pods/portforward, byte-exact", async () => {
      // kwok forwards its fake pods' port 8888 to a real echo server here (a ClusterPortForward),
      // so the bytes go: client -> loom port-forward -> operator's API -> kube-apiserver ->
      // kwok's kubelet API (pods/portforward, WebSocket) -> the echo server, and back.
      const echo = createServer((sock) => sock.pipe(sock));
      await new Promise<void>((ok) => echo.listen(0, "127.0.0.1", ok));
      const echoPort = (echo.address() as AddressInfo).port;
      const rule = {
        apiVersion: "kwok.x-k8s.io/v1alpha1",
        kind: "ClusterPortForward",
        metadata: { name: "loom-test-echo" },
        spec: {
          selector: { matchNamespaces: [NS] },
          forwards: [{ ports: [8888], target: { address: "127.0.0.1", port: echoPort } }],
        },
      };
      const made = cluster.kubectl(["apply", "-f", "-"], { input: JSON.stringify(rule) });
      expect(made.code, made.stderr).toBe(0);
      const pf = spawn(process.execPath, [join(ROOT, "bin/loom.js"), "port-forward", "ws/lab", ":8888"], {
        env: { ...cli.env(), LOOM_URL: apiUrl, LOOM_TOKEN: editor },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      pf.stdout.on("data", (d: Buffer) => (out += d.toString()));
      pf.stderr.on("data", (d: Buffer) => (out += d.toString()));
      try {
        const local = Number(
          await until(
            "loom port-forward to listen",
            () => /Forwarding from 127\.0\.0\.1:(\d+)/.exec(out)?.[1],
          ),
        );
        const sent = randomBytes(4 << 20);
        const got = await new Promise<Buffer>((ok, fail) => {
          const sock = connect(local, "127.0.0.1");
          const chunks: Buffer[] = [];
          let n = 0;
          sock.on("data", (d: Buffer) => {
            chunks.push(d);
            n += d.length;
            if (n >= sent.length) {
              sock.destroy();
              ok(Buffer.concat(chunks));
            }
          });
          sock.on("error", fail);
          sock.on("close", () => ok(Buffer.concat(chunks)));
          sock.write(sent);
        });
        expect(got.length, out).toBe(sent.length);
        expect(got.equals(sent)).toBe(true);
      } finally {
        pf.kill("SIGTERM");
        echo.close();
        cluster.kubectl(["delete", "clusterportforward", "loom-test-echo"]);
      }
    }, 120_000);

    it("a port the workspace's pod listens on appears in status.ports (pods/exec) and is served at /proxy/P/ (pods/portforward), behind the same log-in", async () => {
      // kwok runs `cat /proc/net/tcp /proc/net/tcp6` (the operator's exec) on this machine (a
      // ClusterExec), so the pod "listens" where this machine does: on the server started here,
      // which a ClusterPortForward then stands in for the pod's port with.
      const file = `served from inside the workspace ${randomBytes(4).toString("hex")}`;
      const server = createHttpServer((req, res) => {
        res.writeHead(req.url === "/file.txt" ? 200 : 404, { "content-type": "text/plain" });
        res.end(req.url === "/file.txt" ? file : `no ${req.url}`);
      });
      await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
      const port = (server.address() as AddressInfo).port;
      const rules = [
        {
          apiVersion: "kwok.x-k8s.io/v1alpha1",
          kind: "ClusterExec",
          metadata: { name: "loom-test-exec" },
          spec: { selector: { matchNamespaces: [NS] }, execs: [{ local: {} }] },
        },
        {
          apiVersion: "kwok.x-k8s.io/v1alpha1",
          kind: "ClusterPortForward",
          metadata: { name: "loom-test-proxy" },
          spec: {
            selector: { matchNamespaces: [NS] },
            forwards: [{ ports: [port], target: { address: "127.0.0.1", port } }],
          },
        },
      ];
      for (const rule of rules) {
        const made = cluster.kubectl(["apply", "-f", "-"], { input: JSON.stringify(rule) });
        expect(made.code, made.stderr).toBe(0);
      }
      try {
        const listed = await workspace(
          (w) => (w.status?.ports as { port: number }[] | undefined)?.some((p) => p.port === port) === true,
        );
        const entry = (listed.status.ports as { port: number; url: string }[]).find((p) => p.port === port);
        expect(entry?.url).toBe(`http://lab--default.ws.localhost:${originPort}/proxy/${port}/`);
        // The IDE's own port is not a forwarded one.
        expect((listed.status.ports as { port: number }[]).map((p) => p.port)).not.toContain(8888);
        const sid = await sessionFor(editor);
        const page = await until("the page through /proxy/P/", async () => {
          const r = await origin(`/proxy/${port}/file.txt`, host("lab"), `loom_ws=${sid}`);
          return r.status === 200 ? r : undefined;
        });
        expect(page.body).toBe(file);
        // The fence, on /proxy/P/ too: no cookie, a forged one, another workspace's session.
        const none = await origin(`/proxy/${port}/file.txt`, host("lab"));
        expect(none.status).toBe(401);
        expect(none.body).not.toContain(file);
        expect((await origin(`/proxy/${port}/file.txt`, host("lab"), "loom_ws=forged")).status).toBe(401);
        const sid2 = await sessionFor(editor, "lab2");
        const moved = await origin(`/proxy/${port}/file.txt`, host("lab"), `loom_ws=${sid2}`);
        expect(moved.status).toBe(403);
        expect(moved.body).not.toContain(file);
        // A port nothing listens on is refused before anything is dialed.
        const closed = await origin("/proxy/1/file.txt", host("lab"), `loom_ws=${sid}`);
        expect(closed.status).toBe(404);
        expect(closed.body).toContain("does not listen on port 1");
      } finally {
        server.close();
        cluster.kubectl(["delete", "clusterexec", "loom-test-exec"]);
        cluster.kubectl(["delete", "clusterportforward", "loom-test-proxy"]);
      }
    }, 180_000);

    it("gives a viewer, another project's member, an API key and an unknown token no link", async () => {
      const viewer = await tokenFor("v", "viewer", "default");
      const stranger = await tokenFor("s", "editor", "other");
      const key = await api("POST", `${BASE}/projects/default/apikeys`, { name: "k" });
      expect(key.status, JSON.stringify(key.body)).toBe(201);
      for (const [who, token, why] of [
        ["viewer", viewer, /may read, not change/],
        ["other project", stranger, /reaches project other only/],
        ["API key", key.body.key as string, /inference gateway/],
      ] as const) {
        const res = await login(token);
        expect(res.status, who).toBe(403);
        expect(String(res.body.message), who).toMatch(why);
      }
      expect((await login("not-a-token")).status).toBe(401);
    });
  });

  it("stop: zero replicas and no pod, the claim stays; start: one replica on the same claim, Running again", async () => {
    const claim = get(["pvc", "lab-home"])!.metadata.uid;
    const stop = await loom(["stop", "ws/lab"]);
    expect(stop.code, stop.stderr).toBe(0);
    const stopped = await workspace((w) => w.status?.phase === "Stopped");
    expect(stopped.status.stoppedReason).toBe("User");
    expect(stopped.status.conditions).toContainEqual(
      expect.objectContaining({ type: "Ready", status: "False", reason: "Stopped" }),
    );
    expect(stopped.status.conditions.find((c: { type: string }) => c.type === "Ready").message).toContain(
      "the home is kept",
    );
    await until("the Deployment at zero", () => (deployment()?.spec.replicas === 0 ? true : undefined));
    await until("the pod to go", () => (pods().length === 0 ? true : undefined));
    expect(get(["pvc", "lab-home"])?.metadata.uid).toBe(claim);
    expect(get(["pvc", "lab-home"])?.metadata.deletionTimestamp).toBeUndefined();
    expect((await loom(["get", "ws", "lab"])).stdout).toMatch(/lab\s+Stopped/);

    const start = await loom(["start", "ws/lab"]);
    expect(start.code, start.stderr).toBe(0);
    const running = await workspace(
      (w) => w.status?.phase === "Running" && w.status?.stoppedReason === undefined,
    );
    expect(running.status.revision).toBe(ws.status.revision);
    expect(deployment()?.spec.replicas).toBe(1);
    const [pod] = pods();
    expect(pod!.spec.volumes).toContainEqual({
      name: "home",
      persistentVolumeClaim: { claimName: "lab-home" },
    });
    expect(get(["pvc", "lab-home"])?.metadata.uid).toBe(claim);
  }, 180_000);

  describe("spec.fromWorkspace: the job runs from a clone of the home's claim", () => {
    const job = (name: string, from: string) => `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ${name}}
spec:
  fromWorkspace: ${from}
  command: [python, train.py]
`;
    const wsWithClass = (name: string, storageClassName: string) => ({
      apiVersion: "loom.dev/v1alpha1",
      kind: "Workspace",
      metadata: { name },
      spec: {
        ide: "none",
        command: ["python3", "-m", "http.server", "$PORT"],
        image: "python:3.12-slim",
        env: { FROM_NOTEBOOK: "1" },
        home: { size: "3Gi", storageClassName },
      },
    });

    beforeAll(async () => {
      // A job left by an earlier run of this file on the same cluster goes first.
      await loom(["delete", "trainingjob", "from-nb", "--timeout", "60"]);
      // A CSI class (no driver runs in this cluster: the clone stays Pending, which is all a test
      // of the objects needs) and a class of static volumes, which cannot clone.
      for (const sc of [
        { name: "loom-csi", provisioner: "hostpath.csi.k8s.io" },
        { name: "static", provisioner: "kubernetes.io/no-provisioner" },
      ]) {
        const made = cluster.kubectl(["apply", "-f", "-"], {
          input: JSON.stringify({
            apiVersion: "storage.k8s.io/v1",
            kind: "StorageClass",
            metadata: { name: sc.name },
            provisioner: sc.provisioner,
            volumeBindingMode: "Immediate",
          }),
        });
        expect(made.code, made.stderr).toBe(0);
      }
      for (const [name, cls] of [
        ["nb", "loom-csi"],
        ["st", "static"],
      ] as const) {
        const res = await api(
          "POST",
          "/apis/loom.dev/v1alpha1/projects/default/workspaces",
          wsWithClass(name, cls),
        );
        expect([201, 409], JSON.stringify(res.body)).toContain(res.status);
      }
      await until("the homes' claims", () =>
        get(["pvc", "nb-home"]) && get(["pvc", "st-home"]) ? true : undefined,
      );
    }, 120_000);

    it("loom run --from ws/NAME: a claim cloned from NAME-home, owned by the job, mounted read-only as every worker's working dir, deleted with the job", async () => {
      // Through the operator's API: its ServiceAccount reads the class and makes the clone.
      const run = await cli.cli(
        ["run", "--from", "ws/nb", "--name", "from-nb", "--workers", "2", "--", "python", "train.py"],
        { env: { LOOM_URL: apiUrl, LOOM_TOKEN: adminToken } },
      );
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain("trainingjob.loom.dev/from-nb created");
      const tj = get(["trainingjob", "from-nb"])!;
      // The workspace's image and env, resolved at create.
      expect(tj.spec.image).toBe("python:3.12-slim");
      expect(tj.spec.env).toMatchObject({ FROM_NOTEBOOK: "1" });
      const clone = get(["pvc", `code-${tj.metadata.uid}`]);
      expect(clone, operator.log().slice(-2000)).toBeDefined();
      expect(clone!.spec).toMatchObject({
        dataSource: { kind: "PersistentVolumeClaim", name: "nb-home" },
        storageClassName: "loom-csi",
        accessModes: ["ReadOnlyMany"],
        resources: { requests: { storage: "3Gi" } },
      });
      expect(clone!.metadata.ownerReferences).toEqual([
        expect.objectContaining({ kind: "TrainingJob", name: "from-nb", uid: tj.metadata.uid }),
      ]);
      // Every worker mounts it read-only where the home was, its working dir.
      const workers = await until("the job's worker pods", () => {
        const p = list("pods", `loom.dev/workload-uid=${tj.metadata.uid}`);
        return p.length === 2 ? p : undefined;
      });
      for (const pod of workers) {
        expect(pod.spec.volumes).toContainEqual({
          name: "code",
          persistentVolumeClaim: { claimName: `code-${tj.metadata.uid}`, readOnly: true },
        });
        const c = pod.spec.containers[0];
        expect(c.volumeMounts).toContainEqual(
          expect.objectContaining({ name: "code", mountPath: "/loom/code", readOnly: true }),
        );
        expect(c.workingDir).toBe("/loom/code");
      }
      // Deleted with the job (the garbage collector follows the owner reference).
      expect(cluster.kubectl(["delete", "trainingjob", "from-nb", "-n", NS, "--timeout=60s"]).code).toBe(0);
      await until("the clone to go with the job", () =>
        get(["pvc", `code-${tj.metadata.uid}`]) ? undefined : true,
      );
      // The workspace's own home is untouched.
      expect(get(["pvc", "nb-home"])?.metadata.deletionTimestamp).toBeUndefined();
    }, 180_000);

    it("refuses, saying what to do, a home whose storage class cannot clone, one with no class, and an identity that may not create the clone", async () => {
      // Through the CLI's own API on the kubeconfig's identity (as the other tests' loom calls).
      const st = await loom(["run", "--from", "ws/st", "--", "python", "train.py"]);
      expect(st.code).not.toBe(0);
      expect(st.stderr).toContain("storage class static");
      expect(st.stderr).toContain("cannot clone a claim: only CSI drivers clone volumes");
      expect(st.stderr).toContain("spec.home.storageClassName");
      // lab's home has no class (the cluster has no default one).
      const applied = await loom(["apply", "-f", "-"], job("from-lab", "lab"));
      expect(applied.code).not.toBe(0);
      expect(applied.stderr).toContain("which has no storage class");
      expect(applied.stderr).toContain("build an image with the code");
      // A project editor's own kubeconfig (the CLI's API on their identity): their Role does not
      // create claims, so the job is refused before it exists, saying where to submit it.
      const bound = cluster.kubectl([
        "create",
        "rolebinding",
        "ws-test-editor",
        "-n",
        NS,
        "--role=loom-editor",
        "--user=wsk-editor",
      ]);
      expect(bound.code, bound.stderr).toBe(0);
      try {
        const member = cluster.userKubeconfig("wsk-editor");
        const r = await cli.cli([
          "--kubeconfig",
          member,
          "run",
          "--from",
          "ws/nb",
          "--",
          "python",
          "train.py",
        ]);
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain("this Kubernetes identity may not create one in loom-default");
        expect(r.stderr).toContain("LOOM_URL");
      } finally {
        cluster.kubectl(["delete", "rolebinding", "ws-test-editor", "-n", NS]);
      }
      expect(cluster.kubectl(["get", "trainingjobs", "-n", NS, "-o", "name"]).stdout).toBe("");
      expect(list("pvc", "loom.dev/from-workspace")).toEqual([]);
    });

    it("a job written to the API server directly (past Loom's API, so no clone) never runs, and says why", async () => {
      const direct = cluster.kubectl(["apply", "-f", "-"], {
        input: job("from-direct", "nb").replace(
          "metadata: {name: from-direct}",
          `metadata: {name: from-direct, namespace: ${NS}}`,
        ),
      });
      expect(direct.code, direct.stderr).toBe(0);
      const refused = await until("the job's refusal", () => {
        const j = get(["trainingjob", "from-direct"]);
        return (
          j?.status?.conditions as { type: string; reason: string; message: string }[] | undefined
        )?.find((x) => x.reason === "FailedCreate");
      });
      expect(refused.message).toContain("does not exist: Loom's API makes it when the job is created");
      expect(list("pods", "loom.dev/workload=from-direct")).toEqual([]);
      expect(cluster.kubectl(["delete", "trainingjob", "from-direct", "-n", NS, "--timeout=60s"]).code).toBe(
        0,
      );
    }, 120_000);

    afterAll(async () => {
      for (const name of ["nb", "st"])
        await loom(["delete", "ws", name, "--timeout", "60"]).catch(() => undefined);
    });
  });

  it("delete: the Workspace's Deployment, Service, policy and claim go with it", async () => {
    const del = await loom(["delete", "ws", "lab", "--timeout", "60"]);
    expect(del.code, del.stderr).toBe(0);
    await until("the claim to go", () => (get(["pvc", "lab-home"]) ? undefined : true));
    await until("the Deployment to go", () => (deployment() ? undefined : true));
    expect(get(["networkpolicy", "lab-ws-gateway-only"])).toBeUndefined();
    expect(get(["service", ws.status.revision])).toBeUndefined();
    expect(operator.log()).not.toMatch(/forbidden/i);
  }, 120_000);
});

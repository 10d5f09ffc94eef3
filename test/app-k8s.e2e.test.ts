import { mkdtempSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { operatorCluster, type Selector, selects, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * Issue 20 on the real Kubernetes API server: an App applied through Loom becomes a Deployment
 * (owned by the App) whose pods Pod Security "restricted" admits, a Service selecting them and
 * a NetworkPolicy under which only Loom's gateway pods reach them. The operator serves the
 * apps' gateway (--data-dir), so the App scales to zero when idle and a request on its origin
 * brings a replica back. Pods run on kwok nodes: nothing really runs in them, so the test reads
 * what the API server holds and what the App's status says, not the app's answers. The operator
 * runs under deploy/operator.yaml's ServiceAccount, on a cluster of this file's own.
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

describe("App on Kubernetes", () => {
  let cluster: TestCluster;
  let operator: ReturnType<typeof startOperator>;
  let originPort = 0;
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
    for (let i = 0; i < 240; i++) {
      const last = await probe();
      if (last !== undefined) return last;
      await sleep(500);
    }
    throw new Error(`timed out waiting for ${what}\n${operator.log().slice(-3000)}`);
  }

  const app = (pred: (a: Obj) => boolean) =>
    until("the app", async () => {
      const r = await loom(["get", "app", "web", "-o", "json"]);
      const a = r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
      return a && pred(a) ? a : undefined;
    });

  const manifest = `apiVersion: loom.dev/v1alpha1
kind: App
metadata: {name: web}
spec:
  framework: custom
  command: [python3, -m, http.server, $PORT, --bind, $HOST]
  image: python:3.12-slim
  access: public
  resources: {cpu: 250m, memory: 256Mi}
  replicas: {min: 1, max: 2}
  autoscaling: {scaleToZeroAfter: 3s, scaleDownDelay: 3s}
`;

  let web: Obj;

  beforeAll(async () => {
    const own = operatorCluster("app", { crds: ["apps.loom.dev"] });
    cluster = own.cluster;
    const dataDir = mkdtempSync(join(tmpdir(), "loom-operator-app-"));
    operator = startOperator(own.operatorKubeconfig, ["--data-dir", dataDir, "--port", "0"]);
    await operator.ready;
    originPort = Number(/app\.localhost:(\d+)/.exec(operator.stdout())?.[1] ?? 0);
    expect(originPort, operator.stdout()).toBeGreaterThan(0);
    await until("namespace loom-default", () =>
      cluster.kubectl(["get", "ns", NS]).code === 0 ? true : undefined,
    );
    // An app left by an earlier run of this file on the same cluster goes first.
    await loom(["delete", "app", "web", "--timeout", "60"]);
    const applied = await loom(["apply", "-f", "-"], manifest);
    expect(applied.stderr).toBe("");
    expect(applied.stdout).toContain("app.loom.dev/web created");
    web = await app((a) => a.status?.phase === "Ready");
  }, 300_000);

  afterAll(async () => {
    await loom(["delete", "app", "--all", "--timeout", "60"]).catch(() => undefined);
    await operator?.stop();
    await cli.stop();
  });

  const revision = () => web.status.revisions.at(-1).name as string;
  const deployment = () => get(["deployment", revision()]);
  const pods = () =>
    list("pods", `loom.dev/workload-uid=${web.metadata.uid}`).filter((p) => !p.metadata.deletionTimestamp);

  it("runs as a Deployment owned by the App, whose pods Pod Security 'restricted' admits", async () => {
    const d = deployment();
    expect(d, operator.log().slice(-2000)).toBeDefined();
    expect(d!.spec.replicas).toBe(1);
    expect(d!.metadata.ownerReferences).toEqual([
      expect.objectContaining({ kind: "App", name: "web", uid: web.metadata.uid, controller: true }),
    ]);
    const [pod] = await until("the app's pod", () => {
      const p = pods();
      return p.length ? p : undefined;
    });
    expect(pod!.metadata.labels).toMatchObject({
      "loom.dev/workload-kind": "App",
      "loom.dev/workload": "web",
    });
    expect(pod!.spec.schedulerName).toBe("loom");
    expect(pod!.spec.nodeName).toMatch(/^kwok-node-/);
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
    expect(c.image).toBe("python:3.12-slim");
    // The framework's flags: its port and an address the Service reaches (every address).
    const env = Object.fromEntries(
      (c.env as { name: string; value: string }[]).map((e) => [e.name, e.value]),
    );
    expect(env).toMatchObject({ PORT: "8080", HOST: "0.0.0.0", LOOM_WORKLOAD_KIND: "App" });
    expect(c.command.slice(-6)).toEqual(["python3", "-m", "http.server", "$PORT", "--bind", "$HOST"]);
    expect(c.readinessProbe.httpGet).toMatchObject({ path: "/", port: 8080 });
    expect(c.resources.requests).toMatchObject({ cpu: "250m" });
    // A pod that is not restricted is refused in this namespace: the label is enforced.
    const rogue = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "rogue", namespace: NS },
      spec: { containers: [{ name: "c", image: "python:3.12-slim", securityContext: { privileged: true } }] },
    };
    const refused = cluster.kubectl(["create", "--dry-run=server", "-f", "-"], {
      input: JSON.stringify(rogue),
    });
    expect(refused.stderr).toMatch(/violates PodSecurity "restricted:latest"/);
  });

  it("has a URL on the app origin and says it is served, with a gateway to wake it", () => {
    expect(web.status.url).toBe(`http://web--default.app.localhost:${originPort}/`);
    expect(
      (web.status.conditions as { type: string }[]).find((c) => c.type === "ScaleToZero"),
    ).toBeUndefined();
  });

  it("has a Service that selects its pods, and a NetworkPolicy under which only Loom's gateway pods reach them", () => {
    const pod = pods()[0]!;
    const svc = get(["service", revision()]);
    expect(svc).toBeDefined();
    expect(selects({ matchLabels: svc!.spec.selector }, pod.metadata.labels!)).toBe(true);
    expect(svc!.spec.ports).toEqual([expect.objectContaining({ port: 80, targetPort: 8080 })]);
    expect(svc!.metadata.ownerReferences?.[0]).toMatchObject({ kind: "App", uid: web.metadata.uid });
    // Policies add up: every one that selects the pod, and whom their ingress admits.
    const policies = (
      JSON.parse(cluster.kubectl(["get", "networkpolicy", "-n", NS, "-o", "json"]).stdout) as { items: Obj[] }
    ).items;
    const applying = policies.filter((p) => selects(p.spec.podSelector, pod.metadata.labels!));
    expect(applying.map((p) => p.metadata.name)).toEqual(["web-app-gateway-only"]);
    const policy = applying[0]!;
    expect(policy.spec.policyTypes).toEqual(["Ingress"]);
    expect(policy.metadata.ownerReferences?.[0]).toMatchObject({ kind: "App", uid: web.metadata.uid });
    expect(policy.spec.ingress[0].ports).toEqual([{ protocol: "TCP", port: 8080 }]);
    const peers = (
      policy.spec.ingress as { from: { namespaceSelector: Selector; podSelector: Selector }[] }[]
    ).flatMap((r) => r.from);
    const admits = (nsName: string, labels: Record<string, string>) =>
      peers.some(
        (p) =>
          selects(p.namespaceSelector, { "kubernetes.io/metadata.name": nsName }) &&
          selects(p.podSelector, labels),
      );
    const name = "app.kubernetes.io/name";
    expect(admits("loom-system", { [name]: "loom-operator" })).toBe(true);
    expect(admits("loom-system", { [name]: "loom-gateway" })).toBe(true);
    expect(admits(NS, { [name]: "trainingjob", "loom.dev/project": "default" })).toBe(false);
    expect(admits(NS, { [name]: "loom-gateway" })).toBe(false);
    expect(admits("loom-system", { [name]: "something-else" })).toBe(false);
  });

  it("scales to zero when idle (replicas.min 0), and a request on its origin brings a replica back", async () => {
    // Scaling is no new revision: the same Deployment goes to zero.
    const rev = revision();
    const applied = await loom(["apply", "-f", "-"], manifest.replace("min: 1", "min: 0"));
    expect(applied.code, applied.stderr).toBe(0);
    const idle = await app((a) => a.status?.phase === "ScaledToZero");
    expect(idle.status.desired).toBe(0);
    expect(idle.status.revisions.at(-1).name).toBe(rev);
    await until("the Deployment at zero", () => (deployment()?.spec.replicas === 0 ? true : undefined));
    await until("the pods to go", () => (pods().length === 0 ? true : undefined));
    // A browser's request: held by the apps' gateway while a replica starts. kwok's pods answer
    // nothing, so the test looks at what the request caused, then gives up on its answer.
    const req = request({
      host: "127.0.0.1",
      port: originPort,
      path: "/",
      headers: { host: `web--default.app.localhost:${originPort}` },
    });
    req.on("error", () => undefined);
    req.end();
    try {
      await until("the Deployment back at one", () =>
        (deployment()?.spec.replicas ?? 0) >= 1 ? true : undefined,
      );
      // The App's own record of why: its gateway's activator asked for the replica.
      await app((a) =>
        ((a.status?.scaleEvents ?? []) as { to: number; reason: string }[]).some(
          (e) => e.to >= 1 && /autoscaler: scale from zero: a request is waiting/.test(e.reason),
        ),
      );
    } finally {
      req.destroy();
    }
  }, 120_000);

  it("delete: the App's Deployment, Service and policy go with it, and the operator was never refused", async () => {
    const rev = revision();
    const del = await loom(["delete", "app", "web", "--timeout", "60"]);
    expect(del.code, del.stderr).toBe(0);
    await until("the Deployment to go", () => (get(["deployment", rev]) ? undefined : true));
    await until("the policy to go", () =>
      get(["networkpolicy", "web-app-gateway-only"]) ? undefined : true,
    );
    await until("the Service to go", () => (get(["service", rev]) ? undefined : true));
    expect(operator.log()).not.toMatch(/forbidden/i);
  }, 120_000);
});

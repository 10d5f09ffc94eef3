import { execFileSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, LoomProcess } from "./helpers.js";
import { operatorCluster, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * Below the API server for once: a real node (`real-0`: containerd, runc, the bridge CNI, kubelet
 * and kube-proxy, test/k8s/node.sh) beside a kwok node. Pods run real processes on this machine's
 * kernel, their logs come from the kubelet, they reach each other over the bridge and through a
 * Service, and a Loom TrainingJob's pod runs there and ends with its real exit code.
 * Images are imported into containerd (loom.local/busybox:1), never pulled.
 */
process.env.LOOM_K8S_REAL_NODE = "1";
const NS = "real";
const IMAGE = "loom.local/busybox:1";
const ON_REAL_NODE = {
  nodeSelector: { "loom.dev/real-node": "true" },
  tolerations: [{ key: "loom.dev/real-node", operator: "Equal", value: "true", effect: "NoSchedule" }],
};

interface Pod {
  spec: { nodeName?: string };
  status: {
    phase?: string;
    podIP?: string;
    containerStatuses?: { state?: { terminated?: { exitCode: number } } }[];
  };
}

describe("a real node in the test cluster", () => {
  let cluster: TestCluster;
  let operatorKubeconfig: string;
  let operator: ReturnType<typeof startOperator> | undefined;
  const cli = new LoomProcess();
  const loom = (args: string[], input?: string) =>
    cli.cli(["--kubeconfig", cluster.kubeconfig, ...args], { input });

  async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
    for (let i = 0; i < 360; i++) {
      const v = await probe();
      if (v !== undefined) return v;
      await sleep(500);
    }
    throw new Error(`timed out waiting for ${what}\n${operator?.log().slice(-3000) ?? ""}`);
  }

  const kubectl = (args: string[], input?: string) => {
    const r = cluster.kubectl(args, input === undefined ? {} : { input });
    expect(r.code, `kubectl ${args.join(" ")}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const getPod = (name: string, ns = NS) =>
    JSON.parse(kubectl(["get", "pod", name, "-n", ns, "-o", "json"])) as Pod;
  const finished = (name: string, ns = NS) =>
    until(`pod ${ns}/${name} to finish`, () => {
      const p = getPod(name, ns);
      return p.status.phase === "Succeeded" || p.status.phase === "Failed" ? p : undefined;
    });

  /** A pod of the busybox image on real-0, as uid 1000 under the restricted Pod Security profile. */
  const pod = (name: string, script: string, labels: Record<string, string> = {}) => ({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NS, labels },
    spec: {
      ...ON_REAL_NODE,
      restartPolicy: "Never",
      terminationGracePeriodSeconds: 2,
      securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: "RuntimeDefault" } },
      containers: [
        {
          name: "main",
          image: IMAGE,
          imagePullPolicy: "Never",
          command: ["sh", "-c", script],
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
        },
      ],
    },
  });

  beforeAll(async () => {
    ({ cluster, operatorKubeconfig } = operatorCluster("realnode", { nodes: 1 }));
    // A reused cluster keeps an earlier run's pods: start from an empty namespace.
    kubectl(["delete", "namespace", NS, "--ignore-not-found", "--timeout=120s"]);
    kubectl(["create", "namespace", NS]);
    kubectl(["label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"]);
  }, 3_600_000);

  afterAll(async () => {
    if (cluster) {
      await loom(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
      cluster.kubectl(["delete", "namespace", NS, "--wait=false"]);
    }
    await operator?.stop();
    await cli.stop();
  });

  it("registers real-0 Ready with its label and taint, beside the kwok node", () => {
    const node = JSON.parse(kubectl(["get", "node", "real-0", "-o", "json"])) as {
      metadata: { labels: Record<string, string> };
      spec: { taints?: { key: string; effect: string }[] };
      status: { nodeInfo: { containerRuntimeVersion: string; kubeletVersion: string } };
    };
    expect(node.metadata.labels["loom.dev/real-node"]).toBe("true");
    expect(node.spec.taints).toContainEqual(
      expect.objectContaining({ key: "loom.dev/real-node", effect: "NoSchedule" }),
    );
    expect(node.status.nodeInfo.containerRuntimeVersion).toMatch(/^containerd:\/\/2\./);
    expect(node.status.nodeInfo.kubeletVersion).toBe("v1.37.2");
    expect(kubectl(["get", "nodes", "-l", "type=kwok", "-o", "name"])).toContain("node/kwok-node-0");
  });

  it("runs a pod's process on this machine's kernel; its log comes through kubectl logs, its exit code through the status", async () => {
    const kernel = execFileSync("uname", ["-r"], { encoding: "utf8" }).trim();
    kubectl(["create", "-f", "-"], JSON.stringify(pod("hello", 'echo "hello from $(uname -r) as $(id -u)"')));
    kubectl(["create", "-f", "-"], JSON.stringify(pod("fails", "echo about to fail; exit 3")));
    const hello = await finished("hello");
    expect(hello.spec.nodeName).toBe("real-0");
    expect(hello.status.phase).toBe("Succeeded");
    expect(kubectl(["logs", "-n", NS, "hello"]).trim()).toBe(`hello from ${kernel} as 1000`);
    const fails = await finished("fails");
    expect(fails.status.phase).toBe("Failed");
    expect(fails.status.containerStatuses?.[0]?.state?.terminated?.exitCode).toBe(3);
    expect(kubectl(["logs", "-n", NS, "fails"])).toContain("about to fail");
  }, 300_000);

  it("carries a request from pod to pod over the bridge CNI, and through a Service's ClusterIP (kube-proxy)", async () => {
    const token = `token-${Date.now()}`;
    kubectl(
      ["create", "-f", "-"],
      JSON.stringify(
        pod(
          "server",
          `mkdir -p /tmp/www && echo ${token} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www`,
          { app: "server" },
        ),
      ),
    );
    const ip = await until("the server pod's IP", () => {
      const p = getPod("server");
      return p.status.phase === "Running" && p.status.podIP ? p.status.podIP : undefined;
    });
    expect(ip).toMatch(/^10\.200\.0\./);
    kubectl([
      "expose",
      "pod",
      "server",
      "-n",
      NS,
      "--port",
      "80",
      "--target-port",
      "8080",
      "--name",
      "server",
    ]);
    const clusterIP = kubectl(["get", "svc", "server", "-n", NS, "-o", "jsonpath={.spec.clusterIP}"]).trim();
    // The client retries: kube-proxy writes the Service's rules when it sees its endpoints.
    // nc, not wget: the static busybox's wget crashes looking up the "http" service without NSS.
    const fetch = (host: string, port: number) =>
      `for i in $(seq 60); do r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${host} ${port}) && [ -n "$r" ] && echo "$r" | tail -n 1 && exit 0; sleep 1; done; echo "no answer from ${host}:${port}"; exit 1`;
    kubectl(["create", "-f", "-"], JSON.stringify(pod("client", fetch(ip, 8080))));
    kubectl(["create", "-f", "-"], JSON.stringify(pod("via-service", fetch(clusterIP, 80))));
    const client = await finished("client");
    expect(kubectl(["logs", "-n", NS, "client"]).trim()).toBe(token);
    expect(client.status.phase).toBe("Succeeded");
    expect(client.status.podIP).not.toBe(ip);
    const viaService = await finished("via-service");
    expect(kubectl(["logs", "-n", NS, "via-service"]).trim()).toBe(token);
    expect(viaService.status.phase).toBe("Succeeded");
  }, 300_000);

  it("enforces a NetworkPolicy (kube-router): the server answers only pods the policy admits", async () => {
    const ip = getPod("server").status.podIP!;
    const token = kubectl(["exec", "-n", NS, "server", "--", "cat", "/tmp/www/index.html"]).trim();
    kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        metadata: { name: "server-friends", namespace: NS },
        spec: {
          podSelector: { matchLabels: { app: "server" } },
          policyTypes: ["Ingress"],
          ingress: [
            { from: [{ podSelector: { matchLabels: { role: "friend" } } }], ports: [{ port: 8080 }] },
          ],
        },
      }),
    );
    // The enforcer applies the policy when it sees it: the stranger tries until it is refused.
    const request = `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} 8080 2>/dev/null`;
    kubectl(
      ["create", "-f", "-"],
      JSON.stringify(
        pod(
          "stranger",
          `for i in $(seq 60); do r=$(${request}); [ -z "$r" ] && echo refused && exit 0; sleep 1; done; echo "still answered"; exit 1`,
        ),
      ),
    );
    const stranger = await finished("stranger");
    expect(kubectl(["logs", "-n", NS, "stranger"]).trim()).toBe("refused");
    expect(stranger.status.phase).toBe("Succeeded");
    // Then a pod the policy admits still gets its answer.
    kubectl(
      ["create", "-f", "-"],
      JSON.stringify(
        pod(
          "friend",
          `for i in $(seq 30); do r=$(${request}) && [ -n "$r" ] && echo "$r" | tail -n 1 && exit 0; sleep 1; done; exit 1`,
          { role: "friend" },
        ),
      ),
    );
    const friend = await finished("friend");
    expect(kubectl(["logs", "-n", NS, "friend"]).trim()).toBe(token);
    expect(friend.status.phase).toBe("Succeeded");
  }, 300_000);

  it("runs a Loom TrainingJob's pod on real-0: Succeeded on exit 0, Failed with the worker's real exit code", async () => {
    operator = startOperator(operatorKubeconfig);
    await operator.ready;
    await until("namespace loom-default", () =>
      cluster.kubectl(["get", "ns", "loom-default"]).code === 0 ? true : undefined,
    );
    // A reused cluster keeps an earlier run's jobs.
    const trainingjobs = ["trainingjobs.loom.dev", "trains", "crashes", "-n", "loom-default"];
    kubectl(["delete", ...trainingjobs, "--ignore-not-found", "--timeout=60s"]);
    const job = (name: string, script: string) => `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ${name}}
spec:
  image: ${IMAGE}
  command: [sh, -c, ${JSON.stringify(script)}]
  nodePool: real
  resources: {cpu: 100m, memory: 64Mi}
`;
    const applied = await loom(
      ["apply", "-f", "-"],
      `${job("trains", "echo step 1; echo step 2; echo trained on $(uname -n)")}---\n${job("crashes", "echo diverged; exit 7")}`,
    );
    expect(applied.code, applied.stderr).toBe(0);
    const waitJob = (name: string) =>
      until(`TrainingJob ${name} to finish`, async () => {
        const r = await loom(["get", "tj", name, "-o", "json"]);
        if (r.code !== 0) return undefined;
        const j = JSON.parse(r.stdout) as Job;
        return j.status?.phase === "Succeeded" || j.status?.phase === "Failed" ? j : undefined;
      });
    const trains = await waitJob("trains");
    expect(trains.status?.phase, JSON.stringify(trains.status)).toBe("Succeeded");
    const pods = JSON.parse(
      kubectl(["get", "pods", "-n", "loom-default", "-l", "loom.dev/workload=trains", "-o", "json"]),
    ) as { items: (Pod & { metadata: { name: string } })[] };
    expect(pods.items.map((p) => p.spec.nodeName)).toEqual(["real-0"]);
    expect(kubectl(["logs", "-n", "loom-default", pods.items[0]!.metadata.name])).toContain("step 2");
    const crashes = await waitJob("crashes");
    expect(crashes.status?.phase, JSON.stringify(crashes.status)).toBe("Failed");
    expect(JSON.stringify(crashes.status)).toContain('"exitCode":7');
  }, 300_000);
});

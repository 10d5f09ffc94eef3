import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, LoomProcess } from "./helpers.js";
import { operatorCluster, ownState, startOperator, type TestCluster } from "./k8s/cluster.js";
import { importPythonImage, PYTHON_IMAGE } from "./k8s/python-image.js";
import { podReady, realNodeWaits } from "./k8s/realnode.js";

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
const ROOT = join(import.meta.dirname, "..");

const ON_REAL_NODE = {
  nodeSelector: { "loom.dev/real-node": "true" },
  tolerations: [{ key: "loom.dev/real-node", operator: "Equal", value: "true", effect: "NoSchedule" }],
};

describe("a real node in the test cluster", () => {
  let cluster: TestCluster;
  let operatorKubeconfig: string;
  let operator: ReturnType<typeof startOperator> | undefined;
  /** Whether the operator runs with --data-dir (the API, tracking and serving). */
  let serving = false;
  const cli = new LoomProcess();
  const loom = (args: string[], input?: string) =>
    cli.cli(["--kubeconfig", cluster.kubeconfig, ...args], { input });

  const { until, kubectl, getPod, pods, finished } = realNodeWaits({
    cluster: () => cluster,
    diagnose: () => operator?.log().slice(-3000) ?? "",
    namespace: NS,
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
    // The machine has one real node: it goes back for the Helm suite's cluster after this one
    // (test/realnode.e2e.test.ts), unless kept for a warm rerun.
    if (cluster && process.env.LOOM_TEST_KEEP_CLUSTER !== "1")
      spawnSync("bash", [join(ROOT, "test/k8s/down.sh")], {
        env: { ...process.env, LOOM_K8S_STATE: ownState("realnode") },
        stdio: "ignore",
      });
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

  it("resolves names through cluster DNS (CoreDNS): a Service, a headless Service's pods by hostname, and the API's own Service", async () => {
    // Two pods named under a headless Service, as Loom's gang workers are (hostname + subdomain).
    for (const host of ["peer-0", "peer-1"]) {
      const p = pod(host, "exec sleep 600", { app: "peers" });
      kubectl(
        ["create", "-f", "-"],
        JSON.stringify({ ...p, spec: { ...p.spec, hostname: host, subdomain: "peers" } }),
      );
    }
    kubectl(
      ["create", "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "peers", namespace: NS },
        spec: { clusterIP: "None", selector: { app: "peers" }, ports: [{ port: 29500 }] },
      }),
    );
    const ips = await until("both peers' IPs", () => {
      const got = ["peer-0", "peer-1"].map((n) => getPod(n).status);
      return got.every((s) => s.phase === "Running" && s.podIP) ? got.map((s) => s.podIP!) : undefined;
    });
    const clusterIP = kubectl(["get", "svc", "server", "-n", NS, "-o", "jsonpath={.spec.clusterIP}"]).trim();
    // CoreDNS answers once it has seen the EndpointSlices: the resolver retries until then.
    // busybox's nslookup applies the search path only to names without a dot (glibc's resolver,
    // which Python uses, follows ndots:5): dotted names are given in full here.
    const resolve = (name: string) =>
      `for i in $(seq 60); do a=$(nslookup ${name} 2>/dev/null | sed -n '/^Name:/,$ s/^Address[^:]*: *\\([0-9.]*\\).*/\\1/p' | head -1); [ -n "$a" ] && echo "${name} $a" && break; sleep 1; done`;
    kubectl(
      ["create", "-f", "-"],
      JSON.stringify(
        pod(
          "resolver",
          [
            resolve("server"),
            resolve("server.real.svc.cluster.local"),
            resolve("peer-0.peers.real.svc.cluster.local"),
            resolve("peer-1.peers.real.svc.cluster.local"),
            resolve("kubernetes.default.svc.cluster.local"),
            "grep -E '^(nameserver|search)' /etc/resolv.conf",
          ].join("; "),
        ),
      ),
    );
    const resolver = await finished("resolver");
    const out = kubectl(["logs", "-n", NS, "resolver"]);
    expect(resolver.status.phase, out).toBe("Succeeded");
    expect(out).toContain(`server ${clusterIP}`);
    expect(out).toContain(`server.real.svc.cluster.local ${clusterIP}`);
    expect(out).toContain(`peer-0.peers.real.svc.cluster.local ${ips[0]}`);
    expect(out).toContain(`peer-1.peers.real.svc.cluster.local ${ips[1]}`);
    expect(out).toMatch(/kubernetes\.default\.svc\.cluster\.local 10\.96\.0\.1\b/);
    expect(out).toContain("search real.svc.cluster.local svc.cluster.local cluster.local");
    kubectl(["delete", "pod", "peer-0", "peer-1", "-n", NS, "--wait=false"]);
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
    const trained = pods("loom-default", "loom.dev/workload=trains");
    expect(trained.map((p) => p.spec.nodeName)).toEqual(["real-0"]);
    expect(kubectl(["logs", "-n", "loom-default", trained[0]!.metadata.name])).toContain("step 2");
    const crashes = await waitJob("crashes");
    expect(crashes.status?.phase, JSON.stringify(crashes.status)).toBe("Failed");
    expect(JSON.stringify(crashes.status)).toContain('"exitCode":7');
  }, 300_000);
  it("fences a Loom project for real: another namespace's pod cannot reach a worker (NetworkPolicy), a root or escalating pod is refused (PodSecurity), and the worker runs as non-root on a read-only root filesystem", async () => {
    const ns = "loom-default";
    // Run alone (-t), the operator the TrainingJob test starts is not there yet.
    if (!operator) {
      operator = startOperator(operatorKubeconfig);
      await operator.ready;
    }
    kubectl(["delete", "trainingjobs.loom.dev", "fenced", "-n", ns, "--ignore-not-found", "--timeout=60s"]);
    const applied = await loom(
      ["apply", "-f", "-"],
      `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: fenced}
spec:
  image: ${IMAGE}
  command: [sh, -c, "mkdir -p /tmp/www && echo inside > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
  nodePool: real
  resources: {cpu: 50m, memory: 32Mi}
  terminationGracePeriodSeconds: 1
`,
    );
    expect(applied.code, applied.stderr).toBe(0);
    const worker = await until("the fenced worker running", () => {
      const p = pods(ns, "loom.dev/workload=fenced")[0];
      return p?.status.phase === "Running" && p.status.podIP ? p : undefined;
    });
    const ip = worker.status.podIP!;
    // Non-root, and the image is read-only to it: only its volumes (here /tmp) take writes.
    const exec = (script: string) =>
      cluster.kubectl(["exec", "-n", ns, worker.metadata.name, "--", "sh", "-c", script]);
    expect(exec("id -u").stdout.trim()).toBe("1000");
    const write = exec("echo x > /pwned");
    expect(write.code).not.toBe(0);
    expect(write.stderr).toMatch(/Read-only file system/);
    expect(exec("echo x > /tmp/ok && cat /tmp/ok").stdout.trim()).toBe("x");

    // The attack: a pod in another namespace connects to the worker's port; the project's
    // NetworkPolicy admits only its own namespace's pods, kube-router drops the rest.
    const request = `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} 8080 2>/dev/null`;
    kubectl(
      ["create", "-f", "-"],
      JSON.stringify(
        pod(
          "intruder",
          `for i in $(seq 60); do r=$(${request}); [ -z "$r" ] && echo refused && exit 0; sleep 1; done; echo "still answered"; exit 1`,
        ),
      ),
    );
    const intruder = await finished("intruder");
    expect(kubectl(["logs", "-n", NS, "intruder"]).trim()).toBe("refused");
    expect(intruder.status.phase).toBe("Succeeded");
    // A pod of the project itself still gets its answer (the policy is the fence, not a dead port).
    const neighbour = pod(
      "neighbour",
      `for i in $(seq 30); do r=$(${request}) && [ -n "$r" ] && echo "$r" | tail -n 1 && exit 0; sleep 1; done; exit 1`,
    );
    cluster.kubectl(["delete", "pod", "neighbour", "-n", ns, "--ignore-not-found"]);
    kubectl(
      ["create", "-f", "-"],
      JSON.stringify({ ...neighbour, metadata: { ...neighbour.metadata, namespace: ns } }),
    );
    const answered = await finished("neighbour", ns);
    expect(kubectl(["logs", "-n", ns, "neighbour"]).trim()).toBe("inside");
    expect(answered.status.phase).toBe("Succeeded");
    cluster.kubectl(["delete", "pod", "neighbour", "-n", ns, "--wait=false"]);

    // The attack: pods in the project's namespace that ask for root, or to escalate privileges.
    const root = pod("as-root", "id -u");
    const asRoot = cluster.kubectl(["create", "-f", "-"], {
      input: JSON.stringify({
        ...root,
        metadata: { ...root.metadata, namespace: ns },
        spec: { ...root.spec, securityContext: { runAsUser: 0, seccompProfile: { type: "RuntimeDefault" } } },
      }),
    });
    expect(asRoot.code).not.toBe(0);
    expect(asRoot.stderr).toMatch(/violates PodSecurity "restricted:latest".*runAsNonRoot/s);
    const esc = pod("escalates", "id -u");
    const escalates = cluster.kubectl(["create", "-f", "-"], {
      input: JSON.stringify({
        ...esc,
        metadata: { ...esc.metadata, namespace: ns },
        spec: {
          ...esc.spec,
          containers: esc.spec.containers.map((c) => ({
            ...c,
            securityContext: {
              allowPrivilegeEscalation: true,
              privileged: true,
              capabilities: { drop: ["ALL"] },
            },
          })),
        },
      }),
    });
    expect(escalates.code).not.toBe(0);
    expect(escalates.stderr).toMatch(/violates PodSecurity.*(privileged|allowPrivilegeEscalation)/s);
    await loom(["delete", "tj", "fenced", "--timeout", "60"]);
  }, 300_000);

  it("trains a 2-pod PyTorch DDP TrainingJob (gloo, CPU) over the pod network by its headless Service's DNS, checkpoints to its PVC, survives a killed pod by a whole-gang restart from the checkpoint, and logs to tracking with its scoped credential", async () => {
    importPythonImage(ownState("realnode"));
    // Tracking must be reachable from pods: the operator's API on the node's address.
    const hostIP = kubectl([
      "get",
      "node",
      "real-0",
      "-o",
      'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}',
    ]).trim();
    await operator?.stop();
    const dataDir = join(ownState("realnode"), "ddp-operator");
    rmSync(dataDir, { recursive: true, force: true });
    operator = startOperator(operatorKubeconfig, ["--data-dir", dataDir, "--host", hostIP, "--port", "0"]);
    await operator.ready;
    serving = true;
    const url = /API and MLflow tracking at (\S+)/.exec(operator.stdout())?.[1];
    expect(url, operator.stdout()).toMatch(new RegExp(`^http://${hostIP.replaceAll(".", "\\.")}:\\d+$`));
    const admin = readFileSync(join(dataDir, "admin-token"), "utf8").trim();

    // The checkpoint claim: a hostPath PersistentVolume on real-0, bound to the job's claim; the
    // example and the metric logger ride on it too (the image holds PyTorch, not the example).
    const vol = join(ownState("realnode"), "ddp-volume");
    rmSync(vol, { recursive: true, force: true });
    mkdirSync(join(vol, "code"), { recursive: true });
    cpSync(join(ROOT, "examples/pretrain"), join(vol, "code"), { recursive: true });
    cpSync(join(ROOT, "test/fixtures/tracked-train.py"), join(vol, "code/tracked-train.py"));
    // LOOM_CHECKPOINT_DIR is the claim's root: uid 1000 writes there.
    chmodSync(vol, 0o777);
    kubectl([
      "delete",
      "trainingjobs.loom.dev",
      "ddp",
      "-n",
      "loom-default",
      "--ignore-not-found",
      "--timeout=60s",
    ]);
    kubectl(["delete", "pvc", "ddp-ckpt", "-n", "loom-default", "--ignore-not-found", "--timeout=60s"]);
    kubectl(["delete", "pv", "realnode-ddp", "--ignore-not-found", "--timeout=60s"]);
    kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [
          {
            apiVersion: "v1",
            kind: "PersistentVolume",
            metadata: { name: "realnode-ddp" },
            spec: {
              capacity: { storage: "1Gi" },
              accessModes: ["ReadWriteMany"],
              persistentVolumeReclaimPolicy: "Retain",
              storageClassName: "realnode-hostpath",
              hostPath: { path: vol, type: "Directory" },
              claimRef: { namespace: "loom-default", name: "ddp-ckpt" },
            },
          },
          {
            apiVersion: "v1",
            kind: "PersistentVolumeClaim",
            metadata: { name: "ddp-ckpt", namespace: "loom-default" },
            spec: {
              accessModes: ["ReadWriteMany"],
              storageClassName: "realnode-hostpath",
              volumeName: "realnode-ddp",
              resources: { requests: { storage: "1Gi" } },
            },
          },
        ],
      }),
    );
    const steps = 150;
    const applied = await loom(
      ["apply", "-f", "-"],
      `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ddp}
spec:
  workers: 2
  framework: pytorch
  image: ${PYTHON_IMAGE}
  command: [python3, /loom/checkpoint/code/tracked-train.py, /loom/checkpoint/code/train.py, --steps, "${steps}", --checkpoint-every, "10", --log-every, "10", --step-sleep, "0.05", --corpus-chars, "20000"]
  nodePool: real
  resources: {cpu: 500m, memory: 768Mi}
  failurePolicy: {maxRestarts: 2}
  checkpoint: {claimName: ddp-ckpt}
  terminationGracePeriodSeconds: 10
`,
    );
    expect(applied.code, applied.stderr).toBe(0);
    const job = async () => {
      const r = await loom(["get", "tj", "ddp", "-o", "json"]);
      return r.code === 0 ? (JSON.parse(r.stdout) as Job) : undefined;
    };
    const podsOf = (attempt: number) =>
      pods("loom-default", `loom.dev/workload=ddp,loom.dev/attempt=${attempt}`);
    const logOf = (name: string) => cluster.kubectl(["logs", "-n", "loom-default", name]).stdout;
    // Both ranks rendezvous (MASTER_ADDR is worker 0's name under the headless Service) and
    // train; a checkpoint past step 0 is on the claim.
    const first = await until("attempt 1 training past its first checkpoints", () => {
      const gang = podsOf(1);
      if (gang.length !== 2) return undefined;
      const ckpt = join(vol, "loom.json");
      const at = existsSync(ckpt) ? (JSON.parse(readFileSync(ckpt, "utf8")) as { step: number }).step : 0;
      return at >= 20 && /step \d+ loss/.test(logOf(gang[0]!.metadata.name)) ? gang : undefined;
    });
    expect(first.map((p) => p.spec.nodeName)).toEqual(["real-0", "real-0"]);
    const env = first[0]!.spec.containers[0]!.env ?? [];
    const envOf = Object.fromEntries(env.map((e) => [e.name, e.value]));
    expect(envOf.MASTER_ADDR).toMatch(/^ddp-0\.ddp$/);
    expect(envOf.MLFLOW_TRACKING_URI).toBe(url);
    expect(envOf.MLFLOW_TRACKING_TOKEN).toBeUndefined();

    // Kill worker 1: the gang stops and restarts whole (attempt 2), resuming from the checkpoint.
    kubectl([
      "delete",
      "pod",
      "-n",
      "loom-default",
      first[1]!.metadata.name,
      "--grace-period=1",
      "--wait=false",
    ]);
    const second = await until("attempt 2's two pods", () => {
      const gang = podsOf(2);
      return gang.length === 2 ? gang : undefined;
    });
    expect(second.map((p) => p.spec.nodeName)).toEqual(["real-0", "real-0"]);
    const done = await until("TrainingJob ddp to finish", async () => {
      const j = await job();
      return j?.status?.phase === "Succeeded" || j?.status?.phase === "Failed" ? j : undefined;
    });
    expect(done.status?.phase, JSON.stringify(done.status)).toBe("Succeeded");
    expect(done.status?.restarts).toBe(1);
    const resumedLog = logOf(second[0]!.metadata.name);
    const resumed = Number(/resumed from step (\d+)/.exec(resumedLog)?.[1] ?? 0);
    expect(resumed, resumedLog).toBeGreaterThan(0);
    expect(resumedLog).toContain(`FINAL step=${steps}`);
    // Rank 0 logged with the official client (the image's mlflow-skinny), and never failed to.
    expect(resumedLog).toMatch(/tracking: logging to run \w+ with mlflow 3\.17\.2/);
    expect(resumedLog).not.toContain("log_metric failed");
    expect(JSON.parse(readFileSync(join(vol, "loom.json"), "utf8")).step).toBe(steps);

    // Rank 0 logged its loss to the job's run with the workload's own token (~/.mlflow/credentials).
    const history = await fetch(
      `${url}/api/2.0/mlflow/metrics/get-history?run_id=${envOf.MLFLOW_RUN_ID}&metric_key=loss`,
      { headers: { authorization: `Bearer ${admin}` } },
    );
    const metrics = ((await history.json()) as { metrics?: { step: number }[] }).metrics ?? [];
    expect(metrics.map((m) => m.step)).toContain(steps);
    expect(metrics.some((m) => m.step <= resumed)).toBe(true);
  }, 900_000);
  it("places an InferenceService replica on a tainted real-0 only with spec.tolerations: without, it waits saying which taints; with, it runs there and is ready", async () => {
    const ns = "loom-default";
    // Serving needs the operator's API (--data-dir); the DDP test's has it.
    if (!serving) {
      await operator?.stop();
      const dataDir = join(ownState("realnode"), "serving-operator");
      rmSync(dataDir, { recursive: true, force: true });
      operator = startOperator(operatorKubeconfig, ["--data-dir", dataDir, "--port", "0"]);
      await operator.ready;
      serving = true;
    }
    kubectl([
      "delete",
      "inferenceservices.loom.dev",
      "tolerant",
      "-n",
      ns,
      "--ignore-not-found",
      "--timeout=60s",
    ]);
    // real-0 alone, tainted beyond its own loom.dev/real-node as a dedicated node would be; the
    // kwok node cordoned, so a replica that tolerates nothing has nowhere to go.
    kubectl(["cordon", "kwok-node-0"]);
    kubectl(["taint", "node", "real-0", "dedicated=serving:NoSchedule", "--overwrite"]);
    try {
      const isvc = (tolerations: string) => `apiVersion: loom.dev/v1alpha1
kind: InferenceService
metadata: {name: tolerant}
spec:
  model: /tmp
  runtime:
    image: ${IMAGE}
    command: [sh, -c, "mkdir -p /tmp/www && echo ok > /tmp/www/health && exec httpd -f -p $PORT -h /tmp/www"]
  resources: {cpu: 50m, memory: 32Mi}
${tolerations}`;
      const untolerated = await loom(["apply", "-f", "-"], isvc(""));
      expect(untolerated.code, untolerated.stderr).toBe(0);
      const why = await until("the untolerated replica's reason", () => {
        const c = pods(ns, "loom.dev/workload=tolerant")[0]?.status.conditions?.find(
          (x) => x.type === "PodScheduled" && x.status === "False",
        );
        return c?.message;
      });
      expect(why).toMatch(/is tainted \(.*dedicated=serving:NoSchedule.*\).*add spec\.tolerations/);
      expect(pods(ns, "loom.dev/workload=tolerant").map((p) => p.spec.nodeName)).toEqual([undefined]);

      const tolerated = await loom(
        ["apply", "-f", "-"],
        isvc(`  tolerations:
    - {key: dedicated, operator: Equal, value: serving, effect: NoSchedule}
    - {key: loom.dev/real-node, operator: Exists}
`),
      );
      expect(tolerated.code, tolerated.stderr).toBe(0);
      const replica = await until("the tolerating revision's replica ready on real-0", () =>
        pods(ns, "loom.dev/workload=tolerant").find((p) => p.spec.nodeName === "real-0" && podReady(p)),
      );
      expect(replica.spec.tolerations).toContainEqual(
        expect.objectContaining({ key: "dedicated", value: "serving", effect: "NoSchedule" }),
      );
      const svc = await until("the InferenceService Ready", async () => {
        const r = await loom(["get", "isvc", "tolerant", "-o", "json"]);
        const got =
          r.code === 0
            ? (JSON.parse(r.stdout) as { status?: { phase?: string; latestReadyRevision?: string } })
            : undefined;
        return got?.status?.phase === "Ready" ? got : undefined;
      });
      expect(svc.status?.latestReadyRevision).toBe("tolerant-2");
    } finally {
      await loom(["delete", "isvc", "tolerant", "--timeout", "60"]).catch(() => undefined);
      cluster.kubectl(["taint", "node", "real-0", "dedicated=serving:NoSchedule-"]);
      cluster.kubectl(["uncordon", "kwok-node-0"]);
    }
  }, 300_000);
});

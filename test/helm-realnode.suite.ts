import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "./helpers.js";
import { ownState, type TestCluster, upCluster } from "./k8s/cluster.js";
import { ctr, IMAGE_OUT, importImage } from "./k8s/python-image.js";
import { podReady, type RealPod, realNodeWaits } from "./k8s/realnode.js";
import { genaiPython } from "./tracking-client.js";

/**
 * Loom's own images as pods: `helm install` of deploy/helm/loom on the real node (real-0:
 * containerd, kubelet, kube-proxy; test/k8s/node.sh), with the loom and loom-python images
 * (`npm run image`) imported into its containerd. The operator (API and tracking on SQLite on a
 * PersistentVolume) and the gateway run as pods; `loom` and the official mlflow and openai clients
 * reach them through their Services' ClusterIPs (kube-proxy's rules on this host); a model pod
 * serves a chat request through the gateway Deployment and scales to zero and back; `helm
 * upgrade` rolls Loom under a running TrainingJob without disturbing it or losing tracking data.
 * One cluster, one install, steps in order: each step builds on the one before.
 */
process.env.LOOM_K8S_REAL_NODE = "1";
const NS = "loom-system";
const CHART = join(ROOT, "deploy/helm/loom");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const UPGRADED_TAG = `${VERSION}-upgraded`;
const ON_REAL_NODE = {
  nodeSelector: { "loom.dev/real-node": "true" },
  tolerations: [{ key: "loom.dev/real-node", operator: "Equal", value: "true", effect: "NoSchedule" }],
};

/** The model server, a real process in the loom-python image: OpenAI-shaped chat that echoes. */
const ECHO_SERVER = `
import json, os, signal, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))  # PID 1 ignores SIGTERM without a handler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self): self.reply(200 if self.path == "/health" else 404, {"ok": True})
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        text = "echo from %s: %s" % (socket.gethostname(), req["messages"][-1]["content"])
        self.reply(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": req.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
ThreadingHTTPServer((os.environ.get("HOST", "0.0.0.0"), int(os.environ["PORT"])), H).serve_forever()
`;

/** A training loop that runs until deleted, one numbered step a second. */
const TRAIN_LOOP = `
import itertools, os, signal, time
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
for step in itertools.count():
    print("step", step, flush=True)
    time.sleep(1)
`;

const timings: Record<string, number> = {};
async function timed<T>(name: string, f: () => T | Promise<T>): Promise<T> {
  const t0 = Date.now();
  try {
    return await f();
  } finally {
    timings[name] = (Date.now() - t0) / 1000;
  }
}

describe("Loom installed by Helm on the real node", () => {
  let cluster: TestCluster;
  let state: string;
  let helm: string;
  let python: string;
  let adminToken: string;
  let apiUrl: string;
  let gatewayUrl: string;
  let runId: string;
  let jobPod: RealPod;
  const work = join(tmpdir(), `loom-helm-realnode-${process.pid}`);

  const { until, kubectl, pods } = realNodeWaits({
    cluster: () => cluster,
    diagnose: () => cluster.kubectl(["get", "pods", "-A", "-o", "wide"]).stdout,
  });
  const ready = podReady;
  const helmRun = (args: string[]) => {
    const r = spawnSync(helm, args, {
      encoding: "utf8",
      env: { ...process.env, KUBECONFIG: cluster.kubeconfig },
    });
    expect(r.status, `helm ${args.join(" ")}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  /** `loom` through the installed API's Service (LOOM_URL), as its admin. */
  const loom = (args: string[], input?: string) => {
    const r = spawnSync(process.execPath, [join(ROOT, "bin/loom.js"), ...args], {
      encoding: "utf8",
      input,
      env: { ...process.env, LOOM_URL: apiUrl, LOOM_TOKEN: adminToken },
    });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const py = (script: string, env: Record<string, string> = {}) => {
    const r = spawnSync(python, ["-c", script], {
      encoding: "utf8",
      env: { ...process.env, MLFLOW_TRACKING_URI: apiUrl, MLFLOW_TRACKING_TOKEN: adminToken, ...env },
    });
    expect(r.status, r.stderr).toBe(0);
    // Its last line: mlflow prints a "View run" line of its own when a run ends.
    return r.stdout.trim().split("\n").at(-1)!;
  };
  beforeAll(async () => {
    state = ownState("helmnode");
    cluster = await timed("cluster up (real node)", () => upCluster({ state, nodes: 0 }));
    helm = execFileSync("bash", [join(ROOT, "scripts/helm-build.sh")], { encoding: "utf8" })
      .trim()
      .split("\n")
      .at(-1)!;
    python = genaiPython();
    // CI builds both images first (scripts/image-ci.sh); here, only when they are missing.
    if (
      !existsSync(join(IMAGE_OUT, `loom-${VERSION}.tar`)) ||
      !existsSync(join(IMAGE_OUT, `loom-python-${VERSION}.tar`))
    ) {
      await timed("npm run image", () =>
        execFileSync("bash", [join(ROOT, "scripts/image.sh")], { stdio: "inherit" }),
      );
    }
    await timed("image import", () => {
      importImage(state, "loom");
      importImage(state, "loom-python");
    });
    // The upgrade's "new image" is the same image under another tag (helm upgrade changes the tag).
    ctr(state, [
      "images",
      "tag",
      "--force",
      `docker.io/library/loom:${VERSION}`,
      `docker.io/library/loom:${UPGRADED_TAG}`,
    ]);
    // In-cluster clients (the operator) reach the API server through the kubernetes Service.
    execFileSync("bash", [join(ROOT, "test/k8s/pods-to-apiserver.sh"), state]);
    // real-0 is this cluster's only node (no kwok nodes): the job and model pods here name no pool
    // and no toleration (as a user's would on a cluster without taints), so it takes them untainted.
    // (Tolerations on a tainted real-0: test/realnode.suite.ts.)
    cluster.kubectl(["taint", "node", "real-0", "loom.dev/real-node-"]);

    // A reused cluster keeps an earlier run's install: start from nothing.
    // (Deleted while the old operator runs, which lets go of their finalizers; if it is gone, they
    // are let go here.)
    for (const kind of ["inferenceservices.loom.dev", "trainingjobs.loom.dev"])
      if (cluster.kubectl(["delete", kind, "--all", "-A", "--timeout=90s"]).code !== 0)
        for (const line of cluster
          .kubectl(["get", kind, "-A", "-o", "name", "--no-headers"])
          .stdout.split("\n"))
          if (line.trim())
            cluster.kubectl([
              "patch",
              line.trim(),
              "-n",
              "loom-default",
              "--type=merge",
              "-p",
              '{"metadata":{"finalizers":null}}',
            ]);
    spawnSync(helm, ["uninstall", "loom", "-n", NS, "--wait"], {
      env: { ...process.env, KUBECONFIG: cluster.kubeconfig },
    });
    cluster.kubectl(["delete", "namespace", NS, "--ignore-not-found", "--timeout=180s"]);
    cluster.kubectl(["delete", "pv", "loom-data-real-0", "--ignore-not-found", "--timeout=60s"]);
    // The data volume: a static hostPath PersistentVolume on real-0 (the test cluster has no
    // provisioner), its directory owned by the pods' uid, pre-bound to the chart's claim.
    const dataDir = join(state, "node/pv-loom-data");
    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir, { recursive: true });
    execFileSync("chown", ["1000:1000", dataDir]);
    kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "PersistentVolume",
        metadata: { name: "loom-data-real-0" },
        spec: {
          capacity: { storage: "10Gi" },
          accessModes: ["ReadWriteOnce"],
          persistentVolumeReclaimPolicy: "Retain",
          storageClassName: "",
          claimRef: { namespace: NS, name: "loom-data" },
          hostPath: { path: dataDir, type: "Directory" },
          nodeAffinity: {
            required: {
              nodeSelectorTerms: [
                { matchExpressions: [{ key: "kubernetes.io/hostname", operator: "In", values: ["real-0"] }] },
              ],
            },
          },
        },
      }),
    );
    mkdirSync(work, { recursive: true });
  }, 3_600_000);

  afterAll(() => {
    if (cluster) {
      for (const kind of ["inferenceservices.loom.dev", "trainingjobs.loom.dev"])
        cluster.kubectl(["delete", kind, "--all", "-A", "--wait=false"]);
    }
    rmSync(work, { recursive: true, force: true });
    // The machine's one real node goes back (another cluster may need it), unless kept for a warm
    // rerun.
    if (cluster && process.env.LOOM_TEST_KEEP_CLUSTER !== "1")
      spawnSync("bash", [join(ROOT, "test/k8s/down.sh")], {
        env: { ...process.env, LOOM_K8S_STATE: state },
        stdio: "ignore",
      });
    console.log(`helm-realnode timings (s): ${JSON.stringify(timings)}`);
  });

  it("helm install runs the operator (API, tracking on its volume) and the gateway as Ready pods on real-0", async () => {
    const values = join(work, "values.json");
    writeFileSync(
      values,
      JSON.stringify({
        image: { pullPolicy: "Never" },
        operator: {
          ...ON_REAL_NODE,
          resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { memory: "1Gi" } },
        },
        gateway: {
          ...ON_REAL_NODE,
          replicas: 1,
          resources: { requests: { cpu: "100m", memory: "64Mi" }, limits: { memory: "512Mi" } },
        },
      }),
    );
    await timed("helm install → operator Ready", async () => {
      helmRun(["install", "loom", CHART, "-n", NS, "--create-namespace", "-f", values]);
      await until("the operator Ready", () =>
        pods(NS, "app.kubernetes.io/name=loom-operator").some(ready) ? true : undefined,
      );
    });
    const [op] = pods(NS, "app.kubernetes.io/name=loom-operator");
    expect(op!.spec.nodeName).toBe("real-0");
    expect(op!.spec.containers[0]!.image).toBe(`loom:${VERSION}`);
    // Its data is on the volume: the admin token the chart's NOTES tell users to read.
    adminToken = kubectl([
      "exec",
      "-n",
      NS,
      "deploy/loom-operator",
      "--",
      "cat",
      "/var/lib/loom/admin-token",
    ]).trim();
    expect(adminToken).toMatch(/^loom_/);
    expect(readFileSync(join(state, "node/pv-loom-data/admin-token"), "utf8").trim()).toBe(adminToken);
    // Non-root, read-only root filesystem, as the chart says.
    expect(kubectl(["exec", "-n", NS, "deploy/loom-operator", "--", "id", "-u"]).trim()).toBe("1000");
    const write = cluster.kubectl(["exec", "-n", NS, "deploy/loom-operator", "--", "touch", "/opt/loom/x"]);
    expect(write.code).not.toBe(0);
    expect(write.stderr).toContain("Read-only file system");
    const svcIP = (name: string) =>
      kubectl(["get", "svc", name, "-n", NS, "-o", "jsonpath={.spec.clusterIP}"]).trim();
    apiUrl = `http://${svcIP("loom-api")}:7470`;
    gatewayUrl = `http://${svcIP("loom-gateway")}`;

    // The gateway waits for its token (NOTES.txt): made through the API, then the pod restarted
    // rather than left to the kubelet's mount back-off.
    const token = loom(["token", "create", "gateway", "--role", "admin"]);
    expect(token.code, token.stderr).toBe(0);
    kubectl([
      "create",
      "secret",
      "generic",
      "loom-gateway-token",
      "-n",
      NS,
      `--from-literal=token=${token.stdout.trim()}`,
    ]);
    kubectl(["delete", "pods", "-n", NS, "-l", "app.kubernetes.io/name=loom-gateway", "--wait=false"]);
    await timed("gateway Ready", () =>
      until("the gateway Ready", () =>
        pods(NS, "app.kubernetes.io/name=loom-gateway").some(ready) ? true : undefined,
      ),
    );
    expect(pods(NS, "app.kubernetes.io/name=loom-gateway")[0]!.spec.nodeName).toBe("real-0");
    // It found the API by the Service's DNS name (the real node's CoreDNS).
    expect(kubectl(["logs", "-n", NS, "deploy/loom-gateway"])).toContain(
      `following http://loom-api.${NS}.svc:7470`,
    );
  }, 900_000);

  it("loom (through the loom-api Service, and with --kubeconfig) lists and creates a TrainingJob that runs on real-0; the mlflow client logs a run and reads it back", async () => {
    const empty = loom(["get", "tj"]);
    expect(empty.code, empty.stderr).toBe(0);
    expect(empty.stdout + empty.stderr).toContain("No trainingjobs found");
    const job = JSON.stringify({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "steady" },
      spec: { command: ["python3", "-c", TRAIN_LOOP], resources: { cpu: "100m", memory: "64Mi" } },
    });
    const applied = loom(["apply", "-f", "-"], job);
    expect(applied.code, applied.stderr).toBe(0);
    jobPod = await timed("TrainingJob pod running", () =>
      until("the TrainingJob's pod to train", () => {
        const [p] = pods("loom-default", "loom.dev/workload=steady");
        if (p?.status.phase !== "Running") return undefined;
        const log = cluster.kubectl(["logs", "-n", "loom-default", p.metadata.name]).stdout;
        return log.includes("step 2") ? p : undefined;
      }),
    );
    expect(jobPod.spec.nodeName).toBe("real-0");
    expect(jobPod.spec.containers[0]!.image).toBe(`loom-python:${VERSION}`);
    const listed = loom(["get", "tj"]);
    expect(listed.stdout).toContain("steady");
    const viaKube = spawnSync(
      process.execPath,
      [join(ROOT, "bin/loom.js"), "--kubeconfig", cluster.kubeconfig, "get", "tj", "steady", "-o", "json"],
      {
        encoding: "utf8",
      },
    );
    expect(viaKube.status, viaKube.stderr).toBe(0);
    expect((JSON.parse(viaKube.stdout) as { status?: { phase?: string } }).status?.phase).toBe("Running");

    runId = py(`
import mlflow
mlflow.set_experiment("helm-realnode")
with mlflow.start_run(run_name="on-the-pod") as run:
    mlflow.log_param("lr", "0.01")
    for step, loss in enumerate([0.9, 0.5, 0.25]):
        mlflow.log_metric("loss", loss, step=step)
print(run.info.run_id)
`);
    const back = JSON.parse(
      py(`
import json, mlflow
r = mlflow.get_run("${runId}")
h = mlflow.MlflowClient().get_metric_history("${runId}", "loss")
print(json.dumps({"name": r.info.run_name, "params": r.data.params, "loss": [m.value for m in h]}))
`),
    ) as unknown;
    expect(back).toEqual({ name: "on-the-pod", params: { lr: "0.01" }, loss: [0.9, 0.5, 0.25] });
  }, 600_000);

  it("an InferenceService's pod on real-0 answers an OpenAI chat request through the gateway Deployment, scales to zero when idle and back on the next request", async () => {
    const applied = loom(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "loom.dev/v1alpha1",
        kind: "InferenceService",
        metadata: { name: "echo" },
        spec: {
          model: "/tmp",
          runtime: { command: ["python3", "-c", ECHO_SERVER] },
          resources: { cpu: "100m", memory: "128Mi" },
          replicas: { min: 0, max: 1 },
          autoscaling: { scaleToZeroAfter: "10s", scaleDownDelay: "5s" },
        },
      }),
    );
    expect(applied.code, applied.stderr).toBe(0);
    const phase = () => {
      const r = loom(["get", "isvc", "echo", "-o", "json"]);
      return r.code === 0
        ? (JSON.parse(r.stdout) as { status?: { phase?: string } }).status?.phase
        : undefined;
    };
    const zero = () =>
      until("the service scaled to zero", () =>
        phase() === "ScaledToZero" && pods("loom-default", "loom.dev/workload=echo").length === 0
          ? true
          : undefined,
      );
    await zero();
    const chat = (prompt: string) =>
      py(
        `
import openai, os
c = openai.OpenAI(base_url=os.environ["GW"] + "/v1", api_key=os.environ["MLFLOW_TRACKING_TOKEN"], timeout=300)
r = c.chat.completions.create(model="echo", messages=[{"role": "user", "content": ${JSON.stringify(prompt)}}])
print(r.choices[0].message.content)
`,
        { GW: gatewayUrl },
      );
    const first = await timed("chat from zero (1st)", () => chat("hello from the test"));
    expect(first).toMatch(/^echo from echo-[\w-]+: hello from the test$/);
    const [replica] = pods("loom-default", "loom.dev/workload=echo");
    expect(replica!.spec.nodeName).toBe("real-0");
    expect(first).toContain(replica!.metadata.name);
    await timed("scale to zero", zero);
    const second = await timed("chat from zero (2nd)", () => chat("and again"));
    expect(second).toMatch(/^echo from echo-[\w-]+: and again$/);
  }, 900_000);

  it("helm upgrade to a new image tag rolls the operator and gateway under a running TrainingJob: the job is undisturbed, tracking data intact", async () => {
    const before = pods(NS, "app.kubernetes.io/name=loom-operator")[0]!;
    await timed("helm upgrade → operator Ready", async () => {
      helmRun(["upgrade", "loom", CHART, "-n", NS, "--reuse-values", "--set", `image.tag=${UPGRADED_TAG}`]);
      await until("the upgraded operator Ready", () =>
        pods(NS, "app.kubernetes.io/name=loom-operator").some(
          (p) =>
            p.metadata.uid !== before.metadata.uid &&
            p.spec.containers[0]!.image === `loom:${UPGRADED_TAG}` &&
            ready(p),
        )
          ? true
          : undefined,
      );
      await until("the upgraded gateway Ready", () => {
        const gws = pods(NS, "app.kubernetes.io/name=loom-gateway");
        return gws.length === 1 &&
          gws[0]!.spec.containers[0]!.image === `loom:${UPGRADED_TAG}` &&
          ready(gws[0]!)
          ? true
          : undefined;
      });
    });
    // The job's pod is the same pod, never restarted, still training (its log moves on).
    const [now] = pods("loom-default", "loom.dev/workload=steady");
    expect(now!.metadata.uid).toBe(jobPod.metadata.uid);
    expect(now!.status.phase).toBe("Running");
    expect(now!.status.containerStatuses?.[0]?.restartCount).toBe(0);
    const steps = () =>
      Number(
        /step (\d+)\s*$/.exec(kubectl(["logs", "-n", "loom-default", now!.metadata.name, "--tail=1"]))?.[1] ??
          -1,
      );
    const s0 = steps();
    await until("the job to keep training", () => (steps() > s0 ? true : undefined), 30);
    const job = loom(["get", "tj", "steady", "-o", "json"]);
    expect(job.code, job.stderr).toBe(0);
    expect((JSON.parse(job.stdout) as { status?: { phase?: string } }).status?.phase).toBe("Running");
    // The same data: the admin token still works and the run reads back as logged.
    const back = JSON.parse(
      py(`
import json, mlflow
r = mlflow.get_run("${runId}")
h = mlflow.MlflowClient().get_metric_history("${runId}", "loss")
print(json.dumps({"name": r.info.run_name, "params": r.data.params, "loss": [m.value for m in h]}))
`),
    ) as unknown;
    expect(back).toEqual({ name: "on-the-pod", params: { lr: "0.01" }, loss: [0.9, 0.5, 0.25] });
    const deleted = loom(["delete", "tj", "steady", "--timeout", "120"]);
    expect(deleted.code, deleted.stderr).toBe(0);
  }, 900_000);
});

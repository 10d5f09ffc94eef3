import { copyFileSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { V1Deployment } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, LoomProcess, ROOT } from "./helpers.js";
import { startOperator, type TestCluster, upCluster } from "./k8s/cluster.js";
import { foundationScenarios, schedulerScenarios } from "./scenarios.js";

/**
 * The foundation's scenarios on a real Kubernetes control plane: the same manifests, the same CLI
 * (with --kubeconfig), the same status. Pods run on kwok nodes; annotations tell kwok when a pod
 * ends and with which exit code (test/k8s/stages).
 */
describe("TrainingJob on Kubernetes", () => {
  let cluster: TestCluster;
  let operator: ReturnType<typeof startOperator>;
  // A LoomProcess is used only for its CLI runner; it never starts an embedded server here.
  const cli = new LoomProcess();
  const loom = (args: string[], input?: string, kubeconfig = cluster.kubeconfig) =>
    cli.cli(["--kubeconfig", kubeconfig, ...args], { input });

  const job = (name: string, spec: string, annotations: Record<string, string>) =>
    `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata:
  name: ${name}
  annotations: ${JSON.stringify(annotations)}
spec:
${spec}`;

  async function waitFor(
    name: string,
    pred: (j: Job) => boolean,
    timeoutMs = 60_000,
    project = "default",
  ): Promise<Job> {
    const deadline = Date.now() + timeoutMs;
    let last: Job | undefined;
    while (Date.now() < deadline) {
      const r = await loom(["get", "tj", name, "-p", project, "-o", "json"]);
      if (r.code === 0) {
        last = JSON.parse(r.stdout) as Job;
        if (pred(last)) return last;
      }
      await sleep(500);
    }
    throw new Error(
      `timed out waiting for ${name}: ${JSON.stringify(last?.status)}\n${operator.log().slice(-3000)}`,
    );
  }

  beforeAll(async () => {
    cluster = upCluster();
    const crds = await cli.cli(["crds"]);
    expect(crds.code).toBe(0);
    const applied = cluster.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], {
      input: crds.stdout,
    });
    expect(applied.stderr).toBe("");
    cluster.kubectl([
      "wait",
      "--for=condition=Established",
      "crd/trainingjobs.loom.dev",
      "crd/projects.loom.dev",
      "--timeout=60s",
    ]);
    operator = startOperator(cluster.kubeconfig);
    await operator.ready;
    // The operator creates the default project and its namespace.
    for (let i = 0; i < 60 && cluster.kubectl(["get", "ns", "loom-default"]).code !== 0; i++)
      await sleep(500);
  }, 3_600_000);

  afterAll(async () => {
    await loom(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await operator?.stop();
    await cli.stop();
  });

  describe("scheduler scenarios (one kwok node of 8 GPUs as pool sched)", () => {
    beforeAll(() => {
      const labelled = cluster.kubectl([
        "label",
        "node",
        "kwok-node-3",
        "loom.dev/node-pool=sched",
        "--overwrite",
      ]);
      expect(labelled.code, labelled.stderr).toBe(0);
    });
    schedulerScenarios(() => ({
      name: "kubernetes",
      pool: "sched",
      loom: (args, input) => loom(args, input),
      workersGone: async () => true,
    }));
  });

  it("binds pods with schedulerName loom through the binding subresource: gangs all or nothing, and says why one waits", async () => {
    const pod = (name: string, gang: string, size: number, gpu: number) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name,
        namespace: "loom-default",
        labels: { "loom.dev/gang": gang },
        annotations: { "loom.dev/gang-size": String(size), "loom.dev/kwok-complete-after": "24h" },
      },
      spec: {
        schedulerName: "loom",
        securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: "RuntimeDefault" } },
        containers: [
          {
            name: "c",
            image: "busybox",
            command: ["sleep", "3600"],
            resources: {
              requests: { cpu: "100m", memory: "64Mi", ...(gpu ? { "nvidia.com/gpu": String(gpu) } : {}) },
              limits: { memory: "64Mi", ...(gpu ? { "nvidia.com/gpu": String(gpu) } : {}) },
            },
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
          },
        ],
      },
    });
    const create = (objs: unknown[]) => {
      const r = cluster.kubectl(["create", "-f", "-"], {
        input: JSON.stringify({ apiVersion: "v1", kind: "List", items: objs }),
      });
      expect(r.code, r.stderr).toBe(0);
    };
    const get = (name: string) =>
      JSON.parse(cluster.kubectl(["get", "pod", "-n", "loom-default", name, "-o", "json"]).stdout) as {
        spec: { nodeName?: string };
        status: { conditions?: { type: string; status: string; message?: string }[] };
      };
    // A complete gang of 3 is bound; a gang with 2 of its 3 pods is not (all or nothing).
    create([pod("g3-0", "g3", 3, 1), pod("g3-1", "g3", 3, 1), pod("g3-2", "g3", 3, 1)]);
    create([pod("part-0", "part", 3, 0), pod("part-1", "part", 3, 0)]);
    // A pod no node can hold: PodScheduled=False says why.
    create([pod("huge", "huge", 1, 64)]);
    let bound: string[] = [];
    for (let i = 0; i < 60; i++) {
      bound = ["g3-0", "g3-1", "g3-2"].map((n) => get(n).spec.nodeName ?? "");
      if (bound.every(Boolean)) break;
      await sleep(500);
    }
    expect(bound.every(Boolean), operator.log().slice(-2000)).toBe(true);
    let huge = get("huge");
    for (let i = 0; i < 40 && !huge.status.conditions?.some((c) => c.type === "PodScheduled"); i++) {
      await sleep(500);
      huge = get("huge");
    }
    const cond = huge.status.conditions?.find((c) => c.type === "PodScheduled");
    expect(cond?.status).toBe("False");
    expect(cond?.message).toContain("ExceedsNodeCapacity");
    expect(huge.spec.nodeName).toBeUndefined();
    expect(get("part-0").spec.nodeName).toBeUndefined();
    // The third pod completes the gang: now all three go.
    create([pod("part-2", "part", 3, 0)]);
    for (let i = 0; i < 60 && !get("part-2").spec.nodeName; i++) await sleep(500);
    expect(["part-0", "part-1", "part-2"].map((n) => !!get(n).spec.nodeName)).toEqual([true, true, true]);
    // Capacity views count pods Loom placed for others: 3 GPUs of the g3 gang on the nodes.
    const nodes = await loom(["get", "nodes", "-o", "json"]);
    expect(nodes.code, nodes.stderr).toBe(0);
    const items = (JSON.parse(nodes.stdout) as { items: { allocated: { gpus: number } }[] }).items;
    expect(items.reduce((sum, n) => sum + n.allocated.gpus, 0)).toBeGreaterThanOrEqual(3);
    const top = await loom(["top"]);
    expect(top.code, top.stderr).toBe(0);
    expect(top.stdout).toMatch(/^default\s+[3-9]/m); // the gang's 3 GPUs count for project default
    cluster.kubectl(["delete", "pod", "-n", "loom-default", "-l", "loom.dev/gang", "--wait=false"]);
  }, 120_000);

  foundationScenarios(() => ({
    name: "kubernetes",
    loom: (args, input) => loom(args, input),
    workersGone: async (j) => {
      const pods = cluster.kubectl([
        "get",
        "pods",
        "-A",
        "-l",
        `loom.dev/workload-uid=${j.metadata.uid}`,
        "-o",
        "json",
      ]);
      return JSON.parse(pods.stdout).items.length === 0;
    },
  }));

  it("installs CRDs that kubectl explains, and a restricted namespace per project", () => {
    const explained = cluster.kubectl(["explain", "trainingjob.spec.command"]);
    expect(explained.stdout).toContain("The program and its arguments");
    const ns = JSON.parse(cluster.kubectl(["get", "ns", "loom-default", "-o", "json"]).stdout);
    expect(ns.metadata.labels["pod-security.kubernetes.io/enforce"]).toBe("restricted");
    expect(
      cluster.kubectl(["get", "networkpolicy", "-n", "loom-default", "loom-project-isolation"]).code,
    ).toBe(0);
  });

  it("runs hello to Succeeded through restricted, owned pods", async () => {
    const yaml = job(
      "hello",
      '  command: ["sh", "-c", "echo hello"]\n  resources: {cpu: 100m, memory: 64Mi}',
      {
        "loom.dev/kwok-complete-after": "2s",
      },
    );
    const applied = await loom(["apply", "-f", "-"], yaml);
    expect(applied.stderr).toBe("");
    expect(applied.stdout).toContain("trainingjob.loom.dev/hello created");
    const done = await waitFor("hello", (j) => j.status?.phase === "Succeeded");
    expect(done.status?.attempts).toBe(1);
    const pods = JSON.parse(
      cluster.kubectl([
        "get",
        "pods",
        "-n",
        "loom-default",
        "-l",
        `loom.dev/workload-uid=${done.metadata.uid}`,
        "-o",
        "json",
      ]).stdout,
    );
    expect(pods.items).toHaveLength(1);
    const pod = pods.items[0];
    expect(pod.metadata.ownerReferences[0]).toMatchObject({
      kind: "TrainingJob",
      name: "hello",
      uid: done.metadata.uid,
      controller: true,
    });
    expect(pod.metadata.labels).toMatchObject({
      "loom.dev/project": "default",
      "app.kubernetes.io/managed-by": "loom",
    });
    expect(pod.spec.containers[0].securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    });
    expect(pod.spec.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    // Loom placed it and bound it through the binding subresource, not kube-scheduler.
    expect(pod.spec.schedulerName).toBe("loom");
    expect(pod.spec.nodeName).toMatch(/^kwok-node-/);
    // One worker has no peers to address: no headless Service (multi-worker gangs get one).
    expect(cluster.kubectl(["get", "svc", "-n", "loom-default", "hello"]).code).not.toBe(0);
  });

  it("gives the same status to the same manifest applied with kubectl", async () => {
    const yaml = job("via-kubectl", '  command: ["sh", "-c", "echo hi"]', {
      "loom.dev/kwok-complete-after": "2s",
    });
    const r = cluster.kubectl(["apply", "-n", "loom-default", "-f", "-"], { input: yaml });
    expect(r.stderr).toBe("");
    const done = await waitFor("via-kubectl", (j) => j.status?.phase === "Succeeded");
    expect(done.status?.attempts).toBe(1);
    expect(done.spec).toMatchObject({
      workers: 1,
      failurePolicy: { maxRestarts: 0 },
      terminationGracePeriodSeconds: 30,
    });
    const printed = cluster.kubectl(["get", "trainingjobs", "-n", "loom-default", "via-kubectl"]).stdout;
    expect(printed).toMatch(/via-kubectl\s+Succeeded/);
    // The status and the finalizer are fields Loom manages (plain updates: a server-side apply per
    // status write was kube-apiserver's largest cost); the user's spec stays the user's alone.
    const raw = JSON.parse(
      cluster.kubectl([
        "get",
        "trainingjob",
        "-n",
        "loom-default",
        "via-kubectl",
        "--show-managed-fields",
        "-o",
        "json",
      ]).stdout,
    ) as { metadata: { managedFields: { manager: string; operation: string; subresource?: string }[] } };
    const loomFields = raw.metadata.managedFields.filter((f) => f.manager === "loom");
    expect(loomFields.map((f) => `${f.operation}${f.subresource ? `/${f.subresource}` : ""}`).sort()).toEqual(
      ["Update", "Update/status"],
    );
    const spec = raw.metadata.managedFields.find(
      (f) => f.manager === "kubectl-client-side-apply" || f.manager === "kubectl",
    );
    expect(spec, "kubectl's manager keeps the spec").toBeDefined();
  });

  it("delete cascades: the job's pods and service go with it", async () => {
    const yaml = job("long", '  command: ["sleep", "infinity"]\n  terminationGracePeriodSeconds: 2', {
      "loom.dev/kwok-complete-after": "24h",
    });
    await loom(["apply", "-f", "-"], yaml);
    const running = await waitFor("long", (j) => j.status?.workers?.[0]?.state === "Running");
    const uid = running.metadata.uid;
    const del = await loom(["delete", "tj", "long", "--timeout", "60"]);
    expect(del.code).toBe(0);
    const pods = JSON.parse(
      cluster.kubectl([
        "get",
        "pods",
        "-n",
        "loom-default",
        "-l",
        `loom.dev/workload-uid=${uid}`,
        "-o",
        "json",
      ]).stdout,
    );
    expect(pods.items).toEqual([]);
    expect(cluster.kubectl(["get", "svc", "-n", "loom-default", "long"]).code).not.toBe(0);
  });

  it("renders examples/pretrain as a gang: torch.distributed env, headless Service, checkpoint claim", async () => {
    // The very manifest the embedded test runs; its pods run until deleted (kwok).
    const applied = await loom(["apply", "-f", join(ROOT, "examples/pretrain/pretrain.yaml")]);
    expect(applied.code, applied.stderr).toBe(0);
    const running = await waitFor("pretrain", (j) => j.status?.ready === "2/2");
    const uid = running.metadata.uid;
    const pods = JSON.parse(
      cluster.kubectl([
        "get",
        "pods",
        "-n",
        "loom-default",
        "-l",
        `loom.dev/workload-uid=${uid}`,
        "-o",
        "json",
      ]).stdout,
    ).items as {
      metadata: { name: string };
      spec: {
        hostname: string;
        subdomain: string;
        terminationGracePeriodSeconds: number;
        volumes: { name: string; persistentVolumeClaim?: { claimName: string } }[];
        containers: {
          image: string;
          command: string[];
          env: { name: string; value: string }[];
          volumeMounts: { name: string; mountPath: string }[];
          ports?: { containerPort: number }[];
        }[];
      };
    }[];
    expect(pods.map((p) => p.metadata.name).sort()).toEqual(["pretrain-a1-w0", "pretrain-a1-w1"]);
    for (const [i, pod] of pods.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name)).entries()) {
      const env = Object.fromEntries(pod.spec.containers[0]!.env.map((e) => [e.name, e.value]));
      expect(env).toMatchObject({
        MASTER_ADDR: "pretrain-0.pretrain",
        MASTER_PORT: "29500",
        WORLD_SIZE: "2",
        RANK: String(i),
        NODE_RANK: String(i),
        LOCAL_RANK: "0",
        LOCAL_WORLD_SIZE: "1",
        LOOM_WORKER_INDEX: String(i),
        LOOM_WORKERS: "2",
        LOOM_ATTEMPT: "1",
        LOOM_CHECKPOINT_DIR: "/loom/checkpoint",
        LOOM_PEERS: "pretrain-0.pretrain:29500,pretrain-1.pretrain:29500",
      });
      expect(pod.spec.hostname).toBe(`pretrain-${i}`);
      expect(pod.spec.subdomain).toBe("pretrain");
      expect(pod.spec.terminationGracePeriodSeconds).toBe(30);
      expect(pod.spec.containers[0]!.image).toBe("ghcr.io/loom-dev/pretrain-example:cpu");
      expect(pod.spec.containers[0]!.command).toEqual([
        "python3",
        "examples/pretrain/train.py",
        "--steps",
        "200",
        "--checkpoint-every",
        "20",
      ]);
      expect(pod.spec.volumes).toContainEqual({
        name: "checkpoint",
        persistentVolumeClaim: { claimName: "pretrain-checkpoint" },
      });
      expect(pod.spec.containers[0]!.volumeMounts).toContainEqual(
        expect.objectContaining({ name: "checkpoint", mountPath: "/loom/checkpoint" }),
      );
    }
    const svc = JSON.parse(
      cluster.kubectl(["get", "svc", "-n", "loom-default", "pretrain", "-o", "json"]).stdout,
    );
    expect(svc.spec.clusterIP).toBe("None");
    expect(svc.spec.selector).toEqual({ "loom.dev/workload-uid": uid });
    const pvc = JSON.parse(
      cluster.kubectl(["get", "pvc", "-n", "loom-default", "pretrain-checkpoint", "-o", "json"]).stdout,
    );
    expect(pvc.spec.accessModes).toEqual(["ReadWriteMany"]);
    expect(pvc.spec.resources.requests.storage).toBe("1Gi");
    expect(pvc.metadata.ownerReferences[0]).toMatchObject({ kind: "TrainingJob", uid });

    // A worker lost (its pod deleted, as on node loss): the whole gang comes back as attempt 2.
    cluster.kubectl(["delete", "pod", "-n", "loom-default", "pretrain-a1-w1", "--wait=false"]);
    const again = await waitFor("pretrain", (j) => j.status?.attempts === 2 && j.status?.ready === "2/2");
    expect(again.status?.restarts ?? 0).toBeLessThanOrEqual(1);
    expect((await loom(["delete", "tj", "pretrain", "--timeout", "60"])).code).toBe(0);
  });

  it("renders Ray and MPI gangs: head and workers by stable name, launcher and sshd hosts", async () => {
    const ray = job(
      "ray",
      "  workers: 2\n  framework: ray\n  command: [python3, entry.py]\n  image: rayproject/ray:2.60.0",
      {},
    );
    const mpi = job(
      "mpi",
      "  workers: 2\n  framework: mpi\n  procsPerWorker: 2\n  command: [python3, allreduce.py]\n  image: example/mpi:latest",
      {},
    );
    expect((await loom(["apply", "-f", "-"], `${ray}\n---\n${mpi}`)).code).toBe(0);
    await waitFor("ray", (j) => j.status?.ready === "2/2");
    await waitFor("mpi", (j) => j.status?.ready === "2/2");
    const pod = (name: string) =>
      JSON.parse(cluster.kubectl(["get", "pod", "-n", "loom-default", name, "-o", "json"]).stdout).spec
        .containers[0] as { command: string[]; env: { name: string; value: string }[] };
    const head = pod("ray-a1-w0");
    expect(head.command.slice(0, 2)).toEqual(["/bin/sh", "-c"]);
    expect(head.command[2]).toMatch(/ray start --head --block --port=29500 /);
    expect(head.command.slice(-2)).toEqual(["python3", "entry.py"]);
    const worker = pod("ray-a1-w1");
    expect(worker.command[2]).toMatch(/ray start --block --address=ray-0\.ray:29500 /);
    expect(worker.env).toContainEqual({ name: "RAY_ADDRESS", value: "ray-0.ray:29500" });
    const launcher = pod("mpi-a1-w0");
    expect(launcher.command[2]).toMatch(/exec mpirun --hostfile "\$hostfile" -np 4 "\$@"/);
    expect(launcher.env).toContainEqual({
      name: "LOOM_MPI_HOSTFILE_CONTENT",
      value: "mpi-0.mpi\nmpi-0.mpi\nmpi-1.mpi\nmpi-1.mpi",
    });
    expect(pod("mpi-a1-w1").command).toEqual(["/usr/sbin/sshd", "-De"]);
    expect((await loom(["delete", "tj", "ray", "mpi", "--timeout", "60"])).code).toBe(0);
    // Two 60 s waits and a 60 s delete: under the default 60 s test timeout none of them could
    // say what it waited for (it took 60.3 s, cut off, on a loaded machine; 42 s alone).
  }, 240_000);

  it("lets a member of project A read its jobs and denies project B (403 from the API server)", async () => {
    const projects = `apiVersion: loom.dev/v1alpha1
kind: Project
metadata: {name: team-a}
spec:
  members: [{user: alice, role: viewer}]
---
apiVersion: loom.dev/v1alpha1
kind: Project
metadata: {name: team-b}
spec: {}
`;
    expect((await loom(["apply", "-f", "-"], projects)).code).toBe(0);
    for (
      let i = 0;
      i < 60 && cluster.kubectl(["get", "rolebinding", "-n", "loom-team-b", "loom-viewer"]).code !== 0;
      i++
    )
      await sleep(500);
    const inA = job("a-job", '  command: ["true"]', { "loom.dev/kwok-complete-after": "1s" }).replace(
      "name: a-job",
      "name: a-job\n  project: team-a",
    );
    const inB = job("b-job", '  command: ["true"]', { "loom.dev/kwok-complete-after": "1s" }).replace(
      "name: b-job",
      "name: b-job\n  project: team-b",
    );
    expect((await loom(["apply", "-f", "-"], inA)).code).toBe(0);
    expect((await loom(["apply", "-f", "-"], inB)).code).toBe(0);
    await waitFor("a-job", (j) => j.status?.phase === "Succeeded", 60_000, "team-a");
    const alice = cluster.userKubeconfig("alice");
    const mine = await loom(["get", "tj", "-p", "team-a"], undefined, alice);
    expect(mine.stderr).toBe("");
    expect(mine.stdout).toMatch(/a-job\s+Succeeded/);
    const theirs = await loom(["get", "tj", "-p", "team-b"], undefined, alice);
    expect(theirs.code).toBe(1);
    expect(theirs.stderr).toMatch(/forbidden/i);
    const raw = cluster.kubectl(["get", "trainingjobs", "-n", "loom-team-b"], { kubeconfig: alice });
    expect(raw.stderr).toMatch(/Forbidden|forbidden/);
    // Logs go through the API server's pods/log (served by the kwok node): allowed in A only.
    await waitFor("b-job", (j) => j.status?.phase === "Succeeded", 60_000, "team-b");
    const logsA = await loom(["logs", "tj/a-job", "-p", "team-a"], undefined, alice);
    expect(logsA.code, logsA.stderr).toBe(0);
    expect(logsA.stdout.length).toBeGreaterThan(0);
    const logsB = await loom(["logs", "tj/b-job", "-p", "team-b"], undefined, alice);
    expect(logsB.code).toBe(1);
    expect(logsB.stderr).toMatch(/forbidden/i);
    const cannotWrite = cluster.kubectl(["delete", "trainingjob", "-n", "loom-team-a", "a-job"], {
      kubeconfig: alice,
    });
    expect(cannotWrite.stderr).toMatch(/forbidden/i);
    // Three waits of up to 60 s each (the project's roles, then each job): the default 60 s
    // test timeout cut it off before any of them could say what it waited for.
  }, 240_000);

  it("tracking on Kubernetes: pods get the operator's tracking URL, a project token (a mounted Secret) and their run; a Sweep picks its best trial from what they log", async () => {
    await operator.stop();
    const dataDir = mkdtempSync(join(tmpdir(), "loom-operator-data-"));
    operator = startOperator(cluster.kubeconfig, ["--data-dir", dataDir, "--port", "0"]);
    await operator.ready;
    const url = /API and MLflow tracking at (\S+)/.exec(operator.stdout())?.[1];
    expect(url, operator.stdout()).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const admin = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
    // The web console comes with the API (issue 21): its page at /, its log-in refusing no token.
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/text\/html/);
    expect(await page.text()).toContain('<div id="root"></div>');
    expect((await fetch(`${url}/apis/loom.dev/v1alpha1/whoami`)).status).toBe(401);
    const mlflow = async (method: string, path: string, token: string, body?: unknown) => {
      const r = await fetch(`${url}/api/2.0/mlflow/${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body ? { "content-type": "application/json" } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
      });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };

    // A job's pod: MLFLOW_* in its environment, the run pre-created in the operator's store.
    await loom(
      ["apply", "-f", "-"],
      job("tracked", '  command: ["sleep", "600"]', { "loom.dev/kwok-complete-after": "30s" }),
    );
    const running = await waitFor("tracked", (j) => j.status?.workers?.[0]?.state === "Running");
    const pod = JSON.parse(
      cluster.kubectl([
        "get",
        "pods",
        "-n",
        "loom-default",
        "-l",
        `loom.dev/workload-uid=${running.metadata.uid}`,
        "-o",
        "json",
      ]).stdout,
    ).items[0];
    const env = Object.fromEntries(
      (pod.spec.containers[0].env as { name: string; value: string }[]).map((e) => [e.name, e.value]),
    );
    expect(env.MLFLOW_TRACKING_URI).toBe(url);
    expect(env.MLFLOW_EXPERIMENT_NAME).toBe("tracked");
    expect(env.MLFLOW_RUN_ID).toMatch(/^[0-9a-f]{32}$/);
    // The token is no env var (viewers read pods): it is the job's Secret, mounted as files.
    expect(env.MLFLOW_TRACKING_TOKEN).toBeUndefined();
    const secret = JSON.parse(
      cluster.kubectl(["get", "secret", "-n", "loom-default", "tracked-credentials", "-o", "json"]).stdout,
    );
    const token = Buffer.from(secret.data.token, "base64").toString("utf8");
    expect(token.length).toBeGreaterThan(20);
    // What the worker's `mlflow.log_metric` sends, with the token it was given.
    const logged = await mlflow("POST", "runs/log-metric", token, {
      run_id: env.MLFLOW_RUN_ID,
      key: "loss",
      value: 0.25,
      timestamp: Date.now(),
      step: 1,
    });
    expect(logged.status, JSON.stringify(logged.body)).toBe(200);
    const run = await mlflow("GET", `runs/get?run_id=${env.MLFLOW_RUN_ID}`, admin);
    const data = (
      run.body.run as {
        data: { metrics: { key: string; value: number }[]; tags: { key: string; value: string }[] };
      }
    ).data;
    expect(data.metrics).toEqual([expect.objectContaining({ key: "loss", value: 0.25 })]);
    expect(data.tags).toContainEqual({ key: "loom.workload", value: "tracked" });

    // A sweep on Kubernetes: trials are TrainingJobs (pods), their runs judged by what they log.
    // The test logs each trial's metric as its worker would, before kwok completes the pod: 30 s
    // leaves room for that on a loaded machine (8 s did not: a trial ended unlogged, another won).
    const sweep = `apiVersion: loom.dev/v1alpha1
kind: Sweep
metadata:
  name: k8s-sweep
  annotations: {"loom.dev/kwok-complete-after": "30s"}
spec:
  objective: {metric: val_loss, goal: minimize}
  algorithm: grid
  parallelism: 2
  parameters:
    - name: x
      categorical: {values: [3, 1]}
  template:
    command: ["python", "train.py"]
    resources: {cpu: 1}
`;
    expect((await loom(["apply", "-f", "-"], sweep)).code).toBe(0);
    for (const [trial, value] of [
      [1, 3],
      [2, 1],
    ] as const) {
      const t = await waitFor(`k8s-sweep-${trial}`, (j) => !!(j.status as { tracking?: unknown })?.tracking);
      const runId = (t.status as { tracking: { runId: string } }).tracking.runId;
      expect((t.spec.env as Record<string, string>).X).toBe(String(value));
      const r = await mlflow("POST", "runs/log-metric", admin, {
        run_id: runId,
        key: "val_loss",
        value,
        timestamp: Date.now(),
        step: 1,
      });
      expect(r.status).toBe(200);
    }
    let status: { phase?: string; best?: { name: string; objective: number } } | undefined;
    for (let i = 0; i < 120 && status?.phase !== "Succeeded"; i++) {
      await sleep(500);
      const r = await loom(["get", "sweep", "k8s-sweep", "-o", "json"]);
      if (r.code === 0) status = JSON.parse(r.stdout).status;
    }
    expect(status?.phase, JSON.stringify(status)).toBe("Succeeded");
    expect(status?.best).toMatchObject({ name: "k8s-sweep-2", objective: 1 });
    const table = await loom(["get", "sweep", "k8s-sweep"]);
    expect(table.stdout).toMatch(/2 \*\s+k8s-sweep-2\s+1\s+Succeeded\s+1\s+1/);
    expect((await loom(["delete", "sweep", "k8s-sweep"])).code).toBe(0);
    await loom(["delete", "tj", "tracked"]);
  }, 240_000);

  it("serves an InferenceService as a Deployment and Service per revision, reachable only from the gateway, scaled through the API", async () => {
    // The operator still runs with --data-dir from the test before: it serves the gateway too.
    const isvc = (min: number) => `apiVersion: loom.dev/v1alpha1
kind: InferenceService
metadata:
  name: chat
spec:
  model: hf://tiny/chat
  runtime: {command: ["python", "-m", "vllm.entrypoints.openai.api_server"], image: "vllm/vllm-openai:v0.6.0"}
  resources: {cpu: 1, memory: 1Gi}
  replicas: {min: ${min}, max: 4}
  readiness: {path: /health, timeoutSeconds: 600}
`;
    expect((await loom(["apply", "-f", "-"], isvc(2))).code).toBe(0);
    const get = (args: string[]) => {
      const r = cluster.kubectl(["get", ...args, "-n", "loom-default", "-o", "json"]);
      return r.code === 0 ? JSON.parse(r.stdout) : undefined;
    };
    let deployment: V1Deployment | undefined;
    for (let i = 0; i < 60 && !deployment; i++) {
      deployment = get(["deployment", "chat-1"]);
      if (!deployment) await sleep(500);
    }
    expect(deployment, operator.log().slice(-2000)).toBeDefined();
    expect(deployment!.spec!.replicas).toBe(2);
    expect(deployment!.metadata!.ownerReferences![0]).toMatchObject({
      kind: "InferenceService",
      name: "chat",
    });
    const pod = deployment!.spec!.template.spec!;
    expect(pod.schedulerName).toBe("loom");
    expect(pod.containers[0]!.image).toBe("vllm/vllm-openai:v0.6.0");
    expect(pod.containers[0]!.readinessProbe!.httpGet).toMatchObject({ path: "/health", port: 8080 });
    const env = Object.fromEntries(pod.containers[0]!.env!.map((e) => [e.name, e.value]));
    expect(env).toMatchObject({
      PORT: "8080",
      HOST: "0.0.0.0",
      LOOM_MODEL: "hf://tiny/chat",
      LOOM_REVISION: "chat-1",
    });
    expect(get(["service", "chat-1"])?.spec.ports[0]).toMatchObject({ port: 80, targetPort: 8080 });
    const policy = get(["networkpolicy", "chat-gateway-only"]);
    expect(policy.spec.ingress[0].from[0].namespaceSelector.matchLabels).toEqual({
      "kubernetes.io/metadata.name": "loom-system",
    });
    expect(policy.spec.ingress[0].from[0].podSelector.matchExpressions).toEqual([
      { key: "app.kubernetes.io/name", operator: "In", values: ["loom-operator", "loom-gateway"] },
    ]);
    expect(policy.spec.ingress[0].ports[0].port).toBe(8080);
    // The gateway as its own Deployment: deploy/gateway.yaml is valid against this API server
    // (server-side dry run: kwok would only pretend to run it), with the labels the policy admits.
    cluster.kubectl(["create", "namespace", "loom-system", "--save-config"]); // may exist already
    const gatewayYaml = cluster.kubectl([
      "apply",
      "--dry-run=server",
      "-f",
      join(ROOT, "deploy/gateway.yaml"),
      "-o",
      "json",
    ]);
    expect(gatewayYaml.code, gatewayYaml.stderr).toBe(0);
    const applied = JSON.parse(gatewayYaml.stdout) as {
      items: (V1Deployment & { kind: string })[];
    };
    const gw = applied.items.find((i) => i.kind === "Deployment")!;
    expect(gw.spec!.replicas).toBe(2);
    expect(gw.spec!.template.metadata!.labels!["app.kubernetes.io/name"]).toBe("loom-gateway");
    expect(gw.spec!.template.spec!.containers[0]!.command).toContain("gateway");
    // The project's own policy no longer admits its other pods to model pods.
    const isolation = get(["networkpolicy", "loom-project-isolation"]);
    expect(isolation.spec.podSelector.matchExpressions[0]).toMatchObject({
      operator: "NotIn",
      values: ["model"],
    });
    // Loom's scheduler binds the pods (kwok runs them); the status counts them ready.
    let status: { ready?: number; phase?: string } | undefined;
    for (let i = 0; i < 120 && status?.ready !== 2; i++) {
      await sleep(500);
      const r = await loom(["get", "isvc", "chat", "-o", "json"]);
      if (r.code === 0) status = JSON.parse(r.stdout).status;
    }
    expect(status, operator.log().slice(-2000)).toMatchObject({ ready: 2, phase: "Ready" });
    expect((await loom(["get", "isvc"])).stdout).toMatch(/chat\s+Ready\s+2\s+2\s+chat-1/);
    // A new minimum scales the Deployment through the API; no new revision for it.
    expect((await loom(["apply", "-f", "-"], isvc(3))).code).toBe(0);
    for (let i = 0; i < 60 && get(["deployment", "chat-1"])?.spec.replicas !== 3; i++) await sleep(500);
    expect(get(["deployment", "chat-1"])?.spec.replicas).toBe(3);
    expect(get(["deployment", "chat-2"])).toBeUndefined();
    // Deleting the service takes its Deployment and Service with it (owner references).
    expect((await loom(["delete", "isvc", "chat", "--timeout", "60"])).code).toBe(0);
    for (let i = 0; i < 60 && get(["deployment", "chat-1"]); i++) await sleep(500);
    expect(get(["deployment", "chat-1"])).toBeUndefined();
  }, 180_000);

  it("loses and duplicates nothing when the operator restarts while jobs run", async () => {
    const yaml = job("survivor", '  command: ["sleep", "10"]', { "loom.dev/kwok-complete-after": "12s" });
    await loom(["apply", "-f", "-"], yaml);
    const running = await waitFor("survivor", (j) => j.status?.workers?.[0]?.state === "Running");
    await operator.stop("SIGKILL");
    await sleep(2000);
    operator = startOperator(cluster.kubeconfig);
    await operator.ready;
    const done = await waitFor("survivor", (j) => j.status?.phase === "Succeeded", 90_000);
    expect(done.status?.attempts).toBe(1);
    const pods = JSON.parse(
      cluster.kubectl([
        "get",
        "pods",
        "-n",
        "loom-default",
        "-l",
        `loom.dev/workload-uid=${running.metadata.uid}`,
        "-o",
        "json",
      ]).stdout,
    );
    expect(pods.items).toHaveLength(1);
  }, 180_000);

  it("the operator runs with only deploy/operator.yaml's least-privilege ClusterRole", async () => {
    const deployed = cluster.kubectl(["apply", "-f", join(ROOT, "deploy/operator.yaml")]);
    expect(deployed.stderr).toBe("");
    // kwok would only pretend to run the in-cluster Deployment: run the operator here instead,
    // under the ServiceAccount's identity, so every request it makes is judged by that ClusterRole.
    cluster.kubectl(["scale", "deployment/loom-operator", "-n", "loom-system", "--replicas=0"]);
    const token = cluster
      .kubectl(["create", "token", "loom-operator", "-n", "loom-system", "--duration=1h"])
      .stdout.trim();
    expect(token.length).toBeGreaterThan(20);
    const saConfig = join(mkdtempSync(join(tmpdir(), "loom-sa-")), "kubeconfig");
    copyFileSync(cluster.kubeconfig, saConfig);
    cluster.kubectl(["config", "set-credentials", "loom-operator", `--token=${token}`], {
      kubeconfig: saConfig,
    });
    cluster.kubectl(["config", "set-context", "--current", "--user=loom-operator"], { kubeconfig: saConfig });
    await operator.stop();
    operator = startOperator(saConfig);
    await operator.ready;
    const project =
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: least}\nspec:\n  members: [{user: carol, role: editor}]\n  limit: {cpu: 4, memory: 8Gi, gpu: 1}\n";
    expect((await loom(["apply", "-f", "-"], project)).code).toBe(0);
    for (
      let i = 0;
      i < 60 && cluster.kubectl(["get", "rolebinding", "-n", "loom-least", "loom-editor"]).code !== 0;
      i++
    )
      await sleep(500);
    expect(cluster.kubectl(["get", "resourcequota", "-n", "loom-least", "loom-project-quota"]).code).toBe(0);
    const inLeast = job("least-job", '  command: ["true"]', { "loom.dev/kwok-complete-after": "1s" }).replace(
      "name: least-job",
      "name: least-job\n  project: least",
    );
    expect((await loom(["apply", "-f", "-"], inLeast)).code).toBe(0);
    await waitFor("least-job", (j) => j.status?.phase === "Succeeded", 60_000, "least");
    expect(operator.log()).not.toMatch(/forbidden/i);
  }, 180_000);
});

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, LoomProcess } from "./helpers.js";
import { operatorCluster, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * Issue 17's fences on the real Kubernetes API server, tried as the attacker would: requests are
 * made as project members through impersonation (`kubectl --as`, `--as-group`), so the API
 * server's RBAC judges each one against the Roles Loom wrote.
 * - A viewer may read pods, so a pod carries no credential: the job's token is a mounted Secret,
 *   and no member may read Secrets (nor exec into a pod, which would read the mounted file).
 * - Status is the platform's: a member Role grants no `<kind>/status`; the operator's ClusterRole
 *   (deploy/operator.yaml) does.
 * - The Secret is the workload's own and goes with it.
 * Its own cluster (beside LOOM_K8S_STATE's), since an operator elsewhere would reconcile its jobs.
 */
const NS = "loom-sec-a";
const OPERATOR_SA = "system:serviceaccount:loom-system:loom-operator";

describe("tenant isolation on Kubernetes", () => {
  let cluster: TestCluster;
  let operator: ReturnType<typeof startOperator>;
  const cli = new LoomProcess();
  const loom = (args: string[], input?: string) =>
    cli.cli(["--kubeconfig", cluster.kubeconfig, ...args], { input });
  /** kubectl as a user (and groups), judged by RBAC as that user would be. */
  const as = (user: string, args: string[], groups: string[] = []) =>
    cluster.kubectl([`--as=${user}`, ...groups.map((g) => `--as-group=${g}`), ...args]);
  /** `kubectl auth can-i`; "kind/sub" names a subresource (kubectl would read it as kind/name). */
  const canI = (user: string, verb: string, resource: string, groups: string[] = []) => {
    const [kind, sub] = resource.split("/");
    const args = ["auth", "can-i", verb, kind!, "-n", NS, ...(sub ? [`--subresource=${sub}`] : [])];
    return as(user, args, groups).stdout.trim();
  };

  let job: Job;
  let token: string;
  let url: string;

  async function waitFor(name: string, pred: (j: Job) => boolean): Promise<Job> {
    let last: Job | undefined;
    for (let i = 0; i < 120; i++) {
      const r = await loom(["get", "tj", name, "-p", "sec-a", "-o", "json"]);
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
    // The operator runs here under deploy/operator.yaml's ServiceAccount, so every request it
    // makes is judged by that ClusterRole.
    const own = operatorCluster("security");
    cluster = own.cluster;
    const dataDir = mkdtempSync(join(tmpdir(), "loom-operator-data-"));
    operator = startOperator(own.operatorKubeconfig, ["--data-dir", dataDir, "--port", "0"]);
    await operator.ready;
    url = /API and MLflow tracking at (\S+)/.exec(operator.stdout())?.[1] ?? "";
    expect(url, operator.stdout()).toMatch(/^http:\/\//);

    const project = `apiVersion: loom.dev/v1alpha1
kind: Project
metadata: {name: sec-a}
spec:
  members:
    - {user: vera, role: viewer}
    - {group: sec-a-viewers, role: viewer}
    - {user: eddie, role: editor}
    - {user: ada, role: admin}
`;
    expect((await loom(["apply", "-f", "-"], project)).code).toBe(0);
    for (let i = 0; i < 60 && cluster.kubectl(["get", "rolebinding", "-n", NS, "loom-admin"]).code !== 0; i++)
      await sleep(500);
    const tj = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata:
  name: tracked
  project: sec-a
  annotations: {"loom.dev/kwok-complete-after": "300s"}
spec:
  command: ["python", "train.py"]
`;
    expect((await loom(["apply", "-f", "-"], tj)).code).toBe(0);
    job = await waitFor("tracked", (j) => j.status?.workers?.[0]?.state === "Running");
    const secret = JSON.parse(
      cluster.kubectl(["get", "secret", "-n", NS, "tracked-credentials", "-o", "json"]).stdout,
    );
    token = Buffer.from(secret.data.token, "base64").toString("utf8");
    expect(token.length).toBeGreaterThan(20);
  }, 600_000);

  afterAll(async () => {
    await loom(["delete", "tj", "--all", "-p", "sec-a", "--timeout", "60"]).catch(() => undefined);
    await operator?.stop();
    await cli.stop();
  });

  const pod = () =>
    JSON.parse(
      cluster.kubectl([
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        `loom.dev/workload-uid=${job.metadata.uid}`,
        "-o",
        "json",
      ]).stdout,
    ).items[0];

  it("a job's pod has no token in its env: it mounts its own Secret (token file, mlflow credentials), and the token works", async () => {
    const p = pod();
    const c = p.spec.containers[0];
    const env = Object.fromEntries(
      (c.env as { name: string; value: string }[]).map((e) => [e.name, e.value]),
    );
    expect(env.MLFLOW_TRACKING_TOKEN).toBeUndefined();
    expect(JSON.stringify(p)).not.toContain(token);
    expect(env.MLFLOW_TRACKING_URI).toBe(`${url}/mlflow/projects/sec-a`);
    expect(env.LOOM_TOKEN_FILE).toBe("/var/run/loom/credentials/token");
    expect(p.spec.volumes).toContainEqual(
      expect.objectContaining({
        name: "loom-credentials",
        secret: expect.objectContaining({ secretName: "tracked-credentials" }),
      }),
    );
    expect(c.volumeMounts).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ mountPath: "/var/run/loom/credentials", readOnly: true }),
        expect.objectContaining({
          mountPath: `${env.HOME}/.mlflow/credentials`,
          subPath: "mlflow-credentials",
        }),
      ]),
    );
    // Restricted, and no API token of the cluster's.
    expect(p.spec.automountServiceAccountToken).toBe(false);
    expect(p.spec.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(c.securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    });
    // The Secret is the job's: owned by it, so it goes with it.
    const secret = JSON.parse(
      cluster.kubectl(["get", "secret", "-n", NS, "tracked-credentials", "-o", "json"]).stdout,
    );
    expect(secret.metadata.ownerReferences).toEqual([
      expect.objectContaining({ kind: "TrainingJob", uid: job.metadata.uid, controller: true }),
    ]);
    // What the worker sends with the file it was given: the run accepts it.
    const runId = (job.status as { tracking?: { runId: string } }).tracking?.runId;
    const r = await fetch(`${env.MLFLOW_TRACKING_URI}/api/2.0/mlflow/runs/log-metric`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ run_id: runId, key: "loss", value: 0.5, timestamp: Date.now(), step: 1 }),
    });
    expect(r.status, await r.text()).toBe(200);
  });

  it("a viewer (by user or by group) cannot get or list Secrets, exec into pods, nor find the token in anything it may read", () => {
    for (const [user, groups] of [
      ["vera", []],
      ["someone", ["sec-a-viewers"]],
    ] as [string, string[]][]) {
      expect(as(user, ["get", "trainingjobs", "-n", NS], groups).code).toBe(0);
      const get = as(user, ["get", "secret", "tracked-credentials", "-n", NS], groups);
      expect(get.stderr).toMatch(/forbidden/i);
      expect(as(user, ["get", "secrets", "-n", NS], groups).stderr).toMatch(/forbidden/i);
      for (const [verb, resource] of [
        ["get", "secrets"],
        ["list", "secrets"],
        ["watch", "secrets"],
        ["create", "pods/exec"],
        ["get", "pods/exec"],
        ["create", "pods/attach"],
        ["create", "pods/portforward"],
        ["create", "serviceaccounts/token"],
        ["create", "pods"],
      ] as const)
        expect(canI(user, verb, resource, groups), `${user} ${verb} ${resource}`).toBe("no");
      // Everything the viewer may list, read as the viewer: the token is in none of it.
      for (const resource of [
        "pods",
        "services",
        "events",
        "persistentvolumeclaims",
        "trainingjobs",
        "sweeps",
        "inferenceservices",
      ]) {
        const r = as(user, ["get", resource, "-n", NS, "-o", "json"], groups);
        expect(r.code, `${resource}: ${r.stderr}`).toBe(0);
        expect(r.stdout, resource).not.toContain(token);
      }
    }
  });

  it("members cannot write status (the operator can); an editor's status in a main-resource write is dropped", () => {
    for (const user of ["vera", "eddie", "ada"])
      for (const resource of ["trainingjobs/status", "sweeps/status", "inferenceservices/status"])
        for (const verb of ["update", "patch"])
          expect(canI(user, verb, resource), `${user} ${verb} ${resource}`).toBe("no");
    // The editor still writes its jobs (this is not a fence that blocks everything).
    expect(canI("eddie", "patch", "trainingjobs")).toBe("yes");
    expect(canI("eddie", "get", "secrets")).toBe("no");
    expect(canI("ada", "get", "secrets")).toBe("no");
    // The attack of the issue: an editor rewrites its own admission. Through /status: forbidden.
    const admission = { node: "elsewhere", cpuMillis: 1, memoryBytes: 1, gpus: [] };
    const patch = JSON.stringify({ status: { admission, phase: "Succeeded" } });
    const viaStatus = as("eddie", [
      "patch",
      "trainingjob",
      "tracked",
      "-n",
      NS,
      "--subresource=status",
      "--type=merge",
      "-p",
      patch,
      "--dry-run=server",
    ]);
    expect(viaStatus.stderr).toMatch(/forbidden/i);
    // Through the object itself: the API server keeps status as it was (status is a subresource).
    const viaObject = as("eddie", [
      "patch",
      "trainingjob",
      "tracked",
      "-n",
      NS,
      "--type=merge",
      "-p",
      patch,
      "-o",
      "json",
    ]);
    expect(viaObject.code, viaObject.stderr).toBe(0);
    expect(JSON.parse(viaObject.stdout).status.admission).toEqual(
      (job.status as { admission?: unknown } | undefined)?.admission,
    );
    expect(JSON.parse(viaObject.stdout).status.phase).toBe("Running");
    // The operator (deploy/operator.yaml's ServiceAccount) may write status.
    expect(canI(OPERATOR_SA, "update", "trainingjobs/status")).toBe("yes");
    const byOperator = as(OPERATOR_SA, [
      "patch",
      "trainingjob",
      "tracked",
      "-n",
      NS,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: { phase: "Running" } }),
      "--dry-run=server",
    ]);
    expect(byOperator.code, byOperator.stderr).toBe(0);
  });

  it("the job's Secret is deleted with the job", async () => {
    expect((await loom(["delete", "tj", "tracked", "-p", "sec-a", "--timeout", "60"])).code).toBe(0);
    let code = 0;
    for (let i = 0; i < 120 && code === 0; i++) {
      code = cluster.kubectl(["get", "secret", "-n", NS, "tracked-credentials"]).code;
      if (code === 0) await sleep(500);
    }
    expect(code).not.toBe(0);
    expect(cluster.kubectl(["get", "secret", "-n", NS, "tracked-credentials"]).stderr).toMatch(
      /NotFound|not found/,
    );
  }, 120_000);
});

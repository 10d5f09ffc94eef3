import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { LoomProcess } from "./helpers.js";
import { operatorCluster, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * `loom operator` as the fleet's control plane (issue 23): a kwok cluster whose own operator holds
 * the Cluster objects, with one member (another kwok cluster with its own operator). The member is
 * registered the way a kubectl user works, with `loom --kubeconfig CP apply --kubeconfig-file`:
 * the kubeconfig becomes a Secret in loom-system, written with the user's own credentials, read
 * by the operator's service account, and never served back through Loom's API.
 */
// Each test waits up to 120 s for the operators (`until`): past that it fails with their log,
// which the default 60 s test timeout would cut off first.
vi.setConfig({ testTimeout: 300_000 });

describe("fleet: loom operator as the control plane, one kwok member", () => {
  let cp: TestCluster;
  let member: TestCluster;
  const operators: ReturnType<typeof startOperator>[] = [];
  const cli = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-fleet-op-"));
  // biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
  type Obj = Record<string, any>;
  const loom = (args: string[], input?: string) =>
    cli.cli(["--kubeconfig", cp.kubeconfig, ...args], input === undefined ? {} : { input });

  async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
    // A bound in time, not in tries: each probe may start a CLI, slow on a loaded machine.
    const deadline = Date.now() + 150_000;
    while (Date.now() < deadline) {
      const v = await probe();
      if (v !== undefined) return v;
      await sleep(500);
    }
    throw new Error(
      `timed out waiting for ${what}\ncontrol plane's operator:\n${operators[1]?.log().slice(-4000) ?? ""}\nmember's operator:\n${operators[0]?.log().slice(-2000) ?? ""}`,
    );
  }
  const kubectlOk = (c: TestCluster, args: string[], input?: string) => {
    const r = c.kubectl(args, input === undefined ? {} : { input });
    expect(r.code, `kubectl ${args.join(" ")}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const job = async (name: string): Promise<Obj | undefined> => {
    const r = await loom(["get", "tj", name, "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };

  beforeAll(async () => {
    const m = operatorCluster("fleet-op-member", { nodes: 1 });
    member = m.cluster;
    operators.push(startOperator(m.operatorKubeconfig));
    const c = operatorCluster("fleet-op-cp", {
      nodes: 1,
      crds: ["trainingjobs.loom.dev", "clusters.loom.dev"],
    });
    cp = c.cluster;
    // A reused cluster keeps an earlier run's objects.
    cp.kubectl(["delete", "clusters.loom.dev", "--all", "--timeout=60s"]);
    cp.kubectl(["delete", "trainingjobs.loom.dev", "--all", "-A", "--timeout=60s"]);
    cp.kubectl([
      "delete",
      "secret",
      "cluster-m-kubeconfig",
      "not-a-kubeconfig",
      "-n",
      "loom-system",
      "--ignore-not-found",
    ]);
    member.kubectl(["delete", "trainingjobs.loom.dev", "--all", "-A", "--timeout=60s"]);
    operators.push(startOperator(c.operatorKubeconfig));
    await Promise.all(operators.map((o) => o.ready));
  }, 600_000);

  afterAll(async () => {
    if (cp) await loom(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    for (const o of operators) await o.stop();
  });

  it("registers the member: its kubeconfig a Secret in loom-system, never read back through Loom; the operator reaches it", async () => {
    const file = join(dir, "m.yaml");
    writeFileSync(file, "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: m}\nspec: {}\n");
    const r = await loom(["apply", "-f", file, "--kubeconfig-file", member.kubeconfig]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("cluster.loom.dev/m created");
    // Where a kubectl user looks for it: a Secret in Loom's namespace, key kubeconfig.
    const kept = kubectlOk(cp, [
      "get",
      "secret",
      "cluster-m-kubeconfig",
      "-n",
      "loom-system",
      "-o",
      "jsonpath={.data.kubeconfig}",
    ]);
    expect(Buffer.from(kept, "base64").toString()).toBe(readFileSync(member.kubeconfig, "utf8"));
    const out = await until("m and self Ready", async () => {
      const g = await loom(["get", "clusters"]);
      return /^m\s+Ready\s+v1\.\S+\s+8 GPU/m.test(g.stdout) && /^self\s+Ready/m.test(g.stdout)
        ? g.stdout
        : undefined;
    });
    expect(out).toMatch(/^NAME\s+STATUS\s+VERSION\s+POOLS\s+FREE\s+AGE/);
    // The object names its secret; neither Loom's API nor the CRD carries the kubeconfig.
    const got = await loom(["get", "cluster", "m", "-o", "json"]);
    expect(got.stdout).toContain('"name": "cluster-m-kubeconfig"');
    const key = /client-key-data: (\S+)/.exec(readFileSync(member.kubeconfig, "utf8"))?.[1];
    for (const text of [got.stdout, kubectlOk(cp, ["get", "clusters.loom.dev", "m", "-o", "yaml"])]) {
      expect(text).not.toContain("certificate-authority");
      if (key) expect(text).not.toContain(key);
    }
  });

  it("a Cluster naming a Secret that is not a kubeconfig is Unreachable, and nothing of that Secret shows", async () => {
    // The attack: point a member at another Secret in Loom's namespace, hoping its contents come
    // back in the member's status. Only a Secret with a kubeconfig key is read.
    kubectlOk(cp, [
      "create",
      "secret",
      "generic",
      "not-a-kubeconfig",
      "-n",
      "loom-system",
      "--from-literal=password=hunter2-do-not-show",
    ]);
    kubectlOk(
      cp,
      ["apply", "-f", "-"],
      "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: evil}\nspec: {kubeconfigSecret: {name: not-a-kubeconfig}}\n",
    );
    const evil = await until("evil's status", async () => {
      const g = await loom(["get", "cluster", "evil", "-o", "json"]);
      return g.code === 0 && (JSON.parse(g.stdout) as Obj).status?.phase ? g.stdout : undefined;
    });
    expect(JSON.parse(evil).status.phase).toBe("Unreachable");
    expect(evil).toContain('has no \\"kubeconfig\\" key');
    const described = await loom(["describe", "cluster", "evil"]);
    for (const text of [
      evil,
      described.stdout,
      kubectlOk(cp, ["get", "clusters.loom.dev", "evil", "-o", "yaml"]),
    ])
      expect(text).not.toContain("hunter2");
    kubectlOk(cp, ["delete", "clusters.loom.dev", "evil"]);
  });

  it("dispatches a job to the member: created there, its status mirrored, its log read from there; deleted with the job", async () => {
    const applied = await loom(
      ["apply", "-f", "-"],
      `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: away}
spec:
  command: [sleep, "3600"]
  clusters: [m]
  resources: {gpu: 2, cpu: 1, memory: 1Gi}
`,
    );
    expect(applied.code, applied.stderr).toBe(0);
    const running = await until("away Running, mirrored from the member", async () => {
      const j = await job("away");
      return j?.status?.phase === "Running" ? j : undefined;
    });
    expect(running.status.admission.cluster).toBe("m");
    const copy = JSON.parse(
      kubectlOk(member, ["get", "trainingjobs.loom.dev", "away", "-n", "loom-default", "-o", "json"]),
    ) as Obj;
    expect(copy.metadata.labels["loom.dev/fleet-uid"]).toBe(running.metadata.uid);
    // Nothing of it runs in the control plane's own cluster.
    expect(
      kubectlOk(cp, ["get", "pods", "-n", "loom-default", "-l", "loom.dev/workload=away", "-o", "name"]),
    ).toBe("");
    // The worker's log, from the member's pod (kwok's kubelet API serves its default line).
    const logs = await loom(["logs", "away"]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain("simulated by kwok");
    const deleted = await loom(["delete", "tj", "away", "--timeout", "60"]);
    expect(deleted.code, deleted.stderr).toBe(0);
    await until("the member's copy gone", () =>
      member.kubectl(["get", "trainingjobs.loom.dev", "away", "-n", "loom-default"]).code !== 0
        ? true
        : undefined,
    );
  });
});

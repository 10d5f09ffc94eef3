import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, until as waitUntil } from "./helpers.js";
import { operatorCluster, startOperator, type TestCluster } from "./k8s/cluster.js";
import { type CuttableProxy, proxiedKubeconfig } from "./proxy.js";

// biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
type Obj = Record<string, any>;

/**
 * Self-fencing on a Kubernetes member (issue 23, point 4): a control plane (`loom up`) reaches
 * member b's API server only through a proxy the test cuts, while b's own `loom operator` talks to
 * it directly. The control plane renews a coordination.k8s.io Lease in b's loom-system; cut, b's
 * operator stops seeing it renewed, deletes the copy's pods and marks the copy Fenced, before the
 * control plane re-admits the job on its own platform. Healed, the copy in b is deleted.
 */
describe("fleet fencing on a Kubernetes member: its operator stops the copy when the control plane's Lease lapses", () => {
  const cp = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-fence-k8s-"));
  let b: TestCluster;
  let operator: ReturnType<typeof startOperator>;
  let proxy: CuttableProxy;

  const until = <T>(what: string, probe: () => Promise<T | undefined>) =>
    waitUntil(what, probe, {
      ms: 240_000,
      every: 500,
      context: () => `control plane:\n${cp.log.slice(-3000)}\noperator:\n${operator?.log().slice(-3000)}`,
    });
  const job = async (): Promise<Obj | undefined> => {
    const r = await cp.cli(["get", "tj", "train", "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };
  const inB = (...args: string[]) => b.kubectl([...args, "-n", "loom-default", "-o", "json"]);
  const apply = async (yaml: string, extra: string[] = []) => {
    const file = join(dir, `m-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, yaml);
    const r = await cp.cli(["apply", "-f", file, ...extra]);
    expect(r.code, r.stderr).toBe(0);
  };
  const selfMember = (unschedulable: boolean) =>
    apply(
      `apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: self}\nspec: {platform: self, unschedulable: ${unschedulable}}\n`,
    );

  beforeAll(async () => {
    const own = operatorCluster("fence-b", { nodes: 1 });
    b = own.cluster;
    b.kubectl(["delete", "trainingjobs.loom.dev", "--all", "-A", "--timeout=60s"]);
    operator = startOperator(own.operatorKubeconfig);
    await operator.ready;
    // The control plane's kubeconfig for b names the proxy.
    const proxied = join(dir, "b.kubeconfig");
    proxy = await proxiedKubeconfig(b.kubeconfig, proxied);
    await cp.start();
    await selfMember(true);
    await apply(
      "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: b}\nspec: {clusterLostTimeout: 20s}\n",
      ["--kubeconfig-file", proxied],
    );
    await until("b Ready", async () =>
      /^b\s+Ready/m.test((await cp.cli(["get", "clusters"])).stdout) ? true : undefined,
    );
  }, 600_000);

  afterAll(async () => {
    proxy?.heal();
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    await operator?.stop();
    proxy?.close();
  });

  it("cut off, b's operator deletes the copy's pods and marks it Fenced before the job runs in self; healed, the copy goes", async () => {
    const train = JSON.stringify({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "train" },
      spec: { command: ["sleep", "3600"], resources: { cpu: 1, memory: "256Mi" } },
    });
    expect((await cp.cli(["apply", "-f", "-"], { input: train })).code).toBe(0);
    await until("train Running in b", async () => {
      const j = await job();
      return j?.status?.admission?.cluster === "b" && j.status.phase === "Running" ? j : undefined;
    });
    // The control plane's Lease in b: holder and half of clusterLostTimeout.
    const leases = JSON.parse(
      b.kubectl(["get", "leases", "-n", "loom-system", "-l", "loom.dev/fleet-lease=true", "-o", "json"])
        .stdout,
    ) as Obj;
    expect(leases.items).toHaveLength(1);
    expect(leases.items[0].spec.leaseDurationSeconds).toBe(10);
    const copy = JSON.parse(inB("get", "trainingjobs.loom.dev", "train").stdout) as Obj;
    expect(copy.metadata.annotations["loom.dev/fleet-control-plane"]).toBe(
      leases.items[0].spec.holderIdentity,
    );
    expect((JSON.parse(inB("get", "pods").stdout) as Obj).items.length).toBeGreaterThan(0);
    await selfMember(false);

    proxy.partition();
    const fenced = await until("b's copy Fenced and its pods gone", async () => {
      const c = JSON.parse(inB("get", "trainingjobs.loom.dev", "train").stdout || "{}") as Obj;
      const cond = c.status?.conditions?.find((x: Obj) => x.type === "Fenced");
      const pods = (JSON.parse(inB("get", "pods").stdout || '{"items":[1]}') as Obj).items;
      return cond?.status === "True" && pods.length === 0 ? cond : undefined;
    });
    expect(fenced.message).toMatch(
      /has not renewed its lease for \d+s .*stopped so the job cannot run twice/,
    );
    const back = await until("train Running in self", async () => {
      const j = await job();
      return j?.status?.phase === "Running" && !j.status.admission?.cluster ? j : undefined;
    });
    // b had fenced (same machine, one clock) before the control plane admitted the job again.
    const readmitted = back.status.conditions.find((c: Obj) => c.type === "Admitted");
    expect(Date.parse(readmitted.lastTransitionTime)).toBeGreaterThanOrEqual(
      Date.parse(fenced.lastTransitionTime),
    );

    proxy.heal();
    await until("the stale copy in b deleted", async () =>
      inB("get", "trainingjobs.loom.dev", "train").code !== 0 ? true : undefined,
    );
    expect((await job())?.status?.admission?.cluster).toBeUndefined();
  }, 600_000);
});

import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, LoomProcess, ROOT } from "./helpers.js";
import { operatorCluster, ownState, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * `loom logs` on a fleet's control plane for a job that really ran in a member (issue 23): the
 * member is a cluster whose only node is the real one (real-0: containerd, runc, kubelet;
 * test/k8s/node.sh) with its own `loom operator`; the control plane is `loom up`. kwok pods run
 * nothing, so only here does the worker's own output (a sum its shell computed) travel from the
 * container through the member's kubelet and API server to the control plane's `loom logs`.
 */
process.env.LOOM_K8S_REAL_NODE = "1";

describe("fleet: loom logs from the control plane shows a member's job that ran on the real node", () => {
  let member: TestCluster | undefined;
  let operator: ReturnType<typeof startOperator> | undefined;
  const cp = new LoomProcess();

  beforeAll(async () => {
    const own = operatorCluster("fleet-realnode", { nodes: 0 });
    member = own.cluster;
    member.kubectl(["delete", "trainingjobs.loom.dev", "--all", "-A", "--timeout=60s"]);
    operator = startOperator(own.operatorKubeconfig);
    await operator.ready;
    await cp.start();
    const file = join(mkdtempSync(join(tmpdir(), "loom-fleet-real-")), "m.yaml");
    writeFileSync(file, "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: m}\nspec: {}\n");
    const r = await cp.cli(["apply", "-f", file, "--kubeconfig-file", member.kubeconfig]);
    expect(r.code, r.stderr).toBe(0);
  }, 3_600_000);

  afterAll(async () => {
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    await operator?.stop();
    // The machine has one real node: hand it back (test/realnode.e2e.test.ts runs suites in order).
    if (member && process.env.LOOM_TEST_KEEP_CLUSTER !== "1")
      spawnSync("bash", [join(ROOT, "test/k8s/down.sh")], {
        env: { ...process.env, LOOM_K8S_STATE: ownState("fleet-realnode") },
        stdio: "ignore",
      });
  });

  it("the worker's own output, read through the member, is what loom logs prints on the control plane", async () => {
    const applied = await cp.cli(["apply", "-f", "-"], {
      input: `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: far}
spec:
  image: loom.local/busybox:1
  command: [sh, -c, 'echo "answer $((6 * 7)) from $(uname -n)"']
  nodePool: real
  resources: {cpu: 100m, memory: 64Mi}
`,
    });
    expect(applied.code, applied.stderr).toBe(0);
    let job: Job | undefined;
    for (let i = 0; i < 360 && !["Succeeded", "Failed"].includes(job?.status?.phase ?? ""); i++) {
      if (i > 0) await sleep(500);
      job = await cp.job("far").catch(() => undefined);
    }
    expect(job?.status?.phase, `${JSON.stringify(job?.status)}\n${operator?.log().slice(-2000)}`).toBe(
      "Succeeded",
    );
    expect((job!.status as { admission?: { cluster?: string; node?: string } }).admission).toMatchObject({
      cluster: "m",
      node: "m/real-0",
    });
    const logs = await cp.cli(["logs", "far"]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toMatch(/^\[worker 0\] answer 42 from far-0$/m);
  }, 600_000);
});

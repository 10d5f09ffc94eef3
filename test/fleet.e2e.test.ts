import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { operatorCluster, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * One queue over a fleet (issue 23), for real: two private kwok clusters (LOOM_K8S_STATE-fleet-a
 * and -fleet-b), each with Loom's CRDs and its own `loom operator`, registered on an embedded
 * control plane (`loom up`) with `loom apply --kubeconfig-file`. Each member has one 8-GPU node;
 * the control plane's own platform has no GPU, so GPU jobs go to the members.
 */
describe("fleet: one queue over two Kubernetes members", () => {
  const members: { name: string; cluster: TestCluster; operator: ReturnType<typeof startOperator> }[] = [];
  const cp = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-fleet-"));
  // biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
  type Obj = Record<string, any>;

  async function until<T>(what: string, probe: () => Promise<T | undefined>, tries = 240): Promise<T> {
    for (let i = 0; i < tries; i++) {
      const v = await probe();
      if (v !== undefined) return v;
      await sleep(500);
    }
    throw new Error(`timed out waiting for ${what}\n${cp.log.slice(-3000)}`);
  }
  const job = async (name: string): Promise<Obj | undefined> => {
    const r = await cp.cli(["get", "tj", name, "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };
  const inMember = (m: number, name: string) =>
    members[m]!.cluster.kubectl(["get", "trainingjobs.loom.dev", name, "-n", "loom-default", "-o", "json"]);
  const jobYaml = (name: string, gpu: number, workers = 1, extra = "") =>
    `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ${name}}
spec:
  command: [sleep, "3600"]
  workers: ${workers}
  resources: {gpu: ${gpu}, cpu: 1, memory: 1Gi}
${extra}`;

  beforeAll(async () => {
    for (const name of ["a", "b"]) {
      const own = operatorCluster(`fleet-${name}`, { nodes: 1 });
      const operator = startOperator(own.operatorKubeconfig);
      await operator.ready;
      members.push({ name, cluster: own.cluster, operator });
    }
    await cp.start();
    for (const m of members) {
      const file = join(dir, `${m.name}.yaml`);
      writeFileSync(
        file,
        `apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: ${m.name}}\nspec: {}\n`,
      );
      const r = await cp.cli(["apply", "-f", file, "--kubeconfig-file", m.cluster.kubeconfig]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toContain(`cluster.loom.dev/${m.name} created`);
    }
  }, 600_000);

  afterAll(async () => {
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    for (const m of members) await m.operator.stop();
  });

  it("registers both members (Ready, version, capacity) and the control plane itself; the kubeconfig is never served", async () => {
    const out = await until("both members Ready", async () => {
      const r = await cp.cli(["get", "clusters"]);
      return /^a\s+Ready\s+v1\.\S+\s+8 GPU/m.test(r.stdout) && /^b\s+Ready/m.test(r.stdout)
        ? r.stdout
        : undefined;
    });
    expect(out).toMatch(/^NAME\s+STATUS\s+VERSION\s+POOLS\s+AGE/);
    expect(out).toMatch(/^self\s+Ready/m);
    const described = await cp.cli(["get", "cluster", "a", "-o", "json"]);
    expect(described.stdout).not.toContain("certificate-authority");
    expect(described.stdout).toContain('"name": "cluster-a-kubeconfig"');
  });

  it("fills a, then b; spec.clusters sends to b; a gang too big for any member waits naming each", async () => {
    const r = await cp.cli(["apply", "-f", "-"], {
      input: [jobYaml("j1", 4), jobYaml("j2", 4), jobYaml("j3", 4)].join("---\n"),
    });
    expect(r.code, r.stderr).toBe(0);
    const placed = await until("j1..j3 admitted", async () => {
      const all = await Promise.all(["j1", "j2", "j3"].map(job));
      const c = all.map((j) => j?.status?.admission?.cluster);
      return c.every(Boolean) ? c : undefined;
    });
    expect([...placed].sort()).toEqual(["a", "a", "b"]);
    // Each runs in its member: the copy is there, its pods bound by that member's Loom.
    const whereJ3 = placed[2] === "b" ? 1 : 0;
    const running = await until("j3 Running, mirrored from its member", async () => {
      const j = await job("j3");
      return j?.status?.phase === "Running" ? j : undefined;
    });
    expect(running.status.admission.cluster).toBe(members[whereJ3]!.name);
    expect(inMember(whereJ3, "j3").code).toBe(0);
    const b = await cp.cli(["apply", "-f", "-"], { input: jobYaml("onlyb", 2, 1, "  clusters: [b]") });
    expect(b.code, b.stderr).toBe(0);
    const onlyb = await until("onlyb admitted", async () => (await job("onlyb"))?.status?.admission);
    expect(onlyb.cluster).toBe("b");
    const huge = await cp.cli(["apply", "-f", "-"], { input: jobYaml("huge", 8, 2) });
    expect(huge.code, huge.stderr).toBe(0);
    const why = await until("huge's reason", async () => {
      const c = (await job("huge"))?.status?.conditions?.find((x: Obj) => x.type === "Admitted");
      return c?.message as string | undefined;
    });
    expect(why).toMatch(/fits in no member cluster/);
    expect(why).toMatch(/ a: /);
    expect(why).toMatch(/; b: /);
    const describe = await cp.cli(["describe", "tj", "j3"]);
    expect(describe.stdout).toMatch(/Dispatched/);
  });

  it("apply --dry-run says which member would take a job", async () => {
    const r = await cp.cli(["apply", "--dry-run", "-f", "-"], {
      input: jobYaml("probe", 2, 1, "  clusters: [b]"),
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/would start now in cluster b on b\//);
  });

  it("deleting a job on the control plane deletes its copy in the member", async () => {
    const where = (await job("onlyb"))!.status.admission.cluster === "a" ? 0 : 1;
    const r = await cp.cli(["delete", "tj", "onlyb", "--timeout", "60"]);
    expect(r.code, r.stderr).toBe(0);
    await until("the member's copy gone", async () =>
      inMember(where, "onlyb").code !== 0 ? true : undefined,
    );
  });
});

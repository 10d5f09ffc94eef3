import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, until as waitUntil } from "./helpers.js";
import { gpuJobYaml, type OperatorMember, operatorMembers, registerMembers } from "./k8s/cluster.js";

// biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
type Obj = Record<string, any>;

/**
 * A member's own work counts (issue 23): member a's users fill its GPUs themselves, with a plain
 * pod bound to its node and a TrainingJob submitted to a directly (a's own `loom operator` runs
 * it); the control plane (`loom up`), which placed nothing in a, must see a as full and place a
 * new gang in b, and `loom get clusters` says what is free where. Both members are private kwok
 * clusters with one 8-GPU node (LOOM_K8S_STATE-own-a and -own-b), each with its own operator;
 * the control plane's own platform has no GPU.
 */
describe("fleet: a member's own work is subtracted from its free capacity", () => {
  const cp = new LoomProcess();
  const members: OperatorMember[] = [];

  const until = <T>(what: string, probe: () => Promise<T | undefined>) =>
    waitUntil(what, probe, {
      ms: 240_000,
      every: 500,
      context: () =>
        `control plane:\n${cp.log.slice(-3000)}\noperator of a:\n${members[0]?.operator.log().slice(-2000)}`,
    });
  const a = () => members[0]!.cluster;
  const job = async (name: string): Promise<Obj | undefined> => {
    const r = await cp.cli(["get", "tj", name, "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };
  const jobYaml = gpuJobYaml;
  /** The clusters as `loom get clusters` prints them: NAME → the FREE column. */
  const free = async () => {
    const out = (await cp.cli(["get", "clusters"])).stdout;
    const header = out.split("\n")[0] ?? "";
    const at = header.indexOf("FREE");
    const age = header.indexOf("AGE");
    const by: Record<string, string> = {};
    for (const line of out.split("\n").slice(1))
      if (line.trim()) by[line.split(/\s+/)[0]!] = line.slice(at, age).trim();
    return by;
  };
  // A user of a's own, outside Loom: a plain pod bound to its node, holding 4 GPUs.
  const plainPod = `apiVersion: v1
kind: Pod
metadata: {name: own-user, namespace: default}
spec:
  nodeName: kwok-node-0
  containers:
  - name: c
    image: busybox
    resources:
      requests: {cpu: "1", memory: 1Gi, nvidia.com/gpu: "4"}
      limits: {nvidia.com/gpu: "4"}
`;

  beforeAll(async () => {
    members.push(...(await operatorMembers("own", ["a", "b"])));
    // A reused cluster keeps an earlier run's own user: it would hold a's GPUs.
    a().kubectl(["delete", "pod", "own-user", "-n", "default", "--grace-period=0", "--force"]);
    await cp.start();
    await registerMembers(cp, members);
    await until("both members Ready with 8 GPUs free", async () => {
      const f = await free();
      return f.a?.startsWith("8 GPU") && f.b?.startsWith("8 GPU") ? true : undefined;
    });
  }, 600_000);

  afterAll(async () => {
    await cp.cli(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    if (members[0]) {
      a().kubectl(["delete", "trainingjobs.loom.dev", "--all", "-A", "--timeout=60s"]);
      a().kubectl(["delete", "pod", "own-user", "-n", "default", "--grace-period=0", "--force"]);
    }
    for (const m of members) await m.operator.stop();
  }, 180_000);

  it("a's GPUs, held by a plain pod and a job submitted to a directly, are not free: a gang goes to b", {
    timeout: 300_000,
  }, async () => {
    const pod = a().kubectl(["apply", "-f", "-"], { input: plainPod });
    expect(pod.code, pod.stderr).toBe(0);
    // a's own job (its own Loom places it on the 4 GPUs the pod left).
    const own = a().kubectl(["apply", "-n", "loom-default", "-f", "-"], { input: jobYaml("theirs", 4) });
    expect(own.code, own.stderr).toBe(0);
    await until("a's own job running in a", async () => {
      const r = a().kubectl(["get", "trainingjobs.loom.dev", "theirs", "-n", "loom-default", "-o", "json"]);
      return r.code === 0 && (JSON.parse(r.stdout) as Obj).status?.phase === "Running" ? true : undefined;
    });
    const full = await until("a shows no GPU free", async () => {
      const f = await free();
      return f.a?.startsWith("0 GPU") ? f : undefined;
    });
    expect(full.b).toMatch(/^8 GPU/);
    // A gang of 2 × 2 GPUs: a comes first (by name) and, counting only what the control plane
    // placed, would look empty.
    const r = await cp.cli(["apply", "-f", "-"], { input: jobYaml("gang", 2, 2) });
    expect(r.code, r.stderr).toBe(0);
    const admission = await until("gang admitted", async () => (await job("gang"))?.status?.admission);
    expect(admission.cluster).toBe("b");
    expect(admission.node).toMatch(/^b\//);
    // Created in b and run there (status mirrored back), never in a.
    await until("the gang Running, mirrored from b", async () =>
      (await job("gang"))?.status?.phase === "Running" ? true : undefined,
    );
    expect(
      members[1]!.cluster.kubectl(["get", "trainingjobs.loom.dev", "gang", "-n", "loom-default"]).code,
    ).toBe(0);
    expect(a().kubectl(["get", "trainingjobs.loom.dev", "gang", "-n", "loom-default"]).code).not.toBe(0);
    const after = await until("b shows the gang's 4 GPUs taken", async () => {
      const f = await free();
      return f.b?.startsWith("4 GPU") ? f : undefined;
    });
    expect(after.a).toMatch(/^0 GPU/);
  });

  it("a job that only a may take waits saying a has no GPU free, and starts there once a's own user is gone", {
    timeout: 300_000,
  }, async () => {
    const r = await cp.cli(["apply", "-f", "-"], { input: jobYaml("onlya", 2, 1, "  clusters: [a]") });
    expect(r.code, r.stderr).toBe(0);
    const why = await until("onlya's reason", async () => {
      const c = (await job("onlya"))?.status?.conditions?.find((x: Obj) => x.type === "Admitted");
      return c?.status === "False" ? (c.message as string) : undefined;
    });
    expect(why).toMatch(/gpu: requested 2, free 0/);
    expect(why).toMatch(/cluster a's own work/);
    expect((await job("onlya"))?.status?.admission).toBeUndefined();
    // a's own user leaves: the next probe sees 4 GPUs free in a, and the queue places the job there.
    const gone = a().kubectl(["delete", "pod", "own-user", "-n", "default", "--grace-period=0", "--force"]);
    expect(gone.code, gone.stderr).toBe(0);
    const admission = await until("onlya admitted", async () => (await job("onlya"))?.status?.admission);
    expect(admission.cluster).toBe("a");
    const f = await until("a shows 2 GPUs free", async () => {
      const v = await free();
      return v.a?.startsWith("2 GPU") ? v : undefined;
    });
    expect(f.b).toMatch(/^4 GPU/);
  });
});

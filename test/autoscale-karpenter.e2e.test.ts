import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, LoomProcess, ROOT } from "./helpers.js";
import { operatorCluster, ownState, startOperator, type TestCluster } from "./k8s/cluster.js";

/**
 * Node autoscaling with a real node autoscaler: Karpenter and its kwok cloud provider (built from
 * sigs.k8s.io/karpenter by test/k8s/karpenter.sh, run as a host process) in a cluster of this
 * file's own, with one NodePool "gpu-8" of 8-GPU kwok nodes, tainted, that starts empty. Loom's waiting
 * gangs are the demand (pending stand-in pods, PodScheduled=False/Unschedulable); Karpenter adds
 * NodeClaims and kwok nodes; Loom binds the gang there; once the work is done Karpenter
 * consolidates the empty nodes away. (Not the cluster-autoscaler: the Go module proxy refuses it.)
 */
const POOL = "gpu-8";
const GPU_MODEL = "NVIDIA-H100-80GB-HBM3";
/** Keeps a node Karpenter is removing in the API (tainted, deleting) long enough to attack it. */
const HOLD = "loom.dev/test-hold";

const nodePool = `apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: ${POOL}
spec:
  template:
    metadata:
      labels:
        loom.dev/node-pool: ${POOL}
        nvidia.com/gpu.product: ${GPU_MODEL}
    spec:
      # Reserved, as GPU pools are: Karpenter adds nodes only for pods that tolerate both, so
      # Loom's stand-in pods must carry the gang's toleration and the pool's Loom taint.
      taints:
        - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
        - {key: loom.dev/node-pool, value: ${POOL}, effect: NoSchedule}
      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}
      requirements:
        - {key: node.kubernetes.io/instance-type, operator: In, values: [gpu-8x-amd64-linux]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
      expireAfter: Never
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 5s
    # All at once (the default, 10%, is one node of two at a time, and a held node stays deleting).
    budgets: [{nodes: "100%"}]
  limits:
    nvidia.com/gpu: "32"
`;

interface KubeNodeJson {
  metadata: { name: string; deletionTimestamp?: string; finalizers?: string[] };
  spec?: { taints?: { key: string; effect: string }[] };
  status?: { conditions?: { type: string; status: string }[] };
}

describe("node autoscaling from Loom's queue with Karpenter (kwok provider)", () => {
  let cluster: TestCluster;
  let operator: ReturnType<typeof startOperator>;
  const state = ownState("karpenter");
  const cli = new LoomProcess();
  const loom = (args: string[], input?: string) =>
    cli.cli(["--kubeconfig", cluster.kubeconfig, ...args], { input });
  const karpenterLog = () => {
    try {
      return readFileSync(join(state, "logs/karpenter.log"), "utf8");
    } catch {
      return "";
    }
  };
  const json = <T>(args: string[]): T => JSON.parse(cluster.kubectl([...args, "-o", "json"]).stdout) as T;
  const poolNodes = () =>
    json<{ items: KubeNodeJson[] }>(["get", "nodes", "-l", `loom.dev/node-pool=${POOL}`]).items;
  const nodeClaims = () => json<{ items: { metadata: { name: string } }[] }>(["get", "nodeclaims"]).items;
  const demandPods = () =>
    cluster
      .kubectl(["get", "pods", "-n", "loom-default", "-l", "loom.dev/capacity-for", "-o", "name"])
      .stdout.trim();

  async function until<T>(
    what: string,
    get: () => Promise<T | undefined> | T | undefined,
    ms = 120_000,
  ): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await get();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline)
        throw new Error(
          `timed out: ${what}\n--- operator:\n${operator.log().slice(-3000)}\n--- karpenter:\n${karpenterLog().slice(-4000)}`,
        );
      await sleep(500);
    }
  }
  const job = async (name: string) => {
    const r = await loom(["get", "tj", name, "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Job & { status?: Record<string, unknown> }) : undefined;
  };
  const phase = async (name: string) => (await job(name))?.status?.phase as string | undefined;
  const placedOn = (j: Job & { status?: Record<string, unknown> }) =>
    new Set(
      ((j.status?.admission as { placements?: { node: string }[] } | undefined)?.placements ?? []).map(
        (p) => p.node,
      ),
    );
  const trainingJob = (
    name: string,
    gpu: number,
    workers: number,
    runFor = "5s",
  ) => `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata:
  name: ${name}
  annotations: {"loom.dev/kwok-complete-after": "${runFor}"}
spec:
  command: ["python", "train.py"]
  workers: ${workers}
  nodePool: ${POOL}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  resources: {cpu: "1", memory: 1Gi, gpu: ${gpu}}
`;
  /** kwok's pid: stopping it keeps new nodes from turning Ready, as machines still booting. */
  const kwokPid = () =>
    Number(
      readFileSync(join(state, "pids"), "utf8")
        .split("\n")
        .find((l) => l.startsWith("kwok "))
        ?.split(" ")[1],
    );
  const release = (names: string[]) => {
    for (const n of names)
      cluster.kubectl([
        "patch",
        "node",
        n,
        "--type=json",
        "-p",
        `[{"op":"remove","path":"/metadata/finalizers"}]`,
      ]);
  };

  beforeAll(async () => {
    const c = operatorCluster("karpenter", { nodes: 1 });
    cluster = c.cluster;
    execFileSync("bash", [join(ROOT, "test/k8s/karpenter.sh"), "up"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, LOOM_K8S_STATE: state },
    });
    // A run before this one may have left nodes held; let them go.
    release(poolNodes().map((n) => n.metadata.name));
    expect(cluster.kubectl(["apply", "-f", "-"], { input: nodePool }).code).toBe(0);
    await until("the NodePool Ready", () =>
      json<{ status?: { conditions?: { type: string; status: string }[] } }>([
        "get",
        "nodepool",
        POOL,
      ]).status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")
        ? true
        : undefined,
    );
    operator = startOperator(c.operatorKubeconfig, ["--node-autoscaling"]);
    await operator.ready;
    for (let i = 0; i < 60 && cluster.kubectl(["get", "ns", "loom-default"]).code !== 0; i++)
      await sleep(500);
  }, 3_600_000);

  afterAll(async () => {
    if (cluster) {
      await loom(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
      release(poolNodes().map((n) => n.metadata.name));
    }
    await operator?.stop();
    await cli.stop();
  });

  it("a job no NodePool can hold asks for nothing: Karpenter says why, and makes no NodeClaim", async () => {
    // 9 GPUs in one worker: no 8-GPU instance type can ever hold it.
    expect((await loom(["apply", "-f", "-"], trainingJob("huge", 9, 1))).code).toBe(0);
    const refused = await until("Karpenter's refusal", async () => {
      const j = await job("huge");
      return (j?.status?.capacityRequest as { refused?: string } | undefined)?.refused;
    });
    // Karpenter's own words: no instance type of the pool's NodePool has 9 GPUs.
    expect(refused).toMatch(
      /Failed to schedule pod, no instance type has enough resources.*"nvidia.com\/gpu":"9"/,
    );
    expect(nodeClaims()).toHaveLength(0);
    expect(poolNodes()).toHaveLength(0);
    const described = await loom(["describe", "tj", "huge"]);
    expect(described.stdout).toMatch(
      /Capacity:\s+the node autoscaler adds no node for it \(requested \d+ s ago\)/,
    );
    expect((await loom(["delete", "tj", "huge", "--timeout", "60"])).code).toBe(0);
    await until("huge's stand-in pods gone", () => (demandPods() === "" ? true : undefined));
    expect(nodeClaims()).toHaveLength(0);
  }, 300_000);

  it("a 16-GPU gang on an empty pool gets two nodes in one go, runs there, and the empty nodes go", async () => {
    // New nodes stay un-Ready while kwok is stopped, as machines that are still booting.
    const kwok = kwokPid();
    process.kill(kwok, "SIGSTOP");
    // Karpenter may be reused from an earlier run: read only what it logs from here on.
    const logFrom = karpenterLog().length;
    try {
      // 30 s of work: the nodes must still be there when the test reads them after seeing it
      // Running (5 s of work and consolidateAfter 5 s removed them first under load, in CI).
      expect((await loom(["apply", "-f", "-"], trainingJob("big", 8, 2, "30s"))).code).toBe(0);
      const asked = await until("Karpenter's nominations in status", async () => {
        const c = (await job("big"))?.status?.capacityRequest as
          | { nodes?: number; pool?: string }
          | undefined;
        return c?.nodes === 2 ? c : undefined;
      });
      expect(asked).toMatchObject({ nodes: 2, pool: POOL });
      await until("two NodeClaims", () => (nodeClaims().length === 2 ? true : undefined), 60_000);
      // Both in one provisioning batch: Loom's stand-ins ask for the whole gang at once.
      expect(karpenterLog().slice(logFrom)).toMatch(
        /computed new nodeclaim\(s\) to fit pod\(s\)[^\n]*"nodeclaims":2/,
      );
      const described = await loom(["describe", "tj", "big"]);
      expect(described.stdout).toMatch(/waiting for 2 nodes of pool gpu-8 \(requested \d+ s ago\)/);
      expect(await phase("big")).not.toBe("Running");
    } finally {
      process.kill(kwok, "SIGCONT");
    }
    const running = await until("big Running on the new nodes", async () => {
      const j = await job("big");
      return j?.status?.phase === "Running" || j?.status?.phase === "Succeeded" ? j : undefined;
    });
    expect(running.status?.capacityRequest).toBeUndefined();
    const added = poolNodes().map((n) => n.metadata.name);
    expect(added).toHaveLength(2);
    expect(placedOn(running)).toEqual(new Set(added));
    expect(demandPods()).toBe("");

    // Hold the two nodes in the API once Karpenter removes them, to try binding work there.
    for (const n of added)
      cluster.kubectl([
        "patch",
        "node",
        n,
        "--type=merge",
        "-p",
        JSON.stringify({ metadata: { finalizers: [HOLD] } }),
      ]);
    try {
      await until("big Succeeded", async () => ((await phase("big")) === "Succeeded" ? true : undefined));
      // Empty now: Karpenter taints them karpenter.sh/disrupted and deletes them (held here).
      const removing = await until(
        "both nodes tainted by Karpenter and deleting",
        () => {
          const ns = poolNodes().filter(
            (n) =>
              n.metadata.deletionTimestamp &&
              n.spec?.taints?.some((t) => t.key === "karpenter.sh/disrupted" && t.effect === "NoSchedule"),
          );
          return ns.length === 2 ? ns.map((n) => n.metadata.name) : undefined;
        },
        240_000,
      );
      // The attack: new work that fits on either marked node (they still look Ready and empty:
      // only the taint says they are going).
      expect(
        poolNodes()
          .filter((n) => removing.includes(n.metadata.name))
          .filter((n) => n.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"))
          .map((n) => n.metadata.name)
          .sort(),
      ).toEqual([...removing].sort());
      expect((await loom(["apply", "-f", "-"], trainingJob("after", 8, 1, "2s"))).code).toBe(0);
      const after = await until("after Running", async () => {
        const j = await job("after");
        return j?.status?.phase === "Running" || j?.status?.phase === "Succeeded" ? j : undefined;
      });
      const node = [...placedOn(after)][0]!;
      expect(node).toBeDefined();
      expect(removing).not.toContain(node);
      // Nor was any worker pod ever bound to them after they were marked: only big's two.
      const bound = json<{ items: { metadata: { name: string }; spec: { nodeName?: string } }[] }>([
        "get",
        "pods",
        "-n",
        "loom-default",
      ]).items.filter((p) => p.spec.nodeName && removing.includes(p.spec.nodeName));
      expect(bound.map((p) => p.metadata.name).filter((n) => !n.startsWith("big-"))).toEqual([]);
      await until("after Succeeded", async () => ((await phase("after")) === "Succeeded" ? true : undefined));
    } finally {
      release(added);
    }
    // Idle now: Karpenter consolidates every node of the pool away.
    await until("the empty nodes removed", () => (poolNodes().length === 0 ? true : undefined), 240_000);
    await until("no NodeClaims left", () => (nodeClaims().length === 0 ? true : undefined), 60_000);
  }, 900_000);
});

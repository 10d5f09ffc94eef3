/**
 * bench:k8s-node — a 2-pod PyTorch DDP gang on the real node (real-0: containerd, runc, the
 * bridge CNI, CoreDNS), Loom's TrainingJob against a plain batch/v1 indexed Job with the same
 * pods and a headless Service, in the same run:
 *   (a) submit → both pods training (their first all_reduce done), and
 *   (b) worker 1's pod deleted → Loom's gang training again (a whole new attempt) vs the Job's
 *       replacement pod started (the Job only replaces the pod: its rank 0 still waits on the
 *       dead peer, so the Job never trains again by itself; that is the point of a gang).
 * Runs alternate Loom / Job; medians of LOOM_BENCH_RUNS (default 5) each. The "training" and
 * "started" marks are the pods' own `time.time()` (the host's clock: the pods run on it).
 * Appends a dated section to bench/RESULTS.md (LOOM_BENCH_APPEND=0: print it only).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { operatorCluster, ownState, startOperator } from "../test/k8s/cluster.js";
import { importPythonImage, PYTHON_IMAGE } from "../test/k8s/python-image.js";
import { appendResults, fmt, loadNow, machineLine, markdownTable, median, num, ratio } from "./report.js";

process.env.LOOM_K8S_REAL_NODE = "1";
const RUNS = num(process.env.LOOM_BENCH_RUNS, 5);
const NS = "loom-default";

/** Both sides run this: import torch, say STARTED, rendezvous (gloo), say TRAINING, keep training. */
const SCRIPT = `
import os, sys, time, datetime
import torch, torch.distributed as dist
print("STARTED", time.time(), flush=True)
rank = int(os.environ.get("RANK") or os.environ["JOB_COMPLETION_INDEX"])
dist.init_process_group("gloo", init_method="env://", world_size=2, rank=rank, timeout=datetime.timedelta(seconds=600))
t = torch.ones(1)
dist.all_reduce(t)
print("TRAINING", time.time(), flush=True)
while True:
    dist.all_reduce(t)
    time.sleep(0.2)
`;

async function main(): Promise<void> {
  const began = Date.now();
  const loadAtStart = loadNow();
  const { cluster, operatorKubeconfig } = operatorCluster("realnode", { nodes: 1 });
  const k = (args: string[], input?: string) => {
    const r = cluster.kubectl(args, input === undefined ? {} : { input });
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  importPythonImage(ownState("realnode"));
  const operator = startOperator(operatorKubeconfig);
  await operator.ready;
  try {
    for (let i = 0; !cluster.kubectl(["get", "ns", NS]).stdout && i < 120; i++) await sleep(500);
    k(["delete", "trainingjobs.loom.dev,jobs.batch", "--all", "-n", NS, "--wait=true", "--timeout=120s"]);

    /** The pods of a selector, by name, with the latest mark of `what` each printed. */
    const marks = (selector: string, what: string) => {
      const pods = (
        JSON.parse(k(["get", "pods", "-n", NS, "-l", selector, "-o", "json"])) as {
          items: { metadata: { name: string; deletionTimestamp?: string } }[];
        }
      ).items.filter((p) => !p.metadata.deletionTimestamp);
      return pods.map((p) => {
        const log = cluster.kubectl(["logs", "-n", NS, p.metadata.name]).stdout;
        const all = [...log.matchAll(new RegExp(`^${what} ([0-9.]+)$`, "gm"))];
        return { name: p.metadata.name, at: all.length ? Number(all.at(-1)![1]) * 1000 : undefined };
      });
    };
    const until = async <T>(what: string, probe: () => T | undefined): Promise<T> => {
      for (let i = 0; i < 1200; i++) {
        const v = probe();
        if (v !== undefined) return v;
        await sleep(250);
      }
      throw new Error(`timed out waiting for ${what}`);
    };
    /** When every one of `n` pods (after `since`) printed `what`: the latest of their marks. */
    const allMarked = (selector: string, what: string, n: number, since: number) =>
      until(`${n} pods of ${selector} ${what}`, () => {
        const m = marks(selector, what).filter((p) => p.at !== undefined && p.at >= since);
        return m.length >= n ? Math.max(...m.map((p) => p.at!)) : undefined;
      });

    const loomJob = (name: string) => `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ${name}}
spec:
  workers: 2
  framework: pytorch
  image: ${PYTHON_IMAGE}
  command: [python3, -c, ${JSON.stringify(SCRIPT)}]
  nodePool: real
  resources: {cpu: 200m, memory: 512Mi}
  failurePolicy: {maxRestarts: 5}
  terminationGracePeriodSeconds: 1
`;
    const plainJob = (name: string) => [
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace: NS },
        spec: { clusterIP: "None", selector: { "job-name": name }, ports: [{ port: 29500 }] },
      },
      {
        apiVersion: "batch/v1",
        kind: "Job",
        metadata: { name, namespace: NS },
        spec: {
          completionMode: "Indexed",
          completions: 2,
          parallelism: 2,
          backoffLimit: 10,
          template: {
            spec: {
              subdomain: name,
              restartPolicy: "Never",
              terminationGracePeriodSeconds: 1,
              nodeSelector: { "loom.dev/real-node": "true" },
              tolerations: [{ key: "loom.dev/real-node", operator: "Exists", effect: "NoSchedule" }],
              securityContext: {
                runAsNonRoot: true,
                runAsUser: 1000,
                seccompProfile: { type: "RuntimeDefault" },
              },
              enableServiceLinks: false,
              automountServiceAccountToken: false,
              containers: [
                {
                  name: "worker",
                  image: PYTHON_IMAGE,
                  command: ["python3", "-c", SCRIPT],
                  env: [
                    { name: "MASTER_ADDR", value: `${name}-0.${name}` },
                    { name: "MASTER_PORT", value: "29500" },
                    { name: "WORLD_SIZE", value: "2" },
                    { name: "PYTHONUNBUFFERED", value: "1" },
                  ],
                  resources: { requests: { cpu: "200m", memory: "512Mi" }, limits: { memory: "512Mi" } },
                  securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
                },
              ],
            },
          },
        },
      },
    ];

    const rows: { side: string; start: number; recover: number }[] = [];
    const warm = async () => {
      // The first pod of the image on a node pays the snapshot unpack: once, untimed.
      const name = "warm";
      k(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: plainJob(name) }));
      await allMarked(`job-name=${name}`, "TRAINING", 2, 0);
      k(["delete", "job,svc", name, "-n", NS, "--cascade=foreground", "--timeout=120s"]);
    };
    await warm();
    for (let run = 0; run < RUNS; run++) {
      for (const side of run % 2 === 0 ? ["loom", "job"] : ["job", "loom"]) {
        const name = `${side}-${run}`;
        const selector = side === "loom" ? `loom.dev/workload=${name}` : `job-name=${name}`;
        const t0 = Date.now();
        if (side === "loom") k(["apply", "-n", NS, "-f", "-"], loomJob(name));
        else
          k(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: plainJob(name) }));
        const trained = await allMarked(selector, "TRAINING", 2, t0);
        // Worker 1 dies.
        const index = side === "loom" ? "loom.dev/worker-index" : "batch.kubernetes.io/job-completion-index";
        const victim = k(["get", "pods", "-n", NS, "-l", `${selector},${index}=1`, "-o", "name"]).trim();
        const t1 = Date.now();
        k(["delete", "-n", NS, victim, "--grace-period=0", "--force", "--wait=false"]);
        const recovered =
          side === "loom"
            ? await allMarked(selector, "TRAINING", 2, t1)
            : await allMarked(selector, "STARTED", 1, t1);
        rows.push({ side, start: trained - t0, recover: recovered - t1 });
        console.log(
          `${name}: submit → training ${trained - t0} ms, death → ${side === "loom" ? "training" : "replacement started"} ${recovered - t1} ms`,
        );
        if (side === "loom") k(["delete", "trainingjobs.loom.dev", name, "-n", NS, "--timeout=120s"]);
        else k(["delete", "job,svc", name, "-n", NS, "--cascade=foreground", "--timeout=120s"]);
      }
    }
    const of = (side: string, key: "start" | "recover") =>
      median(rows.filter((r) => r.side === side).map((r) => r[key]))!;
    const ls = of("loom", "start");
    const js = of("job", "start");
    const lr = of("loom", "recover");
    const jr = of("job", "recover");
    const section = [
      `## ${new Date(began).toISOString().slice(0, 16).replace("T", " ")} UTC — bench:k8s-node`,
      "",
      machineLine(loadAtStart),
      `- The real node real-0 (containerd, runc, bridge CNI, CoreDNS; test/k8s/node.sh) of the test cluster; image ${PYTHON_IMAGE} (Debian's CPU PyTorch); 2 pods × 200m CPU, 512Mi; ${RUNS} runs per side, alternating which goes first, after one untimed warm-up gang. Other helpers were running builds and tests on this machine: the load averages above are the measure of it.`,
      "",
      markdownTable(
        ["median (ms)", "Loom TrainingJob", "batch/v1 indexed Job", "Loom ÷ Job"],
        [
          ["submit → both pods training", fmt(ls), fmt(js), ratio(ls, js)],
          ["worker 1 killed → gang training again", fmt(lr), "—", "—"],
          ["worker 1 killed → the Job's replacement pod started", "—", fmt(jr), "—"],
        ],
      ),
      "",
      `- Goal: Loom ≤ 1.1× the Job's submit → training: ${ls / js <= 1.1 ? "met" : "NOT met"} (${(ls / js).toFixed(2)}×).`,
      "- Training = the pod's first gloo all_reduce returned (its `TRAINING <time.time()>` line); the Job's pods find rank 0 as `NAME-0.NAME` through the headless Service (CoreDNS), as Loom's do.",
      "- After a death the Job only replaces the pod; its rank 0 still waits on the old peer, so the Job does not train again by itself. Loom stops the whole gang and starts a new attempt, which trains.",
      `- Load average at end: ${loadNow()}. Whole bench: ${((Date.now() - began) / 1000).toFixed(0)} s.`,
    ].join("\n");
    if (process.env.LOOM_BENCH_APPEND !== "0") appendResults(section);
    console.log(section);
  } finally {
    await operator.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

/**
 * Counts, not times: kube-apiserver's (and etcd's) CPU per create of a TrainingJob against a
 * batch/v1 Job, and what each part of Loom's CRD costs, with nothing else running (no operator,
 * Jobs suspended so no controller acts on them). A tool for bench:k8s's "create 1,000 objects"
 * row (issue 16); appends nothing to RESULTS.md.
 *
 *   npm run build && node --import tsx bench/create-cost.ts     # LOOM_BENCH_CREATES (400) per variant
 *
 * Variants, each in a namespace of its own, in turn: Jobs; TrainingJobs with the CRDs as
 * `loom crds` makes them; without the ValidatingAdmissionPolicy's binding; and with the
 * TrainingJob CRD's CEL rules (x-kubernetes-validations) removed too.
 */
import { BenchCluster, cpuSeconds, KubeHttp, kubeTarget } from "./cluster.js";

const CREATES = Number(process.env.LOOM_BENCH_CREATES ?? 400);
const CONCURRENCY = 16;

function trainingJob(i: number): object {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name: `c-${i}`, labels: { "app.kubernetes.io/part-of": "loom-bench" } },
    spec: { command: ["true"], resources: { cpu: "100m", memory: "64Mi" } },
  };
}

function batchJob(i: number): object {
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name: `c-${i}`, labels: { "app.kubernetes.io/part-of": "loom-bench" } },
    spec: {
      suspend: true,
      backoffLimit: 0,
      template: {
        spec: {
          restartPolicy: "Never",
          containers: [
            {
              name: "worker",
              image: "python:3.11-slim",
              command: ["true"],
              resources: { requests: { cpu: "100m", memory: "64Mi" } },
            },
          ],
        },
      },
    },
  };
}

/** Strips every x-kubernetes-validations from a CRD (its CEL rules), in place. */
function stripCel(node: unknown): void {
  if (Array.isArray(node)) for (const n of node) stripCel(n);
  else if (node && typeof node === "object") {
    const o = node as Record<string, unknown>;
    delete o["x-kubernetes-validations"];
    for (const v of Object.values(o)) stripCel(v);
  }
}

async function main(): Promise<void> {
  const cluster = await BenchCluster.start(1);
  const cleanup = () => void cluster.stop();
  process.on("SIGINT", cleanup);
  try {
    await cluster.installLoomCrds();
    const http = new KubeHttp(await kubeTarget(cluster.kubeconfig), CONCURRENCY);
    const pids = cluster.pids();
    const cpu = () => ["kube-apiserver", "etcd"].map((n) => cpuSeconds(pids.get(n) ?? -1) ?? 0);

    const measure = async (name: string, ns: string, path: string, make: (i: number) => object) => {
      await cluster.kubectlOk(["create", "namespace", ns]);
      // One untimed create first: caches, the namespace's first write.
      await http.send("POST", path, make(-1));
      const before = cpu();
      const t0 = performance.now();
      let next = 0;
      let failed = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < CREATES) {
            const res = await http.send("POST", path, make(next++));
            if (res.status >= 300) failed++;
          }
        }),
      );
      const ms = performance.now() - t0;
      const after = cpu();
      const perCreate = after.map((a, i) => (1000 * (a - before[i]!)) / CREATES);
      console.log(
        `${name.padEnd(52)} apiserver ${perCreate[0]!.toFixed(2)} ms, etcd ${perCreate[1]!.toFixed(2)} ms per create; ${((CREATES * 1000) / ms).toFixed(0)}/s${failed ? `; ${failed} failed` : ""}`,
      );
    };
    // Status writes of the objects just made: the whole object (what Loom sent) or without its
    // spec (the status subresource takes the spec from the stored object, and resets it for
    // managedFields); a Job's status for comparison.
    const measureStatus = async (name: string, path: string, status: object, withSpec: boolean) => {
      const objs: Record<string, unknown>[] = [];
      for (let i = 0; i < CREATES; i++)
        objs.push(JSON.parse((await http.send("GET", `${path}/c-${i}`)).body));
      const before = cpu();
      let next = 0;
      let failed = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < CREATES) {
            const o = objs[next++]!;
            const { spec: _spec, ...rest } = o;
            const body = { ...(withSpec ? o : rest), status };
            const name = (o.metadata as { name: string }).name;
            const res = await http.send("PUT", `${path}/${name}/status`, body);
            if (res.status >= 300) failed++;
          }
        }),
      );
      const after = cpu();
      const per = after.map((a, i) => (1000 * (a - before[i]!)) / CREATES);
      console.log(
        `${name.padEnd(52)} apiserver ${per[0]!.toFixed(2)} ms, etcd ${per[1]!.toFixed(2)} ms per status PUT${failed ? `; ${failed} failed` : ""}`,
      );
    };
    const now = new Date().toISOString();
    const tjStatus = {
      phase: "Running",
      attempts: 1,
      activeWorkers: 1,
      ready: "1/1",
      startTime: now,
      observedGeneration: 1,
      workers: [{ index: 0, state: "Running", startTime: now }],
      admission: {
        node: "kwok-node-0",
        cpuMillis: 100,
        memoryBytes: 67108864,
        gpus: [],
        workers: 1,
        placements: [{ pod: 0, node: "kwok-node-0", gpus: [] }],
        admittedAt: now,
      },
      conditions: [
        {
          type: "Admitted",
          status: "True",
          reason: "Admitted",
          message: "admitted",
          lastTransitionTime: now,
        },
        { type: "Running", status: "True", reason: "Started", message: "attempt 1", lastTransitionTime: now },
      ],
    };
    const tj = (ns: string) => `/apis/loom.dev/v1alpha1/namespaces/${ns}/trainingjobs`;
    const rounds = Number(process.env.LOOM_BENCH_ROUNDS ?? 2);
    for (let r = 0; r < rounds; r++) {
      await measure(
        "batch/v1 Job (suspended)",
        `loom-jobs${r}`,
        `/apis/batch/v1/namespaces/loom-jobs${r}/jobs`,
        batchJob,
      );
      await measure(
        "TrainingJob, CRDs as `loom crds` makes them",
        `loom-full${r}`,
        tj(`loom-full${r}`),
        trainingJob,
      );
    }
    const jobs0 = "/apis/batch/v1/namespaces/loom-jobs0/jobs";
    await measureStatus("batch/v1 Job, status PUT", jobs0, { active: 1, startTime: now }, true);
    await measureStatus("TrainingJob, status PUT, whole object", tj("loom-full0"), tjStatus, true);
    await measureStatus("TrainingJob, status PUT, without the spec", tj("loom-full1"), tjStatus, false);
    await cluster.kubectlOk(["delete", "validatingadmissionpolicybinding", "workers.loom.dev"]);
    await measure(
      "TrainingJob, no ValidatingAdmissionPolicy binding",
      "loom-novap",
      tj("loom-novap"),
      trainingJob,
    );
    const crd = JSON.parse(await cluster.kubectlOk(["get", "crd", "trainingjobs.loom.dev", "-o", "json"]));
    stripCel(crd.spec);
    delete crd.metadata.managedFields;
    delete crd.metadata.resourceVersion;
    delete crd.status;
    await cluster.kubectlOk(["replace", "-f", "-"], JSON.stringify(crd));
    await measure(
      "TrainingJob, no VAP, no CEL rules in the CRD",
      "loom-nocel",
      tj("loom-nocel"),
      trainingJob,
    );
  } finally {
    await cluster.stop();
  }
}

await main();

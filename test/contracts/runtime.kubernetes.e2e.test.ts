import { KubernetesRuntime } from "../../src/platforms/kubernetes/runtime.js";
import { KubeResourceStore } from "../../src/platforms/kubernetes/store.js";
import type { WorkerSpec } from "../../src/ports/runtime.js";
import { contractCluster, deleteNamespaces, silent, stripFinalizers, uniqueProjects } from "./kube.js";
import { runtimeContract } from "./runtime.contract.js";

/**
 * The Runtime contract on Kubernetes: the real API server, scheduler-less pods bound by the
 * runtime to kwok nodes. kwok runs no container; pod annotations tell it when a pod's containers
 * exit and with which code (test/k8s/stages/loom-pod-exit.yaml). The suite works in its own
 * project, on the contract suites' own cluster (`contractCluster()`), where no Loom operator
 * reconciles its TrainingJobs.
 */
runtimeContract(
  "kubernetes",
  async () => {
    const { client } = await contractCluster();
    const [project] = uniqueProjects("rc", 1) as [string];
    const store = new KubeResourceStore(client, silent);
    const runtimes: KubernetesRuntime[] = [];
    const newRuntime = async () => {
      const rt = new KubernetesRuntime({ client, log: silent });
      // As the operator does: pods and nodes list-watched, so changes are announced.
      await rt.watchPods();
      runtimes.push(rt);
      return rt;
    };
    // The project's namespace as the platform makes it (restricted Pod Security, policies).
    const setup = new KubernetesRuntime({ client, log: silent });
    await setup.ensureProject({ name: project, members: [] });
    return {
      project,
      newRuntime,
      async newRef(name) {
        // Pods are owned by their workload's object: without one, Kubernetes' garbage collector
        // deletes them. A nodePool no node has keeps a Loom operator, should one watch the shared
        // cluster, from ever placing this job itself.
        const tj = await store.create({
          apiVersion: "loom.dev/v1alpha1",
          kind: "TrainingJob",
          metadata: { name, project, uid: "", resourceVersion: "", generation: 0, creationTimestamp: "" },
          spec: { command: ["contract"], nodePool: "contract-never" },
        });
        return { kind: "TrainingJob", project, name, uid: tj.metadata.uid };
      },
      worker(b): Pick<WorkerSpec, "command" | "env" | "annotations"> {
        // kwok marks a running pod Ready: a model server needs nothing more.
        if ("runs" in b || "serves" in b) return { command: ["sleep", "infinity"], env: {} };
        return {
          command: ["sh", "-c", "exit 0"],
          env: {},
          annotations: {
            "loom.dev/kwok-complete-after": "1s",
            "loom.dev/kwok-exit-code": String(b.exit),
          },
        };
      },
      async placeReplicas(rt) {
        // Model pods carry schedulerName loom: Loom's scheduler would place them; here the test
        // does, through the runtime's own external-work port.
        const nodes = await rt.nodes();
        for (const w of rt.external?.().pending ?? []) {
          if (w.project !== project) continue;
          await rt.bindExternal?.(
            w.id,
            w.pods.map((_, pod) => ({ pod, node: nodes[0]!.name, gpus: [] })),
          );
        }
      },
      async close() {
        for (const rt of [setup, ...runtimes]) await rt.close();
        // A Loom operator watching the shared cluster would add its finalizer to the jobs.
        await stripFinalizers(client, project);
        await deleteNamespaces(client, [project]);
        await store.close();
      },
    };
  },
  // kwok: no worker output (see the option); stopping deletes the pods; pods have their own names.
  { workerOutput: false, stoppedAttempt: "removed", endpoints: "pod-hostnames", replicaPorts: "spec" },
);

import { NotFoundError } from "../../src/api/errors.js";
import type { KubeClient } from "../../src/platforms/kubernetes/client.js";
import { KubeResourceStore } from "../../src/platforms/kubernetes/store.js";
import {
  contractCluster,
  createNamespace,
  deleteNamespaces,
  silent,
  stripFinalizers,
  uniqueProjects,
} from "./kube.js";
import { resourceStoreContract } from "./store.contract.js";

/**
 * The ResourceStore contract on the CRD-backed store, against the real kube-apiserver of
 * test/k8s. The suite works in its own two namespaces, labels its cluster-scoped Projects, and
 * removes all it made. It runs on the contract suites' own cluster (`contractCluster()`): a Loom
 * operator on the shared one (test/kubernetes.e2e.test.ts starts one) reconciles every
 * TrainingJob and Project, adding finalizers and status the cases do not expect.
 */
resourceStoreContract(
  "kubernetes",
  async () => {
    const { client } = await contractCluster();
    const projects = uniqueProjects("sc", 2) as [string, string];
    for (const p of projects) await createNamespace(client, p);
    const store = new KubeResourceStore(client, silent);
    return {
      store,
      projects,
      // The API server keeps no history before its watch cache was filled (and etcd compacts
      // every few minutes): revision 1 is always too old on a running cluster.
      expiredRevision: async () => "1",
      async close() {
        // A failed case may leave finalizers that would hold the namespaces forever.
        for (const p of projects) await stripFinalizers(client, p);
        await deleteLeftoverProjects(client, projects[0]);
        await deleteNamespaces(client, projects);
        await store.close();
      },
    };
  },
  {
    defaultsSpec: true,
    projectMustExist: true,
    expiredReportedBy: "onEnd",
    deletedObjectVersion: "last-write",
  },
);

/** Projects are cluster-scoped: the suite's are named after its first project; remove any left. */
async function deleteLeftoverProjects(client: KubeClient, prefix: string): Promise<void> {
  const list = await client.request<{ items: { metadata: { name: string } }[] }>(
    "GET",
    "/apis/loom.dev/v1alpha1/projects",
  );
  for (const p of list.items)
    if (p.metadata.name.startsWith(prefix))
      await client
        .request("DELETE", `/apis/loom.dev/v1alpha1/projects/${p.metadata.name}`)
        .catch((err: unknown) => {
          if (!(err instanceof NotFoundError)) throw err;
        });
}

import { randomUUID } from "node:crypto";
import { pino } from "pino";
import { allCrds } from "../../src/api/crds.js";
import { NotFoundError } from "../../src/api/errors.js";
import { KubeClient } from "../../src/platforms/kubernetes/client.js";
import { namespaceOf } from "../../src/platforms/kubernetes/naming.js";
import { contractsState, type TestCluster, upCluster } from "../k8s/cluster.js";
import { eventually } from "./poll.js";

export const silent = pino({ level: "silent" });

/**
 * The contract suites' own test cluster (test/k8s/up.sh on `contractsState()`: started or
 * reused; `.ci/run` stops it at the end) with Loom's CRDs installed and Established, and an
 * admin client on it. Not the shared one: a Loom operator there would reconcile the suites'
 * objects.
 */
export async function contractCluster(): Promise<{ cluster: TestCluster; client: KubeClient }> {
  const cluster = upCluster({ state: contractsState(), nodes: 2 });
  const applied = cluster.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], {
    input: JSON.stringify({ apiVersion: "v1", kind: "List", items: allCrds() }),
  });
  if (applied.code !== 0) throw new Error(`could not apply the CRDs: ${applied.stderr}`);
  const waited = cluster.kubectl([
    "wait",
    "--for=condition=Established",
    "crd/trainingjobs.loom.dev",
    "crd/projects.loom.dev",
    "--timeout=120s",
  ]);
  if (waited.code !== 0) throw new Error(`CRDs not established: ${waited.stderr}`);
  return { cluster, client: KubeClient.fromKubeconfig(cluster.kubeconfig) };
}

/**
 * Project names no other test on the shared cluster uses: `<prefix>-<random>`, short enough for
 * `loom-<project>` namespaces and the pod names derived from them.
 */
export function uniqueProjects(prefix: string, n: number): string[] {
  const id = randomUUID().slice(0, 6);
  return Array.from({ length: n }, (_, i) => `${prefix}-${id}-${i}`);
}

/** A plain namespace for a project (what the store needs: no quota, policy or roles). */
export async function createNamespace(client: KubeClient, project: string): Promise<void> {
  await client.request("POST", "/api/v1/namespaces", {
    body: { apiVersion: "v1", kind: "Namespace", metadata: { name: namespaceOf(project) } },
  });
}

/**
 * Deletes the projects' namespaces (their objects go with them, finalizers permitting) and waits
 * until they are gone, so a test leaves nothing behind on the shared cluster.
 */
export async function deleteNamespaces(client: KubeClient, projects: string[]): Promise<void> {
  for (const p of projects)
    await client.request("DELETE", `/api/v1/namespaces/${namespaceOf(p)}`).catch((err: unknown) => {
      if (!(err instanceof NotFoundError)) throw err;
    });
  await eventually(
    "the test namespaces to be gone",
    async () => {
      for (const p of projects) {
        const gone = await client
          .request("GET", `/api/v1/namespaces/${namespaceOf(p)}`)
          .then(() => false)
          .catch((err: unknown) => err instanceof NotFoundError);
        if (!gone) return false;
      }
      return true;
    },
    120_000,
  );
}

/** Removes every finalizer from the project's TrainingJobs, so that nothing holds its namespace. */
export async function stripFinalizers(client: KubeClient, project: string): Promise<void> {
  const path = `/apis/loom.dev/v1alpha1/namespaces/${namespaceOf(project)}/trainingjobs`;
  const list = await client.request<{ items: { metadata: { name: string; finalizers?: string[] } }[] }>(
    "GET",
    path,
  );
  for (const o of list.items)
    if (o.metadata.finalizers?.length)
      await client
        .request("PATCH", `${path}/${o.metadata.name}`, {
          body: { metadata: { finalizers: null } },
          contentType: "application/merge-patch+json",
        })
        .catch((err: unknown) => {
          if (!(err instanceof NotFoundError)) throw err;
        });
}

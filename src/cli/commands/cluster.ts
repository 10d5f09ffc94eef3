import { readFileSync } from "node:fs";
import { kubeconfigSecretName } from "../../api/cluster.js";
import { CLUSTER } from "../../api/kinds.js";
import type { Api } from "../deps.js";
import { CliError } from "../errors.js";
import type { Prepared } from "../manifests.js";
import { BASE } from "../resources.js";

/**
 * `loom apply -f cluster.yaml --kubeconfig-file FILE`: the manifest's one Cluster names the
 * secret the kubeconfig is kept in (unless it names one itself); returns the kubeconfig's text.
 */
export function withKubeconfig(
  prepared: Prepared[],
  file: string,
): { cluster: Prepared; kubeconfig: string } {
  const clusters = prepared.filter((p) => p.def.kind === CLUSTER);
  if (clusters.length !== 1)
    throw new CliError(
      `--kubeconfig-file goes with exactly one Cluster in the manifests (found ${clusters.length}); apply members one at a time`,
    );
  let kubeconfig: string;
  try {
    kubeconfig = readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read --kubeconfig-file ${file}: ${(err as Error).message}`);
  }
  const cluster = clusters[0]!;
  const spec = (cluster.body.spec ?? {}) as Record<string, unknown>;
  if (spec.platform === "self")
    throw new CliError(
      `Cluster "${cluster.name}" is platform: self (this control plane); it takes no kubeconfig`,
    );
  spec.kubeconfigSecret ??= { name: kubeconfigSecretName(cluster.name) };
  cluster.body.spec = spec;
  return { cluster, kubeconfig };
}

/**
 * A Cluster manifest that names neither `platform: self` nor a secret is a Kubernetes member
 * whose kubeconfig `--kubeconfig-file` keeps under its default secret: re-applying the same file
 * (to cordon the member, change its timeout) then works without sending the kubeconfig again,
 * and a member registered without one says how to give it (loom describe cluster).
 */
export function defaultKubeconfigSecrets(prepared: Prepared[]): void {
  for (const p of prepared) {
    if (p.def.kind !== CLUSTER) continue;
    const spec = (p.body.spec ?? {}) as Record<string, unknown>;
    if (spec.platform !== undefined || spec.kubeconfigSecret !== undefined) continue;
    spec.kubeconfigSecret = { name: kubeconfigSecretName(p.name) };
    p.body.spec = spec;
  }
}

/** Stores the kubeconfig as the control plane's secret (write-only: it is never read back). */
export async function sendKubeconfig(
  api: Api,
  cluster: Prepared,
  kubeconfig: string,
  dryRun: boolean,
): Promise<void> {
  await api.request(
    "PUT",
    `${BASE}/clusters/${encodeURIComponent(cluster.name)}/kubeconfig${dryRun ? "?dryRun=All" : ""}`,
    { kubeconfig },
  );
}

import { NotFoundError } from "../../api/errors.js";
import type { ReplicaLog, ReplicaLogOptions, WorkloadRef } from "../../ports/runtime.js";
import type { KubeClient } from "./client.js";
import { LABELS as L, namespaceOf, REVISION_LABEL } from "./naming.js";
import type { Pod } from "./pods.js";

/** The container a revision's pods run the model server, IDE or app in (revisions.ts). */
const CONTAINER = "model";

interface ReplicaPodStatus {
  startTime?: string;
  conditions?: { type: string; status: string }[];
  containerStatuses?: {
    name: string;
    restartCount?: number;
    lastState?: { terminated?: { finishedAt?: string } };
  }[];
}

/**
 * A service replica's output on Kubernetes: the pods/log of the replica's pod, read by Loom
 * through the API server (members are never sent to the pod). A crashing container restarts in
 * the same pod, so `previous` is the kubelet's: the pod whose container last exited, with
 * `previous=true`, as `kubectl logs --previous` reads it. Undefined when no pod runs or restarted.
 */
export async function kubernetesReplicaLogs(
  client: KubeClient,
  service: WorkloadRef,
  revisions: string[],
  opts: ReplicaLogOptions,
): Promise<ReplicaLog | undefined> {
  const ns = namespaceOf(service.project);
  const list = await client.request<{ items: Pod[] }>("GET", `/api/v1/namespaces/${ns}/pods`, {
    query: { labelSelector: `${L.uid}=${service.uid}` },
  });
  const rank = (p: Pod) => revisions.indexOf(p.metadata.labels?.[REVISION_LABEL] ?? "");
  const pods = list.items
    .filter((p) => !p.metadata.deletionTimestamp && rank(p) >= 0)
    .sort((a, b) => rank(a) - rank(b) || a.metadata.name.localeCompare(b.metadata.name));
  const status = (p: Pod) => (p.status ?? {}) as ReplicaPodStatus;
  const container = (p: Pod) => status(p).containerStatuses?.find((c) => c.name === CONTAINER);
  let chosen: Pod | undefined;
  if (opts.replica !== undefined) {
    chosen = /^\d+$/.test(opts.replica)
      ? pods[Number(opts.replica)]
      : pods.find((p) => p.metadata.name === opts.replica);
    if (!chosen) {
      throw new NotFoundError(
        pods.length === 0
          ? `no replica runs now, so there is no replica ${opts.replica}`
          : `no running replica ${opts.replica}; the running ones are ${pods.map((p, i) => `${i} (${p.metadata.name})`).join(", ")}`,
      );
    }
  } else if (opts.previous) {
    // The pod whose container exited last.
    const finished = (p: Pod) => container(p)?.lastState?.terminated?.finishedAt ?? "";
    chosen = pods
      .filter((p) => (container(p)?.restartCount ?? 0) > 0)
      .sort((a, b) => finished(b).localeCompare(finished(a)))[0];
    if (!chosen) return undefined;
  } else {
    const ready = (p: Pod) => !!status(p).conditions?.some((c) => c.type === "Ready" && c.status === "True");
    chosen =
      pods.find(ready) ??
      [...pods].sort((a, b) => (status(b).startTime ?? "").localeCompare(status(a).startTime ?? ""))[0];
    if (!chosen) return undefined;
  }
  const stream = await client.stream(`/api/v1/namespaces/${ns}/pods/${chosen.metadata.name}/log`, {
    container: CONTAINER,
    follow: opts.follow ? "true" : undefined,
    previous: opts.previous ? "true" : undefined,
  });
  return { replica: chosen.metadata.name, previous: !!opts.previous, stream };
}

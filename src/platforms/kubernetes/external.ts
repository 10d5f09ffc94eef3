import { NotFoundError } from "../../api/errors.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import type { ExternalWork } from "../../ports/runtime.js";
import type { PodPlacement, Workload } from "../../ports/scheduler.js";
import type { ClusterCache } from "./cache.js";
import type { KubeClient } from "./client.js";
import { ExternalIndex, isExternalPending } from "./external-index.js";
import { projectOf } from "./naming.js";
import { gpuCount, HeldByOthers, NODE_LABELS, type PodRequest } from "./nodes.js";
import { bindPod, GPU_RESOURCE, type Pod } from "./pods.js";
import { objectKey } from "./source.js";

export { GANG_LABEL, GANG_SIZE_ANNOTATION } from "./external-index.js";

/**
 * Loom as a secondary scheduler: pods of other workloads with schedulerName "loom" (users'
 * Deployments, Jobs…, and the model pods of serving revisions) are Loom's to place. They are
 * handed to the scheduler in gangs, bound through the binding subresource, and told why they
 * wait with a PodScheduled condition, as kube-scheduler does.
 */
export class ExternalScheduling {
  private readonly capacityListeners: (() => void)[] = [];
  /** External pods bound by this runtime, until the watch shows their node: pod key → node. */
  private readonly boundExternal = new Map<string, string>();
  /** The last reason written to an external pod, so an unchanged one is not written again. */
  private readonly explained = new Map<string, string>();
  /** The pods of each external workload handed out by the last work() call. */
  private readonly externalPods = new Map<string, string[]>();
  /** Others' pods, held and waiting, from the pod informer's events. */
  private readonly index = new ExternalIndex();

  constructor(
    private readonly client: KubeClient,
    private readonly cache: ClusterCache,
  ) {}

  onCapacityChange(listener: () => void): void {
    this.capacityListeners.push(listener);
  }

  /** Tells the scheduler that what it may place has changed (a node, or a pod not Loom's). */
  capacityChanged(): void {
    for (const l of this.capacityListeners) l();
  }

  /** A change to a pod that is no Loom workload's: capacity changes when it waits, binds or goes. */
  podEvent(key: string, pod: Pod, type: string): void {
    if (type === "DELETED" || isExternalPending(pod) || pod.spec?.nodeName) {
      if (type === "DELETED") {
        this.boundExternal.delete(key);
        this.explained.delete(key);
      } else if (pod.spec?.nodeName) this.boundExternal.delete(key);
      this.capacityChanged();
    }
  }

  /**
   * Keeps the index of others' work up to date: called for every pod event (Loom's own workers
   * included: a pod may change what it is), `undefined` once the pod is gone.
   */
  indexPod(key: string, pod: Pod | undefined): void {
    if (!pod) this.boundExternal.delete(key);
    this.index.update(key, pod, this.boundExternal.get(key));
  }

  /** What waits for Loom to place it, and what others hold (once the pod cache is watching). */
  work(): ExternalWork {
    if (!this.cache.watching) return { pending: [], running: [] };
    const held = new HeldByOthers((node) => gpuCount(this.cache.nodes.get(node)));
    for (const { key, node, pod } of this.index.heldPods()) held.add(pod, key, node, podRequest(pod));
    const workloads: Workload[] = [];
    for (const { id, pods } of this.index.completeGangs()) {
      workloads.push(pendingWorkload(id, pods));
      this.externalPods.set(id, pods.map(objectKey));
    }
    return { pending: workloads, running: held.running };
  }

  /** Binds each pod of an external workload to the node the scheduler chose for it. */
  async bind(id: string, placements: PodPlacement[]): Promise<void> {
    const keys = this.externalPods.get(id) ?? [];
    await Promise.all(
      placements.map(async (p) => {
        const key = keys[p.pod];
        if (!key) return;
        const [ns, name] = key.split("/") as [string, string];
        await bindPod(this.client, ns, name, p.node);
        this.boundExternal.set(key, p.node);
        // Held from now on, though the watch may not show the node yet.
        this.index.update(key, this.cache.pods.get(key), p.node);
        this.explained.delete(key);
      }),
    );
  }

  /** Says on each pod of an external workload why it still waits (once per distinct reason). */
  async explain(id: string, reason: string, message: string): Promise<void> {
    for (const key of this.externalPods.get(id) ?? []) {
      const text = `${reason}: ${message}`;
      if (this.explained.get(key) === text) continue;
      const [ns, name] = key.split("/") as [string, string];
      // As kube-scheduler does: PodScheduled=False says why in `kubectl describe pod`.
      await this.client
        .request("PATCH", `/api/v1/namespaces/${ns}/pods/${name}/status`, {
          body: {
            status: {
              conditions: [
                {
                  type: "PodScheduled",
                  status: "False",
                  reason: "Unschedulable",
                  message: `${reason}: ${message}`,
                  lastTransitionTime: new Date().toISOString(),
                },
              ],
            },
          },
          contentType: "application/strategic-merge-patch+json",
        })
        .catch((err: unknown) => {
          if (!(err instanceof NotFoundError)) throw err;
        });
      this.explained.set(key, text);
    }
  }
}

/** A complete gang (or a lone pod) waiting for Loom, as the scheduler sees it. */
function pendingWorkload(id: string, pods: Pod[]): Workload {
  pods.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const first = pods[0]!;
  return {
    id,
    name: id.replace(/^(pod|gang):/, ""),
    project: projectOf(first.metadata.namespace) ?? `namespace ${first.metadata.namespace}`,
    priority: first.spec?.priority ?? 0,
    // Placed like preemptible work (it may borrow beyond deserved quota); once bound, Loom
    // never preempts it (it cannot restart what it does not own).
    preemptible: true,
    createdAt:
      pods
        .map((p) => p.metadata.creationTimestamp ?? "")
        .sort()
        .pop() ?? "",
    pods: pods.map(podRequest),
    ...(first.metadata.labels?.[NODE_LABELS.pool]
      ? { nodePool: first.metadata.labels[NODE_LABELS.pool] }
      : {}),
    // The pods' own tolerations (a serving revision's, from its spec): Loom binds past
    // kube-scheduler, so it honours the node's taints against them itself.
    ...(first.spec?.tolerations?.length ? { tolerations: first.spec.tolerations } : {}),
  };
}

/**
 * Requests by pod object: the informer replaces a pod's object on every change, so an entry lives
 * exactly as long as that version. Every admission cycle walks every pod, and parsing each one's
 * quantities again was most of external()'s cost with 5,000 pods (bench:scheduler (b)).
 */
const requests = new WeakMap<Pod, PodRequest>();

/** A pod's requests as the scheduler counts them (the largest init container counts too). */
export function podRequest(p: Pod): PodRequest {
  let r = requests.get(p);
  if (!r) {
    r = parseRequest(p);
    requests.set(p, r);
  }
  // A copy: the scheduler core may keep or change what it is handed.
  return { ...r };
}

function parseRequest(p: Pod): PodRequest {
  const sum = { cpuMillis: 0, memoryBytes: 0, gpu: 0 };
  for (const c of p.spec?.containers ?? []) {
    const r = c.resources?.requests ?? {};
    sum.cpuMillis += parseCpuMillis(r.cpu ?? "0") ?? 0;
    sum.memoryBytes += parseMemoryBytes(r.memory ?? "0") ?? 0;
    // An extended resource is a whole number where the API server validated it; anything else is none.
    const gpu = Number(r[GPU_RESOURCE] ?? 0);
    if (Number.isFinite(gpu) && gpu > 0) sum.gpu += gpu;
  }
  for (const c of p.spec?.initContainers ?? []) {
    const r = c.resources?.requests ?? {};
    sum.cpuMillis = Math.max(sum.cpuMillis, parseCpuMillis(r.cpu ?? "0") ?? 0);
    sum.memoryBytes = Math.max(sum.memoryBytes, parseMemoryBytes(r.memory ?? "0") ?? 0);
  }
  return sum;
}

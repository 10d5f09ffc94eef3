import type { Logger } from "pino";
import { NotFoundError } from "../../api/errors.js";
import type { CapacityAnswer, CapacityRequest, WorkloadRef } from "../../ports/runtime.js";
import type { Toleration } from "../../ports/scheduler.js";
import type { ClusterCache } from "./cache.js";
import type { KubeClient } from "./client.js";
import { LABELS as L, namespaceOf, ownerRef } from "./naming.js";
import { type KubeNode, loomTaintTolerations, NODE_LABELS } from "./nodes.js";
import { containerResources, type Pod, podTemplate } from "./pods.js";

/** On a capacity request's pods: the uid of the workload they stand for. */
export const DEMAND_LABEL = "loom.dev/capacity-for";
/** What a capacity request's pods would run, were they ever bound (they never are). */
const PAUSE_IMAGE = "registry.k8s.io/pause:3.10";
/** How often the autoscaler's answer (its events on the pods) is read again, per workload. */
const ANSWER_TTL_MS = 5_000;

/** The name of a capacity request's pod for one worker of a workload. */
export function demandPodName(workload: string, index: number): string {
  const suffix = `-capacity-${index}`;
  return `${workload.slice(0, 63 - suffix.length)}${suffix}`;
}

/** The taint a node group reserves its nodes for a pool with, by Loom's convention: loom.dev/node-pool=POOL. */
export const POOL_TAINT = NODE_LABELS.pool;

/**
 * What a stand-in pod of a gang that names `pool` tolerates beyond the gang's own tolerations:
 * the pool's taint by convention (`loom.dev/node-pool=POOL`, any effect: new nodes may carry it
 * before any exists), and the Loom taints (loom.dev/…) the pool's current nodes carry, since
 * Loom places a gang that names the pool there whatever those are.
 */
export function poolTolerations(pool: string, nodes: KubeNode[]): Toleration[] {
  const out = new Map<string, Toleration>([
    [`${POOL_TAINT}=${pool}`, { key: POOL_TAINT, operator: "Equal", value: pool }],
  ]);
  for (const n of nodes) {
    if (n.metadata.labels?.[NODE_LABELS.pool] !== pool) continue;
    for (const t of loomTaintTolerations(n))
      if (!out.has(`${t.key}=${t.value}`)) out.set(`${t.key}=${t.value}:${t.effect}`, t);
  }
  return [...out.values()];
}

/** Whether a pod is a capacity request (never a worker, never work for Loom to place). */
export function isDemandPod(pod: Pod): boolean {
  return !!pod.metadata.labels?.[DEMAND_LABEL];
}

/**
 * A gang waiting for capacity, as the cluster-autoscaler sees demand: one unbound pod per worker,
 * shaped like the worker (requests, pool, GPU model), with schedulerName "loom" (kube-scheduler
 * leaves it alone) and `PodScheduled=False`, reason `Unschedulable`, Loom's reason as message.
 * The autoscaler simulates them all in one loop, so a 16-GPU gang of two 8-GPU workers asks a
 * node group for two nodes at once. They hold nothing and are never bound: when the nodes join,
 * admission places the gang, and its start withdraws the request (its pods deleted) while it makes
 * the real workers, binding them to the new nodes once the request is gone. Owned by the
 * workload, so they go with it.
 */
export class CapacityRequests {
  private readonly answers = new Map<string, { at: number; answer: Partial<CapacityAnswer> }>();

  constructor(
    private readonly client: KubeClient,
    private readonly cache: ClusterCache,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  async request(ref: WorkloadRef, req: CapacityRequest | undefined): Promise<CapacityAnswer | undefined> {
    if (!req) {
      await this.withdraw(ref);
      return undefined;
    }
    const ns = namespaceOf(ref.project);
    let first: Pod | undefined;
    for (let i = 0; i < req.workers; i++) {
      const name = demandPodName(ref.name, i);
      const pod = this.cache.pod(`${ns}/${name}`) ?? (await this.create(ref, req, i));
      if (i === 0) first = pod;
      await this.explain(pod, req);
    }
    const answer = await this.answer(ref, first, req);
    return {
      requestedAt: first?.metadata.creationTimestamp ?? new Date(this.now()).toISOString(),
      ...answer,
    };
  }

  private async create(ref: WorkloadRef, req: CapacityRequest, index: number): Promise<Pod> {
    const ns = namespaceOf(ref.project);
    const allocation = {
      node: "",
      cpuMillis: req.cpuMillis,
      memoryBytes: req.memoryBytes,
      gpus: Array.from({ length: Math.ceil(req.gpu) }, (_, i) => `gpu-${i}`),
    };
    const nodeSelector: Record<string, string> = {
      ...(req.nodePool ? { [NODE_LABELS.pool]: req.nodePool } : {}),
      ...(req.gpuModel ? { [NODE_LABELS.gpuModel]: req.gpuModel } : {}),
    };
    const t = podTemplate({
      worker: {
        image: PAUSE_IMAGE,
        command: ["/pause"],
        env: {},
        allocation,
        ...(req.tolerations?.length ? { tolerations: req.tolerations } : {}),
      },
      // Naming a pool tolerates its nodes' Loom taints (loom.dev/…): the autoscaler must know it.
      ...(req.nodePool ? { tolerations: poolTolerations(req.nodePool, this.cache.nodes.list()) } : {}),
      defaultImage: PAUSE_IMAGE,
      containerName: "capacity",
      labels: {
        [L.managedBy]: "loom",
        [L.workload]: ref.name,
        [L.component]: "capacity-request",
        [DEMAND_LABEL]: ref.uid,
      },
      env: {},
      resources: containerResources(allocation, false),
      pod: {
        name: demandPodName(ref.name, index),
        namespace: ns,
        ownerReferences: [ownerRef(ref)],
        restartPolicy: "Never",
        hostname: demandPodName(ref.name, index),
      },
    });
    const body = {
      apiVersion: "v1",
      kind: "Pod",
      ...t,
      spec: {
        ...t.spec,
        terminationGracePeriodSeconds: 0,
        ...(Object.keys(nodeSelector).length ? { nodeSelector } : {}),
      },
    };
    try {
      const pod = await this.client.request<Pod>("POST", `/api/v1/namespaces/${ns}/pods`, {
        body,
        query: { fieldManager: "loom" },
      });
      this.cache.wrote(pod);
      this.log.info(
        { project: ref.project, workload: ref.name, worker: index },
        "asked the node autoscaler for capacity",
      );
      return pod;
    } catch (err) {
      if ((err as { code?: string }).code !== "AlreadyExists") throw err;
      return this.client.request<Pod>("GET", `/api/v1/namespaces/${ns}/pods/${body.metadata.name}`);
    }
  }

  /**
   * As kube-scheduler marks a pod it cannot place: what the autoscaler looks for (the condition
   * and its reason; the message, Loom's reason when it asked, is for people). Marked once: its
   * words were rewritten as each of the gang's nodes joined, a write per pod between the nodes'
   * arrival and the gang's binding (bench:fleet (a)); the job's status says why it waits.
   */
  private async explain(pod: Pod, req: CapacityRequest): Promise<void> {
    const message = `${req.reason}: ${req.message}`;
    const cond = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
    if (cond?.status === "False" && cond.reason === "Unschedulable") return;
    const updated = await this.client
      .request<Pod>(
        "PATCH",
        `/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}/status`,
        {
          body: {
            status: {
              conditions: [
                {
                  type: "PodScheduled",
                  status: "False",
                  reason: "Unschedulable",
                  message,
                  lastTransitionTime: new Date(this.now()).toISOString(),
                },
              ],
            },
          },
          contentType: "application/strategic-merge-patch+json",
        },
      )
      .catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
        return undefined;
      });
    this.cache.wrote(updated);
  }

  /**
   * The autoscaler's answer, from its events on the first pod: the cluster-autoscaler's "pod
   * triggered scale-up: [{pool 0->2 (max: 4)}]" (how many nodes of which group) or "pod didn't
   * trigger scale-up" and why; Karpenter's "Pod should schedule on: nodeclaim/…" (one NodeClaim
   * per event, so the gang's other pods are read too, to count its nodes) or its
   * "Failed to schedule pod, …". Read at most every few seconds per workload.
   */
  private async answer(
    ref: WorkloadRef,
    pod: Pod | undefined,
    req: CapacityRequest,
  ): Promise<Partial<CapacityAnswer>> {
    const cached = this.answers.get(ref.uid);
    if (!pod || (cached && this.now() - cached.at < ANSWER_TTL_MS)) return cached?.answer ?? {};
    const ns = pod.metadata.namespace ?? namespaceOf(ref.project);
    const first = autoscalerAnswer(
      await this.events(ns, `involvedObject.kind=Pod,involvedObject.name=${pod.metadata.name}`),
    );
    let answer: Partial<CapacityAnswer> = first;
    if (first.nominated) {
      // One read for the namespace's nominations, not one per worker.
      const gang = new Set(Array.from({ length: req.workers }, (_, i) => demandPodName(ref.name, i)));
      const nominated = nominations(await this.events(ns, "involvedObject.kind=Pod,reason=Nominated"), gang);
      answer = {
        nodes: nominated.size,
        pool: req.nodePool ?? [...new Set([...nominated].map(nodePoolOf))].join(", "),
      };
    }
    this.answers.set(ref.uid, { at: this.now(), answer });
    return answer;
  }

  private async events(ns: string, fieldSelector: string): Promise<KubeEvent[]> {
    const list = await this.client
      .request<{ items: KubeEvent[] }>("GET", `/api/v1/namespaces/${ns}/events`, { query: { fieldSelector } })
      .catch((err: unknown) => {
        this.log.debug({ err, fieldSelector }, "could not read the autoscaler's events");
        return { items: [] as KubeEvent[] };
      });
    return list.items;
  }

  private async withdraw(ref: WorkloadRef): Promise<void> {
    this.answers.delete(ref.uid);
    // A withdrawal is rare (once per gang that asked), so the walk over the cache is cheap enough.
    const mine = (await this.cache.loomPods()).filter((p) => p.metadata.labels?.[DEMAND_LABEL] === ref.uid);
    await this.deletePods(mine);
  }

  /**
   * Withdraws the workload's request, if it made one, before its gang's pods are bound (the
   * gang's start calls it, beside making them): found by name in the cache, with no walk over
   * every pod, so a start that never asked pays nothing.
   */
  async withdrawForStart(ref: WorkloadRef): Promise<void> {
    const ns = namespaceOf(ref.project);
    const mine: Pod[] = [];
    for (let i = 0; ; i++) {
      const pod = this.cache.pod(`${ns}/${demandPodName(ref.name, i)}`);
      if (pod?.metadata.labels?.[DEMAND_LABEL] !== ref.uid) break;
      if (!pod.metadata.deletionTimestamp) mine.push(pod);
    }
    if (mine.length === 0) return;
    this.answers.delete(ref.uid);
    await this.deletePods(mine);
  }

  /**
   * Pod by pod (the operator's role has no deletecollection), side by side: unbound pods go at
   * once, and a gang's start waits for its request's pods to go before it binds (bench:fleet (a)).
   */
  private async deletePods(pods: Pod[]): Promise<void> {
    await Promise.all(
      pods.map((p) =>
        this.client
          .request("DELETE", `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`, {
            body: { apiVersion: "v1", kind: "DeleteOptions", gracePeriodSeconds: 0 },
          })
          .catch((err: unknown) => {
            if (!(err instanceof NotFoundError)) throw err;
          }),
      ),
    );
  }
}

/** The fields of a core/v1 Event read here. */
export interface KubeEvent {
  reason?: string;
  message?: string;
  involvedObject?: { name?: string };
  source?: { component?: string };
  reportingComponent?: string;
  lastTimestamp?: string;
  eventTime?: string;
  firstTimestamp?: string;
  metadata?: { creationTimestamp?: string };
}

const SCALE_UP = /\{(\S+) (\d+)->(\d+) \(max: \d+\)\}/g;
/** Karpenter's nomination: the NodeClaim (new capacity) or node it means the pod for. */
const NOMINATED = /^Pod should schedule on: ((?:nodeclaim|node)\/[^\s,]+)/;

const when = (e: KubeEvent) =>
  Date.parse(e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp ?? e.metadata?.creationTimestamp ?? "") || 0;

/** Whether an event is Karpenter's (its FailedScheduling; kube-scheduler's has the same reason). */
const byKarpenter = (e: KubeEvent) =>
  `${e.source?.component ?? ""} ${e.reportingComponent ?? ""}`.toLowerCase().includes("karpenter");

/**
 * The node autoscaler's newest word on a pod. The cluster-autoscaler's TriggeredScaleUp names each
 * node group and its size before and after ("{pool 0->2 (max: 4)}"), NotTriggerScaleUp says why
 * none would help. Karpenter's Nominated names one NodeClaim per pod (`nominated`: count them over
 * the gang with `nominations`), its FailedScheduling why no NodePool fits.
 */
export function autoscalerAnswer(events: KubeEvent[]): Partial<CapacityAnswer> & { nominated?: true } {
  const newest = events
    .filter(
      (e) =>
        e.reason === "TriggeredScaleUp" ||
        e.reason === "NotTriggerScaleUp" ||
        (e.reason === "Nominated" && NOMINATED.test(e.message ?? "")) ||
        (e.reason === "FailedScheduling" && byKarpenter(e)),
    )
    .sort((a, b) => when(b) - when(a))[0];
  if (!newest) return {};
  if (newest.reason === "NotTriggerScaleUp" || newest.reason === "FailedScheduling")
    return { refused: newest.message ?? "no node group fits" };
  if (newest.reason === "Nominated") return { nominated: true };
  let nodes = 0;
  const pools: string[] = [];
  for (const m of (newest.message ?? "").matchAll(SCALE_UP)) {
    nodes += Number(m[3]) - Number(m[2]);
    pools.push(m[1]!);
  }
  return nodes > 0 ? { nodes, pool: pools.join(", ") } : {};
}

/**
 * The NodeClaims (or nodes) Karpenter means a gang's pods for: each pod's newest nomination, as
 * "nodeclaim/<name>". Two workers nominated for one NodeClaim count once.
 */
export function nominations(events: KubeEvent[], pods: ReadonlySet<string>): Set<string> {
  const newest = new Map<string, KubeEvent>();
  for (const e of events) {
    const pod = e.involvedObject?.name;
    if (e.reason !== "Nominated" || !pod || !pods.has(pod)) continue;
    const seen = newest.get(pod);
    if (!seen || when(e) >= when(seen)) newest.set(pod, e);
  }
  const targets = new Set<string>();
  for (const e of newest.values()) {
    const m = NOMINATED.exec(e.message ?? "");
    if (m) targets.add(m[1]!);
  }
  return targets;
}

/** The NodePool of a NodeClaim Karpenter named "<nodepool>-<5 random characters>". */
function nodePoolOf(target: string): string {
  return target.replace(/^(nodeclaim|node)\//, "").replace(/-[a-z0-9]{5}$/, "");
}

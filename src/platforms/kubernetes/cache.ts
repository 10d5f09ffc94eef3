import type { Logger } from "pino";
import type { WorkloadRef } from "../../ports/runtime.js";
import { Informer } from "../../reconcile/informer.js";
import type { ControllerMetrics } from "../../reconcile/metrics.js";
import type { KubeClient } from "./client.js";
import { LABELS as L, namespaceOf } from "./naming.js";
import type { KubeNode } from "./nodes.js";
import { type Pod, workerView } from "./pods.js";
import { kubeCollectionSource, objectKey } from "./source.js";

/** How long a deleted pod's revision is remembered, so that a late write echo cannot revive it. */
const TOMBSTONE_MS = 5 * 60_000;

const noMetrics = { lastEventTimestamp: { set: () => {} } } as unknown as Pick<
  ControllerMetrics,
  "lastEventTimestamp"
>;

/** Who hears about the cluster's changes, once the cache has done its own bookkeeping. */
export interface ClusterCacheHandlers {
  /** Every pod event but the informer's resyncs. */
  onPod(key: string, pod: Pod, type: string): void;
  /** Every pod event, resyncs included, for indexes kept from them (`undefined`: the pod is gone). */
  indexPod?(key: string, pod: Pod | undefined): void;
  /** Every node event, resyncs included. */
  onNode(): void;
}

/**
 * Loom's pods and the cluster's nodes, list-watched into memory once `start()` has run: the
 * controllers' many reads (observe, stop, admission's capacity) then cost no request. Before
 * that (the in-process API of `loom --kubeconfig` only streams logs) reads go to the server.
 */
export class ClusterCache {
  readonly pods: Informer<Pod>;
  readonly nodes: Informer<KubeNode>;
  /** Pod keys by the workload uid label, maintained from the pod informer's events. */
  private readonly podsByWorkload = new Map<string, Set<string>>();
  /**
   * Pods this runtime created or deleted, as the API server answered, until the watch catches up:
   * without them a reconcile that runs before its own writes come back would start an attempt twice.
   */
  private readonly ownWrites = new Map<string, Pod>();
  private readonly tombstones = new Map<string, { rv: number; at: number }>();
  /** Each gang worker pod's workerView as last handed on (or written by this runtime). */
  private readonly workerViews = new Map<string, string>();
  private synced = false;

  constructor(
    private readonly client: KubeClient,
    log: Logger,
    metrics: Pick<ControllerMetrics, "lastEventTimestamp"> | undefined,
    private readonly handlers: ClusterCacheHandlers,
  ) {
    this.pods = new Informer<Pod>(
      // Every pod, not only Loom's: the scheduler must see what others hold on each node.
      kubeCollectionSource(client, log, "Pod", "/api/v1/pods"),
      { onChange: (key, pod, type) => this.onPodEvent(key, pod, type) },
      log,
      metrics ?? noMetrics,
      { resyncMs: 24 * 3600_000 },
    );
    this.nodes = new Informer<KubeNode>(
      kubeCollectionSource(client, log, "Node", "/api/v1/nodes"),
      { onChange: () => handlers.onNode() },
      log,
      metrics ?? noMetrics,
      { resyncMs: 24 * 3600_000 },
    );
  }

  /** Whether the caches are filled and kept up to date (reads cost no request). */
  get watching(): boolean {
    return this.synced;
  }

  /** Starts both informers and resolves once their first lists are in. */
  async start(): Promise<void> {
    this.pods.start();
    this.nodes.start();
    await Promise.all([this.pods.waitForSync(), this.nodes.waitForSync()]);
    this.synced = true;
  }

  stop(): void {
    this.pods.stop();
    this.nodes.stop();
  }

  private onPodEvent(key: string, pod: Pod | undefined, type: string): void {
    if (!pod) return;
    this.handlers.indexPod?.(key, type === "DELETED" ? undefined : pod);
    const uid = pod.metadata.labels?.[L.uid];
    if (uid) {
      let keys = this.podsByWorkload.get(uid);
      if (type === "DELETED") {
        keys?.delete(key);
        if (keys?.size === 0) this.podsByWorkload.delete(uid);
      } else {
        if (!keys) {
          keys = new Set();
          this.podsByWorkload.set(uid, keys);
        }
        keys.add(key);
      }
    }
    if (type === "DELETED") {
      this.ownWrites.delete(key);
      this.workerViews.delete(key);
      this.tombstones.set(key, { rv: Number(pod.metadata.resourceVersion ?? 0), at: Date.now() });
    }
    if (type === "RESYNC") return;
    if (type !== "DELETED" && this.sameWorkerView(key, pod)) return;
    this.handlers.onPod(key, pod, type);
  }

  /**
   * Whether a gang worker's pod shows its job nothing new (see workerView), noting what it shows.
   * Seeded by this runtime's own writes, so their echoes are no news either.
   */
  private sameWorkerView(key: string, pod: Pod): boolean {
    const view = workerView(pod);
    if (view === undefined) return false;
    if (this.workerViews.get(key) === view) return true;
    this.workerViews.set(key, view);
    return false;
  }

  /** Remembers what the API server answered to this runtime's own pod write. */
  wrote(pod: Pod | undefined): void {
    if (!this.synced || pod?.kind !== "Pod") return;
    const key = objectKey(pod);
    const rv = Number(pod.metadata.resourceVersion ?? 0);
    const cached = this.pods.get(key);
    if (cached && Number(cached.metadata.resourceVersion ?? 0) >= rv) return;
    const tomb = this.tombstones.get(key);
    if (tomb && tomb.rv >= rv) return;
    this.ownWrites.set(key, pod);
    // The caller observes what it wrote (through ownWrites): the watch's echo is no news.
    const view = workerView(pod);
    if (view !== undefined) this.workerViews.set(key, view);
  }

  /** The pod by key: as the watch last showed it, else as this runtime last wrote it. */
  pod(key: string): Pod | undefined {
    return this.pods.get(key) ?? this.ownWrites.get(key);
  }

  /** A workload's pods: the watch's, with this runtime's own writes the watch has not shown yet. */
  async workloadPods(ref: WorkloadRef): Promise<Pod[]> {
    if (!this.synced) {
      const list = await this.client.request<{ items: Pod[] }>(
        "GET",
        `/api/v1/namespaces/${namespaceOf(ref.project)}/pods`,
        { query: { labelSelector: `${L.uid}=${ref.uid}` } },
      );
      return list.items;
    }
    const byKey = new Map<string, Pod>();
    for (const key of this.podsByWorkload.get(ref.uid) ?? []) {
      const pod = this.pods.get(key);
      if (pod) byKey.set(key, pod);
    }
    const now = Date.now();
    for (const [key, tomb] of this.tombstones) if (now - tomb.at > TOMBSTONE_MS) this.tombstones.delete(key);
    for (const [key, mine] of this.ownWrites) {
      if (mine.metadata.labels?.[L.uid] !== ref.uid) continue;
      const cached = byKey.get(key) ?? this.pods.get(key);
      const tomb = this.tombstones.get(key);
      const rv = Number(mine.metadata.resourceVersion ?? 0);
      if ((cached && Number(cached.metadata.resourceVersion ?? 0) >= rv) || (tomb && tomb.rv >= rv)) {
        this.ownWrites.delete(key);
        continue;
      }
      byKey.set(key, mine);
    }
    return [...byKey.values()];
  }

  /** Every pod Loom manages (all pods, once watching: callers pick Loom's by their labels). */
  async loomPods(): Promise<Pod[]> {
    if (this.synced) return this.pods.list();
    const list = await this.client.request<{ items: Pod[] }>("GET", "/api/v1/pods", {
      query: { labelSelector: `${L.managedBy}=loom` },
    });
    return list.items;
  }

  /** Every node of the cluster. */
  async nodeList(): Promise<KubeNode[]> {
    if (this.synced) return this.nodes.list();
    return (await this.client.request<{ items: KubeNode[] }>("GET", "/api/v1/nodes")).items;
  }
}

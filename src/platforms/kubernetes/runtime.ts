import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { gpuShareEnv } from "../../api/env.js";
import { LoomError, NotFoundError } from "../../api/errors.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import type { PodPlacement, RunningWorkload, Workload } from "../../core/scheduler/model.js";
import type {
  CheckpointStorage,
  ExternalWork,
  GangObservation,
  GangSpec,
  LogOptions,
  MpiHost,
  ProjectInfo,
  RevisionRuntime,
  Runtime,
  WorkerEndpoint,
  WorkerObservation,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { NodeCapacity } from "../../ports/scheduler.js";
import { Informer } from "../../reconcile/informer.js";
import type { ControllerMetrics } from "../../reconcile/metrics.js";
import type { KubeClient } from "./client.js";
import { namespaceObjects } from "./project.js";
import { kubeCollectionSource, objectKey } from "./source.js";
import { namespaceOf, projectOf } from "./store.js";

const L = {
  managedBy: "app.kubernetes.io/managed-by",
  name: "app.kubernetes.io/name",
  instance: "app.kubernetes.io/instance",
  component: "app.kubernetes.io/component",
  project: "loom.dev/project",
  workload: "loom.dev/workload",
  kind: "loom.dev/workload-kind",
  uid: "loom.dev/workload-uid",
  attempt: "loom.dev/attempt",
  worker: "loom.dev/worker-index",
} as const;

export const GPU_RESOURCE = "nvidia.com/gpu";

/** Pods with this schedulerName are placed by Loom (kube-scheduler leaves them alone). */
export const SCHEDULER_NAME = "loom";
/** Pods with the same value of this label (in one namespace) are one gang: placed together. */
export const GANG_LABEL = "loom.dev/gang";
/** How many pods the gang has: it is not placed until all of them exist. */
export const GANG_SIZE_ANNOTATION = "loom.dev/gang-size";

/** Node labels the scheduler reads: pools are Loom's; GPU model and memory are GPU Feature Discovery's. */
export const NODE_LABELS = {
  pool: "loom.dev/node-pool",
  gpuModel: "nvidia.com/gpu.product",
  gpuMemoryMiB: "nvidia.com/gpu.memory",
} as const;

interface Pod {
  kind?: string;
  metadata: {
    name: string;
    namespace: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
  };
  spec?: {
    nodeName?: string;
    schedulerName?: string;
    priority?: number;
    containers?: { resources?: { requests?: Record<string, string> } }[];
    initContainers?: { resources?: { requests?: Record<string, string> } }[];
  };
  status?: {
    phase?: string;
    startTime?: string;
    message?: string;
    reason?: string;
    containerStatuses?: {
      name: string;
      state?: { terminated?: { exitCode: number; signal?: number; reason?: string; finishedAt?: string } };
    }[];
  };
}

interface KubeNode {
  metadata: { name: string; resourceVersion?: string; labels?: Record<string, string> };
  spec?: { unschedulable?: boolean; taints?: { effect: string }[] };
  status?: { allocatable?: Record<string, string>; conditions?: { type: string; status: string }[] };
}

export interface KubernetesRuntimeOptions {
  client: KubeClient;
  log: Logger;
  /** Image for workloads that name none. */
  defaultImage?: string;
  /** The informers' last-event gauge (kind "Pod" and "Node"). */
  metrics?: Pick<ControllerMetrics, "lastEventTimestamp">;
}

/** How long a deleted pod's revision is remembered, so that a late write echo cannot revive it. */
const TOMBSTONE_MS = 5 * 60_000;

/**
 * The Runtime port on Kubernetes: each worker of an attempt is a Pod owned by its TrainingJob
 * (deleting the job cascades), workers find each other through a headless Service, and every
 * Pod passes Pod Security "restricted". Pods carry schedulerName "loom": the admission loop has
 * placed the whole gang, and the runtime binds every pod through the binding subresource once
 * all of them exist. Pods of other workloads with schedulerName "loom" (users' Deployments,
 * Jobs…) are Loom's to place too: `external()` hands them to the scheduler in gangs.
 */
export class KubernetesRuntime implements Runtime {
  private readonly listeners: ((ref: WorkloadRef) => void)[] = [];
  private readonly client: KubeClient;
  private readonly log: Logger;
  /**
   * Loom's pods and the cluster's nodes, list-watched into memory once `watch()` has run: the
   * controllers' many reads (observe, stop, admission's capacity) then cost no request. Before
   * that (the in-process API of `loom --kubeconfig` only streams logs) reads go to the server.
   */
  private readonly podInformer: Informer<Pod>;
  private readonly nodeInformer: Informer<KubeNode>;
  /** Pod keys by the workload uid label, maintained from the pod informer's events. */
  private readonly podsByWorkload = new Map<string, Set<string>>();
  /**
   * Pods this runtime created or deleted, as the API server answered, until the watch catches up:
   * without them a reconcile that runs before its own writes come back would start an attempt twice.
   */
  private readonly ownWrites = new Map<string, Pod>();
  private readonly tombstones = new Map<string, { rv: number; at: number }>();
  private watching = false;

  constructor(private readonly opts: KubernetesRuntimeOptions) {
    this.client = opts.client;
    this.log = opts.log;
    const metrics = opts.metrics ?? noMetrics;
    this.podInformer = new Informer<Pod>(
      // Every pod, not only Loom's: the scheduler must see what others hold on each node.
      kubeCollectionSource(this.client, this.log, "Pod", "/api/v1/pods"),
      { onChange: (key, pod, type) => this.onPodEvent(key, pod, type) },
      this.log,
      metrics,
      { resyncMs: 24 * 3600_000 },
    );
    this.nodeInformer = new Informer<KubeNode>(
      kubeCollectionSource(this.client, this.log, "Node", "/api/v1/nodes"),
      { onChange: () => this.capacityChanged() },
      this.log,
      metrics,
      { resyncMs: 24 * 3600_000 },
    );
  }

  /**
   * As Kubeflow's MPIJob: the image runs sshd on each host worker, and the launcher's mpirun
   * starts ranks on them over ssh (the image provides sshd, its config and keys).
   */
  readonly mpiHost: MpiHost = { command: ["/usr/sbin/sshd", "-De"], env: {} };

  /**
   * Every pod has its own IP, so the ports are the same everywhere; the host is the pod's
   * stable name behind the job's headless Service ("job-1.job" in the namespace).
   */
  async endpoints(
    ref: WorkloadRef,
    _attempt: number,
    workers: number,
    ports: number,
  ): Promise<WorkerEndpoint[]> {
    return Array.from({ length: workers }, (_, i) => ({
      host: workers > 1 ? `${podHostname(ref.name, i)}.${ref.name}` : podHostname(ref.name, i),
      ports: Array.from({ length: ports }, (_, j) => WORKER_BASE_PORT + j),
    }));
  }

  /** The newest log line's timestamp over the latest attempt's running pods (one request each). */
  async lastActivity(ref: WorkloadRef): Promise<Date | undefined> {
    const pods = await this.pods(ref);
    const attempt = Math.max(0, ...pods.map((p) => Number(p.metadata.labels?.[L.attempt] ?? 0)));
    let latest = 0;
    for (const p of pods) {
      if (Number(p.metadata.labels?.[L.attempt]) !== attempt || p.status?.phase !== "Running") continue;
      try {
        const stream = await this.client.stream(
          `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}/log`,
          { container: "worker", timestamps: "true", tailLines: "1" },
        );
        let text = "";
        for await (const chunk of stream) text += String(chunk);
        const at = Date.parse(text.split(" ", 1)[0] ?? "");
        if (Number.isFinite(at)) latest = Math.max(latest, at);
      } catch (err) {
        this.log.debug({ err, pod: p.metadata.name }, "could not read the pod's last log line");
      }
    }
    return latest > 0 ? new Date(latest) : undefined;
  }

  private readonly capacityListeners: (() => void)[] = [];
  /** External pods bound by this runtime, until the watch shows their node: pod key → node. */
  private readonly boundExternal = new Map<string, string>();
  /** The last reason written to an external pod, so an unchanged one is not written again. */
  private readonly explained = new Map<string, string>();

  onCapacityChange(listener: () => void): void {
    this.capacityListeners.push(listener);
  }

  private capacityChanged(): void {
    for (const l of this.capacityListeners) l();
  }

  /** Starts the pod and node caches; controllers hear about every worker change from then on. */
  async watchPods(): Promise<void> {
    this.podInformer.start();
    this.nodeInformer.start();
    await Promise.all([this.podInformer.waitForSync(), this.nodeInformer.waitForSync()]);
    this.watching = true;
  }

  private onPodEvent(key: string, pod: Pod | undefined, type: string): void {
    if (!pod) return;
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
      this.tombstones.set(key, { rv: Number(pod.metadata.resourceVersion ?? 0), at: Date.now() });
    }
    if (type === "RESYNC") return;
    const ref = refFromLabels(pod.metadata.labels);
    if (ref) for (const l of this.listeners) l(ref);
    else if (type === "DELETED" || isExternalPending(pod) || pod.spec?.nodeName) {
      if (type === "DELETED") {
        this.boundExternal.delete(key);
        this.explained.delete(key);
      } else if (pod.spec?.nodeName) this.boundExternal.delete(key);
      this.capacityChanged();
    }
  }

  external(): ExternalWork {
    const pending = new Map<string, { pods: Pod[]; size: number }>();
    const running: RunningWorkload[] = [];
    const devicesTaken = new Map<string, number>();
    if (!this.watching) return { pending: [], running: [] };
    for (const pod of this.podInformer.list()) {
      // Loom's own workers are counted by their admissions; model pods (a Deployment's, made by
      // the ReplicaSet controller) are placed and counted like any pod submitted to Loom.
      const loomWorker = pod.metadata.labels?.[L.uid] && pod.metadata.labels?.[L.component] !== "model";
      if (loomWorker || isTerminal(pod)) continue;
      const key = objectKey(pod);
      const node = pod.spec?.nodeName ?? this.boundExternal.get(key);
      const request = podRequest(pod);
      if (node) {
        // Held by someone else. Device ids are the device plugin's choice, unknown here: count
        // them from the top of the node's devices (Loom's own placements fill from the bottom).
        const taken = devicesTaken.get(node) ?? 0;
        const gpus = Array.from({ length: Math.ceil(request.gpu) }, (_, i) => ({
          device: `${node}/gpu-${this.gpuCount(node) - 1 - taken - i}`,
          share: 1,
        }));
        devicesTaken.set(node, taken + gpus.length);
        running.push({
          id: `pod:${key}`,
          name: key,
          project: projectOf(pod.metadata.namespace) ?? `namespace ${pod.metadata.namespace}`,
          priority: pod.spec?.priority ?? 0,
          preemptible: false,
          createdAt: pod.metadata.creationTimestamp ?? "",
          pods: [request],
          placements: [{ pod: 0, node, gpus }],
        });
        continue;
      }
      if (!isExternalPending(pod)) continue; // another scheduler's pod, not yet bound
      const gang = pod.metadata.labels?.[GANG_LABEL];
      const id = gang ? `gang:${pod.metadata.namespace}/${gang}` : `pod:${key}`;
      const entry = pending.get(id) ?? { pods: [], size: 1 };
      entry.pods.push(pod);
      entry.size = Math.max(entry.size, Number(pod.metadata.annotations?.[GANG_SIZE_ANNOTATION] ?? 1) || 1);
      pending.set(id, entry);
    }
    const workloads: Workload[] = [];
    for (const [id, { pods, size }] of pending) {
      // A gang starts all together: until all its pods exist, it is not even a candidate.
      if (pods.length < size) continue;
      pods.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
      const first = pods[0]!;
      workloads.push({
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
      });
      this.externalPods.set(id, pods.map(objectKey));
    }
    return { pending: workloads, running };
  }

  /** The pods of each external workload handed out by the last external() call. */
  private readonly externalPods = new Map<string, string[]>();

  private gpuCount(node: string): number {
    return Number(this.nodeInformer.get(node)?.status?.allocatable?.[GPU_RESOURCE] ?? 0);
  }

  async bindExternal(id: string, placements: PodPlacement[]): Promise<void> {
    const keys = this.externalPods.get(id) ?? [];
    await Promise.all(
      placements.map(async (p) => {
        const key = keys[p.pod];
        if (!key) return;
        const [ns, name] = key.split("/") as [string, string];
        await this.bind(ns, name, p.node);
        this.boundExternal.set(key, p.node);
        this.explained.delete(key);
      }),
    );
  }

  async explainExternal(id: string, reason: string, message: string): Promise<void> {
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

  /** Binds a pod to a node through the binding subresource, as a scheduler does. */
  private async bind(ns: string, name: string, node: string): Promise<void> {
    await this.client.request("POST", `/api/v1/namespaces/${ns}/pods/${name}/binding`, {
      body: {
        apiVersion: "v1",
        kind: "Binding",
        metadata: { name, namespace: ns },
        target: { apiVersion: "v1", kind: "Node", name: node },
      },
    });
  }

  /** Remembers what the API server answered to this runtime's own pod write. */
  private wrote(pod: Pod | undefined): void {
    if (!this.watching || pod?.kind !== "Pod") return;
    const key = objectKey(pod);
    const rv = Number(pod.metadata.resourceVersion ?? 0);
    const cached = this.podInformer.get(key);
    if (cached && Number(cached.metadata.resourceVersion ?? 0) >= rv) return;
    const tomb = this.tombstones.get(key);
    if (tomb && tomb.rv >= rv) return;
    this.ownWrites.set(key, pod);
  }

  async nodes(): Promise<NodeCapacity[]> {
    const items = this.watching
      ? this.nodeInformer.list()
      : (await this.client.request<{ items: KubeNode[] }>("GET", "/api/v1/nodes")).items;
    return items
      .filter(
        (n) =>
          !n.spec?.unschedulable &&
          n.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
      )
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
      .map((n) => {
        const a = n.status?.allocatable ?? {};
        const gpus = Number(a[GPU_RESOURCE] ?? 0);
        const labels = n.metadata.labels ?? {};
        const gpuMemMiB = Number(labels[NODE_LABELS.gpuMemoryMiB] ?? 0);
        return {
          name: n.metadata.name,
          cpuMillis: parseCpuMillis(a.cpu ?? "0") ?? 0,
          memoryBytes: parseMemoryBytes(a.memory ?? "0") ?? 0,
          gpus: Array.from({ length: gpus }, (_, i) => `${n.metadata.name}/gpu-${i}`),
          ...(a.pods ? { maxWorkers: Number(a.pods) } : {}),
          ...(labels[NODE_LABELS.pool] ? { pool: labels[NODE_LABELS.pool] } : {}),
          ...(labels[NODE_LABELS.gpuModel] ? { gpuModel: labels[NODE_LABELS.gpuModel] } : {}),
          ...(gpuMemMiB > 0 ? { gpuMemoryBytes: gpuMemMiB * 2 ** 20 } : {}),
        };
      });
  }

  async start(spec: GangSpec): Promise<void> {
    const { ref, attempt } = spec;
    const ns = namespaceOf(ref.project);
    const pods = await this.pods(ref);
    const attemptOf = (p: Pod) => Number(p.metadata.labels?.[L.attempt]);
    if (pods.some((p) => attemptOf(p) > attempt)) return;
    const earlier = pods.filter((p) => attemptOf(p) < attempt);
    if (earlier.some((p) => !isTerminal(p)))
      throw new Error(
        `attempt of ${ref.name} still has live pods; stop it before starting attempt ${attempt}`,
      );
    // Finished pods of earlier attempts go now: attempts never overlap, and names are per attempt.
    for (const p of earlier) await this.deletePod(p, 0);
    // A retry of this start creates what is missing and binds what is unbound.
    const existing = new Set(pods.filter((p) => attemptOf(p) === attempt).map((p) => p.metadata.name));
    // Peers find each other by name through a headless Service. A single worker has no peers,
    // and the Service's EndpointSlices cost the control plane ~8 requests per job (bench:k8s).
    if (spec.workers.length > 1) await this.ensureService(ref);
    const claim = spec.checkpoint ? await this.ensureCheckpointClaim(ref, spec.checkpoint) : undefined;
    if (spec.initCheckpoint && !spec.initCheckpoint.checkpoint)
      throw new Error(
        `TrainingJob ${spec.initCheckpoint.ref.name} keeps its checkpoints in an emptyDir that ends with its pods; give it spec.checkpoint (a claim) so other jobs can start from them`,
      );
    // The source job's claim (its own, or the one Loom made for it), mounted read-only.
    const initClaim = spec.initCheckpoint
      ? (spec.initCheckpoint.checkpoint?.claimName ??
        `${spec.initCheckpoint.ref.name}-checkpoint`.slice(0, 63))
      : undefined;
    for (const w of spec.workers) {
      if (existing.has(podName(ref.name, attempt, w.index))) continue;
      const labels = {
        ...workloadLabels(ref),
        [L.attempt]: String(attempt),
        [L.worker]: String(w.index),
        [L.component]: "worker",
      };
      const resources: Record<string, Record<string, string>> = { requests: {}, limits: {} };
      if (w.allocation.cpuMillis) resources.requests!.cpu = `${w.allocation.cpuMillis}m`;
      if (w.allocation.memoryBytes) {
        resources.requests!.memory = String(w.allocation.memoryBytes);
        resources.limits!.memory = String(w.allocation.memoryBytes);
      }
      const fraction = w.allocation.gpuShare !== undefined && w.allocation.gpuShare < 1;
      if (w.allocation.gpus.length && !fraction) {
        resources.requests![GPU_RESOURCE] = String(w.allocation.gpus.length);
        resources.limits![GPU_RESOURCE] = String(w.allocation.gpus.length);
      }
      // A fractional GPU cannot be requested from the device plugin (whole devices only): the pod
      // asks for none, and Loom's scheduler accounts the share and names the device it chose.
      const gpuEnv = fraction
        ? {
            NVIDIA_VISIBLE_DEVICES: w.allocation.gpus.map((g) => g.split("/gpu-").pop()).join(","),
            ...gpuShareEnv(w.allocation.gpuShare),
          }
        : {};
      const pod = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name: podName(ref.name, attempt, w.index),
          namespace: ns,
          labels,
          ...(w.annotations ? { annotations: w.annotations } : {}),
          ownerReferences: [ownerRef(ref)],
        },
        spec: {
          restartPolicy: "Never",
          schedulerName: SCHEDULER_NAME,
          hostname: podHostname(ref.name, w.index),
          ...(spec.workers.length > 1 ? { subdomain: ref.name } : {}),
          enableServiceLinks: false,
          automountServiceAccountToken: false,
          // Loom's stops delete with the job's grace period; this covers everyone else's.
          terminationGracePeriodSeconds: w.terminationGracePeriodSeconds ?? 30,
          volumes: [
            claim
              ? { name: "checkpoint", persistentVolumeClaim: { claimName: claim } }
              : { name: "checkpoint", emptyDir: {} },
            ...(initClaim
              ? [{ name: "init-checkpoint", persistentVolumeClaim: { claimName: initClaim, readOnly: true } }]
              : []),
          ],
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 1000,
            runAsGroup: 1000,
            seccompProfile: { type: "RuntimeDefault" },
          },
          containers: [
            {
              name: "worker",
              image: w.image ?? this.opts.defaultImage ?? "python:3.11-slim",
              command: w.command,
              ...(w.workingDir ? { workingDir: w.workingDir } : {}),
              env: Object.entries({
                ...w.env,
                ...gpuEnv,
                LOOM_CHECKPOINT_DIR: CHECKPOINT_MOUNT,
                ...(initClaim ? { LOOM_INIT_CHECKPOINT_DIR: INIT_CHECKPOINT_MOUNT } : {}),
              }).map(([name, value]) => ({ name, value })),
              volumeMounts: [
                { name: "checkpoint", mountPath: CHECKPOINT_MOUNT },
                ...(initClaim
                  ? [{ name: "init-checkpoint", mountPath: INIT_CHECKPOINT_MOUNT, readOnly: true }]
                  : []),
              ],
              ...(spec.workers.length > 1
                ? { ports: [{ name: "rendezvous", containerPort: WORKER_BASE_PORT }] }
                : {}),
              resources,
              securityContext: {
                allowPrivilegeEscalation: false,
                capabilities: { drop: ["ALL"] },
                runAsNonRoot: true,
                seccompProfile: { type: "RuntimeDefault" },
              },
            },
          ],
        },
      };
      try {
        this.wrote(
          await this.client.request<Pod>("POST", `/api/v1/namespaces/${ns}/pods`, {
            body: pod,
            query: { fieldManager: "loom" },
          }),
        );
      } catch (err) {
        if ((err as { code?: string }).code !== "AlreadyExists") throw err;
      }
    }
    // The whole gang exists: bind every pod to the node admission chose for it.
    await Promise.all(
      spec.workers.map(async (w) => {
        const name = podName(ref.name, attempt, w.index);
        const cached = this.podInformer.get(`${ns}/${name}`) ?? this.ownWrites.get(`${ns}/${name}`);
        if (cached?.spec?.nodeName) return;
        try {
          await this.bind(ns, name, w.allocation.node);
        } catch (err) {
          // Bound already (a retry of this start): the pod keeps its node.
          if (!(err instanceof LoomError && err.code === "Conflict")) throw err;
        }
      }),
    );
    this.log.info({ project: ref.project, workload: ref.name, attempt }, "created and bound worker pods");
  }

  async observe(ref: WorkloadRef): Promise<GangObservation | undefined> {
    const pods = await this.pods(ref);
    if (pods.length === 0) return undefined;
    const attempt = Math.max(...pods.map((p) => Number(p.metadata.labels?.[L.attempt] ?? 0)));
    const mine = pods.filter((p) => Number(p.metadata.labels?.[L.attempt]) === attempt);
    const workers: WorkerObservation[] = mine.map((p) => workerOf(p)).sort((a, b) => a.index - b.index);
    return { attempt, workers, stopping: mine.some((p) => !!p.metadata.deletionTimestamp && !isTerminal(p)) };
  }

  async stop(ref: WorkloadRef, graceSeconds: number): Promise<boolean> {
    const live = (await this.pods(ref)).filter((p) => !isTerminal(p));
    for (const p of live) if (!p.metadata.deletionTimestamp) await this.deletePod(p, graceSeconds);
    return live.length === 0;
  }

  async release(ref: WorkloadRef): Promise<void> {
    for (const p of await this.pods(ref)) await this.deletePod(p, 0);
    await this.client
      .request("DELETE", `/api/v1/namespaces/${namespaceOf(ref.project)}/services/${ref.name}`)
      .catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
  }

  async list(): Promise<WorkloadRef[]> {
    const pods = this.watching
      ? this.podInformer.list()
      : (
          await this.client.request<{ items: Pod[] }>("GET", "/api/v1/pods", {
            query: { labelSelector: `${L.managedBy}=loom` },
          })
        ).items;
    const refs = new Map<string, WorkloadRef>();
    for (const p of pods) {
      const ref = refFromLabels(p.metadata.labels);
      if (ref) refs.set(ref.uid, ref);
    }
    return [...refs.values()];
  }

  async logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable> {
    const pods = await this.pods(ref);
    const attempt =
      opts.attempt ?? Math.max(0, ...pods.map((p) => Number(p.metadata.labels?.[L.attempt] ?? 0)));
    const name = podName(ref.name, attempt, opts.worker);
    return this.client.stream(`/api/v1/namespaces/${namespaceOf(ref.project)}/pods/${name}/log`, {
      container: "worker",
      follow: opts.follow ? "true" : undefined,
    });
  }

  async ensureProject(project: ProjectInfo): Promise<void> {
    for (const obj of namespaceObjects(project)) await this.apply(obj);
  }

  async removeProject(name: string): Promise<void> {
    await this.client.request("DELETE", `/api/v1/namespaces/${namespaceOf(name)}`).catch((err: unknown) => {
      if (!(err instanceof NotFoundError)) throw err;
    });
  }

  onChange(listener: (ref: WorkloadRef) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.podInformer.stop();
    this.nodeInformer.stop();
  }

  /**
   * Serving: a Deployment and a Service per revision, owned by the InferenceService; replicas
   * are scaled by applying the Deployment with the count the gateway's autoscaler wants; a
   * readiness probe on the model server's path; a NetworkPolicy that lets only Loom's gateways
   * (the operator and the loom-gateway Deployment, in loom-system) reach the model pods.
   */
  readonly serving: RevisionRuntime = {
    applyRevision: async (spec) => {
      const ns = namespaceOf(spec.service.project);
      const name = spec.revision.slice(0, 63);
      const labels = {
        ...workloadLabels(spec.service),
        [L.component]: "model",
        [REVISION_LABEL]: spec.revision,
      };
      const selector = { [L.uid]: spec.service.uid, [REVISION_LABEL]: spec.revision };
      const w = spec.worker;
      const resources: Record<string, Record<string, string>> = { requests: {}, limits: {} };
      if (w.allocation.cpuMillis) resources.requests!.cpu = `${w.allocation.cpuMillis}m`;
      if (w.allocation.memoryBytes) {
        resources.requests!.memory = String(w.allocation.memoryBytes);
        resources.limits!.memory = String(w.allocation.memoryBytes);
      }
      if (w.allocation.gpus.length) {
        resources.requests![GPU_RESOURCE] = String(w.allocation.gpus.length);
        resources.limits![GPU_RESOURCE] = String(w.allocation.gpus.length);
      }
      await this.apply({
        apiVersion: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        metadata: {
          name: `${spec.service.name}-gateway-only`.slice(0, 63),
          namespace: ns,
          labels: workloadLabels(spec.service),
          ownerReferences: [ownerRef(spec.service)],
        },
        spec: {
          podSelector: { matchLabels: { [L.uid]: spec.service.uid, [L.component]: "model" } },
          policyTypes: ["Ingress"],
          ingress: [
            {
              from: [
                {
                  namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": GATEWAY_NAMESPACE } },
                  // The operator's own gateway, and the loom-gateway Deployment (deploy/gateway.yaml).
                  podSelector: {
                    matchExpressions: [
                      { key: L.name, operator: "In", values: ["loom-operator", "loom-gateway"] },
                    ],
                  },
                },
              ],
              ports: [{ protocol: "TCP", port: spec.port }],
            },
          ],
        },
      } as never);
      await this.apply({
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name, namespace: ns, labels, ownerReferences: [ownerRef(spec.service)] },
        spec: {
          replicas: spec.replicas,
          selector: { matchLabels: selector },
          // Surge first: a replaced pod serves until its successor is ready.
          strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
          template: {
            metadata: { labels, ...(w.annotations ? { annotations: w.annotations } : {}) },
            spec: {
              schedulerName: SCHEDULER_NAME,
              enableServiceLinks: false,
              automountServiceAccountToken: false,
              terminationGracePeriodSeconds: w.terminationGracePeriodSeconds ?? 30,
              securityContext: {
                runAsNonRoot: true,
                runAsUser: 1000,
                runAsGroup: 1000,
                seccompProfile: { type: "RuntimeDefault" },
              },
              containers: [
                {
                  name: "model",
                  image: w.image ?? this.opts.defaultImage ?? "python:3.11-slim",
                  command: w.command,
                  ...(w.workingDir ? { workingDir: w.workingDir } : {}),
                  env: Object.entries({ ...w.env, PORT: String(spec.port), HOST: "0.0.0.0" }).map(
                    ([n, value]) => ({ name: n, value }),
                  ),
                  ports: [{ name: "http", containerPort: spec.port }],
                  readinessProbe: {
                    httpGet: { path: spec.readinessPath, port: spec.port },
                    periodSeconds: 2,
                    failureThreshold: 3,
                  },
                  // A model that never loads is restarted once its readiness timeout has passed.
                  startupProbe: {
                    httpGet: { path: spec.readinessPath, port: spec.port },
                    periodSeconds: 5,
                    failureThreshold: Math.max(1, Math.ceil(spec.readinessTimeoutSeconds / 5)),
                  },
                  resources,
                  securityContext: {
                    allowPrivilegeEscalation: false,
                    capabilities: { drop: ["ALL"] },
                    runAsNonRoot: true,
                    seccompProfile: { type: "RuntimeDefault" },
                  },
                },
              ],
            },
          },
        },
      } as never);
      await this.apply({
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace: ns, labels, ownerReferences: [ownerRef(spec.service)] },
        spec: { selector, ports: [{ name: "http", port: 80, targetPort: spec.port }] },
      } as never);
    },
    observeRevision: async (service, revision) => {
      const pods = await this.client.request<{ items: Pod[] }>(
        "GET",
        `/api/v1/namespaces/${namespaceOf(service.project)}/pods`,
        {
          query: { labelSelector: `${L.uid}=${service.uid},${REVISION_LABEL}=${revision}` },
        },
      );
      return {
        replicas: pods.items
          .filter((p) => !p.metadata.deletionTimestamp)
          .map((p) => {
            const st = p.status as
              | { podIP?: string; conditions?: { type: string; status: string }[]; startTime?: string }
              | undefined;
            return {
              id: p.metadata.name,
              ...(st?.podIP ? { host: st.podIP } : {}),
              port: Number(
                (p.spec as { containers: { ports?: { containerPort: number }[] }[] }).containers[0]
                  ?.ports?.[0]?.containerPort ?? 8080,
              ),
              ready: !!st?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
              startedAt: st?.startTime ?? new Date().toISOString(),
            };
          }),
      };
    },
    deleteRevision: async (service, revision) => {
      const ns = namespaceOf(service.project);
      for (const path of [
        `/apis/apps/v1/namespaces/${ns}/deployments/${revision}`,
        `/api/v1/namespaces/${ns}/services/${revision}`,
      ]) {
        try {
          await this.client.request("DELETE", path, { body: { propagationPolicy: "Background" } });
        } catch (err) {
          if ((err as { status?: number }).status !== 404) throw err;
        }
      }
    },
  };

  /** Server-side apply with field manager "loom": create or converge, idempotent. */
  private async apply(obj: {
    apiVersion: string;
    kind: string;
    metadata: { name: string; namespace?: string };
  }): Promise<void> {
    await this.client.request("PATCH", objectPath(obj), {
      body: obj,
      contentType: "application/apply-patch+yaml",
      query: { fieldManager: "loom", force: true },
    });
  }

  private async ensureService(ref: WorkloadRef): Promise<void> {
    await this.apply({
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: ref.name,
        namespace: namespaceOf(ref.project),
        labels: workloadLabels(ref),
        ownerReferences: [ownerRef(ref)],
      },
      spec: { clusterIP: "None", publishNotReadyAddresses: true, selector: { [L.uid]: ref.uid } },
    } as never);
  }

  /** The claim checkpoints live on: the user's, or one Loom makes per job (deleted with it). */
  private async ensureCheckpointClaim(ref: WorkloadRef, c: CheckpointStorage): Promise<string> {
    if (c.claimName) return c.claimName;
    const name = `${ref.name}-checkpoint`.slice(0, 63);
    await this.apply({
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: {
        name,
        namespace: namespaceOf(ref.project),
        labels: workloadLabels(ref),
        ownerReferences: [ownerRef(ref)],
      },
      spec: {
        // Every worker (on any node) writes and reads it: shared storage.
        accessModes: ["ReadWriteMany"],
        resources: { requests: { storage: String(c.size ?? "10Gi") } },
        ...(c.storageClassName ? { storageClassName: c.storageClassName } : {}),
      },
    } as never);
    return name;
  }

  private async pods(ref: WorkloadRef): Promise<Pod[]> {
    if (!this.watching) {
      const list = await this.client.request<{ items: Pod[] }>(
        "GET",
        `/api/v1/namespaces/${namespaceOf(ref.project)}/pods`,
        { query: { labelSelector: `${L.uid}=${ref.uid}` } },
      );
      return list.items;
    }
    const byKey = new Map<string, Pod>();
    for (const key of this.podsByWorkload.get(ref.uid) ?? []) {
      const pod = this.podInformer.get(key);
      if (pod) byKey.set(key, pod);
    }
    const now = Date.now();
    for (const [key, tomb] of this.tombstones) if (now - tomb.at > TOMBSTONE_MS) this.tombstones.delete(key);
    for (const [key, mine] of this.ownWrites) {
      if (mine.metadata.labels?.[L.uid] !== ref.uid) continue;
      const cached = byKey.get(key) ?? this.podInformer.get(key);
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

  private async deletePod(p: Pod, graceSeconds: number): Promise<void> {
    const answer = await this.client
      .request<Pod>("DELETE", `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`, {
        body: { apiVersion: "v1", kind: "DeleteOptions", gracePeriodSeconds: graceSeconds },
      })
      .catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
        return undefined;
      });
    // The answer is the pod, marked for deletion (or already gone: its last state).
    if (answer?.kind === "Pod")
      this.wrote({
        ...answer,
        metadata: {
          ...answer.metadata,
          deletionTimestamp: answer.metadata.deletionTimestamp ?? new Date().toISOString(),
        },
      });
  }
}

const noMetrics = { lastEventTimestamp: { set: () => {} } } as unknown as Pick<
  ControllerMetrics,
  "lastEventTimestamp"
>;

function objectPath(obj: {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
}): string {
  const plural: Record<string, string> = {
    Namespace: "namespaces",
    ResourceQuota: "resourcequotas",
    LimitRange: "limitranges",
    NetworkPolicy: "networkpolicies",
    Role: "roles",
    RoleBinding: "rolebindings",
    Service: "services",
    PersistentVolumeClaim: "persistentvolumeclaims",
    Deployment: "deployments",
  };
  const base = obj.apiVersion === "v1" ? "/api/v1" : `/apis/${obj.apiVersion}`;
  const ns = obj.metadata.namespace ? `/namespaces/${obj.metadata.namespace}` : "";
  return `${base}${ns}/${plural[obj.kind]}/${obj.metadata.name}`;
}

/** Which revision of an InferenceService a model pod runs. */
const REVISION_LABEL = "loom.dev/revision";
/** Where Loom's gateway (the operator) runs: the only namespace whose pods reach model pods. */
const GATEWAY_NAMESPACE = "loom-system";

/** Where LOOM_CHECKPOINT_DIR is mounted in every worker. */
const CHECKPOINT_MOUNT = "/loom/checkpoint";
const INIT_CHECKPOINT_MOUNT = "/loom/init-checkpoint";
/** The first of a worker's rendezvous ports (MASTER_PORT, TF_CONFIG, Ray's GCS on the head). */
const WORKER_BASE_PORT = 29500;

function podHostname(workload: string, index: number): string {
  return `${workload}-${index}`.slice(0, 63);
}

function podName(workload: string, attempt: number, index: number): string {
  return `${workload}-a${attempt}-w${index}`.slice(0, 63);
}

function workloadLabels(ref: WorkloadRef): Record<string, string> {
  return {
    [L.managedBy]: "loom",
    [L.name]: ref.kind.toLowerCase(),
    [L.instance]: ref.name,
    [L.project]: ref.project,
    [L.workload]: ref.name,
    [L.kind]: ref.kind,
    [L.uid]: ref.uid,
  };
}

function ownerRef(ref: WorkloadRef) {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: ref.kind,
    name: ref.name,
    uid: ref.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function refFromLabels(labels: Record<string, string> | undefined): WorkloadRef | undefined {
  const uid = labels?.[L.uid];
  const project = labels?.[L.project];
  const name = labels?.[L.workload];
  if (!uid || !project || !name) return undefined;
  return { kind: labels[L.kind] ?? "TrainingJob", project, name, uid };
}

function isExternalPending(p: Pod): boolean {
  return (
    p.spec?.schedulerName === SCHEDULER_NAME &&
    !p.spec.nodeName &&
    !p.metadata.deletionTimestamp &&
    !isTerminal(p)
  );
}

/**
 * Requests by pod object: the informer replaces a pod's object on every change, so an entry lives
 * exactly as long as that version. Every admission cycle walks every pod, and parsing each one's
 * quantities again was most of external()'s cost with 5,000 pods (bench:scheduler (b)).
 */
const requests = new WeakMap<Pod, ReturnType<typeof parseRequest>>();

/** A pod's requests as the scheduler counts them (the largest init container counts too). */
function podRequest(p: Pod) {
  let r = requests.get(p);
  if (!r) {
    r = parseRequest(p);
    requests.set(p, r);
  }
  // A copy: the scheduler core may keep or change what it is handed.
  return { ...r };
}

function parseRequest(p: Pod) {
  const sum = { cpuMillis: 0, memoryBytes: 0, gpu: 0 };
  for (const c of p.spec?.containers ?? []) {
    const r = c.resources?.requests ?? {};
    sum.cpuMillis += parseCpuMillis(r.cpu ?? "0") ?? 0;
    sum.memoryBytes += parseMemoryBytes(r.memory ?? "0") ?? 0;
    sum.gpu += Number(r[GPU_RESOURCE] ?? 0);
  }
  for (const c of p.spec?.initContainers ?? []) {
    const r = c.resources?.requests ?? {};
    sum.cpuMillis = Math.max(sum.cpuMillis, parseCpuMillis(r.cpu ?? "0") ?? 0);
    sum.memoryBytes = Math.max(sum.memoryBytes, parseMemoryBytes(r.memory ?? "0") ?? 0);
  }
  return sum;
}

function isTerminal(p: Pod): boolean {
  return p.status?.phase === "Succeeded" || p.status?.phase === "Failed";
}

const SIGNALS: Record<number, string> = {
  9: "SIGKILL",
  15: "SIGTERM",
  2: "SIGINT",
  6: "SIGABRT",
  11: "SIGSEGV",
};

function workerOf(p: Pod): WorkerObservation {
  const index = Number(p.metadata.labels?.[L.worker] ?? 0);
  const base = { index, startTime: p.status?.startTime };
  const terminated = p.status?.containerStatuses?.find((c) => c.name === "worker")?.state?.terminated;
  switch (p.status?.phase) {
    case "Succeeded":
      return {
        ...base,
        state: "Succeeded",
        exitCode: terminated?.exitCode ?? 0,
        finishTime: terminated?.finishedAt,
      };
    case "Failed": {
      const exitCode = terminated?.exitCode;
      const signal = terminated?.signal
        ? SIGNALS[terminated.signal]
        : exitCode && exitCode > 128
          ? SIGNALS[exitCode - 128]
          : undefined;
      return {
        ...base,
        state: exitCode === undefined ? "Unknown" : "Failed",
        exitCode,
        ...(signal ? { signal } : {}),
        finishTime: terminated?.finishedAt,
        message: p.status?.message ?? p.status?.reason ?? terminated?.reason,
      };
    }
    default:
      return {
        ...base,
        state: "Running",
        message: p.status?.phase === "Pending" ? "pod pending" : undefined,
      };
  }
}

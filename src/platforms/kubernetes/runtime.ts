import type { Duplex, Readable } from "node:stream";
import type { Logger } from "pino";
import { NotFoundError } from "../../api/errors.js";
import type {
  CapacityAnswer,
  CapacityRequest,
  CheckpointFiles,
  ExternalWork,
  GangObservation,
  GangSpec,
  LogOptions,
  MpiHost,
  ProjectInfo,
  RevisionRuntime,
  Runtime,
  WorkerEndpoint,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { NodeCapacity, PodPlacement } from "../../ports/scheduler.js";
import type { ControllerMetrics } from "../../reconcile/metrics.js";
import { applyObject } from "./apply.js";
import { ClusterCache } from "./cache.js";
import { CheckpointProbe, seedPods } from "./checkpoints.js";
import type { KubeClient } from "./client.js";
import { CapacityRequests } from "./demand.js";
import { ExternalScheduling } from "./external.js";
import { isExternalPending } from "./external-index.js";
import { Gangs, MPI_SSHD } from "./gangs.js";
import { LABELS, namespaceOf, REVISION_LABEL, refFromLabels } from "./naming.js";
import { nodeCapacities } from "./nodes.js";
import { openPortForward } from "./portforward.js";
import { namespaceObjects } from "./project.js";
import { kubernetesRevisions } from "./revisions.js";
import { serviceHost } from "./workspaces.js";

export interface KubernetesRuntimeOptions {
  client: KubeClient;
  log: Logger;
  /** Image for workloads that name none. */
  defaultImage?: string;
  /** The informers' last-event gauge (kind "Pod" and "Node"). */
  metrics?: Pick<ControllerMetrics, "lastEventTimestamp">;
  /**
   * A node autoscaler (the cluster-autoscaler) adds nodes for pending pods: gangs that wait for
   * capacity are shown to it as pods it can simulate (demand.ts). Off, a waiting gang creates
   * nothing (each would cost the API server its pods' writes for no one to read).
   */
  nodeAutoscaling?: boolean;
  /**
   * How often each running TrainingJob's loom.json is read (checkpoints.ts), in ms; 0: never
   * (its checkpoint step is then not reported). Default CHECKPOINT_PROBE_MS.
   */
  checkpointProbeMs?: number;
}

/**
 * The Runtime port on Kubernetes, composed of: the pod and node caches (cache.ts), gangs of
 * worker pods (gangs.ts), Loom as the secondary scheduler of other workloads' pods
 * (external.ts), serving revisions (revisions.ts), node capacity (nodes.ts) and projects as
 * namespaces (project.ts). Every Pod passes Pod Security "restricted" (pods.ts).
 */
export class KubernetesRuntime implements Runtime {
  private readonly listeners: ((ref: WorkloadRef) => void)[] = [];
  private readonly client: KubeClient;
  private readonly cache: ClusterCache;
  private readonly gangs: Gangs;
  private readonly externalPods: ExternalScheduling;
  private capacityRequests: CapacityRequests | undefined;
  /** The step each running job last wrote to loom.json (read through pods/exec). */
  private readonly checkpoints: CheckpointProbe;

  /** Present when a node autoscaler runs (options.nodeAutoscaling). */
  readonly requestCapacity?: (
    ref: WorkloadRef,
    request: CapacityRequest | undefined,
  ) => Promise<CapacityAnswer | undefined>;

  constructor(opts: KubernetesRuntimeOptions) {
    this.client = opts.client;
    this.cache = new ClusterCache(this.client, opts.log, opts.metrics, {
      // A worker's change wakes its workload's controller; any other pod's may change capacity.
      onPod: (key, pod, type) => {
        const ref = refFromLabels(pod.metadata.labels);
        if (ref) for (const l of this.listeners) l(ref);
        // A serving replica's pod (a model's, a workspace's) waits for Loom's scheduler as others'
        // pods do: without a cycle for it, it waited for some other change to bring one.
        if (!ref || isExternalPending(pod)) this.externalPods.podEvent(key, pod, type);
      },
      indexPod: (key, pod) => this.externalPods.indexPod(key, pod),
      onNode: () => this.externalPods.capacityChanged(),
    });
    this.externalPods = new ExternalScheduling(this.client, this.cache);
    this.gangs = new Gangs({
      client: this.client,
      log: opts.log,
      cache: this.cache,
      defaultImage: opts.defaultImage,
    });
    this.checkpoints = new CheckpointProbe({
      client: this.client,
      log: opts.log,
      pods: () => this.cache.loomPods(),
      onChange: (ref) => {
        for (const l of this.listeners) l(ref);
      },
    });
    if (opts.checkpointProbeMs !== 0) this.checkpoints.start(opts.checkpointProbeMs);
    this.serving = kubernetesRevisions(this.client, opts.defaultImage);
    if (opts.nodeAutoscaling) {
      const requests = new CapacityRequests(this.client, this.cache, opts.log);
      this.requestCapacity = (ref, request) => requests.request(ref, request);
      this.capacityRequests = requests;
    }
  }

  /**
   * As Kubeflow's MPIJob: the image runs sshd on each host worker, and the launcher's mpirun
   * starts ranks on them over ssh (the image provides sshd, its config and keys).
   */
  readonly mpiHost: MpiHost = { command: [MPI_SSHD, "-De"], env: {} };

  /** Serving: a Deployment, a Service and a NetworkPolicy per revision (revisions.ts). */
  readonly serving: RevisionRuntime;

  async endpoints(
    ref: WorkloadRef,
    _attempt: number,
    workers: number,
    ports: number,
  ): Promise<WorkerEndpoint[]> {
    return this.gangs.endpoints(ref, workers, ports);
  }

  lastActivity(ref: WorkloadRef): Promise<Date | undefined> {
    return this.gangs.lastActivity(ref);
  }

  onCapacityChange(listener: () => void): void {
    this.externalPods.onCapacityChange(listener);
  }

  /** Starts the pod and node caches; controllers hear about every worker change from then on. */
  async watchPods(): Promise<void> {
    await this.cache.start();
  }

  external(): ExternalWork {
    return this.externalPods.work();
  }

  bindExternal(id: string, placements: PodPlacement[]): Promise<void> {
    return this.externalPods.bind(id, placements);
  }

  explainExternal(id: string, reason: string, message: string): Promise<void> {
    return this.externalPods.explain(id, reason, message);
  }

  async nodes(): Promise<NodeCapacity[]> {
    return nodeCapacities(await this.cache.nodeList());
  }

  /**
   * A gang that asked the node autoscaler for room withdraws the request here, beside the start's
   * other objects and its unbound pods (which no autoscaler counts as demand: they are not marked
   * Unschedulable), and before any pod is bound, so the autoscaler never sees the request beside
   * a placed gang and adds its nodes a second time. `held` (the caller's finalizer) goes the same
   * way: the pods are made meanwhile, and bound once it is written.
   */
  start(spec: GangSpec, held?: Promise<unknown>): Promise<void> {
    return this.gangs.start(spec, [this.capacityRequests?.withdrawForStart(spec.ref), held]);
  }

  async observe(ref: WorkloadRef): Promise<GangObservation | undefined> {
    const obs = await this.gangs.observe(ref);
    const checkpoint = this.checkpoints.report(ref.uid);
    return obs && checkpoint ? { ...obs, checkpoint } : obs;
  }

  /**
   * A job back in this cluster from a fleet member: the control plane's checkpoint, written into
   * its attempt's waiting pods (checkpoints.ts, as a member's copy is seeded).
   */
  seedCheckpoint(
    ref: WorkloadRef,
    attempt: number,
    files: CheckpointFiles,
  ): Promise<{ waiting: number; written: number }> {
    return seedPods(this.client, ref, files, attempt);
  }

  stop(ref: WorkloadRef, graceSeconds: number): Promise<boolean> {
    return this.gangs.stop(ref, graceSeconds);
  }

  release(ref: WorkloadRef): Promise<void> {
    return this.gangs.release(ref);
  }

  list(): Promise<WorkloadRef[]> {
    return this.gangs.list();
  }

  logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable> {
    return this.gangs.logs(ref, opts);
  }

  async ensureProject(project: ProjectInfo): Promise<void> {
    for (const obj of namespaceObjects(project)) await applyObject(this.client, obj);
  }

  async removeProject(name: string): Promise<void> {
    await this.client.request("DELETE", `/api/v1/namespaces/${namespaceOf(name)}`).catch((err: unknown) => {
      if (!(err instanceof NotFoundError)) throw err;
    });
  }

  /**
   * The Service of the revision a replica pod runs (its REVISION_LABEL), port 80: where Loom's
   * user-content origin reaches a workspace. Undefined for a pod not (yet) in the cache.
   */
  serviceOf(project: string, pod: string): { host: string; port: number } | undefined {
    const revision = this.cache.pod(`${namespaceOf(project)}/${pod}`)?.metadata.labels?.[REVISION_LABEL];
    return revision ? { host: serviceHost(project, revision), port: 80 } : undefined;
  }

  /**
   * A TCP tunnel to `port` of the workload's `worker`-th running pod (a gang's worker index, or a
   * revision's replicas by name), through the API server's pods/portforward (portforward.ts): the
   * operator needs no route to the pod network, and the API server checks its RBAC on the way.
   */
  async connectPort(ref: WorkloadRef, worker: number, port: number): Promise<Duplex> {
    // A serving replica's handle (a workspace's /proxy/P/) names its pod and carries the pod's uid.
    const own = this.cache.pod(`${namespaceOf(ref.project)}/${ref.name}`);
    if (worker === 0 && own?.metadata.uid === ref.uid && !own.metadata.deletionTimestamp)
      return openPortForward(this.client, own.metadata.namespace, own.metadata.name, port);
    const running = (await this.cache.workloadPods(ref))
      .filter((p) => !p.metadata.deletionTimestamp && p.status?.phase === "Running")
      .sort(
        (a, b) =>
          Number(a.metadata.labels?.[LABELS.worker] ?? 0) - Number(b.metadata.labels?.[LABELS.worker] ?? 0) ||
          a.metadata.name.localeCompare(b.metadata.name),
      );
    const pod = running[worker];
    if (!pod) throw new Error(`${ref.kind} ${ref.name} has no running pod for worker ${worker}`);
    return openPortForward(this.client, pod.metadata.namespace, pod.metadata.name, port);
  }

  onChange(listener: (ref: WorkloadRef) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.checkpoints.stop();
    this.cache.stop();
  }
}

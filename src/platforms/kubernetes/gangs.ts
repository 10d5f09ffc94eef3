import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { LoomError, NotFoundError } from "../../api/errors.js";
import type {
  CheckpointStorage,
  GangObservation,
  GangSpec,
  LogOptions,
  WorkerEndpoint,
  WorkerObservation,
  WorkerSpec,
  WorkloadRef,
} from "../../ports/runtime.js";
import { applyObject } from "./apply.js";
import type { ClusterCache } from "./cache.js";
import { CHECKPOINT_MOUNT, REPORT_LABEL, seedContainer } from "./checkpoints.js";
import type { KubeClient } from "./client.js";
import {
  type CredentialFiles,
  credentialSecret,
  credentialSecretName,
  secretFileCredentials,
  splitCredentials,
} from "./credentials.js";
import { CODE_MOUNT, codeClaimName } from "./homeclone.js";
import {
  LABELS as L,
  namespaceOf,
  ownerRef,
  podHostname,
  podName,
  refFromLabels,
  workloadLabels,
} from "./naming.js";
import { loomTaintTolerations } from "./nodes.js";
import {
  bindPod,
  containerResources,
  fractionalGpuEnv,
  isFractionalGpu,
  isTerminal,
  type Pod,
  podTemplate,
} from "./pods.js";

const INIT_CHECKPOINT_MOUNT = "/loom/init-checkpoint";
/** What an MPI host worker runs (runtime.ts's mpiHost): sshd writes under the image's /run. */
export const MPI_SSHD = "/usr/sbin/sshd";
/** The first of a worker's rendezvous ports (MASTER_PORT, TF_CONFIG, Ray's GCS on the head). */
const WORKER_BASE_PORT = 29500;

export interface GangDeps {
  client: KubeClient;
  log: Logger;
  cache: ClusterCache;
  /** Image for workers that name none. */
  defaultImage: string | undefined;
}

/**
 * Gangs as pods: each worker of an attempt is a Pod owned by its workload (deleting the job
 * cascades), workers find each other through a headless Service, and the pods carry
 * schedulerName "loom": the admission loop has placed the whole gang, and every pod is bound
 * through the binding subresource once all of them exist (a gang of one is created bound).
 */
export class Gangs {
  private readonly client: KubeClient;
  private readonly cache: ClusterCache;

  constructor(private readonly deps: GangDeps) {
    this.client = deps.client;
    this.cache = deps.cache;
  }

  /**
   * Every pod has its own IP, so the ports are the same everywhere; the host is the pod's
   * stable name behind the job's headless Service ("job-1.job" in the namespace).
   */
  endpoints(ref: WorkloadRef, workers: number, ports: number): WorkerEndpoint[] {
    return Array.from({ length: workers }, (_, i) => ({
      host: workers > 1 ? `${podHostname(ref.name, i)}.${ref.name}` : podHostname(ref.name, i),
      ports: Array.from({ length: ports }, (_, j) => WORKER_BASE_PORT + j),
    }));
  }

  /** The newest log line's timestamp over the latest attempt's running pods (one request each). */
  async lastActivity(ref: WorkloadRef): Promise<Date | undefined> {
    const pods = await this.cache.workloadPods(ref);
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
        this.deps.log.debug({ err, pod: p.metadata.name }, "could not read the pod's last log line");
      }
    }
    return latest > 0 ? new Date(latest) : undefined;
  }

  /**
   * Makes the attempt's pods and binds them, whole. `beforeBind`: work under way beside the start
   * (the caller's runtime finalizer, the withdrawal of the gang's capacity request) that must
   * succeed before any pod is bound. Everything the pods need (the headless Service, the claim,
   * the credentials) is made side by side with the unbound pods and the work in `beforeBind`, and
   * the pods are bound once all of it has succeeded: two round trips between the admission and a
   * bound gang (bench:fleet (a)), where one after another they were four. If any of it fails, the
   * attempt's unbound pods go and the first error is thrown: nothing runs, nothing is left half made.
   */
  async start(spec: GangSpec, beforeBind: (Promise<unknown> | undefined)[] = []): Promise<void> {
    // Settled at once (no unhandled rejection when an earlier step throws); awaited before the binds.
    const gates = beforeBind.flatMap((p) => (p ? [p.then(() => undefined)] : []));
    const { ref, attempt } = spec;
    const ns = namespaceOf(ref.project);
    let code: string | undefined;
    let pods: Pod[];
    try {
      // spec.fromWorkspace: the clone of the home Loom's API made when the job was created.
      code = spec.snapshot ? await this.codeClaim(ref) : undefined;
      pods = await this.cache.workloadPods(ref);
    } catch (err) {
      await Promise.allSettled(gates);
      throw err;
    }
    const attemptOf = (p: Pod) => Number(p.metadata.labels?.[L.attempt]);
    if (pods.some((p) => attemptOf(p) > attempt)) return;
    const earlier = pods.filter((p) => attemptOf(p) < attempt);
    const problem = earlier.some((p) => !isTerminal(p))
      ? new Error(`attempt of ${ref.name} still has live pods; stop it before starting attempt ${attempt}`)
      : spec.initCheckpoint && !spec.initCheckpoint.checkpoint
        ? new Error(
            `TrainingJob ${spec.initCheckpoint.ref.name} keeps its checkpoints in an emptyDir that ends with its pods; give it spec.checkpoint (a claim) so other jobs can start from them`,
          )
        : undefined;
    if (problem) {
      await Promise.allSettled(gates);
      throw problem;
    }
    // A retry of this start creates what is missing and binds what is unbound.
    const existing = new Set(pods.filter((p) => attemptOf(p) === attempt).map((p) => p.metadata.name));
    const claim = spec.checkpoint
      ? (spec.checkpoint.claimName ?? `${ref.name}-checkpoint`.slice(0, 63))
      : undefined;
    // The source job's claim (its own, or the one Loom made for it), mounted read-only.
    const initClaim = spec.initCheckpoint
      ? (spec.initCheckpoint.checkpoint?.claimName ??
        `${spec.initCheckpoint.ref.name}-checkpoint`.slice(0, 63))
      : undefined;
    const credentials = gangCredentials(spec);
    const needs: Promise<unknown>[] = [
      ...gates,
      // Finished pods of earlier attempts go (attempts never overlap, and names are per attempt).
      ...earlier.map((p) => this.deletePod(p, 0)),
      // Peers find each other by name through a headless Service. A single worker has no peers,
      // and the Service's EndpointSlices cost the control plane ~8 requests per job (bench:k8s).
      ...(spec.workers.length > 1 ? [this.ensureService(ref)] : []),
      ...(spec.checkpoint && !spec.checkpoint.claimName
        ? [this.ensureCheckpointClaim(ref, spec.checkpoint)]
        : []),
      // The workload's credentials: a Secret of its own, there before any pod that mounts it runs.
      ...(credentials
        ? [applyObject(this.client, credentialSecret(ref, credentials.secretName, credentials.files))]
        : []),
    ];
    const podOf = (w: WorkerSpec) => this.workerPod(spec, w, { claim, initClaim, code }, credentials);
    const missing = spec.workers.filter((w) => !existing.has(podName(ref.name, attempt, w.index)));
    if (spec.workers.length === 1) {
      // A gang of one is whole as soon as its pod exists: it is created on the node admission
      // chose, once what it needs is there. Created and then bound, it cost one request more and
      // one more update of the pod that every pod watcher (kwok or kubelets, scheduler,
      // controller-manager, this operator) decodes: 1.0 of the operator's 10.0 requests per job
      // in bench:k8s.
      await allOrFirstError(needs);
      const w = spec.workers[0]!;
      const name = podName(ref.name, attempt, w.index);
      const pod = missing.length ? podOf(w) : undefined;
      const created =
        pod && (await this.createPod(ns, { ...pod, spec: { ...pod.spec, nodeName: w.allocation.node } }));
      // There already (a retry of this start): bound unless the cache shows it bound.
      if (!created && !this.cache.pod(`${ns}/${name}`)?.spec?.nodeName)
        await this.bind(ns, name, w.allocation.node);
    } else {
      // Unbound, none of them can run: they are made beside everything else, side by side.
      const made = missing.map((w) => this.createPod(ns, podOf(w)));
      try {
        await allOrFirstError([...needs, ...made]);
      } catch (err) {
        await this.withdrawUnbound(spec);
        throw err;
      }
      // The whole gang exists, and all it needs: bind every pod to the node admission chose.
      await Promise.all(
        spec.workers.map(async (w) => {
          const name = podName(ref.name, attempt, w.index);
          if (!this.cache.pod(`${ns}/${name}`)?.spec?.nodeName) await this.bind(ns, name, w.allocation.node);
        }),
      );
    }
    this.deps.log.info(
      { project: ref.project, workload: ref.name, attempt },
      "created and bound worker pods",
    );
  }

  /** Creates a pod; false when it exists already (a retry of a start). */
  private async createPod(ns: string, body: object): Promise<boolean> {
    try {
      this.cache.wrote(
        await this.client.request<Pod>("POST", `/api/v1/namespaces/${ns}/pods`, {
          body,
          query: { fieldManager: "loom" },
        }),
      );
      return true;
    } catch (err) {
      if ((err as { code?: string }).code !== "AlreadyExists") throw err;
      return false;
    }
  }

  private async bind(ns: string, name: string, node: string): Promise<void> {
    try {
      await bindPod(this.client, ns, name, node);
    } catch (err) {
      // Bound already (a retry of this start): the pod keeps its node.
      if (!(err instanceof LoomError && err.code === "Conflict")) throw err;
    }
  }

  /** A start that cannot bind its gang leaves none of its pods (unbound, none ran). */
  private async withdrawUnbound(spec: GangSpec): Promise<void> {
    const ns = namespaceOf(spec.ref.project);
    await Promise.allSettled(
      spec.workers.map(async (w) => {
        const pod = this.cache.pod(`${ns}/${podName(spec.ref.name, spec.attempt, w.index)}`);
        if (pod && !pod.spec?.nodeName && !pod.metadata.deletionTimestamp) await this.deletePod(pod, 0);
      }),
    );
  }

  /** One worker's pod: its checkpoint volumes, rendezvous port and share of a GPU. */
  private workerPod(
    spec: GangSpec,
    w: WorkerSpec,
    claims: { claim: string | undefined; initClaim: string | undefined; code: string | undefined },
    credentials: { secretName: string; files: CredentialFiles } | undefined,
  ) {
    const { ref, attempt } = spec;
    const { claim, initClaim, code } = claims;
    const fraction = isFractionalGpu(w.allocation);
    // A training worker's image is read-only to it: what it writes goes to its checkpoint, its
    // HOME and /tmp. Not an MPI host's sshd, which writes its pid and privilege-separation
    // files under the image's /run.
    const readOnlyRoot = ref.kind === "TrainingJob" && w.command[0] !== MPI_SSHD;
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      ...podTemplate({
        worker: {
          ...w,
          env: splitCredentials(w.env).env,
          // Run from the workspace's home as it was, in its clone: the working dir.
          ...(code && !w.workingDir ? { workingDir: CODE_MOUNT } : {}),
        },
        ...(credentials ? { credentials } : {}),
        tolerations: loomTaintTolerations(this.deps.cache.nodes.get(w.allocation.node)),
        defaultImage: this.deps.defaultImage,
        containerName: "worker",
        labels: {
          ...workloadLabels(ref),
          [L.attempt]: String(attempt),
          [L.worker]: String(w.index),
          [L.component]: "worker",
          ...(spec.reportCheckpoint && w.index === 0 ? { [REPORT_LABEL]: "true" } : {}),
        },
        env: {
          // A fractional GPU: the pod asks the device plugin for none, and names the device
          // Loom's scheduler chose.
          ...(fraction ? fractionalGpuEnv(w.allocation) : {}),
          LOOM_CHECKPOINT_DIR: CHECKPOINT_MOUNT,
          ...(initClaim ? { LOOM_INIT_CHECKPOINT_DIR: INIT_CHECKPOINT_MOUNT } : {}),
        },
        resources: containerResources(w.allocation, fraction),
        pod: {
          name: podName(ref.name, attempt, w.index),
          namespace: namespaceOf(ref.project),
          ownerReferences: [ownerRef(ref)],
          restartPolicy: "Never",
          hostname: podHostname(ref.name, w.index),
          ...(spec.workers.length > 1 ? { subdomain: ref.name } : {}),
        },
        volumes: [
          claim
            ? { name: "checkpoint", persistentVolumeClaim: { claimName: claim } }
            : { name: "checkpoint", emptyDir: {} },
          ...(initClaim
            ? [{ name: "init-checkpoint", persistentVolumeClaim: { claimName: initClaim, readOnly: true } }]
            : []),
          ...(code ? [{ name: "code", persistentVolumeClaim: { claimName: code, readOnly: true } }] : []),
          ...(readOnlyRoot ? [{ name: "tmp", emptyDir: {} }] : []),
        ],
        volumeMounts: [
          { name: "checkpoint", mountPath: CHECKPOINT_MOUNT },
          ...(initClaim
            ? [{ name: "init-checkpoint", mountPath: INIT_CHECKPOINT_MOUNT, readOnly: true }]
            : []),
          ...(code ? [{ name: "code", mountPath: CODE_MOUNT, readOnly: true }] : []),
          ...(readOnlyRoot ? [{ name: "tmp", mountPath: "/tmp" }] : []),
        ],
        readOnlyRootFilesystem: readOnlyRoot,
        ...(spec.workers.length > 1
          ? { ports: [{ name: "rendezvous", containerPort: WORKER_BASE_PORT }] }
          : {}),
      }),
    };
    if (!spec.seedCheckpoint) return pod;
    // Failed over into this cluster (a member's copy, or a job back on its control plane's own
    // cluster): the worker waits until the control plane has written the checkpoint it holds into
    // LOOM_CHECKPOINT_DIR (checkpoints.ts).
    const worker = pod.spec.containers[0]!;
    return {
      ...pod,
      spec: { ...pod.spec, initContainers: [seedContainer(ref.uid, worker, attempt)] },
    };
  }

  async observe(ref: WorkloadRef): Promise<GangObservation | undefined> {
    const pods = await this.cache.workloadPods(ref);
    if (pods.length === 0) return undefined;
    const attempt = Math.max(...pods.map((p) => Number(p.metadata.labels?.[L.attempt] ?? 0)));
    // A revision's pods (a workspace's, an app's: a Deployment's) have no attempt: attempt 0.
    const mine = pods.filter((p) => Number(p.metadata.labels?.[L.attempt] ?? 0) === attempt);
    const workers: WorkerObservation[] = mine.map((p) => workerOf(p)).sort((a, b) => a.index - b.index);
    return { attempt, workers, stopping: mine.some((p) => !!p.metadata.deletionTimestamp && !isTerminal(p)) };
  }

  async stop(ref: WorkloadRef, graceSeconds: number): Promise<boolean> {
    const live = (await this.cache.workloadPods(ref)).filter((p) => !isTerminal(p));
    for (const p of live) if (!p.metadata.deletionTimestamp) await this.deletePod(p, graceSeconds);
    return live.length === 0;
  }

  async release(ref: WorkloadRef): Promise<void> {
    for (const p of await this.cache.workloadPods(ref)) await this.deletePod(p, 0);
    // The credentials go with the workload (its owner reference also lets the garbage collector
    // remove them if Loom is not there to).
    const ns = namespaceOf(ref.project);
    for (const path of [`services/${ref.name}`, `secrets/${credentialSecretName(ref.name)}`])
      await this.client.request("DELETE", `/api/v1/namespaces/${ns}/${path}`).catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
  }

  async list(): Promise<WorkloadRef[]> {
    const pods = await this.cache.loomPods();
    const refs = new Map<string, WorkloadRef>();
    for (const p of pods) {
      const ref = refFromLabels(p.metadata.labels);
      if (ref) refs.set(ref.uid, ref);
    }
    return [...refs.values()];
  }

  async logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable> {
    const pods = await this.cache.workloadPods(ref);
    const attempt =
      opts.attempt ?? Math.max(0, ...pods.map((p) => Number(p.metadata.labels?.[L.attempt] ?? 0)));
    const name = podName(ref.name, attempt, opts.worker);
    return this.client.stream(`/api/v1/namespaces/${namespaceOf(ref.project)}/pods/${name}/log`, {
      container: "worker",
      follow: opts.follow ? "true" : undefined,
    });
  }

  private async ensureService(ref: WorkloadRef): Promise<void> {
    await applyObject(this.client, {
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: ref.name,
        namespace: namespaceOf(ref.project),
        labels: workloadLabels(ref),
        ownerReferences: [ownerRef(ref)],
      },
      spec: { clusterIP: "None", publishNotReadyAddresses: true, selector: { [L.uid]: ref.uid } },
    });
  }

  /**
   * The job's clone of its workspace's home (homeclone.ts), made by Loom's API at create. A job
   * written to the API server directly has none and must not run without the code it names.
   */
  private async codeClaim(ref: WorkloadRef): Promise<string> {
    const name = codeClaimName(ref.uid);
    const pvc = await this.client
      .request<{ status?: { phase?: string } }>(
        "GET",
        `/api/v1/namespaces/${namespaceOf(ref.project)}/persistentvolumeclaims/${name}`,
      )
      .catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
        return undefined;
      });
    if (!pvc)
      throw new Error(
        `spec.fromWorkspace: the job's clone of the workspace's home (claim ${name}) does not exist: Loom's API makes it when the job is created, and this job was written to the API server directly; create it through Loom (loom run --from ws/NAME, or loom apply)`,
      );
    if (pvc.status?.phase === "Lost")
      throw new Error(
        `spec.fromWorkspace: the job's clone of the workspace's home (claim ${name}) lost its volume; create the job again (loom run --from ws/NAME)`,
      );
    return name;
  }

  /** The claim checkpoints live on: the user's, or one Loom makes per job (deleted with it). */
  private async ensureCheckpointClaim(ref: WorkloadRef, c: CheckpointStorage): Promise<string> {
    if (c.claimName) return c.claimName;
    const name = `${ref.name}-checkpoint`.slice(0, 63);
    await applyObject(this.client, {
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
    });
    return name;
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
      this.cache.wrote({
        ...answer,
        metadata: {
          ...answer.metadata,
          deletionTimestamp: answer.metadata.deletionTimestamp ?? new Date().toISOString(),
        },
      });
  }
}

/** Waits for every promise; throws the first error once all have settled (none left running). */
async function allOrFirstError(work: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/**
 * The credential files a gang's workers were handed (files from the tracking port; env, see
 * splitCredentials, from an older caller), as one
 * Secret for the workload; undefined when they hold none.
 */
function gangCredentials(spec: GangSpec): { secretName: string; files: CredentialFiles } | undefined {
  const files: CredentialFiles = {};
  for (const w of spec.workers)
    Object.assign(files, splitCredentials(w.env).files, secretFileCredentials(w.files));
  if (Object.keys(files).length === 0) return undefined;
  return { secretName: credentialSecretName(spec.ref.name), files };
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

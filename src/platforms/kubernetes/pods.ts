import { gpuShareEnv } from "../../api/env.js";
import type { WorkerSpec } from "../../ports/runtime.js";
import type { Allocation, Toleration } from "../../ports/scheduler.js";
import type { KubeClient } from "./client.js";
import { type CredentialFiles, credentialMounts } from "./credentials.js";
import { LABELS as L } from "./naming.js";

export const GPU_RESOURCE = "nvidia.com/gpu";

/** Pods with this schedulerName are placed by Loom (kube-scheduler leaves them alone). */
export const SCHEDULER_NAME = "loom";

/** The fields of a pod that the runtime reads. */
export interface Pod {
  kind?: string;
  metadata: {
    name: string;
    namespace: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
  };
  spec?: {
    nodeName?: string;
    schedulerName?: string;
    priority?: number;
    containers?: { resources?: { requests?: Record<string, string> } }[];
    initContainers?: { resources?: { requests?: Record<string, string> } }[];
    /** Kubernetes' shape; the API server has validated operator and effect. */
    tolerations?: Toleration[];
  };
  status?: {
    phase?: string;
    startTime?: string;
    message?: string;
    reason?: string;
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
    containerStatuses?: {
      name: string;
      state?: { terminated?: { exitCode: number; signal?: number; reason?: string; finishedAt?: string } };
    }[];
  };
}

/**
 * What a gang worker's pod shows its job's loop (gangs.ts observe: attempt, worker, phase, start,
 * exit, deletion), as one string; undefined for any other pod. An event that leaves it unchanged
 * (the echo of Loom's own create or delete, a kubelet's patch of conditions or addresses) has
 * nothing for that loop: in bench:k8s every pod event was a TrainingJob reconcile.
 */
export function workerView(p: Pod): string | undefined {
  const labels = p.metadata.labels;
  if (labels?.[L.component] !== "worker") return undefined;
  const terminated = p.status?.containerStatuses?.find((c) => c.name === "worker")?.state?.terminated;
  return JSON.stringify([
    labels[L.attempt],
    labels[L.worker],
    p.status?.phase,
    p.status?.startTime,
    p.status?.message,
    p.status?.reason,
    terminated ? [terminated.exitCode, terminated.signal, terminated.reason, terminated.finishedAt] : null,
    !!p.metadata.deletionTimestamp,
  ]);
}

/** Whether the pod has ended (it holds nothing any more). */
export function isTerminal(p: Pod): boolean {
  return p.status?.phase === "Succeeded" || p.status?.phase === "Failed";
}

/** Binds a pod to a node through the binding subresource, as a scheduler does. */
export async function bindPod(client: KubeClient, ns: string, name: string, node: string): Promise<void> {
  await client.request("POST", `/api/v1/namespaces/${ns}/pods/${name}/binding`, {
    body: {
      apiVersion: "v1",
      kind: "Binding",
      metadata: { name, namespace: ns },
      target: { apiVersion: "v1", kind: "Node", name: node },
    },
  });
}

/** A container's requests and limits. */
export type Resources = Record<string, Record<string, string>>;

/** Whether the worker shares its one device (a fraction of a GPU). */
export function isFractionalGpu(a: Allocation): boolean {
  return a.gpuShare !== undefined && a.gpuShare < 1;
}

/**
 * Requests and limits for an allocation. A fractional GPU cannot be requested from the device
 * plugin (whole devices only): such a pod asks for none, and Loom's scheduler accounts the share.
 */
export function containerResources(a: Allocation, fractionalGpu: boolean): Resources {
  const resources: Resources = { requests: {}, limits: {} };
  if (a.cpuMillis) resources.requests!.cpu = `${a.cpuMillis}m`;
  if (a.memoryBytes) {
    resources.requests!.memory = String(a.memoryBytes);
    resources.limits!.memory = String(a.memoryBytes);
  }
  if (a.gpus.length && !fractionalGpu) {
    resources.requests![GPU_RESOURCE] = String(a.gpus.length);
    resources.limits![GPU_RESOURCE] = String(a.gpus.length);
  }
  return resources;
}

/** A fractional GPU's env: the device Loom's scheduler chose, and the share of it. */
export function fractionalGpuEnv(a: Allocation): Record<string, string> {
  return {
    NVIDIA_VISIBLE_DEVICES: a.gpus.map((g) => g.split("/gpu-").pop()).join(","),
    ...gpuShareEnv(a.gpuShare),
  };
}

/** What makes one of Loom's pods: a gang's worker, or a revision's model server. */
export interface PodTemplateSpec {
  worker: Omit<WorkerSpec, "index">;
  /** Image for workers that name none. */
  defaultImage: string | undefined;
  containerName: string;
  labels: Record<string, string>;
  /** Added to the worker's own env, overriding it. */
  env: Record<string, string>;
  resources: Resources;
  /** A bare pod's identity; a Deployment's template has none (the ReplicaSet names its pods). */
  pod?: {
    name: string;
    namespace: string;
    ownerReferences: unknown[];
    restartPolicy: string;
    hostname: string;
    subdomain?: string;
  };
  volumes?: unknown[];
  volumeMounts?: unknown[];
  ports?: { name: string; containerPort: number }[];
  probes?: { readinessProbe: unknown; startupProbe: unknown };
  /** The workload's credentials Secret and the files it holds: mounted, never in env. */
  credentials?: { secretName: string; files: CredentialFiles };
  /** The container's root filesystem is read-only (its writable places are volumes). */
  readOnlyRootFilesystem?: boolean;
  /** Tolerations beyond the worker's own: its node's loom.dev/ taints, when it named the pool. */
  tolerations?: Toleration[];
}

/**
 * The one pod template: metadata and spec of every pod Loom makes. Each passes Pod Security
 * "restricted" (non-root, no privilege escalation, no capabilities, the runtime's seccomp
 * profile), names Loom as its scheduler, and gets neither service links nor an API token. Its
 * credentials are files from its workload's Secret (credentials.ts): a pod's env is readable by
 * every project viewer, so no credential is ever in it.
 */
export function podTemplate(t: PodTemplateSpec) {
  const w = t.worker;
  const creds = t.credentials
    ? credentialMounts(t.credentials.secretName, t.credentials.files, w.env)
    : undefined;
  const volumes = [...(t.volumes ?? []), ...(creds?.volumes ?? [])];
  const volumeMounts = [...(t.volumeMounts ?? []), ...(creds?.volumeMounts ?? [])];
  const tolerations = [...(w.tolerations ?? []), ...(t.tolerations ?? [])];
  return {
    metadata: {
      ...(t.pod ? { name: t.pod.name, namespace: t.pod.namespace } : {}),
      labels: t.labels,
      ...(w.annotations ? { annotations: w.annotations } : {}),
      ...(t.pod ? { ownerReferences: t.pod.ownerReferences } : {}),
    },
    spec: {
      ...(t.pod ? { restartPolicy: t.pod.restartPolicy } : {}),
      schedulerName: SCHEDULER_NAME,
      ...(t.pod ? { hostname: t.pod.hostname } : {}),
      ...(t.pod?.subdomain ? { subdomain: t.pod.subdomain } : {}),
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      // Loom binds the pod itself, past kube-scheduler's taint checks; the tolerations it
      // carries keep the node's NoExecute taints from evicting it, and say why it may be there.
      ...(tolerations.length ? { tolerations } : {}),
      // Loom's stops delete with the job's grace period; this covers everyone else's.
      terminationGracePeriodSeconds: w.terminationGracePeriodSeconds ?? 30,
      ...(volumes.length ? { volumes } : {}),
      securityContext: {
        runAsNonRoot: true,
        runAsUser: 1000,
        runAsGroup: 1000,
        // The credentials Secret's files are mode 0440: the pod's group must own them.
        ...(creds ? { fsGroup: 1000, fsGroupChangePolicy: "OnRootMismatch" } : {}),
        seccompProfile: { type: "RuntimeDefault" },
      },
      containers: [
        {
          name: t.containerName,
          image: w.image ?? t.defaultImage ?? "python:3.11-slim",
          command: w.command,
          ...(w.workingDir ? { workingDir: w.workingDir } : {}),
          env: Object.entries({ ...w.env, ...t.env, ...creds?.env }).map(([name, value]) => ({
            name,
            value,
          })),
          ...(volumeMounts.length ? { volumeMounts } : {}),
          ...(t.ports ? { ports: t.ports } : {}),
          ...t.probes,
          resources: t.resources,
          securityContext: {
            allowPrivilegeEscalation: false,
            capabilities: { drop: ["ALL"] },
            runAsNonRoot: true,
            ...(t.readOnlyRootFilesystem ? { readOnlyRootFilesystem: true } : {}),
            seccompProfile: { type: "RuntimeDefault" },
          },
        },
      ],
    },
  };
}

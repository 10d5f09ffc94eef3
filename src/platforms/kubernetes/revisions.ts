import { NotFoundError } from "../../api/errors.js";
import type { RevisionRuntime, RevisionSpec } from "../../ports/runtime.js";
import { applyObject } from "./apply.js";
import type { KubeClient } from "./client.js";
import {
  credentialSecret,
  credentialSecretName,
  secretFileCredentials,
  splitCredentials,
} from "./credentials.js";
import { podListeningPorts } from "./exec.js";
import { LABELS as L, namespaceOf, ownerRef, REVISION_LABEL, workloadLabels } from "./naming.js";
import { containerResources, type Pod, type PodTemplateSpec, podTemplate } from "./pods.js";
import { kubernetesReplicaLogs } from "./replicalogs.js";

/** Where Loom's gateway (the operator) runs: the only namespace whose pods reach model pods. */
const GATEWAY_NAMESPACE = "loom-system";

/**
 * Serving: a Deployment and a Service per revision, owned by the InferenceService; replicas
 * are scaled by applying the Deployment with the count the gateway's autoscaler wants; a
 * readiness probe on the model server's path; a NetworkPolicy that lets only Loom's gateways
 * (the operator and the loom-gateway Deployment, in loom-system) reach the model pods.
 */
export function kubernetesRevisions(client: KubeClient, defaultImage: string | undefined): RevisionRuntime {
  return {
    applyRevision: async (spec) => {
      const ns = namespaceOf(spec.service.project);
      const name = spec.revision.slice(0, 63);
      const labels = {
        ...workloadLabels(spec.service),
        [L.component]: "model",
        [REVISION_LABEL]: spec.revision,
      };
      const selector = { [L.uid]: spec.service.uid, [REVISION_LABEL]: spec.revision };
      await applyObject(client, gatewayOnlyPolicy(spec));
      // A credential in the replicas' env becomes a Secret of the revision's, mounted as files.
      const files = {
        ...splitCredentials(spec.worker.env).files,
        ...secretFileCredentials(spec.worker.files),
      };
      const credentials = Object.keys(files).length
        ? { secretName: credentialSecretName(name), files }
        : undefined;
      if (credentials)
        await applyObject(client, credentialSecret(spec.service, credentials.secretName, credentials.files));
      if (spec.home) await applyObject(client, homeClaim(spec));
      await applyObject(client, {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name, namespace: ns, labels, ownerReferences: [ownerRef(spec.service)] },
        spec: {
          replicas: spec.replicas,
          selector: { matchLabels: selector },
          // Surge first: a replaced pod serves until its successor is ready.
          strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
          template: withHome(spec, modelPodTemplate(spec, labels, defaultImage, credentials)),
        },
      });
      await applyObject(client, {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace: ns, labels, ownerReferences: [ownerRef(spec.service)] },
        spec: { selector, ports: [{ name: "http", port: 80, targetPort: spec.port }] },
      });
    },
    observeRevision: async (service, revision) => {
      const pods = await client.request<{ items: Pod[] }>(
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
              // The pod's own uid: Runtime.connectPort reaches exactly this pod (workspaces' /proxy/P/).
              ...(p.metadata.uid ? { uid: p.metadata.uid } : {}),
              ...(st?.podIP ? { host: st.podIP } : {}),
              port: Number(
                (p.spec as { containers: { ports?: { containerPort: number }[] }[] }).containers[0]
                  ?.ports?.[0]?.containerPort ?? 8080,
              ),
              ready: !!st?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
              startedAt: st?.startTime ?? new Date().toISOString(),
              // Where Loom's scheduler bound it: a workspace's status.node.
              ...(p.spec?.nodeName ? { node: p.spec.nodeName } : {}),
            };
          }),
      };
    },
    replicaPorts: (service, replica) => podListeningPorts(client, namespaceOf(service.project), replica),
    replicaLogs: (service, revisions, opts) => kubernetesReplicaLogs(client, service, revisions, opts),
    deleteRevision: async (service, revision) => {
      const ns = namespaceOf(service.project);
      for (const path of [
        `/apis/apps/v1/namespaces/${ns}/deployments/${revision}`,
        `/api/v1/namespaces/${ns}/services/${revision}`,
        `/api/v1/namespaces/${ns}/secrets/${credentialSecretName(revision.slice(0, 63))}`,
      ]) {
        try {
          await client.request("DELETE", path, { body: { propagationPolicy: "Background" } });
        } catch (err) {
          if (!(err instanceof NotFoundError)) throw err;
        }
      }
    },
  };
}

/** Where a persistent home is mounted in the pod (its working directory and HOME). */
export const HOME_MOUNT = "/home/loom";

/** The claim of a revision's persistent home: owned by the service (a Workspace), so it outlives revisions. */
export function homeClaimName(spec: RevisionSpec): string {
  return `${spec.home!.name}-home`.slice(0, 63);
}

/** The persistent home's PersistentVolumeClaim: one writer (a workspace runs one replica). */
function homeClaim(spec: RevisionSpec) {
  const home = spec.home!;
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: {
      name: homeClaimName(spec),
      namespace: namespaceOf(spec.service.project),
      labels: workloadLabels(spec.service),
      ownerReferences: [ownerRef(spec.service)],
    },
    spec: {
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: String(home.size ?? "10Gi") } },
      ...(home.storageClassName ? { storageClassName: home.storageClassName } : {}),
    },
  };
}

/** Mounts the persistent home at HOME_MOUNT as the working directory and HOME, writable by the pod's group. */
function withHome<T extends ReturnType<typeof podTemplate>>(spec: RevisionSpec, template: T): T {
  if (!spec.home) return template;
  const podSpec = template.spec as Record<string, unknown> & {
    volumes?: unknown[];
    securityContext: Record<string, unknown>;
    containers: Record<string, unknown>[];
  };
  podSpec.volumes = [
    ...(podSpec.volumes ?? []),
    { name: "home", persistentVolumeClaim: { claimName: homeClaimName(spec) } },
  ];
  // The claim's files belong to the pod's group, so the non-root user can write its home.
  podSpec.securityContext = {
    ...podSpec.securityContext,
    fsGroup: 1000,
    fsGroupChangePolicy: "OnRootMismatch",
  };
  const c = podSpec.containers[0]!;
  c.volumeMounts = [...((c.volumeMounts as unknown[]) ?? []), { name: "home", mountPath: HOME_MOUNT }];
  c.workingDir ??= HOME_MOUNT;
  const env = (c.env as { name: string }[] | undefined) ?? [];
  if (!env.some((e) => e.name === "HOME")) c.env = [...env, { name: "HOME", value: HOME_MOUNT }];
  return template;
}

/**
 * The policy's name: NAME-gateway-only for an InferenceService's; a Workspace's and an App's say
 * their kind, since the three kinds may share a name in a namespace and each policy selects its
 * own object's pods (one kind's apply must never take over another's policy).
 */
export function gatewayPolicyName(service: { kind: string; name: string }): string {
  const kind = { Workspace: "-ws", App: "-app" }[service.kind] ?? "";
  return `${service.name}${kind}-gateway-only`.slice(0, 63);
}

/** Only Loom's gateways reach a service's (a workspace's, an app's) pods, and only on the server's port. */
function gatewayOnlyPolicy(spec: RevisionSpec) {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: {
      name: gatewayPolicyName(spec.service),
      namespace: namespaceOf(spec.service.project),
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
  };
}

/** A model server's pod: $PORT and $HOST, probed on its readiness path. */
function modelPodTemplate(
  spec: RevisionSpec,
  labels: Record<string, string>,
  defaultImage: string | undefined,
  credentials: PodTemplateSpec["credentials"],
) {
  // With a persistent home, HOME is that claim: credential files go under it, and no second,
  // throw-away home is mounted at the same path (the API server refuses duplicate mounts).
  const env = splitCredentials(spec.worker.env).env;
  return podTemplate({
    worker: { ...spec.worker, env: spec.home ? { ...env, HOME: HOME_MOUNT } : env },
    ...(credentials ? { credentials } : {}),
    defaultImage,
    containerName: "model",
    labels,
    env: { PORT: String(spec.port), HOST: "0.0.0.0" },
    resources: containerResources(spec.worker.allocation, false),
    ports: [{ name: "http", containerPort: spec.port }],
    probes: {
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
    },
  });
}

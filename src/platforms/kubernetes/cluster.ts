import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { type Cluster, fleetAttemptBase } from "../../api/cluster.js";
import { BadRequestError } from "../../api/errors.js";
import { TRAININGJOB } from "../../api/kinds.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { CheckpointFiles, MemberCluster, MemberConnector } from "../../ports/fleet.js";
import type { LogOptions, WorkloadRef } from "../../ports/runtime.js";
import type { NodeCapacity } from "../../ports/scheduler.js";
import { readCheckpoint, seedCheckpoint } from "./checkpoints.js";
import { KubeClient } from "./client.js";
import { KubeEventRecorder } from "./events.js";
import { KubeFleetLeases } from "./fleetleases.js";
import { readUsedByOthers, withUse } from "./memberuse.js";
import { namespaceOf, podName } from "./naming.js";
import { type KubeNode, markedForRemoval, nodeCapacities } from "./nodes.js";
import { DEFAULT_SYSTEM_NAMESPACE } from "./secrets.js";
import { KubeResourceStore } from "./store.js";

/** A member is probed often: a request that has not answered in this long means unreachable. */
const MEMBER_REQUEST_TIMEOUT_MS = 5000;

/**
 * A Kubernetes cluster with Loom's CRDs and operator as a fleet member (issue 23): its Loom
 * store (the CRDs), its nodes as capacity, its version, its events and its workers' logs, all
 * through the kubeconfig the control plane holds as a secret.
 */
export class KubeMember implements MemberCluster {
  readonly store: KubeResourceStore;
  readonly events: KubeEventRecorder;
  private readonly leases: KubeFleetLeases;

  constructor(
    private readonly client: KubeClient,
    log: Logger,
  ) {
    this.store = new KubeResourceStore(client, log);
    this.events = new KubeEventRecorder(client);
    this.leases = new KubeFleetLeases(client, DEFAULT_SYSTEM_NAMESPACE);
  }

  /** Why the member's own work on its nodes could not be counted at the last nodes() (undefined: it was). */
  usageError?: string;

  async nodes(holder: string): Promise<NodeCapacity[]> {
    const [list, { use, error }] = await Promise.all([
      this.client.request<{ items: KubeNode[] }>("GET", "/api/v1/nodes"),
      readUsedByOthers(this.client, holder),
    ]);
    this.usageError = error;
    // Nodes the member's autoscaler is removing, and cordoned ones, take no new work.
    const usable = list.items.filter(
      (n) => !markedForRemoval(n) && !(n as { spec?: { unschedulable?: boolean } }).spec?.unschedulable,
    );
    return withUse(nodeCapacities(usable), use);
  }

  async probe(): Promise<{ kubernetes?: string; loom?: string }> {
    const v = await this.client.request<{ gitVersion?: string }>("GET", "/version");
    // Loom's CRDs carry the version that generated them (loom crds).
    let loom: string | undefined;
    try {
      const crd = await this.client.request<{ metadata?: { labels?: Record<string, string> } }>(
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/trainingjobs.loom.dev",
      );
      loom = crd.metadata?.labels?.["app.kubernetes.io/version"] ?? "installed";
    } catch {
      loom = undefined;
    }
    return { ...(v.gitVersion ? { kubernetes: v.gitVersion } : {}), ...(loom ? { loom } : {}) };
  }

  /**
   * A worker's log: the pod of the member's copy's latest (or named) attempt. Attempts are
   * numbered as the control plane shows them (after those the job made before it came here).
   */
  async logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable> {
    const copy = (await this.store.get(TRAININGJOB, ref.project, ref.name)) as TrainingJob;
    const base = fleetAttemptBase(copy);
    if (opts.attempt !== undefined && opts.attempt <= base)
      throw new BadRequestError(
        `attempt ${opts.attempt} of ${ref.name} ran before the job was placed in this member cluster (its attempts here are ${base + 1} on), and its log is not read from here; ask for a later attempt, or read it once the job runs on the control plane's own platform again`,
      );
    const attempt = opts.attempt !== undefined ? opts.attempt - base : (copy.status?.attempts ?? 1);
    const name = podName(ref.name, attempt, opts.worker);
    return this.client.stream(`/api/v1/namespaces/${namespaceOf(ref.project)}/pods/${name}/log`, {
      container: "worker",
      follow: opts.follow ? "true" : undefined,
    });
  }

  /** The copy's latest checkpoint, read from its worker 0 (checkpoints.ts). */
  checkpoint(ref: WorkloadRef): Promise<CheckpointFiles | undefined> {
    return readCheckpoint(this.client, ref);
  }

  /** The control plane's checkpoint, written into the copy's first attempt (checkpoints.ts). */
  seed(ref: WorkloadRef, files: CheckpointFiles): Promise<number> {
    return seedCheckpoint(this.client, ref, files);
  }

  /** This control plane's Lease in the member's Loom namespace (its operator fences by it). */
  renewLease(holder: string, durationSeconds: number): Promise<void> {
    return this.leases.renew(holder, durationSeconds);
  }

  close(): void {
    this.client.destroy();
  }
}

/** Connects Kubernetes members from their kubeconfigs. */
export function kubeMemberConnector(log: Logger): MemberConnector {
  return {
    connect: async (cluster: Cluster, kubeconfig: string) =>
      new KubeMember(
        KubeClient.fromKubeconfigText(kubeconfig, MEMBER_REQUEST_TIMEOUT_MS),
        log.child({ component: "fleet", cluster: cluster.metadata.name }),
      ),
  };
}

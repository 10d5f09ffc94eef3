import type { Readable } from "node:stream";
import type { Cluster } from "../api/cluster.js";
import type { LogOptions, WorkloadRef } from "./runtime.js";
import type { NodeCapacity } from "./scheduler.js";
import type { EventRecorder, ResourceStore } from "./store.js";

/**
 * A member of the fleet as the controllers see it (issue 23): a Loom store to create workloads
 * in and read their status from, and a capacity source. Nothing here says which platform the
 * member is: a Kubernetes cluster with Loom's CRDs and operator, or (in tests) another store.
 */
export interface MemberCluster {
  /** The member's Loom store (the CRDs there): workloads placed in it are created here. */
  readonly store: ResourceStore;
  /** The member's nodes as the scheduler counts them (names unprefixed). */
  nodes(): Promise<NodeCapacity[]>;
  /** Reaches the member; throws when it cannot. Versions where the member says them. */
  probe(): Promise<{ kubernetes?: string; loom?: string }>;
  /** The member's events about one of its objects (mirrored back to the control plane). */
  readonly events?: Pick<EventRecorder, "listFor">;
  /** A worker's log in the member (`loom logs` from the control plane). */
  logs?(ref: WorkloadRef, opts: LogOptions): Promise<Readable>;
  /** Stops its connections and watches. */
  close(): void;
}

/** Makes a member from its Cluster object and the kubeconfig its secret holds. */
export interface MemberConnector {
  connect(cluster: Cluster, kubeconfig: string): Promise<MemberCluster>;
}

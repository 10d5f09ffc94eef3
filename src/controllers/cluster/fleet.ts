import { createHash } from "node:crypto";
import { hostname } from "node:os";
import {
  type Cluster,
  type ClusterStatus,
  capacityText,
  clusterLostTimeoutMs,
  fleetLeaseSeconds,
  freeText,
  type PoolCapacity,
  SELF_CLUSTER,
} from "../../api/cluster.js";
import type { MemberCluster, MemberConnector } from "../../ports/fleet.js";
import { DEFAULT_POOL, type NodeCapacity, type Snapshot } from "../../ports/scheduler.js";
import type { SecretStore } from "../../ports/secrets.js";

/** What the fleet knows of one member between probes. */
interface Entry {
  cluster: Cluster;
  member?: MemberCluster;
  /** Hash of the kubeconfig the member was connected with: a new one reconnects. */
  configHash?: string;
  nodes: NodeCapacity[];
  ready: boolean;
  lastSeen?: string;
  unreachableSince?: string;
  error?: string;
  /** Why this control plane's lease there could not be renewed (its copies there will stop). */
  leaseError?: string;
  /** Why the member's own work on its nodes could not be counted (they look free of it). */
  usageError?: string;
}

export interface FleetDeps {
  connector?: MemberConnector;
  secrets?: SecretStore;
  /** The control plane's own platform's nodes (the `self` member). */
  localNodes(): Promise<NodeCapacity[]>;
  /** The version of Loom this control plane runs (the `self` member's). */
  version: string;
  now: () => Date;
  /** This control plane's name in the leases it renews in members (default: the host's name). */
  holder?: string;
}

/**
 * The members of the fleet (issue 23), as the cluster loop last found them: connections, health
 * and nodes. The admission loop reads capacity from here; the dispatch loop reaches members
 * through it. Platform-free: members come from a MemberConnector.
 */
export class Fleet {
  private readonly entries = new Map<string, Entry>();
  /** The name of this control plane's lease in each member (copies it places carry it). */
  readonly holder: string;

  constructor(private readonly deps: FleetDeps) {
    this.holder = deps.holder ?? hostname();
  }

  /** Whether any member other than this platform is registered: only then is there a fleet. */
  active(): boolean {
    for (const [name, e] of this.entries)
      if (name !== SELF_CLUSTER && e.cluster.spec.platform !== "self") return true;
    return false;
  }

  /** A reachable member by name (not `self`, whose work runs here). */
  member(name: string): MemberCluster | undefined {
    const e = this.entries.get(name);
    return e?.ready ? e.member : undefined;
  }

  /** Whether the member is registered (reachable or not). */
  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Members whose labels match every pair of the selector. */
  matching(selector: Record<string, string>): string[] {
    const out: string[] = [];
    for (const [name, e] of this.entries) {
      const labels = e.cluster.metadata.labels ?? {};
      if (Object.entries(selector).every(([k, v]) => labels[k] === v)) out.push(name);
    }
    return out;
  }

  /**
   * Every node the queue may place on: this platform's (member `self`, names unchanged) and each
   * reachable, schedulable member's, named `MEMBER/NODE`. Outside a fleet, the local nodes as they are.
   */
  nodes(local: NodeCapacity[]): NodeCapacity[] {
    if (!this.active()) return local;
    const selfEntry = this.entries.get(SELF_CLUSTER);
    const out = selfEntry?.cluster.spec.unschedulable
      ? []
      : local.map((n) => ({ ...n, cluster: SELF_CLUSTER }));
    for (const [name, e] of [...this.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (name === SELF_CLUSTER || !e.ready || e.cluster.spec.unschedulable) continue;
      for (const n of e.nodes) out.push({ ...n, name: `${name}/${n.name}`, cluster: name });
    }
    return out;
  }

  /** Forgets a member that was deregistered, closing its connection. */
  remove(name: string): void {
    this.entries.get(name)?.member?.close();
    this.entries.delete(name);
  }

  /** Closes every member's connection. */
  close(): void {
    for (const name of [...this.entries.keys()]) this.remove(name);
  }

  /**
   * Reaches the member (connecting first, or again when its kubeconfig changed), reads its
   * version and nodes, and returns the status that says so.
   */
  async refresh(cluster: Cluster): Promise<ClusterStatus> {
    const name = cluster.metadata.name;
    const e: Entry = this.entries.get(name) ?? { cluster, nodes: [], ready: false };
    e.cluster = cluster;
    this.entries.set(name, e);
    const now = this.deps.now().toISOString();
    let version: ClusterStatus["version"];
    try {
      if (cluster.spec.platform === "self") {
        e.nodes = await this.deps.localNodes();
        version = { loom: this.deps.version };
      } else {
        const member = await this.connect(cluster, e);
        version = await member.probe();
        e.nodes = await member.nodes(this.holder);
        e.usageError = member.usageError;
        await this.renewLease(cluster, member, e);
      }
      e.ready = true;
      e.lastSeen = now;
      e.unreachableSince = undefined;
      e.error = undefined;
    } catch (err) {
      e.ready = false;
      e.unreachableSince ??= now;
      e.error = err instanceof Error ? err.message : String(err);
    }
    return this.statusOf(e, version);
  }

  /**
   * Renews this control plane's lease in the member (it fences the copies placed here when the
   * lease lapses). A failed renewal leaves the member Ready and says so: its copies will stop.
   */
  private async renewLease(cluster: Cluster, member: MemberCluster, e: Entry): Promise<void> {
    if (!member.renewLease) return;
    try {
      await member.renewLease(this.holder, fleetLeaseSeconds(clusterLostTimeoutMs(cluster)));
      e.leaseError = undefined;
    } catch (err) {
      e.leaseError = err instanceof Error ? err.message : String(err);
    }
  }

  /** Since when the member has been unreachable (undefined while it answers). */
  unreachableSince(name: string): string | undefined {
    return this.entries.get(name)?.unreachableSince;
  }

  private async connect(cluster: Cluster, e: Entry): Promise<MemberCluster> {
    const secretName = cluster.spec.kubeconfigSecret?.name;
    if (!secretName) throw new Error("spec.kubeconfigSecret is not set");
    if (!this.deps.secrets || !this.deps.connector)
      throw new Error("this control plane cannot reach other clusters (no secret store or connector)");
    const kubeconfig = await this.deps.secrets.get(secretName);
    if (kubeconfig === undefined)
      throw new Error(
        `no secret "${secretName}": give the kubeconfig with loom apply -f CLUSTER.yaml --kubeconfig-file FILE`,
      );
    const hash = createHash("sha256").update(kubeconfig).digest("hex");
    if (e.member && e.configHash === hash) return e.member;
    e.member?.close();
    e.member = await this.deps.connector.connect(cluster, kubeconfig);
    e.configHash = hash;
    return e.member;
  }

  private statusOf(e: Entry, version: ClusterStatus["version"]): ClusterStatus {
    const pools = poolsOf(e.nodes);
    const prev = e.cluster.status;
    const condition = e.ready
      ? e.leaseError
        ? {
            type: "Ready",
            status: "True",
            reason: "LeaseNotRenewed",
            message: `the member answers, but this control plane's lease there could not be renewed (${e.leaseError}): the member stops the jobs placed there when it lapses. A Kubernetes member: let the kubeconfig's credentials create and update coordination.k8s.io leases in loom-system; a Loom member: run this version of Loom there`,
          }
        : e.usageError
          ? {
              type: "Ready",
              status: "True",
              reason: "OwnWorkNotCounted",
              message: `the member answers, but what its own work holds on its nodes could not be read (${e.usageError}): its nodes count as free of it, so a gang may be placed where its own users hold the GPUs. A Kubernetes member: let the kubeconfig's credentials list pods and trainingjobs.loom.dev in every namespace; a Loom member: use an admin token there`,
            }
          : { type: "Ready", status: "True", reason: "Reachable", message: "the member answers" }
      : { type: "Ready", status: "False", reason: "Unreachable", message: e.error ?? "unreachable" };
    return {
      phase: e.ready ? "Ready" : "Unreachable",
      ...((e.lastSeen ?? prev?.lastSeen) ? { lastSeen: e.lastSeen ?? prev?.lastSeen } : {}),
      ...(e.unreachableSince ? { unreachableSince: e.unreachableSince } : {}),
      ...((version ?? prev?.version) ? { version: version ?? prev?.version } : {}),
      ...(e.ready
        ? { pools, capacityText: capacityText(pools) }
        : { pools: prev?.pools, capacityText: prev?.capacityText }),
      conditions: [condition as NonNullable<ClusterStatus["conditions"]>[number]],
    };
  }
}

/** What free capacity is read from: the admission loop's snapshot (nodes, and what holds them). */
export type HeldView = Pick<Snapshot, "nodes" | "running">;

/**
 * The status with each pool's free capacity in the member, as the one queue sees it: the
 * member's nodes less what every running workload holds there (what this control plane placed,
 * and the member's own work, which the snapshot holds as others').
 */
export function withFree(status: ClusterStatus, member: string, view: HeldView): ClusterStatus {
  if (status.phase !== "Ready" || !status.pools) return status;
  const nodes = new Map<string, { pool: string; cpu: number; memory: number }>();
  const devices = new Map<string, Map<string, number>>();
  for (const n of view.nodes) {
    if ((n.cluster ?? SELF_CLUSTER) !== member) continue;
    nodes.set(n.name, { pool: n.pool ?? DEFAULT_POOL, cpu: n.cpuMillis, memory: n.memoryBytes });
    devices.set(n.name, new Map(n.gpus.map((g) => [g.id, 1])));
  }
  for (const w of view.running)
    for (const p of w.placements) {
      const n = nodes.get(p.node);
      const pod = w.pods[p.pod];
      if (!n || !pod) continue;
      n.cpu -= pod.cpuMillis;
      n.memory -= pod.memoryBytes;
      const free = devices.get(p.node)!;
      for (const g of p.gpus) if (free.has(g.device)) free.set(g.device, free.get(g.device)! - g.share);
    }
  const byPool = new Map<string, NonNullable<PoolCapacity["free"]>>();
  for (const [name, n] of nodes) {
    const f = byPool.get(n.pool) ?? { gpu: 0, cpuMillis: 0, memoryBytes: 0 };
    for (const share of devices.get(name)!.values()) f.gpu += Math.max(0, share);
    f.cpuMillis += Math.max(0, n.cpu);
    f.memoryBytes += Math.max(0, n.memory);
    byPool.set(n.pool, f);
  }
  const pools = status.pools.map((p) => ({
    ...p,
    free: byPool.get(p.name) ?? { gpu: 0, cpuMillis: 0, memoryBytes: 0 },
  }));
  const text = freeText(pools);
  return { ...status, pools, ...(text ? { freeText: text } : {}) };
}

/** Capacity by node pool. */
export function poolsOf(nodes: NodeCapacity[]): PoolCapacity[] {
  const by = new Map<string, PoolCapacity>();
  for (const n of nodes) {
    const pool = n.pool ?? DEFAULT_POOL;
    const p = by.get(pool) ?? { name: pool, nodes: 0, gpu: 0, cpuMillis: 0, memoryBytes: 0 };
    p.nodes += 1;
    p.gpu += n.gpus.length;
    p.cpuMillis += n.cpuMillis;
    p.memoryBytes += n.memoryBytes;
    by.set(pool, p);
  }
  return [...by.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}

import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { type Cluster, clusterLostTimeoutMs, SELF_CLUSTER } from "../../api/cluster.js";
import { NotFoundError } from "../../api/errors.js";
import type { InferenceService, RevisionStatus } from "../../api/inferenceservice.js";
import { CLUSTER } from "../../api/kinds.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import type { MemberCluster, MemberGateway } from "../../ports/fleet.js";
import type { ExternalWork, Runtime } from "../../ports/runtime.js";
import type {
  DeviceShare,
  PodPlacement,
  PodRequest,
  RunningWorkload,
  Workload,
} from "../../ports/scheduler.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import { FLEET_UID_LABEL, getOrUndefined } from "../cluster/dispatch.js";
import { INFERENCESERVICE } from "./names.js";

/** External work ids of fleet replicas start so: the admission's bind/explain/preempt come here. */
export const FLEET_REPLICA_PREFIX = "fleet:";

/** What fleet replicas need of the fleet: members by name and label, and their health. */
export interface FleetMembers {
  /** Whether any member besides this platform is registered (else nodes carry no member). */
  active(): boolean;
  member(name: string): MemberCluster | undefined;
  has(name: string): boolean;
  matching(selector: Record<string, string>): string[];
  unreachableSince(name: string): string | undefined;
}

export interface FleetReplicasDeps {
  fleet: FleetMembers;
  /** The control plane's store: each member's Cluster (its clusterLostTimeout). */
  store: ResourceStore;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
}

/** One replica of a fleet service: placed by the one queue in a member, or waiting for a place. */
interface Slot {
  id: string;
  uid: string;
  project: string;
  service: string;
  revision: string;
  n: number;
  pod: PodRequest;
  clusters: string[];
  createdAt: string;
  /** The revision's spec when the slot was made or last resized (a member's copy runs the newest). */
  spec: Record<string, unknown>;
  cluster?: string;
  node?: string;
  gpus?: DeviceShare[];
  boundAt?: string;
  reason?: string;
}

interface ServiceState {
  slots: Slot[];
  next: number;
  /** Revisions whose replicas were read back from status (after a restart of the control plane). */
  recovered: Set<string>;
  /** Members where a copy may exist (deleted there when no replica is placed there any more). */
  copies: Set<string>;
}

/**
 * InferenceService replicas across the fleet (issue 23). Each replica of a service that names
 * members (`spec.clusters`, `spec.clusterSelector`) is one piece of external work for the one
 * queue: the admission cycle places it in a member (spread by free room), counts it against the
 * project's quota over the whole fleet, says why it waits, and may reclaim it. Replicas placed in
 * `self` run through the platform's serving capability; those placed in a member run there as
 * the member's own copy of the service (created through its Loom store, replicas pinned to the
 * count placed there), reached through that member's gateway with a key of the project made there.
 * A member lost past its clusterLostTimeout has its replicas placed again elsewhere.
 */
export class FleetReplicas {
  private readonly services = new Map<string, ServiceState>();
  private readonly gateways = new Map<string, MemberGateway>();
  private changeListeners: ((key: string) => void)[] = [];
  private capacityListeners: (() => void)[] = [];

  constructor(private readonly deps: FleetReplicasDeps) {}

  /** Whether the service runs across the fleet (it names members). */
  owns(svc: InferenceService): boolean {
    return svc.spec.clusters !== undefined || svc.spec.clusterSelector !== undefined;
  }

  /** Whether fleet replicas of the service (by uid) are held: a service that stopped naming members. */
  holds(uid: string): boolean {
    return this.services.has(uid);
  }

  /** A slot bound or freed: the service's loop looks again. */
  onChange(listener: (serviceKey: string) => void): void {
    this.changeListeners.push(listener);
  }

  /** Slots came or went: the queue looks again. */
  onCapacityChange(listener: () => void): void {
    this.capacityListeners.push(listener);
  }

  /** The credential the control plane's gateway sends to a member's gateway for a project. */
  headers(cluster: string, project: string): Record<string, string> | undefined {
    return this.gateways.get(`${cluster}/${project}`)?.headers;
  }

  /** Every slot as the scheduler counts it: waiting ones, and the ones held in members. */
  external(): ExternalWork {
    const pending: Workload[] = [];
    const running: RunningWorkload[] = [];
    // No other member registered: the nodes are this platform's alone, named without a member.
    const local = !this.deps.fleet.active();
    for (const st of this.services.values())
      for (const s of st.slots) {
        const w: Workload = {
          id: s.id,
          name: `${s.project}/${s.revision}-f${s.n}`,
          project: s.project,
          priority: 0,
          // As embedded replicas: they may borrow beyond the deserved quota, so they can be reclaimed.
          preemptible: true,
          createdAt: s.createdAt,
          pods: [s.pod],
          ...(local && s.clusters.includes(SELF_CLUSTER) ? {} : { clusters: s.clusters }),
          placement: "spread",
        };
        if (!s.cluster) pending.push(w);
        // Those in self are the platform's own replicas, which it reports itself.
        else if (s.cluster !== SELF_CLUSTER)
          running.push({ ...w, placements: [{ pod: 0, node: s.node!, gpus: s.gpus ?? [] }] });
      }
    return { pending, running };
  }

  /** Whether an external work id is a fleet replica's. */
  static isFleetId(id: string): boolean {
    return id.startsWith(FLEET_REPLICA_PREFIX);
  }

  /** The queue placed a replica: in the member its node belongs to (`MEMBER/NODE`; self's are bare). */
  bind(id: string, placements: PodPlacement[]): void {
    const s = this.slot(id);
    const p = placements[0];
    if (!s || !p) return;
    const slash = p.node.indexOf("/");
    s.cluster = slash < 0 ? SELF_CLUSTER : p.node.slice(0, slash);
    s.node = p.node;
    s.gpus = p.gpus;
    s.boundAt = this.deps.now().toISOString();
    s.reason = undefined;
    this.changed(s);
  }

  /** Why a replica waits, as an event on its service (once per new reason). */
  async explain(id: string, message: string): Promise<void> {
    const s = this.slot(id);
    if (!s || s.reason === message) return;
    s.reason = message;
    await this.event(s, "Warning", "ReplicaPending", `replica ${s.revision}-f${s.n} waits: ${message}`);
  }

  /** The queue reclaims a replica: it leaves its member and waits for a place again. */
  async preempt(id: string, message: string): Promise<void> {
    const s = this.slot(id);
    if (!s?.cluster) return;
    await this.event(
      s,
      "Warning",
      "ReplicaPreempted",
      `replica ${s.revision}-f${s.n} in cluster ${s.cluster}: ${message}`,
    );
    this.unbind(s);
  }

  /**
   * One revision of a fleet service: its slots made to number rev.desired, its share in `self`
   * run through `local` (the platform's serving capability, given a revision with that count),
   * its members' copies made to hold what was placed there, and the replicas read back: the
   * platform's, and one per replica placed in a member, at that member's gateway. True while
   * some wanted replica is not ready.
   */
  async converge(
    svc: InferenceService,
    rev: RevisionStatus,
    local: (selfRev: RevisionStatus) => Promise<unknown>,
  ): Promise<boolean> {
    const st = this.stateOf(svc);
    this.recover(st, svc, rev);
    this.resize(st, svc, rev);
    await this.moveLost(st);
    const selfRev: RevisionStatus = {
      ...rev,
      desired: st.slots.filter((s) => s.revision === rev.name && s.cluster === SELF_CLUSTER).length,
      replicas: (rev.replicas ?? []).filter((r) => !r.cluster),
    };
    await local(selfRev);
    rev.applied = selfRev.applied;
    rev.lastExit = selfRev.lastExit;
    const ready = await this.syncMembers(st, svc);
    const remote: NonNullable<RevisionStatus["replicas"]> = [];
    for (const s of st.slots) {
      if (s.revision !== rev.name || !s.cluster || s.cluster === SELF_CLUSTER) continue;
      const gw = this.gateways.get(`${s.cluster}/${s.project}`);
      remote.push({
        id: `${s.cluster}/${s.revision}-f${s.n}`,
        uid: s.id,
        ...(gw ? { host: gw.host, port: gw.port } : {}),
        ready: !!gw && ready.get(s.id) === true,
        startedAt: s.boundAt!,
        ...(s.node ? { node: s.node } : {}),
        ...(s.gpus?.length ? { gpus: s.gpus } : {}),
        cluster: s.cluster,
      });
    }
    rev.replicas = [...(selfRev.replicas ?? []), ...remote];
    rev.ready = rev.replicas.filter((r) => r.ready).length;
    return rev.ready < rev.desired;
  }

  /**
   * The service is deleted (or names no member any more): its copies in members are deleted and
   * its slots dropped. True once done; an unreachable member's copy is deleted when it returns
   * (its slots are gone, so its copy is stale there).
   */
  async release(svc: InferenceService): Promise<boolean> {
    const st = this.services.get(svc.metadata.uid) ?? this.stateOf(svc);
    st.slots = [];
    let done = true;
    for (const name of this.targets(st, svc)) {
      const member = this.deps.fleet.member(name);
      if (!member) continue;
      if (!(await this.removeCopy(member, svc))) done = false;
    }
    if (done) {
      this.services.delete(svc.metadata.uid);
      this.capacityChanged();
    }
    return done;
  }

  private stateOf(svc: InferenceService): ServiceState {
    let st = this.services.get(svc.metadata.uid);
    if (!st) {
      st = { slots: [], next: 0, recovered: new Set(), copies: new Set() };
      this.services.set(svc.metadata.uid, st);
    }
    return st;
  }

  /**
   * After a restart: the replicas status says were placed in members (and the count run here)
   * are slots bound where they were, so nothing moves only because the control plane restarted.
   */
  private recover(st: ServiceState, svc: InferenceService, rev: RevisionStatus): void {
    if (st.recovered.has(rev.name)) return;
    st.recovered.add(rev.name);
    const bound = (cluster: string, node?: string) => {
      const s = this.newSlot(st, svc, rev);
      Object.assign(s, { cluster, boundAt: this.deps.now().toISOString(), ...(node ? { node } : {}) });
      s.node ??= cluster;
      st.slots.push(s);
    };
    for (const r of rev.replicas ?? []) if (r.cluster) bound(r.cluster, r.node);
    for (let i = 0; i < (rev.applied ?? 0); i++) bound(SELF_CLUSTER);
  }

  /** Slots of the revision made to number its desired count: waiting ones go first, then the newest. */
  private resize(st: ServiceState, svc: InferenceService, rev: RevisionStatus): void {
    const clusters = this.eligible(svc);
    const pod = podOf(rev);
    let changed = false;
    const mine = st.slots.filter((s) => s.revision === rev.name);
    for (const s of mine) {
      s.spec = rev.spec;
      if (!s.cluster && !isDeepStrictEqual(s.clusters, clusters)) {
        s.clusters = clusters;
        changed = true;
      }
    }
    for (let k = mine.length; k < rev.desired; k++) {
      st.slots.push(this.newSlot(st, svc, rev, pod, clusters));
      changed = true;
    }
    if (mine.length > rev.desired) {
      const drop = [...mine]
        .sort((a, b) => Number(!!a.cluster) - Number(!!b.cluster) || b.n - a.n)
        .slice(0, mine.length - rev.desired);
      st.slots = st.slots.filter((s) => !drop.includes(s));
      changed = true;
    }
    // A member removed from the spec: what runs there moves (waits for a place in the others).
    for (const s of mine)
      if (s.cluster && !clusters.includes(s.cluster) && st.slots.includes(s)) {
        this.unbind(s, false);
        changed = true;
      }
    if (changed) this.capacityChanged();
  }

  private newSlot(
    st: ServiceState,
    svc: InferenceService,
    rev: RevisionStatus,
    pod = podOf(rev),
    clusters = this.eligible(svc),
  ): Slot {
    const n = st.next++;
    return {
      id: `${FLEET_REPLICA_PREFIX}${svc.metadata.uid}/${rev.name}/${n}`,
      uid: svc.metadata.uid,
      project: svc.metadata.project!,
      service: svc.metadata.name,
      revision: rev.name,
      n,
      pod,
      clusters,
      createdAt: this.deps.now().toISOString(),
      spec: rev.spec,
    };
  }

  /** The members the spec names (by name and by label), as the scheduler's `clusters`. */
  private eligible(svc: InferenceService): string[] {
    const { clusters, clusterSelector } = svc.spec;
    let names = clusters ?? this.deps.fleet.matching(clusterSelector ?? {});
    if (clusters && clusterSelector) {
      const labelled = this.deps.fleet.matching(clusterSelector);
      names = names.filter((n) => labelled.includes(n));
    }
    // A member that cannot take replicas (no gateway the control plane can reach) is no place for one.
    return names.filter(
      (n) => n === SELF_CLUSTER || !this.deps.fleet.member(n) || !!this.deps.fleet.member(n)!.gateway,
    );
  }

  /** Replicas in a member unreachable past its clusterLostTimeout (or deregistered) wait for a place again. */
  private async moveLost(st: ServiceState): Promise<void> {
    const lost = new Map<string, string | undefined>();
    for (const s of st.slots) {
      if (!s.cluster || s.cluster === SELF_CLUSTER) continue;
      if (!lost.has(s.cluster)) lost.set(s.cluster, await this.lostSince(s.cluster));
      const since = lost.get(s.cluster);
      if (since === undefined) continue;
      await this.event(
        s,
        "Warning",
        "ClusterLost",
        `replica ${s.revision}-f${s.n}: cluster ${s.cluster} ${since}; placed again elsewhere`,
      );
      this.unbind(s);
    }
  }

  /** Why the member counts as lost ("unreachable since …", "deregistered"), or undefined. */
  private async lostSince(name: string): Promise<string | undefined> {
    if (!this.deps.fleet.has(name)) return "is no longer a member";
    const since = this.deps.fleet.unreachableSince(name);
    if (!since) return undefined;
    let timeout: number;
    try {
      timeout = clusterLostTimeoutMs((await this.deps.store.get(CLUSTER, "", name)) as Cluster);
    } catch (err) {
      if (err instanceof NotFoundError) return "is no longer a member";
      throw err;
    }
    return this.deps.now().getTime() - Date.parse(since) >= timeout
      ? `unreachable since ${since}`
      : undefined;
  }

  /**
   * Each member's copy made to run what was placed there (created, resized, deleted at zero) and
   * its gateway's credential fetched; which slots' replicas are ready there (a copy's ready
   * replicas are given to its slots in order).
   */
  private async syncMembers(st: ServiceState, svc: InferenceService): Promise<Map<string, boolean>> {
    const ready = new Map<string, boolean>();
    for (const name of this.targets(st, svc)) {
      const member = this.deps.fleet.member(name);
      if (!member) continue;
      const placed = st.slots.filter((s) => s.cluster === name).sort((a, b) => a.n - b.n);
      try {
        if (placed.length === 0) {
          if (await this.removeCopy(member, svc)) st.copies.delete(name);
          continue;
        }
        if (!member.gateway) continue;
        // First: it makes the project there (and the key the gateway forwards with).
        this.gateways.set(`${name}/${svc.metadata.project}`, await member.gateway(svc.metadata.project!));
        st.copies.add(name);
        const copy = await this.ensureCopy(member, svc, name, placed);
        const n = copy?.status?.ready ?? 0;
        placed.forEach((s, i) => {
          ready.set(s.id, i < n);
        });
      } catch (err) {
        this.deps.log.warn({ err, cluster: name, service: svc.metadata.name }, "member sync failed; retried");
      }
    }
    return ready;
  }

  /** Members to look at: those the spec names, where a copy was made, where a replica is placed. */
  private targets(st: ServiceState, svc: InferenceService): Set<string> {
    const out = new Set<string>([...this.eligible(svc), ...st.copies]);
    for (const s of st.slots) if (s.cluster) out.add(s.cluster);
    out.delete(SELF_CLUSTER);
    return out;
  }

  /** The member's copy of the service, running the newest placed revision's spec with the count placed there. */
  private async ensureCopy(
    member: MemberCluster,
    svc: InferenceService,
    cluster: string,
    placed: Slot[],
  ): Promise<InferenceService | undefined> {
    const project = svc.metadata.project!;
    const newest = placed.reduce((a, b) => (revisionNumber(b.revision) > revisionNumber(a.revision) ? b : a));
    const {
      hash: _h,
      clusters: _c,
      clusterSelector: _s,
      traffic: _t,
      ...rest
    } = newest.spec as Record<string, unknown>;
    const spec = { ...rest, replicas: { min: placed.length, max: placed.length } };
    const copy = await getOrUndefined<InferenceService>(
      member.store,
      INFERENCESERVICE,
      project,
      svc.metadata.name,
    );
    if (copy && copy.metadata.labels?.[FLEET_UID_LABEL] !== svc.metadata.uid) {
      const message = `cluster ${cluster} already has an InferenceService ${project}/${svc.metadata.name} that is not this one's copy; delete it there or rename this service`;
      await this.event(placed[0]!, "Warning", "MemberNameTaken", message);
      return undefined;
    }
    if (!copy) {
      await this.event(
        placed[0]!,
        "Normal",
        "Dispatched",
        `${placed.length} replica(s) in cluster ${cluster} (its Loom runs them; reached through its gateway)`,
      );
      return (await member.store.create({
        apiVersion: svc.apiVersion,
        kind: INFERENCESERVICE,
        metadata: {
          name: svc.metadata.name,
          project,
          labels: { ...svc.metadata.labels, [FLEET_UID_LABEL]: svc.metadata.uid },
        },
        spec,
      } as never)) as InferenceService;
    }
    const wanted = { ...copy.spec, ...spec };
    if (isDeepStrictEqual(wanted, copy.spec)) return copy;
    return (await member.store.update({ ...copy, spec: wanted } as never)) as InferenceService;
  }

  /** Deletes the member's copy; true once it is gone. */
  private async removeCopy(member: MemberCluster, svc: InferenceService): Promise<boolean> {
    const project = svc.metadata.project!;
    const copy = await getOrUndefined<InferenceService>(
      member.store,
      INFERENCESERVICE,
      project,
      svc.metadata.name,
    );
    if (!copy || copy.metadata.labels?.[FLEET_UID_LABEL] !== svc.metadata.uid) return true;
    if (!copy.metadata.deletionTimestamp)
      await member.store.delete(INFERENCESERVICE, project, svc.metadata.name).catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
    return !(await getOrUndefined(member.store, INFERENCESERVICE, project, svc.metadata.name));
  }

  private slot(id: string): Slot | undefined {
    for (const st of this.services.values()) {
      const s = st.slots.find((x) => x.id === id);
      if (s) return s;
    }
    return undefined;
  }

  private unbind(s: Slot, notify = true): void {
    s.cluster = undefined;
    s.node = undefined;
    s.gpus = undefined;
    s.boundAt = undefined;
    if (notify) this.changed(s);
    this.capacityChanged();
  }

  private changed(s: Slot): void {
    for (const l of this.changeListeners) l(`${s.project}/${s.service}`);
  }

  private capacityChanged(): void {
    for (const l of this.capacityListeners) l();
  }

  private async event(s: Slot, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    await this.deps.events.record(
      { kind: INFERENCESERVICE, project: s.project, name: s.service, uid: s.uid },
      type,
      reason,
      message,
    );
  }
}

/** What each replica of the revision asks the scheduler for. */
function podOf(rev: RevisionStatus): PodRequest {
  const r =
    (rev.spec as { resources?: { cpu?: string | number; memory?: string | number; gpu?: number } })
      .resources ?? {};
  return {
    cpuMillis: r.cpu === undefined ? 0 : (parseCpuMillis(r.cpu) ?? 0),
    memoryBytes: r.memory === undefined ? 0 : (parseMemoryBytes(r.memory) ?? 0),
    gpu: r.gpu ?? 0,
  };
}

function revisionNumber(name: string): number {
  return Number(/(\d+)$/.exec(name)?.[1] ?? 0);
}

/**
 * The runtime as the admission loop sees it with fleet replicas: their slots join the
 * platform's external work, and the cycle's bind, explain and preempt for them come here.
 */
export function withFleetReplicas(runtime: Runtime, fleet: FleetReplicas): Runtime {
  const own: Partial<Runtime> = {
    external: () => {
      const mine = fleet.external();
      const theirs = runtime.external?.();
      return theirs
        ? { pending: [...theirs.pending, ...mine.pending], running: [...theirs.running, ...mine.running] }
        : mine;
    },
    bindExternal: async (id, placements) =>
      FleetReplicas.isFleetId(id) ? fleet.bind(id, placements) : runtime.bindExternal?.(id, placements),
    explainExternal: async (id, reason, message) =>
      FleetReplicas.isFleetId(id)
        ? fleet.explain(id, message)
        : runtime.explainExternal?.(id, reason, message),
    preemptExternal: async (id, message) =>
      FleetReplicas.isFleetId(id) ? fleet.preempt(id, message) : runtime.preemptExternal?.(id, message),
  };
  return new Proxy(runtime, {
    get(target, prop, _receiver) {
      if (Object.hasOwn(own, prop)) return own[prop as keyof Runtime];
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

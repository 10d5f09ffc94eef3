import type { Logger } from "pino";
import {
  type Cluster,
  type ClusterStatus,
  clusterLostTimeoutMs,
  DEFAULT_CLUSTER_LOST_TIMEOUT,
  fleetLeaseSeconds,
  SELF_CLUSTER,
} from "../../api/cluster.js";
import { AlreadyExistsError, NotFoundError } from "../../api/errors.js";
import { CLUSTER, TRAININGJOB } from "../../api/kinds.js";
import { API_VERSION, setCondition } from "../../api/meta.js";
import { isFinished, type TrainingJob } from "../../api/trainingjob.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import { Controller, type ReconcileResult, type Reconciler } from "../../reconcile/controller.js";
import { Informer, storeSource } from "../../reconcile/informer.js";
import type { createControllerMetrics } from "../../reconcile/metrics.js";
import { FLEET_UID_LABEL, getOrUndefined } from "./dispatch.js";
import { type Fleet, type HeldView, withFree } from "./fleet.js";

/** How often each member is probed (health, version, nodes). */
export const DEFAULT_PROBE_MS = 5000;
/** lastSeen alone is written at most this often: a probe is not a write each time. */
const LAST_SEEN_EVERY_MS = 30_000;

export interface ClusterDeps {
  store: ResourceStore;
  events: EventRecorder;
  fleet: Fleet;
  log: Logger;
  now: () => Date;
  probeMs?: number;
  /** A member's health or capacity changed: the queue looks again. */
  onCapacityChange(): void;
  /** What the one queue sees (the admission loop's snapshot): each pool's free capacity comes from it. */
  snapshot?: () => Promise<HeldView>;
}

/**
 * One key per Cluster: reach the member, read its version and nodes, write what was found
 * (Ready/Unreachable, lastSeen, capacity per pool), and look again after probeMs. Registering
 * the first other member makes the `self` member exist too: the control plane's own platform is
 * always one.
 */
export class ClusterReconciler implements Reconciler {
  readonly name = "cluster";

  constructor(private readonly deps: ClusterDeps) {}

  async reconcile(name: string): Promise<ReconcileResult> {
    const cluster = await getOrUndefined<Cluster>(this.deps.store, CLUSTER, "", name);
    if (!cluster || cluster.metadata.deletionTimestamp) {
      this.forget(name);
      return {};
    }
    if (cluster.spec.platform !== "self") await this.ensureSelf();
    const wasReady = this.deps.fleet.member(name) !== undefined || cluster.status?.phase === "Ready";
    const before = JSON.stringify(this.deps.fleet.nodes([]));
    const status = await this.free(name, await this.deps.fleet.refresh(cluster));
    if (JSON.stringify(this.deps.fleet.nodes([])) !== before) this.deps.onCapacityChange();
    if (status.phase === "Ready" && !wasReady) await this.stopStale(name);
    if (status.phase === "Unreachable" && status.unreachableSince) {
      const lostFor = this.deps.now().getTime() - Date.parse(status.unreachableSince);
      if (lostFor >= clusterLostTimeoutMs(cluster)) await this.failover(cluster, status.unreachableSince);
    }
    if (this.changed(cluster.status, status)) {
      await this.deps.store.updateStatus({ ...cluster, status });
      if (status.phase === "Ready" && !wasReady)
        await this.event(cluster, "Normal", "Ready", `cluster ${name} answers: ${status.capacityText ?? ""}`);
      if (status.phase === "Unreachable" && cluster.status?.phase !== "Unreachable")
        await this.event(cluster, "Warning", "Unreachable", status.conditions?.[0]?.message ?? "unreachable");
    }
    return { requeueAfterMs: probeEveryMs(cluster, this.deps.probeMs) };
  }

  /**
   * The member has been unreachable past its clusterLostTimeout: its unfinished jobs go back to
   * the one queue (admitted elsewhere in the next cycle); their copies there are stopped when it
   * returns (stopStale).
   */
  private async failover(cluster: Cluster, since: string): Promise<void> {
    const name = cluster.metadata.name;
    const jobs = (await this.deps.store.list(TRAININGJOB)).items as TrainingJob[];
    const lost = jobs.filter(
      (j) => j.status?.admission?.cluster === name && !isFinished(j) && !j.metadata.deletionTimestamp,
    );
    const message = `cluster ${name} unreachable since ${since} (clusterLostTimeout ${cluster.spec.clusterLostTimeout ?? DEFAULT_CLUSTER_LOST_TIMEOUT}): back in the queue`;
    for (const job of lost) {
      const { admission: _a, preemption: _p, ...rest } = job.status!;
      await this.deps.store.updateStatus({
        ...job,
        status: {
          ...rest,
          phase: "Pending",
          conditions: setCondition(
            job.status?.conditions,
            { type: "Admitted", status: "False", reason: "ClusterLost", message },
            this.deps.now(),
          ),
        },
      });
      await this.deps.events.record(
        {
          kind: TRAININGJOB,
          project: job.metadata.project ?? "",
          name: job.metadata.name,
          uid: job.metadata.uid,
        },
        "Warning",
        "ClusterLost",
        message,
      );
    }
    if (lost.length > 0) this.deps.onCapacityChange();
  }

  /**
   * The member answers again: copies of jobs that moved away while it was lost (or were deleted
   * here meanwhile) are deleted there, so no job runs twice.
   */
  private async stopStale(name: string): Promise<void> {
    const member = this.deps.fleet.member(name);
    if (!member) return;
    const copies = (await member.store.list(TRAININGJOB)).items as TrainingJob[];
    for (const copy of copies) {
      const uid = copy.metadata.labels?.[FLEET_UID_LABEL];
      if (!uid || copy.metadata.deletionTimestamp) continue;
      const project = copy.metadata.project ?? "";
      const ours = await getOrUndefined<TrainingJob>(
        this.deps.store,
        TRAININGJOB,
        project,
        copy.metadata.name,
      );
      if (ours?.metadata.uid === uid && ours.status?.admission?.cluster === name) continue;
      await member.store.delete(TRAININGJOB, project, copy.metadata.name).catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
      this.deps.log.info({ cluster: name, job: `${project}/${copy.metadata.name}` }, "stale copy stopped");
    }
  }

  /** Each pool's free capacity, as the one queue sees it now (left out when that cannot be read). */
  private async free(name: string, status: ClusterStatus): Promise<ClusterStatus> {
    if (!this.deps.snapshot || status.phase !== "Ready") return status;
    try {
      return withFree(status, name, await this.deps.snapshot());
    } catch (err) {
      this.deps.log.debug({ err, cluster: name }, "free capacity not read");
      return status;
    }
  }

  private forget(name: string): void {
    if (!this.deps.fleet.has(name)) return;
    this.deps.fleet.remove(name);
    this.deps.onCapacityChange();
  }

  private changed(prev: ClusterStatus | undefined, next: ClusterStatus): boolean {
    const { lastSeen: a, ...p } = prev ?? {};
    const { lastSeen: b, ...n } = next;
    if (JSON.stringify(strip(p)) !== JSON.stringify(strip(n))) return true;
    if (!a || !b) return a !== b;
    return Date.parse(b) - Date.parse(a) >= LAST_SEEN_EVERY_MS;
  }

  private async ensureSelf(): Promise<void> {
    if (await getOrUndefined(this.deps.store, CLUSTER, "", SELF_CLUSTER)) return;
    try {
      await this.deps.store.create({
        apiVersion: API_VERSION,
        kind: CLUSTER,
        metadata: { name: SELF_CLUSTER },
        spec: { platform: "self" },
      } as never);
    } catch (e) {
      if (!(e instanceof AlreadyExistsError)) throw e;
    }
  }

  private event(c: Cluster, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    return this.deps.events.record(
      { kind: CLUSTER, project: "", name: c.metadata.name, uid: c.metadata.uid },
      type,
      reason,
      message,
    );
  }
}

/**
 * How often a member is probed (and this control plane's lease there renewed): every probeMs,
 * and at least three times per lease, so one slow renewal never lets a lease lapse.
 */
export function probeEveryMs(cluster: Cluster, probeMs = DEFAULT_PROBE_MS): number {
  if (cluster.spec.platform === "self") return probeMs;
  const lease = fleetLeaseSeconds(clusterLostTimeoutMs(cluster)) * 1000;
  return Math.min(probeMs, Math.max(500, Math.floor(lease / 3)));
}

/** Conditions carry their transition time: compared without it. */
function strip(s: Omit<ClusterStatus, "lastSeen">): unknown {
  return { ...s, conditions: s.conditions?.map(({ lastTransitionTime: _t, ...c }) => c) };
}

/** The cluster loop and its informer, wired as the manager wires every kind's. */
export function clusterLoop(
  deps: ClusterDeps,
  log: Logger,
  metrics: ReturnType<typeof createControllerMetrics>,
  resyncMs: number | undefined,
): { controller: Controller; informer: Informer } {
  const controller = new Controller(new ClusterReconciler(deps), log, metrics, 2);
  const informer = new Informer(
    storeSource(deps.store, CLUSTER),
    {
      onChange: (key, _obj, type) =>
        type === "RESYNC" ? controller.enqueueBackground(key) : controller.enqueue(key),
    },
    log,
    metrics,
    { resyncMs },
  );
  return { controller, informer };
}

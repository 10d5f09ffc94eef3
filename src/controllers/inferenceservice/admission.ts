import type { PodPlacement, RunningWorkload, Workload } from "../../core/scheduler/model.js";
import { serviceOfReplica } from "./names.js";

/**
 * Embedded, a model replica that asks for resources waits for the same scheduler as training:
 * the InferenceService loop asks for one here, the admission loop sees it as pending work
 * (quota, fair share, GPUs, a reason when it waits) and binds it, and the InferenceService loop
 * then starts it on the devices it was given. Replicas that ask for nothing start at once.
 */
export class ServingAdmission {
  private readonly wanted = new Map<string, { workload: Workload; serviceKey: string }>();
  /** Placed replicas, held as running until their service's status shows them (or 30 s). */
  private readonly granted = new Map<
    string,
    { workload: Workload; placements: PodPlacement[]; takenAt?: number }
  >();
  private readonly reasons = new Map<string, string>();
  /** Running replicas the scheduler asked to stop (reclaim, fair share): id → why. */
  private readonly preempted = new Map<string, string>();
  /** Called when there is new work to place (the admission loop runs a cycle). */
  onWanted: () => void = () => {};
  /** Called when a replica was placed or told why it waits (its service's loop looks again). */
  onDecision: (serviceKey: string) => void = () => {};

  /** Asks for a replica's place; idempotent per id. */
  want(id: string, serviceKey: string, workload: Omit<Workload, "id">): void {
    if (this.wanted.has(id) || this.granted.has(id)) return;
    this.wanted.set(id, { workload: { ...workload, id }, serviceKey });
    this.onWanted();
  }

  /** The placement given to a replica, once (the caller starts it with it). */
  take(id: string): PodPlacement[] | undefined {
    const g = this.granted.get(id);
    if (!g || g.takenAt !== undefined) return undefined;
    g.takenAt = Date.now();
    return g.placements;
  }

  /**
   * What placed replicas hold until the service's status lists them: the scheduler must not
   * hand the same capacity out twice in between.
   */
  held(): RunningWorkload[] {
    const now = Date.now();
    const out: RunningWorkload[] = [];
    for (const [id, g] of this.granted) {
      if (g.takenAt !== undefined && now - g.takenAt > 30_000) this.granted.delete(id);
      else out.push({ ...g.workload, placements: g.placements });
    }
    return out;
  }

  /** Why a replica waits, if the scheduler said. */
  reason(id: string): string | undefined {
    return this.reasons.get(id);
  }

  /** Withdraws a request (the service scaled down or went away before it was placed). */
  forget(id: string): void {
    const had = this.wanted.delete(id) || this.granted.delete(id);
    this.reasons.delete(id);
    if (had) this.onWanted();
  }

  /** Replicas that stopped lately: what they held is free even before every cache says so. */
  private readonly stopped = new Map<string, number>();

  /** Replicas stopped: what they held is free, so the admission loop looks again. */
  released(ids: string[]): void {
    const now = Date.now();
    for (const id of ids) {
      this.granted.delete(id);
      this.stopped.set(id, now);
    }
    for (const [id, at] of this.stopped) if (now - at > 30_000) this.stopped.delete(id);
    this.onWanted();
  }

  /**
   * What model replicas hold, for the scheduler: those the services' status lists (minus ones
   * stopped since), and those placed but not listed yet.
   */
  running(listed: RunningWorkload[]): RunningWorkload[] {
    const live = listed.filter((w) => !this.stopped.has(w.id));
    const ids = new Set(live.map((w) => w.id));
    // Listed now: the status holds it from here on.
    for (const id of ids) if (this.granted.get(id)?.takenAt !== undefined) this.granted.delete(id);
    const all = [...live, ...this.held().filter((w) => !ids.has(w.id))];
    this.replicas = new Set(all.map((w) => w.id));
    return all;
  }

  /** Replicas handed to the scheduler as running in its last cycle. */
  private replicas = new Set<string>();

  /** Whether a running workload of the last cycle is a model replica (a possible victim here). */
  holds(id: string): boolean {
    return this.replicas.has(id);
  }

  /** For the admission loop: replicas waiting for a place. */
  pending(): Workload[] {
    return [...this.wanted.values()].map((w) => w.workload);
  }

  owns(id: string): boolean {
    return this.wanted.has(id);
  }

  bind(id: string, placements: PodPlacement[]): void {
    const w = this.wanted.get(id);
    if (!w) return;
    this.wanted.delete(id);
    this.reasons.delete(id);
    this.granted.set(id, { workload: w.workload, placements });
    this.onDecision(w.serviceKey);
  }

  /** The scheduler wants a running replica's capacity back; its service's loop stops it. */
  preempt(id: string, message: string): void {
    if (this.preempted.has(id)) return;
    this.preempted.set(id, message);
    // "project/SERVICE-N-rK" → "project/SERVICE", the key its service's loop runs under.
    const [project, replica] = id.split("/") as [string, string];
    this.onDecision(`${project}/${serviceOfReplica(replica)}`);
  }

  /** Why a running replica must stop, once (the caller stops it). */
  takePreemption(id: string): string | undefined {
    const why = this.preempted.get(id);
    this.preempted.delete(id);
    return why;
  }

  explain(id: string, message: string): void {
    const w = this.wanted.get(id);
    if (!w || this.reasons.get(id) === message) return;
    this.reasons.set(id, message);
    this.onDecision(w.serviceKey);
  }
}

import type { Usage } from "./fairshare.js";
import { zero } from "./fairshare.js";
import type {
  Decisions,
  PendingDecision,
  ProjectPolicy,
  RunningWorkload,
  Snapshot,
  Vec,
  Workload,
} from "./model.js";
import { ClusterState } from "./nodes.js";
import { gangTotals } from "./resources.js";

/** Why a workload waits, before the cycle gives it a queue position. */
export type Pending = Omit<PendingDecision, "queuePosition">;

/** One project's books during a cycle. */
export interface ProjectState {
  policy: ProjectPolicy;
  usage: Usage;
  /** Usage of non-preemptible workloads: those must fit within deserved quota. */
  nonPreemptible: Usage;
  fair: Vec;
  /** Requests of its workloads that wait for victims to stop: capacity already claimed. */
  claimed: Vec;
  /** What its pending workloads still ask for. */
  wants: Vec;
  /** What its victims (chosen this cycle, or stopping) will give back: floors count without it. */
  releasing: Vec;
  queue: Workload[];
  next: number;
}

/**
 * Everything one scheduling cycle knows and has decided so far, shared by its steps and
 * policies. Made fresh for every schedule() call and dropped with it: nothing outlives a cycle,
 * so the core stays a pure function of its snapshot.
 */
export class CycleState {
  readonly cluster: ClusterState;
  readonly projects = new Map<string, ProjectState>();
  readonly running: RunningWorkload[];
  /** Victims chosen in this cycle (or stopping from an earlier one): not chosen again. */
  readonly victims = new Set<string>();
  readonly decisions: Decisions = { bind: [], resize: [], preempt: [], pending: [] };
  /** Pending workloads that victims are stopping for (from earlier cycles). */
  readonly awaited = new Set<string>();
  /** Victims still stopping, by the workload they make room for. */
  readonly stoppingFor = new Map<string, RunningWorkload[]>();
  readonly capacity: Vec;
  /** The largest device memory in the cluster, to count memory-sized GPU requests as a share. */
  readonly deviceMemory: number;
  /**
   * Gang totals per workload object, computed once per cycle: a cycle over a thousand waiting
   * jobs asks for each one's totals several times (ordering, rules, victims, holders).
   */
  private readonly requests = new Map<Workload, Vec>();

  constructor(readonly snapshot: Snapshot) {
    this.cluster = new ClusterState(snapshot.nodes);
    this.capacity = this.cluster.capacity();
    this.deviceMemory = Math.max(0, ...snapshot.nodes.flatMap((n) => n.gpus.map((g) => g.memoryBytes ?? 0)));
    this.running = snapshot.running;
  }

  /** The project's books, opened (with a default policy if it has none) on first use. */
  project(name: string): ProjectState {
    let ps = this.projects.get(name);
    if (!ps) {
      const policy = this.snapshot.projects.find((p) => p.name === name) ?? {
        name,
        deserved: {},
        overQuotaWeight: 1,
      };
      ps = {
        policy,
        usage: zero(),
        nonPreemptible: zero(),
        fair: zero(),
        releasing: zero(),
        claimed: zero(),
        wants: zero(),
        queue: [],
        next: 0,
      };
      this.projects.set(name, ps);
    }
    return ps;
  }

  /** What a workload asks for, GPU fractions sized by memory counted as a share of the largest device. */
  requestOf(w: Workload): Vec {
    const known = this.requests.get(w);
    if (known) return known;
    // Across cycles, where the caller keeps a memo: valid while the pods and the device memory
    // they were sized by are the same.
    const kept = this.snapshot.memo?.requests.get(w);
    if (kept && kept.pods === w.pods && kept.deviceMemory === this.deviceMemory) {
      this.requests.set(w, kept.vec);
      return kept.vec;
    }
    const g = gangTotals(w.pods, this.deviceMemory);
    const vec = { gpu: g.gpu, cpu: g.cpu, memory: g.memory };
    this.requests.set(w, vec);
    this.snapshot.memo?.requests.set(w, { deviceMemory: this.deviceMemory, pods: w.pods, vec });
    return vec;
  }
}

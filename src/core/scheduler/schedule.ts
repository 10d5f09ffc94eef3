import { formatBytes, formatCpu } from "../../api/quantity.js";
import { fairSharesByPool, projectOrderKey, type Usage, within, zero } from "./fairshare.js";
import {
  type Decisions,
  type PendingDecision,
  type PendingReasonCode,
  type PodPlacement,
  type PodRequest,
  type PreemptionReason,
  type ProjectPolicy,
  RESOURCES,
  type RunningWorkload,
  type SchedNode,
  type Snapshot,
  type Vec,
  type Workload,
} from "./model.js";
import { ClusterState, compareText, type NodeState } from "./nodes.js";

const EPS = 1e-9;
/** Victim candidates examined per preemption search: bounds a cycle with thousands running. */
const MAX_VICTIM_CANDIDATES = 512;
const MAX_HOLDERS = 5;

/**
 * One scheduling cycle, as numbered steps:
 *
 *  1. Account what running workloads hold, per node and device and per project.
 *  2. Compute each project's fair share of every resource (deserved quota first, idle capacity
 *     beyond deserved quotas split by over-quota weight over what each project asks for).
 *  3. Repeatedly take the next workload from the project that is furthest behind: projects
 *     below deserved quota first, then the lowest weighted over-quota dominant share; within a
 *     project by priority, then submission time.
 *  4. Check it against what can never fit, the project's limit, the non-preemptible rule and
 *     the project's fair share.
 *  5. Place the whole gang on free capacity (binpack or spread), or not at all.
 *  6. If it does not fit: look for victims — lower priority in its own project, then reclaim of
 *     deserved quota from projects over theirs, then fair-share reclaim from projects over their
 *     fair share — and choose the fewest that suffice.
 *  7. Otherwise record why it waits: the exact blocker and who holds the capacity.
 *
 * Pure: reads the snapshot, returns decisions, mutates nothing it was given.
 */
export function schedule(snapshot: Snapshot): Decisions {
  return new Cycle(snapshot).run();
}

interface ProjectState {
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

class Cycle {
  private readonly cluster: ClusterState;
  private readonly projects = new Map<string, ProjectState>();
  private readonly running: RunningWorkload[];
  /** Victims chosen in this cycle (or stopping from an earlier one): not chosen again. */
  private readonly victims = new Set<string>();
  private readonly decisions: Decisions = { bind: [], resize: [], preempt: [], pending: [] };
  /** Pending workloads that victims are stopping for (from earlier cycles). */
  private readonly awaited = new Set<string>();
  /** Victims still stopping, by the workload they make room for. */
  private readonly stoppingFor = new Map<string, RunningWorkload[]>();
  /** Why workloads of a given shape could not start in this cycle (see consider). */
  private readonly failedShapes = new Map<string, Omit<PendingDecision, "queuePosition">>();
  private readonly capacity: Vec;
  /** The largest device memory in the cluster, to count memory-sized GPU requests as a share. */
  private readonly deviceMemory: number;

  constructor(private readonly snapshot: Snapshot) {
    this.cluster = new ClusterState(snapshot.nodes);
    this.capacity = this.cluster.capacity();
    this.deviceMemory = Math.max(0, ...snapshot.nodes.flatMap((n) => n.gpus.map((g) => g.memoryBytes ?? 0)));
    this.running = snapshot.running;
  }

  run(): Decisions {
    // 1. What is held.
    for (const p of this.snapshot.projects) this.project(p.name);
    for (const w of this.running) {
      this.cluster.hold(w, w.placements);
      const ps = this.project(w.project);
      const req = this.requestOf(w);
      ps.usage = add(ps.usage, req);
      if (!w.preemptible) ps.nonPreemptible = add(ps.nonPreemptible, req);
      if (w.stopping) {
        this.victims.add(w.id);
        ps.releasing = add(ps.releasing, req);
      }
    }
    // 2. Fair shares over demand = usage + pending requests.
    const awaited = this.awaited;
    for (const r of this.running) {
      if (!r.stopping || !r.preemptedFor) continue;
      awaited.add(r.preemptedFor);
      this.stoppingFor.set(r.preemptedFor, [...(this.stoppingFor.get(r.preemptedFor) ?? []), r]);
    }
    for (const w of this.snapshot.pending) {
      const ps = this.project(w.project);
      ps.queue.push(w);
      if (awaited.has(w.id)) ps.claimed = add(ps.claimed, this.requestOf(w));
    }
    const demand = new Map<string, Vec>();
    for (const [name, ps] of this.projects) {
      for (const w of ps.queue) ps.wants = add(ps.wants, this.requestOf(w));
      demand.set(name, add(ps.usage, ps.wants));
    }
    const fair = fairSharesByPool(
      [...this.projects.values()].map((p) => p.policy),
      this.cluster.capacityByPool(),
      demand,
    );
    for (const [name, ps] of this.projects) {
      ps.fair = fair.get(name) ?? zero();
      ps.queue.sort(byPriorityThenAge);
    }
    // 3.–7. Serve the project furthest behind, one workload at a time.
    let position = 0;
    for (;;) {
      const ps = this.nextProject();
      if (!ps) break;
      const w = ps.queue[ps.next++]!;
      const pending = this.consider(w, ps);
      if (pending)
        this.decisions.pending.push({
          id: w.id,
          reason: pending.reason,
          message: pending.message,
          holders: pending.holders,
          queuePosition: ++position,
        });
    }
    // 8. Elastic workloads grow into capacity nothing else waits for.
    if (this.decisions.pending.length === 0 && this.decisions.preempt.length === 0) this.grow();
    return this.decisions;
  }

  /**
   * Offers running elastic workloads the largest gang that now fits (their current pods plus
   * more on free capacity, within the project's limit). They restart from a checkpoint with it.
   */
  private grow(): void {
    for (const r of this.running) {
      if (!r.elastic || r.stopping || this.victims.has(r.id) || r.pods.length >= r.elastic.max) continue;
      const ps = this.project(r.project);
      const eligible = this.cluster.eligible(r, ps.policy.nodePools);
      for (let k = r.elastic.max; k > r.pods.length; k--) {
        const extra: Workload = {
          ...r,
          id: `${r.id}/grow`,
          pods: Array.from({ length: k - r.pods.length }, () => r.pods[0]!),
        };
        const req = this.requestOf(extra);
        const limit = ps.policy.limit;
        if (limit && !within(add(ps.usage, req), limit, req)) continue;
        if (!this.cluster.place(extra, eligible)) continue;
        ps.usage = add(ps.usage, req);
        this.decisions.resize.push({
          id: r.id,
          pods: k,
          message: `capacity for ${k} workers is free (running with ${r.pods.length}, elastic up to ${r.elastic.max})`,
        });
        break;
      }
    }
  }

  private project(name: string): ProjectState {
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

  private nextProject(): ProjectState | undefined {
    // One project left with work (the common case with a long queue): no keys to compare.
    const last = this.lastProject;
    if (last && last.next < last.queue.length && this.projectsWithWork === 1) return last;
    let best: ProjectState | undefined;
    let withWork = 0;
    let bestKey: [number, number] = [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY];
    for (const ps of this.projects.values()) {
      if (ps.next >= ps.queue.length) continue;
      withWork++;
      const key = projectOrderKey(ps.policy, add(ps.usage, ps.claimed), this.capacity);
      if (key[0] < bestKey[0] || (key[0] === bestKey[0] && key[1] < bestKey[1] - EPS)) {
        best = ps;
        bestKey = key;
      }
    }
    this.projectsWithWork = withWork;
    this.lastProject = best;
    return best;
  }

  /** From the last nextProject scan: projects whose queue was not done, and the one chosen. */
  private projectsWithWork = 0;
  private lastProject: ProjectState | undefined;

  /** Steps 4–7 for one workload: binds it, preempts for it, or says why it waits. */
  private consider(w: Workload, ps: ProjectState): Omit<PendingDecision, "queuePosition"> | undefined {
    if (w.elastic && w.elastic.min < w.pods.length) return this.considerElastic(w, ps, w.elastic.min);
    const waitingFor = this.stoppingFor.get(w.id) ?? [];
    // A workload just like one that could not start earlier in this cycle cannot start either:
    // capacity only shrinks and usage only grows within a cycle, and a failed victim search
    // only has fewer candidates later (the holders named in its message may be a little stale). Reusing the answer keeps a cycle with a thousand waiting
    // look-alikes cheap.
    const shape = waitingFor.length === 0 ? shapeKey(w) : undefined;
    const known = shape ? this.failedShapes.get(shape) : undefined;
    if (known) return known; // the caller takes its reason, message and holders, with w's id
    const decision = this.decide(w, ps, waitingFor);
    // Not OverFairShare: other projects reaching their share later in the cycle lifts it.
    if (decision && shape && !["WaitingForPreemption", "OverFairShare"].includes(decision.reason))
      this.failedShapes.set(shape, decision);
    return decision;
  }

  /**
   * An elastic gang takes the largest size that fits as things are, from all its pods down to
   * min; only the smallest may preempt others (growing later never takes anything from anyone).
   */
  private considerElastic(
    w: Workload,
    ps: ProjectState,
    min: number,
  ): Omit<PendingDecision, "queuePosition"> | undefined {
    const waitingFor = this.stoppingFor.get(w.id) ?? [];
    const full = this.requestOf(w);
    for (let k = w.pods.length; k >= min; k--) {
      const sized: Workload = { ...w, pods: w.pods.slice(0, k) };
      const decision = this.decide(sized, ps, waitingFor, k === min);
      if (!decision) {
        // What it asked beyond what it got no longer waits.
        ps.wants = sub(ps.wants, sub(full, this.requestOf(sized)));
        return undefined;
      }
      if (k === min) return decision;
    }
    return undefined;
  }

  private decide(
    w: Workload,
    ps: ProjectState,
    waitingFor: RunningWorkload[],
    mayPreempt = true,
  ): Omit<PendingDecision, "queuePosition"> | undefined {
    const pending = (reason: PendingReasonCode, message: string, holders: string[] = []) => ({
      id: w.id,
      reason,
      message,
      holders,
    });
    // 4. Rules that need no search.
    const pools = ps.policy.nodePools;
    if (w.nodePool && pools && !pools.includes(w.nodePool))
      return pending(
        "NodePoolNotAllowed",
        `node pool "${w.nodePool}" is not one of project ${w.project}'s pools (${pools.join(", ")})`,
      );
    const eligible = this.cluster.eligible(w, pools);
    if (w.nodePool && !this.cluster.nodes.some((n) => n.pool === w.nodePool))
      return pending(
        "NodePoolNotAllowed",
        `node pool "${w.nodePool}" does not exist: no node carries it (pools: ${[...new Set(this.cluster.nodes.map((n) => n.pool))].join(", ")})`,
      );
    const never = this.neverFits(w, eligible);
    if (never) return pending("ExceedsNodeCapacity", never);
    const req = this.requestOf(w);
    // Its own claim (victims stopping for it) is already in `claimed`: do not count it twice.
    const claimedByOthers = waitingFor.length > 0 ? sub(ps.claimed, req) : ps.claimed;
    const after = add(add(ps.usage, claimedByOthers), req);
    const limit = ps.policy.limit;
    if (limit && !within(after, limit, req)) {
      return pending(
        "OverLimit",
        `project ${w.project} would use ${describe(after, req)}, over its limit of ${describe(fill(limit), req)}`,
      );
    }
    // Quota rules look at the contested resource: GPUs for GPU work, else CPU and memory.
    const key = contested(req);
    const deserved = deservedOf(ps.policy);
    if (!w.preemptible && !within(add(ps.nonPreemptible, req), deserved, key)) {
      return pending(
        "NonPreemptibleOverQuota",
        `non-preemptible work must fit within project ${w.project}'s deserved quota (${describe(fill(deserved), key)}); ` +
          `non-preemptible work already uses ${describe(ps.nonPreemptible, key)}: make it preemptible or raise the quota`,
      );
    }
    const withinDeserved = within(after, deserved, key);
    if (!withinDeserved && !within(after, ps.fair, key) && this.othersWaitBelowFairShare(ps, key)) {
      return pending(
        "OverFairShare",
        `project ${w.project} is over its deserved quota (${describe(fill(deserved), key)}) and would use ${describe(after, key)}, ` +
          `past its fair share of idle capacity (${describe(ps.fair, key)}) while other projects wait`,
        this.holders(w, eligible, (r) => r.project !== w.project),
      );
    }
    // 5. Place the whole gang, or nothing.
    const placements = this.cluster.place(w, eligible);
    if (placements) {
      this.bind(w, ps, placements, req);
      return undefined;
    }
    // 6. Preemption.
    if (waitingFor.length > 0) {
      return pending(
        "WaitingForPreemption",
        `waiting for ${waitingFor.length} preempted workload(s) to stop: ${names(waitingFor).join(", ")}`,
        names(waitingFor),
      );
    }
    const found = mayPreempt ? this.findVictims(w, req, eligible, withinDeserved) : undefined;
    if (found) {
      ps.claimed = add(ps.claimed, req);
      for (const v of found.victims) {
        this.victims.add(v.id);
        const q = this.project(v.project);
        q.releasing = add(q.releasing, this.requestOf(v));
        this.decisions.preempt.push({
          id: v.id,
          for: w.id,
          reason: found.reason,
          message: preemptionMessage(found.reason, v, w),
        });
      }
      return pending(
        "WaitingForPreemption",
        `preempting ${found.victims.length} workload(s) (${found.reason}): ${names(found.victims).join(", ")}; starts once they stop`,
        names(found.victims),
      );
    }
    // 7. Why it waits.
    const free = this.cluster.freeOn(eligible);
    const gang = gangTotals(w.pods, this.deviceMemory);
    const enoughInTotal =
      free.cpu >= gang.cpu &&
      free.memory >= gang.memory &&
      free.gpu + EPS >= gang.gpu &&
      free.pods >= w.pods.length;
    const holders = this.holders(w, eligible, () => true);
    if (enoughInTotal) {
      return pending(
        "Fragmentation",
        `fragmentation: the eligible nodes have ${describeFree(free)} free in total, enough for the gang, but no arrangement of nodes fits its ${w.pods.length} pod(s) (${describePods(w.pods)})`,
        holders,
      );
    }
    const short: string[] = [];
    if (gang.gpu > free.gpu + EPS) short.push(`gpu: requested ${fmtGpu(gang.gpu)}, free ${fmtGpu(free.gpu)}`);
    if (gang.cpu > free.cpu) short.push(`cpu: requested ${formatCpu(gang.cpu)}, free ${formatCpu(free.cpu)}`);
    if (gang.memory > free.memory)
      short.push(`memory: requested ${formatBytes(gang.memory)}, free ${formatBytes(free.memory)}`);
    if (w.pods.length > free.pods)
      short.push(`pods: ${w.pods.length} requested, nodes take ${free.pods} more`);
    return pending(
      "InsufficientCapacity",
      `waiting for capacity: ${short.join("; ")}${w.pods.length > 1 ? ` (gang of ${w.pods.length})` : ""}; nothing may be preempted for it`,
      holders,
    );
  }

  /**
   * Fair share holds a project back only while another project that wants more is below its
   * own share: idle capacity nobody else asks for is never left idle (work-conserving).
   */
  private othersWaitBelowFairShare(ps: ProjectState, key: Vec): boolean {
    for (const q of this.projects.values()) {
      if (q === ps) continue;
      for (const r of RESOURCES) {
        if (key[r] <= EPS) continue;
        if (q.wants[r] > EPS && q.usage[r] < q.fair[r] - EPS) return true;
      }
    }
    return false;
  }

  /** Records a placement that ClusterState.place already holds. */
  private bind(w: Workload, ps: ProjectState, placements: PodPlacement[], req: Vec): void {
    ps.usage = add(ps.usage, req);
    if (this.awaited.has(w.id)) ps.claimed = sub(ps.claimed, req); // its claim is now usage
    ps.wants = sub(ps.wants, req);
    if (!w.preemptible) ps.nonPreemptible = add(ps.nonPreemptible, req);
    this.decisions.bind.push({ id: w.id, placements });
  }

  /**
   * Counts a workload's GPU fractions sized by memory as a share of the largest device. Kept per
   * workload object across cycles (the admission loop hands the same objects in every cycle):
   * a cycle over a thousand waiting jobs asked for each one's totals several times.
   */
  private requestOf(w: Workload): Vec {
    const known = requests.get(w);
    if (known && known.deviceMemory === this.deviceMemory && known.pods === w.pods) return known.vec;
    const g = gangTotals(w.pods, this.deviceMemory);
    const vec = { gpu: g.gpu, cpu: g.cpu, memory: g.memory };
    requests.set(w, { deviceMemory: this.deviceMemory, pods: w.pods, vec });
    return vec;
  }

  private neverFits(w: Workload, eligible: NodeState[]): string | undefined {
    const where = [w.nodePool ? `pool "${w.nodePool}"` : "", w.gpuModel ? `GPU model "${w.gpuModel}"` : ""]
      .filter(Boolean)
      .join(" and ");
    if (eligible.length === 0)
      return `no node ${where ? `with ${where}` : "is schedulable"}: check spec.nodePool and spec.gpuModel`;
    for (const pod of w.pods) {
      if (!eligible.some((n) => this.cluster.fitsEmpty(n, pod))) {
        return `requests more than any${where ? ` ${where}` : ""} node can ever offer: ${exceeded(pod, eligible)}; lower spec.resources`;
      }
    }
    const total = this.cluster.totalOf(eligible);
    const gang = gangTotals(w.pods, this.deviceMemory);
    if (gang.gpu > total.gpu + EPS || gang.cpu > total.cpu || gang.memory > total.memory)
      return `the gang needs ${describeGang(gang, w.pods.length)}, more than all eligible nodes${where ? ` (${where})` : ""} have together (${describeFree(total)})`;
    return undefined;
  }

  private findVictims(
    w: Workload,
    req: Vec,
    eligible: NodeState[],
    withinDeserved: boolean,
  ): { reason: PreemptionReason; victims: RunningWorkload[] } | undefined {
    const requested = RESOURCES.filter((r) => contested(req)[r] > EPS);
    const eligibleNames = new Set(eligible.map((n) => n.node.name));
    const candidates = this.running.filter(
      (r) => r.preemptible && !this.victims.has(r.id) && r.placements.some((p) => eligibleNames.has(p.node)),
    );
    const tries: {
      reason: PreemptionReason;
      pick: (r: RunningWorkload) => boolean;
      floor?: (p: ProjectState) => Vec;
    }[] = [{ reason: "Priority", pick: (r) => r.project === w.project && r.priority < w.priority }];
    if (withinDeserved)
      tries.push({
        reason: "Reclaim",
        pick: (r) => r.project !== w.project,
        floor: (q) => fill(deservedOf(q.policy)),
      });
    else tries.push({ reason: "FairShare", pick: (r) => r.project !== w.project, floor: (q) => q.fair });
    for (const t of tries) {
      const pool = candidates
        .filter(t.pick)
        .sort(
          (a, b) =>
            a.priority - b.priority || compareText(b.createdAt, a.createdAt) || compareText(a.id, b.id),
        )
        .slice(0, MAX_VICTIM_CANDIDATES);
      const victims = this.chooseVictims(w, pool, requested, eligible, t.floor);
      if (victims) return { reason: t.reason, victims };
    }
    return undefined;
  }

  /**
   * Greedy in victim order until the gang fits with their capacity freed, never taking a
   * project below its floor (deserved quota or fair share), then drops every victim the gang
   * does not need: the fewest that suffice, whole gangs only.
   */
  private chooseVictims(
    w: Workload,
    pool: RunningWorkload[],
    requested: readonly (keyof Vec)[],
    eligible: NodeState[],
    floor?: (p: ProjectState) => Vec,
  ): RunningWorkload[] | undefined {
    const left = new Map<string, Vec>();
    const chosen: RunningWorkload[] = [];
    let fits = false;
    for (const v of pool) {
      const vreq = this.requestOf(v);
      if (!requested.some((r) => vreq[r] > EPS)) continue;
      if (floor) {
        const q = this.project(v.project);
        const current = left.get(v.project) ?? sub(q.usage, q.releasing);
        const remaining = sub(current, vreq);
        const min = floor(q);
        if (requested.some((r) => vreq[r] > EPS && remaining[r] < min[r] - EPS)) continue;
        left.set(v.project, remaining);
      }
      chosen.push(v);
      if (this.fitsWithout(w, eligible, chosen)) {
        fits = true;
        break;
      }
    }
    if (!fits) return undefined;
    for (let i = 0; i < chosen.length - 1; ) {
      const fewer = chosen.filter((_, j) => j !== i);
      if (this.fitsWithout(w, eligible, fewer)) chosen.splice(i, 1);
      else i++;
    }
    return chosen;
  }

  private fitsWithout(w: Workload, eligible: NodeState[], victims: RunningWorkload[]): boolean {
    for (const v of victims) this.cluster.release(v, v.placements);
    const placements = this.cluster.place(w, eligible);
    if (placements) this.cluster.release(w, placements); // a trial: nothing is bound yet
    for (const v of victims) this.cluster.hold(v, v.placements);
    return placements !== undefined;
  }

  /** Running workloads holding what w needs on its eligible nodes, biggest holders first. */
  private holders(w: Workload, eligible: NodeState[], pick: (r: RunningWorkload) => boolean): string[] {
    const names = new Set(eligible.map((n) => n.node.name));
    const wantsGpu = w.pods.some((p) => p.gpu > 0 || (p.gpuMemoryBytes ?? 0) > 0);
    const weight = (r: RunningWorkload) => {
      const q = this.requestOf(r);
      return wantsGpu ? q.gpu : q.cpu / 1000 + q.memory / 2 ** 30;
    };
    return this.running
      .filter((r) => pick(r) && r.placements.some((p) => names.has(p.node)) && weight(r) > 0)
      .sort(
        (a, b) => Number(b.project !== w.project) - Number(a.project !== w.project) || weight(b) - weight(a),
      )
      .slice(0, MAX_HOLDERS)
      .map((r) => r.name);
  }
}

/**
 * Results kept per workload object across cycles. Workloads are treated as immutable (the
 * snapshot's contract); the pods array is checked too, as a cheap guard against reuse.
 */
const requests = new WeakMap<Workload, { deviceMemory: number; pods: PodRequest[]; vec: Vec }>();
const shapes = new WeakMap<Workload, { pods: PodRequest[]; key: string }>();

/** Workloads with equal keys ask for the same thing under the same rules. */
function shapeKey(w: Workload): string {
  const known = shapes.get(w);
  if (known && known.pods === w.pods) return known.key;
  const key = JSON.stringify([
    w.project,
    w.priority,
    w.preemptible,
    w.nodePool,
    w.gpuModel,
    w.placement,
    w.pods,
  ]);
  shapes.set(w, { pods: w.pods, key });
  return key;
}

function byPriorityThenAge(a: Workload, b: Workload): number {
  return b.priority - a.priority || compareText(a.createdAt, b.createdAt) || compareText(a.id, b.id);
}

export function gangTotals(pods: PodRequest[], deviceMemory: number) {
  let cpu = 0;
  let memory = 0;
  let gpu = 0;
  for (const p of pods) {
    cpu += p.cpuMillis;
    memory += p.memoryBytes;
    gpu +=
      p.gpu > 0
        ? p.gpu
        : p.gpuMemoryBytes && deviceMemory > 0
          ? Math.min(1, p.gpuMemoryBytes / deviceMemory)
          : 0;
  }
  return { cpu, memory, gpu };
}

function add(a: Vec, b: Vec): Vec {
  return { gpu: a.gpu + b.gpu, cpu: a.cpu + b.cpu, memory: a.memory + b.memory };
}

function sub(a: Vec, b: Vec): Vec {
  return { gpu: a.gpu - b.gpu, cpu: a.cpu - b.cpu, memory: a.memory - b.memory };
}

function fill(v: Partial<Vec>): Vec {
  return { gpu: v.gpu ?? 0, cpu: v.cpu ?? 0, memory: v.memory ?? 0 };
}

/** GPUs are what GPU work competes for; CPU-only work competes for CPU and memory. */
function contested(req: Vec): Vec {
  return req.gpu > EPS ? { gpu: req.gpu, cpu: 0, memory: 0 } : { gpu: 0, cpu: req.cpu, memory: req.memory };
}

/**
 * A project's deserved quota as the rules read it: no GPU quota means none deserved (all its GPU
 * work borrows); no CPU or memory quota means those are not limited by quota.
 */
function deservedOf(p: ProjectPolicy): Partial<Vec> {
  return { ...p.deserved, gpu: p.deserved.gpu ?? 0 };
}

function names(ws: { name: string }[]): string[] {
  return ws.map((w) => w.name);
}

function fmtGpu(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/0+$/, "");
}

/** The resources a request touches, as "gpu 4, cpu 2" — the ones that matter for the message. */
function describe(v: Vec, req: Vec): string {
  const parts: string[] = [];
  if (req.gpu > EPS) parts.push(`gpu ${fmtGpu(v.gpu)}`);
  if (req.cpu > 0) parts.push(`cpu ${formatCpu(v.cpu)}`);
  if (req.memory > 0) parts.push(`memory ${formatBytes(v.memory)}`);
  return parts.join(", ") || "nothing";
}

function describeFree(f: { gpu: number; cpu: number; memory: number; pods?: number }): string {
  return `gpu ${fmtGpu(f.gpu)}, cpu ${formatCpu(f.cpu)}, memory ${formatBytes(f.memory)}`;
}

function describeGang(g: { gpu: number; cpu: number; memory: number }, pods: number): string {
  return `${pods} pod(s) with gpu ${fmtGpu(g.gpu)}, cpu ${formatCpu(g.cpu)}, memory ${formatBytes(g.memory)} in all`;
}

function describePods(pods: PodRequest[]): string {
  const p = pods[0]!;
  const gpu =
    p.gpu > 0 ? `gpu ${fmtGpu(p.gpu)}` : p.gpuMemoryBytes ? `gpuMemory ${formatBytes(p.gpuMemoryBytes)}` : "";
  const each = [gpu, `cpu ${formatCpu(p.cpuMillis)}`, `memory ${formatBytes(p.memoryBytes)}`]
    .filter(Boolean)
    .join(", ");
  return pods.length === 1 ? each : `${each} each`;
}

/** Which of a pod's requests no eligible node can meet, each with the largest node's figure. */
function exceeded(pod: PodRequest, nodes: NodeState[]): string {
  const max = (f: (n: SchedNode) => number) => Math.max(0, ...nodes.map((n) => f(n.node)));
  const parts: string[] = [];
  if (pod.cpuMillis > max((n) => n.cpuMillis))
    parts.push(`cpu ${formatCpu(pod.cpuMillis)} (largest node has ${formatCpu(max((n) => n.cpuMillis))})`);
  if (pod.memoryBytes > max((n) => n.memoryBytes))
    parts.push(
      `memory ${formatBytes(pod.memoryBytes)} (largest node has ${formatBytes(max((n) => n.memoryBytes))})`,
    );
  if (pod.gpu >= 1 && pod.gpu > max((n) => n.gpus.length))
    parts.push(`gpu ${fmtGpu(pod.gpu)} (largest node has ${max((n) => n.gpus.length)})`);
  if (pod.gpu > 0 && pod.gpu < 1 && max((n) => n.gpus.length) === 0)
    parts.push(`gpu ${fmtGpu(pod.gpu)} (no node has a GPU)`);
  if (
    pod.gpuMemoryBytes &&
    pod.gpuMemoryBytes > max((n) => Math.max(0, ...n.gpus.map((g) => g.memoryBytes ?? 0)))
  )
    parts.push(
      `gpuMemory ${formatBytes(pod.gpuMemoryBytes)} (largest device has ${formatBytes(max((n) => Math.max(0, ...n.gpus.map((g) => g.memoryBytes ?? 0))))}; devices of unknown memory cannot take memory-sized shares)`,
    );
  if (max((n) => n.maxPods ?? 1) < 1) parts.push("every node takes 0 pods");
  return parts.join(", ") || "no single node has all of the cpu, memory and gpu requested";
}

function preemptionMessage(reason: PreemptionReason, v: RunningWorkload, w: Workload): string {
  switch (reason) {
    case "Priority":
      return `preempted for ${w.name} (priority ${w.priority} > ${v.priority}) in project ${v.project}`;
    case "Reclaim":
      return `preempted: project ${w.project} reclaims its deserved quota for ${w.name}; project ${v.project} runs over its own`;
    case "FairShare":
      return `preempted: project ${v.project} is over its fair share of idle capacity; ${w.name} of project ${w.project} is below its own`;
  }
}

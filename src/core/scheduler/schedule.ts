import { grow } from "./elastic.js";
import { names, whyItWaits } from "./explain.js";
import { fairSharesByPool, projectOrderKey, zero } from "./fairshare.js";
import type {
  Decisions,
  PodPlacement,
  RunningWorkload,
  SchedulerMemo,
  Snapshot,
  Vec,
  Workload,
} from "./model.js";
import { compareText } from "./nodes.js";
import { findVictims, preemptionMessage } from "./preemption.js";
import { add, EPS, sub } from "./resources.js";
import { admit } from "./rules.js";
import { CycleState, type Pending, type ProjectState } from "./state.js";

// Imported from here by the server's scheduling view.
export { gangTotals } from "./resources.js";

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
 *     the project's fair share (rules.ts).
 *  5. Place the whole gang on free capacity (binpack or spread), or not at all (nodes.ts).
 *  6. If it does not fit: look for victims — lower priority in its own project, then reclaim of
 *     deserved quota from projects over theirs, then fair-share reclaim from projects over their
 *     fair share — and choose the fewest that suffice (preemption.ts).
 *  7. Otherwise record why it waits: the exact blocker and who holds the capacity (explain.ts).
 *  8. When nothing waits, grow elastic workloads into free capacity (elastic.ts).
 *
 * Pure: reads the snapshot, returns decisions, mutates nothing it was given, keeps nothing.
 */
export function schedule(snapshot: Snapshot): Decisions {
  return new Cycle(snapshot).run();
}

class Cycle {
  private readonly s: CycleState;
  /** Why workloads of a given shape could not start in this cycle (see consider). */
  private readonly failedShapes = new Map<string, Pending>();
  /** From the last nextProject scan: projects whose queue was not done, and the one chosen. */
  private projectsWithWork = 0;
  private lastProject: ProjectState | undefined;

  constructor(snapshot: Snapshot) {
    this.s = new CycleState(snapshot);
  }

  run(): Decisions {
    const s = this.s;
    this.accountRunning();
    this.computeFairShares();
    // 3.–7. Serve the project furthest behind, one workload at a time.
    let position = 0;
    for (;;) {
      const ps = this.nextProject();
      if (!ps) break;
      const w = ps.queue[ps.next++]!;
      const pending = this.consider(w, ps);
      if (pending)
        s.decisions.pending.push({
          id: w.id,
          reason: pending.reason,
          message: pending.message,
          holders: pending.holders,
          queuePosition: ++position,
        });
    }
    // 8. Elastic workloads grow into capacity nothing else waits for.
    if (s.decisions.pending.length === 0 && s.decisions.preempt.length === 0) grow(s);
    return s.decisions;
  }

  /** 1. What is held, by whom, and what stopping victims will give back. */
  private accountRunning(): void {
    const s = this.s;
    for (const p of s.snapshot.projects) s.project(p.name);
    for (const w of s.running) {
      s.cluster.hold(w, w.placements);
      const ps = s.project(w.project);
      const req = s.requestOf(w);
      ps.usage = add(ps.usage, req);
      if (!w.preemptible) ps.nonPreemptible = add(ps.nonPreemptible, req);
      if (w.stopping) {
        s.victims.add(w.id);
        ps.releasing = add(ps.releasing, req);
      }
    }
  }

  /** 2. Fair shares over demand = usage + pending requests; queues in serving order. */
  private computeFairShares(): void {
    const s = this.s;
    const awaited = s.awaited;
    for (const r of s.running) {
      if (!r.stopping || !r.preemptedFor) continue;
      awaited.add(r.preemptedFor);
      s.stoppingFor.set(r.preemptedFor, [...(s.stoppingFor.get(r.preemptedFor) ?? []), r]);
    }
    for (const w of s.snapshot.pending) {
      const ps = s.project(w.project);
      ps.queue.push(w);
      if (awaited.has(w.id)) ps.claimed = add(ps.claimed, s.requestOf(w));
    }
    const demand = new Map<string, Vec>();
    for (const [name, ps] of s.projects) {
      for (const w of ps.queue) ps.wants = add(ps.wants, s.requestOf(w));
      demand.set(name, add(ps.usage, ps.wants));
    }
    const fair = fairSharesByPool(
      [...s.projects.values()].map((p) => p.policy),
      s.cluster.capacityByPool(),
      demand,
    );
    for (const [name, ps] of s.projects) {
      ps.fair = fair.get(name) ?? zero();
      ps.queue.sort(byPriorityThenAge);
    }
  }

  /** 3. The project furthest behind that still has work. */
  private nextProject(): ProjectState | undefined {
    // One project left with work (the common case with a long queue): no keys to compare.
    const last = this.lastProject;
    if (last && last.next < last.queue.length && this.projectsWithWork === 1) return last;
    let best: ProjectState | undefined;
    let withWork = 0;
    let bestKey: [number, number] = [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY];
    for (const ps of this.s.projects.values()) {
      if (ps.next >= ps.queue.length) continue;
      withWork++;
      const key = projectOrderKey(ps.policy, add(ps.usage, ps.claimed), this.s.capacity);
      if (key[0] < bestKey[0] || (key[0] === bestKey[0] && key[1] < bestKey[1] - EPS)) {
        best = ps;
        bestKey = key;
      }
    }
    this.projectsWithWork = withWork;
    this.lastProject = best;
    return best;
  }

  /** Steps 4–7 for one workload: binds it, preempts for it, or says why it waits. */
  private consider(w: Workload, ps: ProjectState): Pending | undefined {
    if (w.elastic && w.elastic.min < w.pods.length) return this.considerElastic(w, ps, w.elastic.min);
    const waitingFor = this.s.stoppingFor.get(w.id) ?? [];
    // A workload just like one that could not start earlier in this cycle cannot start either:
    // capacity only shrinks and usage only grows within a cycle, and a failed victim search
    // only has fewer candidates later (the holders named in its message may be a little stale). Reusing the answer keeps a cycle with a thousand waiting
    // look-alikes cheap.
    const shape = waitingFor.length === 0 ? shapeKey(w, this.s.snapshot.memo) : undefined;
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
  private considerElastic(w: Workload, ps: ProjectState, min: number): Pending | undefined {
    const waitingFor = this.s.stoppingFor.get(w.id) ?? [];
    const full = this.s.requestOf(w);
    for (let k = w.pods.length; k >= min; k--) {
      const sized: Workload = { ...w, pods: w.pods.slice(0, k) };
      const decision = this.decide(sized, ps, waitingFor, k === min);
      if (!decision) {
        // What it asked beyond what it got no longer waits.
        ps.wants = sub(ps.wants, sub(full, this.s.requestOf(sized)));
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
  ): Pending | undefined {
    const s = this.s;
    // 4. Rules that need no search.
    const admitted = admit(s, w, ps, waitingFor);
    if (admitted.pending) return admitted.pending;
    const { eligible, req } = admitted;
    // 5. Place the whole gang, or nothing.
    const placements = s.cluster.place(w, eligible);
    if (placements) {
      this.bind(w, ps, placements, req);
      return undefined;
    }
    // 6. Preemption.
    if (waitingFor.length > 0) {
      return {
        id: w.id,
        reason: "WaitingForPreemption",
        message: `waiting for ${waitingFor.length} preempted workload(s) to stop: ${names(waitingFor).join(", ")}`,
        holders: names(waitingFor),
      };
    }
    const found = mayPreempt ? findVictims(s, w, req, eligible, admitted.withinDeserved) : undefined;
    if (found) {
      ps.claimed = add(ps.claimed, req);
      for (const v of found.victims) {
        s.victims.add(v.id);
        const q = s.project(v.project);
        q.releasing = add(q.releasing, s.requestOf(v));
        s.decisions.preempt.push({
          id: v.id,
          for: w.id,
          reason: found.reason,
          message: preemptionMessage(found.reason, v, w),
        });
      }
      return {
        id: w.id,
        reason: "WaitingForPreemption",
        message: `preempting ${found.victims.length} workload(s) (${found.reason}): ${names(found.victims).join(", ")}; starts once they stop`,
        holders: names(found.victims),
      };
    }
    // 7. Why it waits.
    return whyItWaits(s, w, eligible);
  }

  /** Records a placement that ClusterState.place already holds. */
  private bind(w: Workload, ps: ProjectState, placements: PodPlacement[], req: Vec): void {
    ps.usage = add(ps.usage, req);
    if (this.s.awaited.has(w.id)) ps.claimed = sub(ps.claimed, req); // its claim is now usage
    ps.wants = sub(ps.wants, req);
    if (!w.preemptible) ps.nonPreemptible = add(ps.nonPreemptible, req);
    this.s.decisions.bind.push({ id: w.id, placements });
  }
}

/**
 * Workloads with equal keys ask for the same thing under the same rules. Kept in the caller's
 * memo where there is one: a thousand look-alikes waiting would otherwise be serialised on every
 * cycle.
 */
function shapeKey(w: Workload, memo: SchedulerMemo | undefined): string {
  const known = memo?.shapes.get(w);
  if (known && known.pods === w.pods) return known.key;
  const key = JSON.stringify([
    w.project,
    w.priority,
    w.preemptible,
    w.nodePool,
    w.gpuModel,
    w.placement,
    w.pods,
    // Tolerations decide which nodes it may use: look-alikes that tolerate differently differ.
    w.tolerations,
  ]);
  memo?.shapes.set(w, { pods: w.pods, key });
  return key;
}

function byPriorityThenAge(a: Workload, b: Workload): number {
  return b.priority - a.priority || compareText(a.createdAt, b.createdAt) || compareText(a.id, b.id);
}

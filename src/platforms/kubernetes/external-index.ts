import { DEMAND_LABEL } from "./demand.js";
import { LABELS as L } from "./naming.js";
import { isTerminal, type Pod, SCHEDULER_NAME } from "./pods.js";

/** Pods with the same value of this label (in one namespace) are one gang: placed together. */
export const GANG_LABEL = "loom.dev/gang";
/** How many pods the gang has: it is not placed until all of them exist. */
export const GANG_SIZE_ANNOTATION = "loom.dev/gang-size";

/** Where one pod counts for the scheduler: held on a node by others, or waiting (in a gang) for Loom. */
export type ExternalEntry =
  | { kind: "held"; node: string; pod: Pod }
  | { kind: "pending"; gang: string; size: number; pod: Pod };

/**
 * Where a pod counts, if anywhere: Loom's own workers are counted by their admissions and
 * finished pods hold nothing; a pod on a node (or bound by Loom, before the watch shows it) holds
 * what it asks; a live unbound pod for Loom's scheduler waits; another scheduler's unbound pod
 * does not count yet.
 */
export function classifyPod(key: string, pod: Pod, boundNode: string | undefined): ExternalEntry | undefined {
  // Loom's own workers are counted by their admissions; model pods (a Deployment's, made by
  // the ReplicaSet controller) are placed and counted like any pod submitted to Loom.
  const loomWorker = pod.metadata.labels?.[L.uid] && pod.metadata.labels?.[L.component] !== "model";
  if (loomWorker || isTerminal(pod)) return undefined;
  const node = pod.spec?.nodeName ?? boundNode;
  if (node) return { kind: "held", node, pod };
  if (!isExternalPending(pod)) return undefined; // another scheduler's pod, not yet bound
  const gang = pod.metadata.labels?.[GANG_LABEL];
  return {
    kind: "pending",
    gang: gang ? `gang:${pod.metadata.namespace}/${gang}` : `pod:${key}`,
    size: Number(pod.metadata.annotations?.[GANG_SIZE_ANNOTATION] ?? 1) || 1,
    pod,
  };
}

export function isExternalPending(p: Pod): boolean {
  return (
    p.spec?.schedulerName === SCHEDULER_NAME &&
    !p.spec.nodeName &&
    // A capacity request's pods (demand.ts) stand for a gang Loom already counts: never work.
    !p.metadata.labels?.[DEMAND_LABEL] &&
    !p.metadata.deletionTimestamp &&
    !isTerminal(p)
  );
}

/**
 * Others' work by pod, kept up to date from the pod informer's events: the pods others hold, and
 * the gangs waiting for Loom. An admission cycle reads only these, so its cost grows with others'
 * work, not with every pod of the cluster (it walked every pod, Loom's own workers and finished
 * pods included, on every cycle). Both come out in the informer cache's order (first seen
 * first), as the walk over the cache gave them: GPU device ids of held pods are counted in it.
 */
export class ExternalIndex {
  /** When each live pod was first seen: its place in the informer cache's order. */
  private readonly seq = new Map<string, number>();
  private next = 0;
  private readonly entries = new Map<string, ExternalEntry>();
  /** Held pods by key. */
  private readonly held = new Map<string, { node: string; pod: Pod; seq: number }>();
  /** Waiting pods by gang id, then by key. */
  private readonly pending = new Map<string, Map<string, { pod: Pod; size: number; seq: number }>>();

  /** Sorts one pod again after a change (`undefined`: it is gone). */
  update(key: string, pod: Pod | undefined, boundNode?: string): void {
    this.remove(key);
    if (!pod) {
      this.seq.delete(key);
      return;
    }
    let seq = this.seq.get(key);
    if (seq === undefined) {
      seq = this.next++;
      this.seq.set(key, seq);
    }
    const entry = classifyPod(key, pod, boundNode);
    if (!entry) return;
    this.entries.set(key, entry);
    if (entry.kind === "held") this.held.set(key, { node: entry.node, pod: entry.pod, seq });
    else {
      let members = this.pending.get(entry.gang);
      if (!members) {
        members = new Map();
        this.pending.set(entry.gang, members);
      }
      members.set(key, { pod: entry.pod, size: entry.size, seq });
    }
  }

  private remove(key: string): void {
    const old = this.entries.get(key);
    if (!old) return;
    this.entries.delete(key);
    if (old.kind === "held") {
      this.held.delete(key);
      return;
    }
    const members = this.pending.get(old.gang);
    members?.delete(key);
    if (members?.size === 0) this.pending.delete(old.gang);
  }

  /** What others hold, pod by pod. */
  heldPods(): { key: string; node: string; pod: Pod }[] {
    return [...this.held]
      .sort(([, a], [, b]) => a.seq - b.seq)
      .map(([key, { node, pod }]) => ({ key, node, pod }));
  }

  /** Waiting gangs (and lone pods) that are complete: all their pods exist. */
  completeGangs(): { id: string; pods: Pod[] }[] {
    const out: { id: string; pods: Pod[]; first: number }[] = [];
    for (const [id, members] of this.pending) {
      let size = 1;
      let first = Number.POSITIVE_INFINITY;
      for (const m of members.values()) {
        size = Math.max(size, m.size);
        first = Math.min(first, m.seq);
      }
      // A gang starts all together: until all its pods exist, it is not even a candidate.
      if (members.size < size) continue;
      const pods = [...members.values()].sort((a, b) => a.seq - b.seq).map((m) => m.pod);
      out.push({ id, pods, first });
    }
    return out.sort((a, b) => a.first - b.first).map(({ id, pods }) => ({ id, pods }));
  }
}

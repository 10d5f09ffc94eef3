import { PROJECT, TRAININGJOB } from "../api/kinds.js";
import type { Project } from "../api/project.js";
import type { TrainingJob } from "../api/trainingjob.js";
import { SnapshotBuilder, workloadOf } from "../controllers/admission/snapshot.js";
import type { Runtime } from "../ports/runtime.js";
import type {
  Decisions,
  GpuDeviceStatus,
  GpuSharing,
  NodeCapacity,
  RunningWorkload,
  Scheduler,
  Snapshot,
} from "../ports/scheduler.js";
import { DEFAULT_POOL, gangTotals } from "../ports/scheduler.js";
import type { ResourceStore } from "../ports/store.js";

export interface NodeUsage {
  name: string;
  pool: string;
  gpuModel?: string;
  capacity: { cpuMillis: number; memoryBytes: number; gpus: number; pods?: number };
  allocated: { cpuMillis: number; memoryBytes: number; gpus: number; pods: number };
  /** Workloads ("project/name") with a pod on the node. */
  workloads: string[];
  /** Each GPU device and what holds it (several holders: fractions of it), for the console's node map (a server before it sent none). */
  devices?: DeviceUsage[];
  /** How fractional GPU requests share a device on this node, and why not enforced where not. */
  gpuSharing?: GpuSharing;
  gpuSharingReason?: string;
  /** Real devices' health, utilisation and memory, with each worker's memory (embedded with nvidia-smi). */
  gpuStatus?: GpuDeviceStatus[];
}

/** One GPU device of a node and the workers holding it, each with its share (1: the whole device). */
export interface DeviceUsage {
  id: string;
  memoryBytes?: number;
  holders: { workload: string; project: string; worker: number; share: number }[];
}

export interface ProjectUsage {
  name: string;
  deserved: { gpu?: number; cpuMillis?: number; memoryBytes?: number };
  limit?: { gpu?: number; cpuMillis?: number; memoryBytes?: number };
  overQuotaWeight: number;
  allocated: { gpu: number; cpuMillis: number; memoryBytes: number };
  running: number;
  pending: number;
}

/** What `loom apply --dry-run` learns about a TrainingJob: would it start now, and at whose cost. */
export interface AdmissionPreview {
  outcome: "Admit" | "Preempt" | "Wait";
  message: string;
  /** Workloads ("project/name") that would be preempted for it. */
  preempts: string[];
  /** In a fleet: the member that would take it (or where its victims run). */
  cluster?: string;
}

/**
 * Read-only views of scheduling for the API: node and project usage (`loom get nodes`,
 * `loom top`) and admission previews (dry run). Each builds the scheduler's snapshot from the
 * store and the runtime, as the admission loop does, and changes nothing.
 */
export class SchedulingView {
  private readonly snapshot: () => Promise<Snapshot>;

  constructor(
    private readonly deps: {
      store: ResourceStore;
      runtime: Runtime;
      scheduler: Scheduler;
      /**
       * The admission loop's own snapshot, where controllers run in this process: the views see
       * exactly what the scheduler sees. Without it, the same builder reads the store.
       */
      snapshot?: () => Promise<Snapshot> | undefined;
    },
  ) {
    const fromStore = new SnapshotBuilder({
      jobs: async () => (await deps.store.list(TRAININGJOB)).items as TrainingJob[],
      projects: async () => (await deps.store.list(PROJECT)).items as Project[],
      runtime: deps.runtime,
    });
    this.snapshot = () => deps.snapshot?.() ?? fromStore.build();
  }

  async nodes(): Promise<NodeUsage[]> {
    // The runtime's own view adds GPU health and use; a runtime that cannot say leaves them out.
    const [s, capacity] = await Promise.all([
      this.snapshot(),
      (async () => this.deps.runtime.nodes())().catch((): NodeCapacity[] => []),
    ]);
    const gpu = new Map(capacity.map((c) => [c.name, c]));
    const usage = new Map<string, NodeUsage>();
    for (const n of s.nodes) {
      const c = gpu.get(n.name);
      usage.set(n.name, {
        ...(c?.gpuSharing ? { gpuSharing: c.gpuSharing } : {}),
        ...(c?.gpuSharingReason ? { gpuSharingReason: c.gpuSharingReason } : {}),
        ...(c?.gpuDevices ? { gpuStatus: c.gpuDevices } : {}),
        name: n.name,
        pool: n.pool ?? DEFAULT_POOL,
        ...(n.gpuModel ? { gpuModel: n.gpuModel } : {}),
        capacity: {
          cpuMillis: n.cpuMillis,
          memoryBytes: n.memoryBytes,
          gpus: n.gpus.length,
          ...(n.maxPods !== undefined ? { pods: n.maxPods } : {}),
        },
        allocated: { cpuMillis: 0, memoryBytes: 0, gpus: 0, pods: 0 },
        workloads: [],
        devices: n.gpus.map((g) => ({
          id: g.id,
          ...(g.memoryBytes !== undefined ? { memoryBytes: g.memoryBytes } : {}),
          holders: [],
        })),
      });
    }
    for (const w of s.running) {
      for (const p of w.placements) {
        const u = usage.get(p.node);
        const pod = w.pods[p.pod];
        if (!u || !pod) continue;
        u.allocated.cpuMillis += pod.cpuMillis;
        u.allocated.memoryBytes += pod.memoryBytes;
        u.allocated.gpus += p.gpus.reduce((sum, g) => sum + g.share, 0);
        u.allocated.pods += 1;
        if (!u.workloads.includes(w.name)) u.workloads.push(w.name);
        for (const g of p.gpus)
          u.devices
            ?.find((d) => d.id === g.device)
            ?.holders.push({ workload: w.name, project: w.project, worker: p.pod, share: g.share });
      }
    }
    return [...usage.values()];
  }

  async projects(): Promise<ProjectUsage[]> {
    const s = await this.snapshot();
    const deviceMemory = Math.max(0, ...s.nodes.flatMap((n) => n.gpus.map((g) => g.memoryBytes ?? 0)));
    const out = new Map<string, ProjectUsage>();
    const entry = (name: string) => {
      let e = out.get(name);
      if (!e) {
        const p = s.projects.find((x) => x.name === name);
        e = {
          name,
          deserved: p ? vec(p.deserved) : {},
          ...(p?.limit ? { limit: vec(p.limit) } : {}),
          overQuotaWeight: p?.overQuotaWeight ?? 1,
          allocated: { gpu: 0, cpuMillis: 0, memoryBytes: 0 },
          running: 0,
          pending: 0,
        };
        out.set(name, e);
      }
      return e;
    };
    for (const p of s.projects) entry(p.name);
    for (const w of s.running as RunningWorkload[]) {
      const e = entry(w.project);
      const t = gangTotals(w.pods, deviceMemory);
      e.allocated.gpu += t.gpu;
      e.allocated.cpuMillis += t.cpu;
      e.allocated.memoryBytes += t.memory;
      e.running += 1;
    }
    for (const w of s.pending) entry(w.project).pending += 1;
    return [...out.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Runs one scheduling cycle with the job added as pending, and reports what it decided for it. */
  async preview(job: TrainingJob): Promise<AdmissionPreview> {
    const id = job.metadata.uid || "dry-run";
    const candidate: TrainingJob = {
      ...job,
      metadata: {
        ...job.metadata,
        uid: id,
        creationTimestamp: job.metadata.creationTimestamp || new Date().toISOString(),
      },
      status: {},
    };
    const s = await this.snapshot();
    // A job updated in place replaces its stored self.
    const pending = [...s.pending.filter((w) => w.id !== id), workloadOf(candidate)];
    const running = s.running.filter((w) => w.id !== id);
    const decisions: Decisions = this.deps.scheduler.schedule({ ...s, pending, running });
    const bound = decisions.bind.find((b) => b.id === id);
    const mine = decisions.preempt.filter((p) => p.for === id);
    const victims = mine.map((p) => running.find((r) => r.id === p.id));
    const preempts = victims.map((v, i) => v?.name ?? mine[i]!.id);
    // In a fleet, the member a node is in: where it would run, where its victims run.
    const memberOf = new Map(s.nodes.flatMap((n) => (n.cluster ? [[n.name, n.cluster]] : [])));
    const victimMembers = [...new Set(victims.map((v) => memberOf.get(v?.placements[0]?.node ?? "")))];
    if (bound) {
      const cluster = memberOf.get(bound.placements[0]?.node ?? "");
      const nodes = [...new Set(bound.placements.map((p) => p.node))].join(", ");
      const gpus = bound.placements.flatMap((p) =>
        p.gpus.map((g) => (g.share < 1 ? `${g.device} (${g.share})` : g.device)),
      );
      return {
        outcome: "Admit",
        message: `would start now${cluster ? ` in cluster ${cluster}` : ""} on ${nodes}${gpus.length ? ` with GPU(s) ${gpus.join(", ")}` : ""}`,
        preempts: [],
        ...(cluster ? { cluster } : {}),
      };
    }
    const waiting = decisions.pending.find((p) => p.id === id);
    if (preempts.length > 0) {
      const reason = decisions.preempt.find((p) => p.for === id)?.reason;
      return {
        outcome: "Preempt",
        message: `would preempt ${preempts.length} workload(s) (${reason})${victimMembers[0] ? ` in cluster ${victimMembers.join(", ")}` : ""}: ${preempts.join(", ")}; starts once they stop`,
        preempts,
        ...(victimMembers[0] ? { cluster: victimMembers[0] } : {}),
      };
    }
    return {
      outcome: "Wait",
      message: waiting
        ? `would wait (${waiting.reason}, queue position ${waiting.queuePosition}): ${waiting.message}`
        : "would wait",
      preempts: [],
    };
  }
}

function vec(v: { gpu?: number; cpu?: number; memory?: number }) {
  return {
    ...(v.gpu !== undefined ? { gpu: v.gpu } : {}),
    ...(v.cpu !== undefined ? { cpuMillis: v.cpu } : {}),
    ...(v.memory !== undefined ? { memoryBytes: v.memory } : {}),
  };
}

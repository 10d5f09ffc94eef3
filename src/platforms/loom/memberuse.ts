import { FLEET_HOLDER_ANNOTATION, FLEET_UID_LABEL } from "../../api/cluster.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import { countOf, type NodeUse } from "../../ports/scheduler.js";

/** A node as a Loom member's `GET /nodes` says it (`loom get nodes` there): untrusted input. */
export interface MemberNodeUsage {
  name: string;
  allocated?: { cpuMillis?: unknown; memoryBytes?: unknown; gpus?: unknown; pods?: unknown };
}

/** The most workers an old-style admission is read as (a member's figure is untrusted). */
const MAX_WORKERS = 1024;

// biome-ignore lint/suspicious/noExplicitAny: a member's objects as its API returns them, read defensively
type Obj = Record<string, any>;

/**
 * What work `holder` did not place holds on each node of a Loom member: what the member's own
 * scheduler has allocated there (its `loom get nodes`), less what the copies `holder` made hold
 * (their admissions there, and the replicas of its service copies), which the control plane
 * counts itself. Figures a member sends that are not numbers count as nothing; never below zero.
 */
export function loomUsedByOthers(
  nodes: MemberNodeUsage[],
  jobs: Obj[],
  services: Obj[],
  holder: string,
): Map<string, NodeUse> {
  const ours = new Map<string, NodeUse>();
  const take = (node: unknown, cpu: unknown, memory: unknown, gpus: unknown) => {
    if (typeof node !== "string") return;
    const u = ours.get(node) ?? { cpuMillis: 0, memoryBytes: 0, gpu: 0, pods: 0 };
    u.cpuMillis += countOf(cpu);
    u.memoryBytes += countOf(memory);
    u.gpu += Array.isArray(gpus) ? gpus.reduce((s: number, g: Obj) => s + countOf(g?.share), 0) : 0;
    u.pods += 1;
    ours.set(node, u);
  };
  for (const job of jobs.filter((j) => mine(j, holder))) {
    const a = job.status?.admission;
    if (!a || ["Succeeded", "Failed"].includes(job.status?.phase)) continue;
    const placements: Obj[] = Array.isArray(a.placements)
      ? a.placements
      : // Admissions written before placements: workers on one node (never an unbounded count).
        Array.from({ length: Math.min(countOf(a.workers) || 1, MAX_WORKERS) }, (_, pod) => ({
          node: a.node,
          gpus:
            pod === 0 && Array.isArray(a.gpus) ? a.gpus.map(() => ({ share: countOf(a.gpuShare) || 1 })) : [],
        }));
    for (const p of placements) take(p?.node, a.cpuMillis, a.memoryBytes, p?.gpus);
  }
  for (const svc of services.filter((s) => mine(s, holder)))
    for (const rev of Array.isArray(svc.status?.revisions) ? (svc.status.revisions as Obj[]) : []) {
      const r = rev?.spec?.resources ?? svc.spec?.resources ?? {};
      const cpu = quantity(r.cpu, parseCpuMillis);
      const memory = quantity(r.memory, parseMemoryBytes);
      for (const replica of Array.isArray(rev?.replicas) ? (rev.replicas as Obj[]) : [])
        if (!replica?.cluster) take(replica?.node, cpu, memory, replica?.gpus);
    }
  const out = new Map<string, NodeUse>();
  for (const n of nodes) {
    if (typeof n?.name !== "string") continue;
    const a = n.allocated ?? {};
    const o = ours.get(n.name) ?? { cpuMillis: 0, memoryBytes: 0, gpu: 0, pods: 0 };
    const use = {
      cpuMillis: Math.max(0, countOf(a.cpuMillis) - o.cpuMillis),
      memoryBytes: Math.max(0, countOf(a.memoryBytes) - o.memoryBytes),
      // Shares summed as floating point: what is left of a whole device by rounding alone is none.
      gpu: Math.max(0, Math.round((countOf(a.gpus) - o.gpu) * 1e6) / 1e6),
      pods: Math.max(0, countOf(a.pods) - o.pods),
    };
    if (use.cpuMillis > 0 || use.memoryBytes > 0 || use.gpu > 0 || use.pods > 0) out.set(n.name, use);
  }
  return out;
}

/** A copy `holder` made (label loom.dev/fleet-uid; made by it, or before copies named their maker). */
function mine(o: Obj, holder: string): boolean {
  if (!o?.metadata?.labels?.[FLEET_UID_LABEL]) return false;
  const by = o?.metadata?.annotations?.[FLEET_HOLDER_ANNOTATION];
  return by === undefined || by === holder;
}

function quantity(v: unknown, parse: (v: string | number) => number | undefined): number {
  return typeof v === "string" || typeof v === "number" ? (parse(v) ?? 0) : 0;
}

/** A GET on the member's API (LoomApi.request): the parsed JSON answer. */
export type MemberGet = (path: string) => Promise<unknown>;

/**
 * Others' use of a Loom member's nodes (`nodes`: its `GET /nodes`), with the copies a control
 * plane made there read through its API. When the copies cannot be read, nothing is counted and
 * `error` says why (the member's nodes then look free of its own work).
 */
export async function readLoomUse(
  get: MemberGet,
  base: string,
  nodes: MemberNodeUsage[],
  holder: string,
): Promise<{ use: Map<string, NodeUse>; error?: string }> {
  const q = `?labelSelector=${encodeURIComponent(FLEET_UID_LABEL)}`;
  try {
    const [jobs, services] = await Promise.all([
      get(`${base}/trainingjobs${q}`),
      get(`${base}/inferenceservices${q}`),
    ]);
    const items = (l: unknown) => {
      const list = (l as { items?: unknown } | undefined)?.items;
      return Array.isArray(list) ? (list as Obj[]) : [];
    };
    return { use: loomUsedByOthers(nodes, items(jobs), items(services), holder) };
  } catch (err) {
    return { use: new Map(), error: err instanceof Error ? err.message : String(err) };
  }
}

import { z } from "zod";
import type { Condition, Resource } from "./meta.js";

/** The member every control plane has: its own platform (embedded processes, or its own cluster). */
export const SELF_CLUSTER = "self";
/**
 * On a member's copy of a job: the attempts the job had made before it was placed there (in
 * other members). The copy counts its own from 1; the control plane shows base + the copy's, so
 * attempt numbers (and each attempt's logs) are never reused when a job moves between members.
 */
export const FLEET_ATTEMPT_BASE_ANNOTATION = "loom.dev/fleet-attempt-base";

/** The attempts a member's copy was created after (its FLEET_ATTEMPT_BASE_ANNOTATION; 0 when unset). */
export function fleetAttemptBase(copy: { metadata: { annotations?: Record<string, string> } }): number {
  const n = Number(copy.metadata.annotations?.[FLEET_ATTEMPT_BASE_ANNOTATION] ?? 0);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

/**
 * On a member's copy: the control plane that placed it (the holder of the lease it renews in the
 * member). The member stops the copy's workers when that lease has not been renewed in time.
 */
export const FLEET_HOLDER_ANNOTATION = "loom.dev/fleet-control-plane";

/** The condition a member writes on a copy it stopped because its control plane's lease lapsed. */
export const FENCED_CONDITION = "Fenced";

/**
 * How long a control plane's lease in a member lasts: half the member's clusterLostTimeout, so
 * the member has stopped the copies (lease + one renewal period + their stop) before the control
 * plane re-admits them elsewhere (clusterLostTimeout after its first failed probe).
 */
export function fleetLeaseSeconds(clusterLostTimeoutMs: number): number {
  return Math.max(1, Math.floor(clusterLostTimeoutMs / 2000));
}

/** The label that ties a member's copy to the control plane's job (its uid). */
export const FLEET_UID_LABEL = "loom.dev/fleet-uid";

/**
 * On a member's copy: the step of the checkpoint the control plane holds for the job (it failed
 * over, or was moved, here). The copy's first attempt waits until that checkpoint is written into
 * its LOOM_CHECKPOINT_DIR, and resumes from it.
 */
export const FLEET_SEED_ANNOTATION = "loom.dev/fleet-checkpoint-seed";

/** Whether attempt `attempt` of a member's copy starts from the control plane's checkpoint. */
export function seedsCheckpoint(
  copy: { metadata: { annotations?: Record<string, string> } },
  attempt: number,
): boolean {
  return attempt === 1 && copy.metadata.annotations?.[FLEET_SEED_ANNOTATION] !== undefined;
}

/**
 * How a checkpoint travels through Loom's API (a Loom member's checkpoint route): a tar of its
 * regular files (lib/tar.ts), the job's uid in the member as `?uid=` so that a job of the same
 * name made meanwhile is never read or seeded instead.
 */
export const CHECKPOINT_MEDIA_TYPE = "application/x-tar";

/** The step a checkpoint's loom.json says ({"step": N}), undefined where it says none. */
export function checkpointStep(files: Map<string, Buffer>): number | undefined {
  try {
    const step = (JSON.parse(files.get("loom.json")?.toString("utf8") ?? "") as { step?: unknown }).step;
    return typeof step === "number" && Number.isFinite(step) ? step : undefined;
  } catch {
    return undefined;
  }
}

/** How long a member may stay unreachable before its running work is re-admitted elsewhere. */
export const DEFAULT_CLUSTER_LOST_TIMEOUT = "30s";

export const CLUSTER_SOURCE_RULE = "name exactly one of platform: self or kubeconfigSecret";

export const ClusterSpec = z
  .strictObject({
    platform: z
      .enum(["self"])
      .optional()
      .describe("self: the control plane's own platform (always a member; no kubeconfig needed)."),
    kubeconfigSecret: z
      .strictObject({
        name: z.string().min(1).describe("The secret's name (loom apply --kubeconfig-file stores it)."),
      })
      .optional()
      .describe(
        "The member's kubeconfig, held as a secret in the control plane's store: never part of the object, never returned to readers.",
      ),
    api: z
      .enum(["kubernetes", "loom"])
      .optional()
      .describe(
        "How the control plane speaks to the member: kubernetes (default; its API server, with Loom's CRDs and operator) or loom (a Loom API server such as another `loom up`; the kubeconfig's server and token are its URL and token).",
      ),
    clusterLostTimeout: z
      .string()
      .regex(/^\d+(ms|s|m)$/, 'a duration such as "30s" or "2m"')
      .optional()
      .describe(
        'How long the member may be unreachable before its running work is re-admitted elsewhere (default "30s").',
      ),
    unschedulable: z
      .boolean()
      .optional()
      .describe("Take no new work here (running work stays), as kubectl cordon does for a node."),
  })
  .refine((s) => (s.platform === "self") !== (s.kubeconfigSecret !== undefined), CLUSTER_SOURCE_RULE)
  .describe(
    "A member of the fleet: a Kubernetes cluster running Loom's CRDs and operator, or this platform.",
  );

const PoolCapacity = z.object({
  name: z.string(),
  nodes: z.number(),
  gpu: z.number(),
  cpuMillis: z.number(),
  memoryBytes: z.number(),
  /**
   * What the one queue may still place there: the pool's capacity less what the control plane
   * placed and what the member's own work holds (jobs submitted to it directly, plain pods).
   */
  free: z.object({ gpu: z.number(), cpuMillis: z.number(), memoryBytes: z.number() }).optional(),
});

export const ClusterStatus = z.object({
  phase: z.enum(["Ready", "Unreachable", "Pending"]).optional(),
  /** When the control plane last reached the member. */
  lastSeen: z.string().optional(),
  /** Since when it has been unreachable (unset while it answers). */
  unreachableSince: z.string().optional(),
  version: z.object({ kubernetes: z.string().optional(), loom: z.string().optional() }).optional(),
  /** Capacity by node pool, from the member's nodes. */
  pools: z.array(PoolCapacity).optional(),
  /** "8 GPU, 64 CPU (2 pools)": what `loom get clusters` prints. */
  capacityText: z.string().optional(),
  /** "2 GPU, 60 CPU, 250Gi": what the one queue may still place there, all pools together. */
  freeText: z.string().optional(),
  conditions: z.array(z.any()).optional(),
});

export type ClusterSpec = z.output<typeof ClusterSpec>;
export type PoolCapacity = z.output<typeof PoolCapacity>;
export interface ClusterStatus extends Omit<z.output<typeof ClusterStatus>, "conditions"> {
  conditions?: Condition[];
}
export type Cluster = Resource<ClusterSpec, ClusterStatus>;

/** Milliseconds of a duration as the spec writes it ("30s", "500ms", "2m"). */
export function durationMs(text: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  if (!m) throw new Error(`not a duration: ${text}`);
  const n = Number(m[1]);
  return m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : n * 60_000;
}

/** The timeout after which a member's work moves elsewhere. */
export function clusterLostTimeoutMs(c: Cluster): number {
  return durationMs(c.spec.clusterLostTimeout ?? DEFAULT_CLUSTER_LOST_TIMEOUT);
}

/** The secret name `loom apply --kubeconfig-file` stores a member's kubeconfig under. */
export function kubeconfigSecretName(cluster: string): string {
  return `cluster-${cluster}-kubeconfig`;
}

/** "8 GPU, 64 CPU, 256Gi (2 pools)" from pools' capacity. */
export function capacityText(pools: PoolCapacity[]): string {
  const gpu = pools.reduce((s, p) => s + p.gpu, 0);
  const cpu = pools.reduce((s, p) => s + p.cpuMillis, 0) / 1000;
  const gib = Math.round(pools.reduce((s, p) => s + p.memoryBytes, 0) / 2 ** 30);
  const names = pools.map((p) => `${p.name}:${p.nodes}`).join(",");
  return `${gpu} GPU, ${Math.round(cpu * 10) / 10} CPU, ${gib}Gi [${names}]`;
}

/** "2 GPU, 60 CPU, 250Gi" from pools' free capacity (undefined when no pool says it). */
export function freeText(pools: PoolCapacity[]): string | undefined {
  if (!pools.some((p) => p.free)) return undefined;
  const sum = (f: (v: NonNullable<PoolCapacity["free"]>) => number) =>
    pools.reduce((s, p) => s + (p.free ? f(p.free) : 0), 0);
  const gpu = Math.round(sum((f) => f.gpu) * 100) / 100;
  const cpu = Math.round(sum((f) => f.cpuMillis) / 100) / 10;
  return `${gpu} GPU, ${cpu} CPU, ${Math.round(sum((f) => f.memoryBytes) / 2 ** 30)}Gi`;
}

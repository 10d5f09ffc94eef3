import { FLEET_HOLDER_ANNOTATION, FLEET_UID_LABEL } from "../../api/cluster.js";
import { countOf, type NodeCapacity, type NodeUse } from "../../ports/scheduler.js";
import type { KubeClient } from "./client.js";
import { podRequest } from "./external.js";
import { LABELS as L } from "./naming.js";
import { isTerminal, type Pod } from "./pods.js";

/** A copy a control plane made in this member, as the pod accounting reads it. */
export interface CopyMeta {
  metadata: { uid?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
}

/**
 * What work `holder` did not place holds on each node of a Kubernetes member: every pod bound to
 * a node and not finished, by its requests (cpu, memory, nvidia.com/gpu; the largest init
 * container too), except the pods of the copies `holder` made (label loom.dev/fleet-uid, and its
 * name in loom.dev/fleet-control-plane, or none: made before copies carried it), which the
 * control plane counts by their admissions. A pod whose requests cannot be read counts as nothing.
 */
export function usedByOthers(pods: Pod[], copies: CopyMeta[], holder: string): Map<string, NodeUse> {
  const ours = new Set<string>();
  for (const c of copies) {
    const m = c?.metadata;
    const by = m?.annotations?.[FLEET_HOLDER_ANNOTATION];
    if (m?.uid && m.labels?.[FLEET_UID_LABEL] && (by === undefined || by === holder)) ours.add(m.uid);
  }
  const out = new Map<string, NodeUse>();
  for (const pod of pods) {
    const node = pod?.spec?.nodeName;
    if (typeof node !== "string" || !node || isTerminal(pod)) continue;
    const uid = pod.metadata?.labels?.[L.uid];
    if (uid && ours.has(uid)) continue;
    let r: { cpuMillis: number; memoryBytes: number; gpu: number };
    try {
      r = podRequest(pod);
    } catch {
      continue;
    }
    const u = out.get(node) ?? { cpuMillis: 0, memoryBytes: 0, gpu: 0, pods: 0 };
    u.cpuMillis += countOf(r.cpuMillis);
    u.memoryBytes += countOf(r.memoryBytes);
    u.gpu += Math.ceil(countOf(r.gpu));
    u.pods += 1;
    out.set(node, u);
  }
  return out;
}

/** The nodes, each with what others hold on it (only where they hold something). */
export function withUse(nodes: NodeCapacity[], use: Map<string, NodeUse>): NodeCapacity[] {
  return nodes.map((n) => {
    const u = use.get(n.name);
    return u ? { ...n, usedByOthers: u } : n;
  });
}

/**
 * Others' use of a member's nodes, read from its API server: pods bound to a node and not
 * finished (one LIST, by field selector), and the TrainingJob copies a control plane made there.
 * Credentials that may not list them count nothing, and `error` says why (the nodes then look
 * free of the member's own work).
 */
export async function readUsedByOthers(
  client: KubeClient,
  holder: string,
): Promise<{ use: Map<string, NodeUse>; error?: string }> {
  try {
    return { use: await read(client, holder) };
  } catch (err) {
    return { use: new Map(), error: err instanceof Error ? err.message : String(err) };
  }
}

async function read(client: KubeClient, holder: string): Promise<Map<string, NodeUse>> {
  const [pods, copies] = await Promise.all([
    client.request<{ items: Pod[] }>("GET", "/api/v1/pods", {
      // From the API server's watch cache (resourceVersion 0): a probe every few seconds reads no etcd.
      query: {
        fieldSelector: "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed",
        resourceVersion: "0",
      },
    }),
    client.request<{ items: CopyMeta[] }>("GET", "/apis/loom.dev/v1alpha1/trainingjobs", {
      query: { labelSelector: FLEET_UID_LABEL, resourceVersion: "0" },
    }),
  ]);
  return usedByOthers(
    Array.isArray(pods?.items) ? pods.items : [],
    Array.isArray(copies?.items) ? copies.items : [],
    holder,
  );
}

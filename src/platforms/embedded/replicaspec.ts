import type { RevisionSpec } from "../../ports/runtime.js";
import type { PodRequest } from "../../ports/scheduler.js";

/** Small pure helpers of the embedded replicas (replicas.ts): names, requests, the readiness probe. */

/** Whether a replica answers its readiness path with 2xx (within a second). */
export async function httpProbe(host: string, port: number, path: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${host}:${port}${path}`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

export function revisionKey(project: string, revision: string): string {
  return `${project}/${revision}`;
}

/** The id a replica has in the scheduler's queue and messages: "project/SERVICE-N-rK". */
export function externalId(project: string, replica: string): string {
  return `${project}/${replica}`;
}

export function requestOf(spec: RevisionSpec): PodRequest {
  const a = spec.worker.allocation;
  return { cpuMillis: a.cpuMillis, memoryBytes: a.memoryBytes, gpu: gpuRequest(spec) };
}

/** The revision's GPU request, fractions included (the worker's allocation lists whole devices only). */
export function gpuRequest(spec: RevisionSpec): number {
  return spec.gpu ?? spec.worker.allocation.gpus.length;
}

export function needsPlace(r: PodRequest): boolean {
  return r.cpuMillis > 0 || r.memoryBytes > 0 || r.gpu > 0;
}

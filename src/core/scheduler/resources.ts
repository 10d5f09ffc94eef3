import type { PodRequest, ProjectPolicy, Vec } from "./model.js";

/** Tolerance for comparing fractional GPU sums. */
export const EPS = 1e-9;

/** A gang's total cpu, memory and GPUs, memory-sized GPU shares counted against the largest device. */
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

/** a + b, per resource. */
export function add(a: Vec, b: Vec): Vec {
  return { gpu: a.gpu + b.gpu, cpu: a.cpu + b.cpu, memory: a.memory + b.memory };
}

/** a − b, per resource. */
export function sub(a: Vec, b: Vec): Vec {
  return { gpu: a.gpu - b.gpu, cpu: a.cpu - b.cpu, memory: a.memory - b.memory };
}

/** A partial vector with its missing resources as 0. */
export function fill(v: Partial<Vec>): Vec {
  return { gpu: v.gpu ?? 0, cpu: v.cpu ?? 0, memory: v.memory ?? 0 };
}

/** GPUs are what GPU work competes for; CPU-only work competes for CPU and memory. */
export function contested(req: Vec): Vec {
  return req.gpu > EPS ? { gpu: req.gpu, cpu: 0, memory: 0 } : { gpu: 0, cpu: req.cpu, memory: req.memory };
}

/**
 * A project's deserved quota as the rules read it: no GPU quota means none deserved (all its GPU
 * work borrows); no CPU or memory quota means those are not limited by quota.
 */
export function deservedOf(p: ProjectPolicy): Partial<Vec> {
  return { ...p.deserved, gpu: p.deserved.gpu ?? 0 };
}

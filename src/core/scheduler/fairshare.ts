import { type ProjectPolicy, RESOURCES, type Vec } from "./model.js";

const EPS = 1e-9;

export type Usage = Vec;

export function zero(): Vec {
  return { gpu: 0, cpu: 0, memory: 0 };
}

/** Whether `v` stays within `cap` on every resource the request `req` asks for. */
export function within(v: Vec, cap: Partial<Vec>, req: Vec): boolean {
  for (const r of RESOURCES) {
    if (req[r] <= EPS) continue;
    const c = cap[r];
    if (c === undefined) continue;
    if (v[r] > c + EPS) return false;
  }
  return true;
}

/**
 * Each project's fair share of each resource, by weighted water-filling: first its deserved
 * quota (up to what it asks for), then the rest of the cluster split among projects that ask
 * for more, in proportion to their over-quota weight, none getting more than it asks for or
 * than its limit. What one project does not need flows to the others.
 */
export function fairShares(
  projects: ProjectPolicy[],
  capacity: Vec,
  demand: Map<string, Vec>,
): Map<string, Vec> {
  const out = new Map<string, Vec>();
  for (const p of projects) out.set(p.name, zero());
  for (const r of RESOURCES) {
    let remaining = capacity[r];
    const want = new Map<string, number>();
    for (const p of projects) {
      const d = demand.get(p.name)?.[r] ?? 0;
      const cap = Math.min(d, p.limit?.[r] ?? Number.POSITIVE_INFINITY);
      const base = Math.min(p.deserved[r] ?? 0, cap);
      out.get(p.name)![r] = base;
      remaining -= base;
      if (cap - base > EPS && p.overQuotaWeight > 0) want.set(p.name, cap - base);
    }
    remaining = Math.max(0, remaining);
    const weight = (name: string) => projects.find((p) => p.name === name)!.overQuotaWeight;
    while (remaining > EPS && want.size > 0) {
      let total = 0;
      for (const name of want.keys()) total += weight(name);
      // The level at which the first project is satisfied, or the level the remainder reaches.
      let level = remaining / total;
      for (const [name, w] of want) level = Math.min(level, w / weight(name));
      for (const [name, w] of [...want]) {
        const give = level * weight(name);
        out.get(name)![r] += give;
        remaining -= give;
        if (w - give <= EPS) want.delete(name);
        else want.set(name, w - give);
      }
    }
  }
  return out;
}

/**
 * Fair shares computed pool by pool, then summed: projects compete only for the pools they may
 * use (Project.spec.nodePools). A project that may use several pools brings to each a part of
 * its deserved quota, limit and demand in proportion to that pool's capacity. With one pool this
 * is exactly fairShares over the cluster.
 */
export function fairSharesByPool(
  projects: ProjectPolicy[],
  pools: Map<string, Vec>,
  demand: Map<string, Vec>,
): Map<string, Vec> {
  const out = new Map<string, Vec>();
  for (const p of projects) out.set(p.name, zero());
  const eligible = new Map<string, Vec>();
  for (const p of projects) {
    const e = zero();
    for (const [pool, cap] of pools) {
      if (p.nodePools && !p.nodePools.includes(pool)) continue;
      for (const r of RESOURCES) e[r] += cap[r];
    }
    eligible.set(p.name, e);
  }
  for (const [pool, cap] of pools) {
    const parts = projects.filter((p) => !p.nodePools || p.nodePools.includes(pool));
    const scaledDemand = new Map<string, Vec>();
    const scaled = parts.map((p) => {
      const e = eligible.get(p.name)!;
      const f = (r: (typeof RESOURCES)[number]) => (e[r] > 0 ? cap[r] / e[r] : 0);
      const scale = (v: Partial<Vec> | undefined) => {
        if (!v) return undefined;
        const o: Partial<Vec> = {};
        for (const r of RESOURCES) if (v[r] !== undefined) o[r] = v[r]! * f(r);
        return o;
      };
      const d = demand.get(p.name) ?? zero();
      scaledDemand.set(p.name, {
        gpu: d.gpu * f("gpu"),
        cpu: d.cpu * f("cpu"),
        memory: d.memory * f("memory"),
      });
      const limit = scale(p.limit);
      return { ...p, deserved: scale(p.deserved)!, ...(limit ? { limit } : {}) };
    });
    const shares = fairShares(scaled, cap, scaledDemand);
    for (const [name, v] of shares) {
      const o = out.get(name)!;
      for (const r of RESOURCES) o[r] += v[r];
    }
  }
  return out;
}

/**
 * Which project is served next (lower first): projects below their deserved quota before the
 * rest, ordered by how much of it they use; the rest by weighted over-quota dominant share —
 * the largest fraction of any cluster resource they use beyond their deserved quota, divided by
 * their weight (Dominant Resource Fairness over borrowed capacity).
 */
export function projectOrderKey(p: ProjectPolicy, usage: Vec, capacity: Vec): [number, number] {
  let ratio = 0;
  let hasDeserved = false;
  for (const r of RESOURCES) {
    const d = p.deserved[r] ?? 0;
    if (d <= 0) continue;
    hasDeserved = true;
    ratio = Math.max(ratio, usage[r] / d);
  }
  if (hasDeserved && ratio < 1 - EPS) return [0, ratio];
  let dominant = 0;
  for (const r of RESOURCES) {
    if (capacity[r] <= 0) continue;
    dominant = Math.max(dominant, Math.max(0, usage[r] - (p.deserved[r] ?? 0)) / capacity[r]);
  }
  return [1, p.overQuotaWeight > 0 ? dominant / p.overQuotaWeight : Number.POSITIVE_INFINITY];
}

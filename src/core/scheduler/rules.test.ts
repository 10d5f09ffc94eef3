import { describe, expect, it } from "vitest";
import type { ProjectPolicy, SchedNode, Workload } from "./model.js";
import { admit, neverFits, othersWaitBelowFairShare } from "./rules.js";
import { CycleState } from "./state.js";

const GiB = 2 ** 30;
const node = (name: string, gpus: number, pool?: string): SchedNode => ({
  name,
  ...(pool && { pool }),
  cpuMillis: 8000,
  memoryBytes: 64 * GiB,
  gpus: Array.from({ length: gpus }, (_, i) => ({ id: `${name}-g${i}` })),
});
const job = (gpu: number, o: Partial<Workload> = {}): Workload => ({
  id: "w",
  name: "p/w",
  project: "p",
  priority: 0,
  preemptible: true,
  createdAt: "2025-01-01T00:00:00.000Z",
  pods: [{ cpuMillis: 1000, memoryBytes: GiB, gpu }],
  ...o,
});
const cycle = (nodes: SchedNode[], projects: ProjectPolicy[]) =>
  new CycleState({ nodes, projects, running: [], pending: [] });

describe("admit", () => {
  it("refuses a pool the project may not use, then a pool no node carries", () => {
    const s = cycle([node("a", 1, "x")], [{ name: "p", deserved: {}, overQuotaWeight: 1, nodePools: ["x"] }]);
    expect(admit(s, job(1, { nodePool: "y" }), s.project("p"), []).pending?.reason).toBe(
      "NodePoolNotAllowed",
    );
    const open = cycle([node("a", 1, "x")], []);
    const r = admit(open, job(1, { nodePool: "y" }), open.project("p"), []);
    expect(r.pending?.message).toContain('node pool "y" does not exist');
  });

  it("refuses a gang no node could ever hold", () => {
    const s = cycle([node("a", 2)], []);
    expect(admit(s, job(4), s.project("p"), []).pending?.reason).toBe("ExceedsNodeCapacity");
  });

  it("refuses going over the project's limit, and names both figures", () => {
    const s = cycle(
      [node("a", 8)],
      [{ name: "p", deserved: { gpu: 8 }, limit: { gpu: 1 }, overQuotaWeight: 1 }],
    );
    expect(admit(s, job(2), s.project("p"), []).pending).toMatchObject({
      reason: "OverLimit",
      message: "project p would use gpu 2, cpu 1, memory 1Gi, over its limit of gpu 1, cpu 0, memory 0",
    });
  });

  it("keeps non-preemptible work within deserved quota", () => {
    const s = cycle([node("a", 8)], [{ name: "p", deserved: { gpu: 1 }, overQuotaWeight: 1 }]);
    expect(admit(s, job(2, { preemptible: false }), s.project("p"), []).pending?.reason).toBe(
      "NonPreemptibleOverQuota",
    );
  });

  it("lets through what passes every rule, saying whether it is within deserved quota", () => {
    const s = cycle([node("a", 8)], [{ name: "p", deserved: { gpu: 1 }, overQuotaWeight: 1 }]);
    const within = admit(s, job(1), s.project("p"), []);
    expect(within).toMatchObject({ withinDeserved: true, req: { gpu: 1, cpu: 1000, memory: GiB } });
    expect(admit(s, job(2), s.project("p"), [])).toMatchObject({ withinDeserved: false });
  });
});

describe("othersWaitBelowFairShare", () => {
  it("holds a project back only while another that wants more is below its share", () => {
    const s = cycle([node("a", 8)], []);
    const p = s.project("p");
    const q = s.project("q");
    q.fair = { gpu: 4, cpu: 0, memory: 0 };
    expect(othersWaitBelowFairShare(s, p, { gpu: 1, cpu: 0, memory: 0 })).toBe(false); // q wants nothing
    q.wants = { gpu: 2, cpu: 0, memory: 0 };
    expect(othersWaitBelowFairShare(s, p, { gpu: 1, cpu: 0, memory: 0 })).toBe(true);
    expect(othersWaitBelowFairShare(s, p, { gpu: 0, cpu: 1, memory: 0 })).toBe(false); // not contested
  });
});

describe("neverFits", () => {
  it("says so when the gang is more than all eligible nodes together", () => {
    const s = cycle([node("a", 2), node("b", 2)], []);
    const gang = job(2, {
      pods: Array.from({ length: 3 }, () => ({ cpuMillis: 1, memoryBytes: 1, gpu: 2 })),
    });
    expect(neverFits(s, gang, s.cluster.nodes)).toMatch(/^the gang needs 3 pod\(s\) with gpu 6/);
    expect(neverFits(s, job(2), s.cluster.nodes)).toBeUndefined();
  });
});

import { describe, expect, it } from "vitest";
import { Autoscaler, type AutoscalerParams } from "./autoscaler.js";

const base: AutoscalerParams = { minReplicas: 0, maxReplicas: 10, targetConcurrency: 4 };

/** Holds `c` concurrent requests from `from` to `to`, deciding every second; returns the decisions. */
function drive(a: Autoscaler, from: number, to: number, c: number, ready: () => number) {
  const out: { t: number; desired: number; panic: boolean }[] = [];
  a.record(from, c);
  for (let t = from + 1000; t <= to; t += 1000) {
    const d = a.decide(t, ready());
    out.push({ t, desired: d.desired, panic: d.panic });
  }
  return out;
}

describe("Autoscaler", () => {
  it("scales to ceil(average concurrency / target) at steady load", () => {
    const a = new Autoscaler(base, 0);
    let ready = 1;
    const ds = drive(a, 0, 120_000, 10, () => ready);
    // The panic window sees 10 at once: 3 replicas; 3 ≥ 2·1 is a panic, so it goes there fast.
    expect(ds[5]!.desired).toBe(3);
    ready = 3;
    expect(ds.at(-1)!.desired).toBe(3);
    const d = a.decide(121_000, 3);
    expect(d.desired).toBe(3);
    expect(d.stableConcurrency).toBeCloseTo(10);
  });

  it("panics when the panic window wants twice the ready replicas; below that the stable average rules", () => {
    const a = new Autoscaler({ ...base, minReplicas: 1 }, 0);
    drive(a, 0, 60_000, 4, () => 1); // one replica, exactly at target
    a.record(60_000, 7);
    // Panic window (6 s): (5·4 + 1·7)/6 = 4.5 → 2 replicas, which is 2× the one ready: panic.
    expect(a.decide(61_000, 1).panic).toBe(true);

    const calm = new Autoscaler({ ...base, minReplicas: 1, panicThreshold: 3 }, 0);
    drive(calm, 0, 60_000, 4, () => 1);
    calm.record(60_000, 7);
    // Stable average over 61 s ≈ 4.05 → ceil(4.05/4) = 2, no panic at threshold 3.
    const d = calm.decide(61_000, 1);
    expect(d).toMatchObject({ desired: 2, panic: false });
    expect(d.stableConcurrency).toBeCloseTo(4 + 3 / 61, 2);
  });

  it("enters panic on a burst, never scales down during it, and leaves after a stable window", () => {
    const a = new Autoscaler({ ...base, minReplicas: 1 }, 0);
    drive(a, 0, 60_000, 2, () => 1);
    // Burst: 40 concurrent. The panic window (6 s) sees it long before the stable one.
    a.record(60_000, 40);
    const d1 = a.decide(61_000, 1);
    expect(d1.panic).toBe(true);
    // One second of 40 within 6 s, average ≈ 40/6·… (6 s window since t=55 s: (5·2+1·40)/6 ≈ 8.3) → 3.
    expect(d1.desired).toBeGreaterThanOrEqual(3);
    const d2 = a.decide(66_000, 3);
    expect(d2.desired).toBe(10);
    // The burst ends: concurrency drops to 1, but panic holds the count.
    a.record(66_000, 1);
    for (let t = 67_000; t < 126_000; t += 1000) {
      const d = a.decide(t, 10);
      expect(d.panic).toBe(true);
      expect(d.desired).toBe(10);
    }
    // A full stable window after the last over-threshold decision: panic ends, scale down begins.
    const after = a.decide(127_000, 10);
    expect(after.panic).toBe(false);
    expect(after.desired).toBeLessThan(10);
    expect(after.desired).toBeGreaterThanOrEqual(5); // at most halves per decision
  });

  it("respects min and max", () => {
    const a = new Autoscaler({ ...base, minReplicas: 2, maxReplicas: 4 }, 0);
    const ds = drive(a, 0, 30_000, 100, () => 4);
    expect(Math.max(...ds.map((d) => d.desired))).toBe(4);
    a.record(30_000, 0);
    expect(a.decide(500_000, 4).desired).toBe(2);
  });

  it("delays scale-down by scaleDownDelay", () => {
    const a = new Autoscaler({ ...base, minReplicas: 1, scaleDownDelayMs: 30_000, maxScaleDownRate: 100 }, 0);
    drive(a, 0, 120_000, 16, () => 4);
    expect(a.decide(120_000, 4).desired).toBe(4);
    a.record(120_000, 4);
    // The stable average reaches ~1 replica's worth after a window; hold 4 for 30 s beyond the last 4.
    const ds = drive(a, 120_000, 240_000, 4, () => 4);
    const firstLower = ds.find((d) => d.desired < 4)!;
    const lastFour = ds.filter((d) => d.desired === 4).at(-1)!;
    expect(firstLower.t).toBeGreaterThan(120_000);
    // Without the delay the stable average would have wanted fewer than 4 well before this point.
    const nodelay = new Autoscaler({ ...base, minReplicas: 1, maxScaleDownRate: 100 }, 0);
    drive(nodelay, 0, 120_000, 16, () => 4);
    nodelay.decide(120_000, 4);
    const nd = drive(nodelay, 120_000, 240_000, 4, () => 4);
    const ndFirstLower = nd.find((d) => d.desired < 4)!;
    expect(firstLower.t - ndFirstLower.t).toBeGreaterThanOrEqual(29_000);
    expect(lastFour.t).toBeLessThan(firstLower.t);
  });

  it("scales to zero after scaleToZeroAfter without requests, only when min is 0", () => {
    const a = new Autoscaler({ ...base, scaleToZeroAfterMs: 30_000 }, 0);
    drive(a, 0, 10_000, 2, () => 1);
    a.record(10_000, 0);
    expect(a.decide(20_000, 1).desired).toBe(1);
    expect(a.decide(39_000, 1).desired).toBe(1);
    const z = a.decide(40_000, 1);
    expect(z.desired).toBe(0);
    expect(z.reason).toMatch(/no requests for 30 s/);
    // A new request: back to at least one.
    a.record(41_000, 1);
    expect(a.decide(41_500, 0).desired).toBe(1);

    const kept = new Autoscaler({ ...base, minReplicas: 1, scaleToZeroAfterMs: 1000 }, 0);
    expect(kept.decide(100_000, 1).desired).toBe(1);
  });

  it("keeps a never-used revision at zero and scales it from zero on the first held request", () => {
    const a = new Autoscaler(base, 0);
    expect(a.decide(5_000, 0).desired).toBe(0);
    a.record(5_000, 9); // nine held by the activator
    expect(a.decide(6_000, 0).desired).toBe(3);
  });

  it("keeps a new revision's starting replica until it has been ready, then idle for scaleToZeroAfter", () => {
    const a = new Autoscaler({ ...base, scaleToZeroAfterMs: 10_000 }, 0);
    // Starting (not ready): kept, so that the revision proves itself ready once — also when
    // loading its model takes longer than scaleToZeroAfter (CI: stopped 12 s in, never ready).
    expect(a.decide(1_000, 0, 1).desired).toBe(1);
    expect(a.decide(15_000, 0, 1).desired).toBe(1);
    // Ready at 16 s: idle from then on.
    expect(a.decide(16_000, 1).desired).toBe(1);
    expect(a.decide(25_000, 1).desired).toBe(1);
    const z = a.decide(26_000, 1);
    expect(z.desired).toBe(0);
    expect(z.reason).toMatch(/no requests for 10 s/);
  });

  it("does not scale below the running count before it has seen a full stable window", () => {
    // A restarted gateway knows nothing of the last minute: five running replicas stay.
    const a = new Autoscaler({ ...base, minReplicas: 1 }, 0);
    a.record(0, 1);
    const early = a.decide(30_000, 5);
    expect(early.desired).toBe(5);
    expect(early.reason).toMatch(/collecting a full stable window/);
    // After a window: ceil(1/4) = 1, but at most halving per decision.
    expect(a.decide(60_000, 5).desired).toBe(3);
  });

  it("time-weights irregular samples", () => {
    const a = new Autoscaler({ ...base, stableWindowMs: 10_000, bucketMs: 1000 }, 0);
    a.record(0, 8);
    a.record(5_000, 0);
    expect(a.decide(10_000, 1).stableConcurrency).toBeCloseTo(4);
    // Idle for an hour, then decide: no work proportional to the gap, average is 0.
    expect(a.decide(3_600_000, 1).stableConcurrency).toBe(0);
  });
});

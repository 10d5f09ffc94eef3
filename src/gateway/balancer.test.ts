import { describe, expect, it } from "vitest";
import { Balancer, hash32, type Lease, type Replica } from "./balancer.js";

const replicas = (n: number): Replica[] =>
  Array.from({ length: n }, (_, i) => ({ id: `r${i}`, host: "127.0.0.1", port: 9000 + i }));

function clock(start = 0) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe("Balancer: least outstanding", () => {
  it("sends each new request to the replica with the fewest in flight", () => {
    const b = new Balancer({ tieBreak: "round-robin" });
    b.update(replicas(3));
    const leases = Array.from({ length: 6 }, () => b.pick()!);
    expect(["r0", "r1", "r2"].map((id) => b.inFlight(id))).toEqual([2, 2, 2]);
    // Free two on r1: the next two go there.
    for (const l of leases.filter((l) => l.replica.id === "r1")) l.release("success");
    expect(b.pick()!.replica.id).toBe("r1");
    expect(b.pick()!.replica.id).toBe("r1");
    expect(b.totalInFlight()).toBe(6);
  });

  it("breaks ties at random with the injected source", () => {
    const b = new Balancer({ random: () => 0.99 });
    b.update(replicas(3));
    expect(b.pick()!.replica.id).toBe("r2");
  });

  it("round-robins among ties", () => {
    const b = new Balancer({ tieBreak: "round-robin" });
    b.update(replicas(3));
    const seen = Array.from({ length: 3 }, () => {
      const l = b.pick()!;
      l.release("success");
      return l.replica.id;
    });
    expect(new Set(seen).size).toBe(3);
  });

  it("skips excluded replicas and returns undefined when nothing is left", () => {
    const b = new Balancer();
    b.update(replicas(2));
    expect(b.pick({ exclude: new Set(["r0"]) })!.replica.id).toBe("r1");
    expect(b.pick({ exclude: new Set(["r0", "r1"]) })).toBeUndefined();
    expect(new Balancer().pick()).toBeUndefined();
  });

  it("keeps counters across membership updates and ignores double release", () => {
    const b = new Balancer();
    b.update(replicas(2));
    const l = b.pick({ exclude: new Set(["r1"]) })!;
    b.update([...replicas(2), { id: "r9", host: "h", port: 1 }]);
    expect(b.inFlight("r0")).toBe(1);
    l.release("success");
    l.release("success");
    expect(b.inFlight("r0")).toBe(0);
    expect(b.size).toBe(3);
  });
});

describe("Balancer: ejection", () => {
  it("ejects after N consecutive failures and lets one trial through after the backoff", () => {
    const c = clock();
    const changes: string[] = [];
    const b = new Balancer({
      now: c.now,
      ejection: { consecutiveFailures: 3, baseEjectionMs: 1000 },
      onHealthChange: (r, ok) => changes.push(`${r.id}:${ok}`),
      tieBreak: "round-robin",
    });
    b.update(replicas(2));
    const fail = (id: string) =>
      b.pick({ exclude: new Set(id === "r0" ? ["r1"] : ["r0"]) })!.release("failure");
    fail("r0");
    fail("r0");
    b.pick({ exclude: new Set(["r1"]) })!.release("success"); // resets the streak
    fail("r0");
    fail("r0");
    expect(b.isEjected("r0")).toBe(false);
    fail("r0");
    expect(b.isEjected("r0")).toBe(true);
    expect(changes).toEqual(["r0:false"]);
    // While ejected, everything goes to r1.
    for (let i = 0; i < 5; i++) expect(b.pick()!.replica.id).toBe("r1");

    c.t = 1000;
    const trial = b.pick()!;
    expect(trial.replica.id).toBe("r0");
    // Only one trial at a time.
    expect(b.pick()!.replica.id).toBe("r1");
    trial.release("failure");
    // Failed trial: backoff doubles.
    c.t = 2500;
    expect(b.pick()!.replica.id).toBe("r1");
    c.t = 3000;
    const trial2 = b.pick()!;
    expect(trial2.replica.id).toBe("r0");
    trial2.release("success");
    expect(b.isEjected("r0")).toBe(false);
    expect(changes).toEqual(["r0:false", "r0:true"]);
  });

  it("a trial that ends neutral (client left) is retried at once", () => {
    const c = clock();
    const b = new Balancer({ now: c.now, ejection: { consecutiveFailures: 1, baseEjectionMs: 100 } });
    b.update(replicas(1));
    b.pick()!.release("failure");
    c.t = 100;
    b.pick()!.release("neutral");
    expect(b.isEjected("r0")).toBe(true);
    b.pick()!.release("success");
    expect(b.isEjected("r0")).toBe(false);
  });

  it("fails open when every replica is ejected, unless told not to", () => {
    const b = new Balancer({ ejection: { consecutiveFailures: 1 } });
    b.update(replicas(1));
    b.pick()!.release("failure");
    expect(b.isEjected("r0")).toBe(true);
    expect(b.pick()!.replica.id).toBe("r0");
    const strict = new Balancer({ ejection: { consecutiveFailures: 1 }, failOpen: false });
    strict.update(replicas(1));
    strict.pick()!.release("failure");
    expect(strict.pick()).toBeUndefined();
  });

  it("uses the probe function instead of a live request when given", async () => {
    const c = clock();
    const probed: string[] = [];
    let answer = false;
    const b = new Balancer({
      now: c.now,
      ejection: { consecutiveFailures: 1, baseEjectionMs: 100 },
      failOpen: false,
      probe: async (r) => {
        probed.push(r.id);
        return answer;
      },
    });
    b.update(replicas(2));
    b.pick({ exclude: new Set(["r1"]) })!.release("failure");
    c.t = 100;
    expect(b.pick()!.replica.id).toBe("r1");
    expect(probed).toEqual(["r0"]);
    await Promise.resolve();
    expect(b.isEjected("r0")).toBe(true);
    c.t = 150; // backoff doubled to 200
    b.pick();
    expect(probed).toEqual(["r0"]);
    c.t = 300;
    answer = true;
    b.pick();
    await Promise.resolve();
    expect(b.isEjected("r0")).toBe(false);
  });
});

describe("Balancer: prefix affinity", () => {
  it("sends the same prefix to the same replica while load is even", () => {
    const b = new Balancer({ affinity: { prefixChars: 16 } });
    b.update(replicas(4));
    const first = b.pick({ key: "You are a helpful assistant. Q1" })!;
    first.release("success");
    for (let i = 0; i < 10; i++) {
      const l = b.pick({ key: `You are a helpful assistant. Q${i}` })!;
      expect(l.replica.id).toBe(first.replica.id);
      l.release("success");
    }
  });

  it("spreads different prefixes over replicas", () => {
    const b = new Balancer({ affinity: { prefixChars: 32 } });
    b.update(replicas(4));
    const seen = new Set<string>();
    for (let i = 0; i < 64; i++) {
      const l = b.pick({ key: `system prompt number ${i}` })!;
      seen.add(l.replica.id);
      l.release("success");
    }
    expect(seen.size).toBe(4);
  });

  it("spills a hot prefix over once its replica is above (1+ε)·average", () => {
    const b = new Balancer({ affinity: { prefixChars: 8, epsilon: 0.5 } });
    b.update(replicas(4));
    const held: Lease[] = [];
    for (let i = 0; i < 40; i++) held.push(b.pick({ key: "hotprefix" })!);
    const loads = ["r0", "r1", "r2", "r3"].map((id) => b.inFlight(id));
    // Bound: ceil(1.5 · 40 / 4) = 15.
    expect(Math.max(...loads)).toBeLessThanOrEqual(15);
    expect(Math.max(...loads)).toBe(15);
    expect(loads.filter((x) => x > 0).length).toBeGreaterThan(1);
  });

  it("moves few keys when a replica is added (rendezvous)", () => {
    const pickAll = (b: Balancer) =>
      Array.from({ length: 200 }, (_, i) => {
        const l = b.pick({ key: `k${i}` })!;
        l.release("success");
        return l.replica.id;
      });
    const b = new Balancer({ affinity: { prefixChars: 10 } });
    b.update(replicas(4));
    const before = pickAll(b);
    b.update(replicas(5));
    const after = pickAll(b);
    const moved = before.filter((id, i) => after[i] !== id).length;
    // Ideal is 1/5 of keys; all moved keys go to the new replica.
    expect(moved).toBeLessThan(80);
    expect(after.filter((id, i) => id !== before[i]).every((id) => id === "r4")).toBe(true);
  });

  it("hash32 is stable and spread", () => {
    expect(hash32("abc")).toBe(hash32("abc"));
    expect(hash32("r1")).not.toBe(hash32("r2"));
  });
});

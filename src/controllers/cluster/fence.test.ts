import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { FENCED_CONDITION, FLEET_HOLDER_ANNOTATION, FLEET_UID_LABEL } from "../../api/cluster.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { FleetLease, FleetLeases } from "../../ports/fleet.js";
import { Fence, LeaseClock } from "./fence.js";

const lease = (renewal: string, durationSeconds = 15, holder = "cp"): FleetLease => ({
  holder,
  durationSeconds,
  renewal,
});

describe("LeaseClock: a lease is judged by this member's clock alone", () => {
  it("is live while renewals are seen within the duration, expired a duration after the last one seen", () => {
    const c = new LeaseClock();
    c.observe([lease("1")], 0);
    c.observe([lease("2")], 5_000);
    expect(c.state("cp", 19_999)).toEqual({ state: "live" });
    // The same record read again is no renewal: the clock runs from when "2" was first seen.
    c.observe([lease("2")], 10_000);
    c.observe([lease("2")], 19_000);
    const s = c.state("cp", 20_000);
    expect(s.state).toBe("expired");
    expect(s.state === "expired" && s.message).toMatch(
      /the control plane cp has not renewed its lease for 15s .*stopped so the job cannot run twice/,
    );
    // Renewed again: live again (a copy already fenced stays stopped: its condition says so).
    c.observe([lease("3")], 30_000);
    expect(c.state("cp", 30_001)).toEqual({ state: "live" });
  });

  it("never reads the record's own times: a renewal stamped far in the future or past counts when seen", () => {
    const c = new LeaseClock();
    // The token is opaque: whatever it says, only its change is a renewal.
    c.observe([lease("2099-01-01T00:00:00Z")], 0);
    c.observe([lease("1970-01-01T00:00:00Z")], 1_000);
    expect(c.state("cp", 15_999).state).toBe("live");
    expect(c.state("cp", 16_000).state).toBe("expired");
  });

  it("a lease found at start is unconfirmed until seen renewed, and expires if it never is", () => {
    const c = new LeaseClock();
    c.observe([lease("7", 4)], 100);
    expect(c.state("cp", 3_000)).toEqual({ state: "unconfirmed" });
    expect(c.state("cp", 4_100).state).toBe("expired");
    c.observe([lease("8", 4)], 5_000);
    expect(c.state("cp", 5_000)).toEqual({ state: "live" });
  });

  it("a failed read renews nothing; holders are apart; an unknown holder has no lease", () => {
    const c = new LeaseClock();
    c.observe([lease("1", 10, "a"), lease("1", 10, "b")], 0);
    c.observe([lease("2", 10, "a"), lease("2", 10, "b")], 1_000);
    c.observe([lease("3", 10, "a")], 8_000); // b's read nothing new (or failed)
    expect(c.state("a", 11_500).state).toBe("live");
    expect(c.state("b", 11_500).state).toBe("expired");
    expect(c.state("nobody", 11_500)).toEqual({ state: "none" });
  });
});

describe("Fence: which copies stop", () => {
  const copy = (extra: Partial<TrainingJob["metadata"]> = {}, status?: TrainingJob["status"]): TrainingJob =>
    ({
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: {
        name: "j",
        project: "p",
        uid: "u1",
        labels: { [FLEET_UID_LABEL]: "cp-uid" },
        annotations: { [FLEET_HOLDER_ANNOTATION]: "cp" },
        ...extra,
      },
      spec: { terminationGracePeriodSeconds: 30 },
      ...(status ? { status } : {}),
    }) as unknown as TrainingJob;

  function fenceWith(records: () => FleetLease[] | Error) {
    let now = 0;
    const expired: string[] = [];
    const leases: FleetLeases = {
      list: async () => {
        const r = records();
        if (r instanceof Error) throw r;
        return r;
      },
      renew: async () => undefined,
    };
    const fence = new Fence({
      leases,
      log: pino({ level: "silent" }),
      clock: () => now,
      onExpired: (h) => expired.push(h),
    });
    return { fence, expired, at: (t: number) => (now = t) };
  }

  it("stops the copies of a control plane whose lease lapsed, once, with a message; others run", async () => {
    let renewal = "1";
    let failing = false;
    const f = fenceWith(() => (failing ? new Error("connection refused") : [lease(renewal, 10)]));
    await f.fence.poll();
    f.at(2_000);
    renewal = "2";
    await f.fence.poll();
    expect(f.fence.verdict(copy())).toBeUndefined();
    // The partition: the member cannot even read (or the control plane stopped writing).
    failing = true;
    f.at(11_999);
    await f.fence.poll();
    expect(f.expired).toEqual([]);
    f.at(12_000);
    await f.fence.poll();
    await f.fence.poll();
    expect(f.expired).toEqual(["cp"]); // woken once
    const v = f.fence.verdict(copy());
    expect(v?.action).toBe("stop");
    // Not a fleet copy, or another control plane's: untouched.
    expect(f.fence.verdict(copy({ labels: {} }))).toBeUndefined();
    expect(f.fence.verdict(copy({ annotations: { [FLEET_HOLDER_ANNOTATION]: "other" } }))).toBeUndefined();
    // Grace: at most half the lease, so the workers end before the control plane re-admits.
    expect(f.fence.graceSeconds(copy())).toBe(5);
  });

  it("a copy fenced before stays stopped after the lease is renewed again (never restarts by itself)", async () => {
    const f = fenceWith(() => [lease("9", 10)]);
    await f.fence.poll();
    f.at(1_000);
    const fenced = copy({}, {
      conditions: [
        { type: FENCED_CONDITION, status: "True", reason: "LeaseExpired", message: "lapsed at 12:00" },
      ],
    } as TrainingJob["status"]);
    expect(f.fence.verdict(fenced)).toEqual({ action: "stop", message: "lapsed at 12:00" });
  });

  it("after a restart, copies wait until the lease is seen renewed", async () => {
    let renewal = "5";
    const f = fenceWith(() => [lease(renewal, 10)]);
    await f.fence.poll();
    expect(f.fence.verdict(copy())).toEqual({ action: "wait" });
    f.at(3_000);
    renewal = "6";
    await f.fence.poll();
    expect(f.fence.verdict(copy())).toBeUndefined();
  });
});

import type { Logger } from "pino";
import { FENCED_CONDITION, FLEET_HOLDER_ANNOTATION, FLEET_UID_LABEL } from "../../api/cluster.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { FleetLease, FleetLeases } from "../../ports/fleet.js";

/** How often a member reads the leases its control planes renew. */
export const FENCE_POLL_MS = 1000;

/** What the member knows of one control plane's lease. */
interface Seen {
  renewal: string;
  durationMs: number;
  /** By this process's clock: when the renewal was first seen (or when this process first looked). */
  at: number;
  /** Whether a renewal was seen change since this process started (not only the record it found). */
  live: boolean;
}

/** A holder's lease as this member's clock judges it. */
export type LeaseState =
  | { state: "none" }
  | { state: "live" }
  /** Found at start, not yet seen renewed by this process: copies do not start yet. */
  | { state: "unconfirmed" }
  | { state: "expired"; message: string };

/**
 * The member's clock over its control planes' leases (as client-go's leader election and the
 * kubelet's node lease judge them): a lease is renewed when its record changes, timed by this
 * process's own monotonic clock; the two machines' timestamps are never compared. A lease not
 * seen renewed for its duration has expired. A lease that cannot be read is not renewed.
 */
export class LeaseClock {
  private readonly seen = new Map<string, Seen>();

  /** Records what a read of the leases found at `now` (ms of a monotonic clock). */
  observe(leases: FleetLease[], now: number): void {
    for (const l of leases) {
      const prev = this.seen.get(l.holder);
      const durationMs = l.durationSeconds * 1000;
      if (!prev) this.seen.set(l.holder, { renewal: l.renewal, durationMs, at: now, live: false });
      else if (prev.renewal !== l.renewal)
        this.seen.set(l.holder, { renewal: l.renewal, durationMs, at: now, live: true });
    }
  }

  /** The holder's lease at `now`. */
  state(holder: string, now: number): LeaseState {
    const s = this.seen.get(holder);
    if (!s) return { state: "none" };
    const age = now - s.at;
    if (age >= s.durationMs)
      return {
        state: "expired",
        message: `the control plane ${holder} has not renewed its lease for ${Math.round(age / 1000)}s (lease ${s.durationMs / 1000}s, by this member's clock); stopped so the job cannot run twice — the control plane deletes this copy or admits the job again when it reaches this member`,
      };
    return s.live ? { state: "live" } : { state: "unconfirmed" };
  }

  /** The lease's duration in seconds, where one is known. */
  durationSeconds(holder: string): number | undefined {
    const s = this.seen.get(holder);
    return s ? s.durationMs / 1000 : undefined;
  }

  /** Holders whose lease is known. */
  holders(): string[] {
    return [...this.seen.keys()];
  }
}

export interface FenceDeps {
  leases: FleetLeases;
  log: Logger;
  /** A monotonic clock in ms (performance.now): never the wall clock, which may jump. */
  clock?: () => number;
  pollMs?: number;
  /** A holder's lease expired: its copies here are to be stopped (the caller wakes them). */
  onExpired(holder: string): void;
}

/**
 * The member's side of self-fencing (issue 23): reads the leases its control planes renew,
 * and says which copies must not run — those placed by a control plane whose lease it has not
 * seen renewed for the lease's duration. The TrainingJob loop asks it before it runs a copy.
 */
export class Fence {
  private readonly clock: LeaseClock = new LeaseClock();
  private readonly now: () => number;
  private readonly expired = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failing = false;

  constructor(private readonly deps: FenceDeps) {
    this.now = deps.clock ?? (() => performance.now());
  }

  /** Reads the leases now and then every pollMs. */
  async start(): Promise<void> {
    await this.poll();
    const loop = () => {
      this.timer = setTimeout(async () => {
        await this.poll();
        if (!this.stopped) loop();
      }, this.deps.pollMs ?? FENCE_POLL_MS);
      this.timer.unref();
    };
    loop();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One read of the leases; a failed read leaves the clock running (nothing was seen renewed). */
  async poll(): Promise<void> {
    try {
      this.clock.observe(await this.deps.leases.list(), this.now());
      if (this.failing) this.deps.log.info("the fleet's leases are readable again");
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.deps.log.warn({ err }, "cannot read the fleet's leases; their clocks run on");
      this.failing = true;
    }
    for (const holder of this.clock.holders()) {
      const s = this.clock.state(holder, this.now());
      if (s.state !== "expired") {
        this.expired.delete(holder);
        continue;
      }
      if (this.expired.has(holder)) continue;
      this.expired.add(holder);
      this.deps.log.warn({ holder }, s.message);
      this.deps.onExpired(holder);
    }
  }

  /**
   * Whether this copy must not run: "stop" with the message its status says (its control
   * plane's lease expired, or it was fenced before), "wait" while the lease found at start has
   * not been seen renewed yet, undefined to run as usual (not a fleet copy, or the lease is live).
   */
  verdict(job: TrainingJob): { action: "stop"; message: string } | { action: "wait" } | undefined {
    const held = job.status?.conditions?.find((c) => c.type === FENCED_CONDITION && c.status === "True");
    if (held) return { action: "stop", message: held.message ?? "fenced" };
    const holder = job.metadata.annotations?.[FLEET_HOLDER_ANNOTATION];
    if (!holder || !job.metadata.labels?.[FLEET_UID_LABEL]) return undefined;
    const s = this.clock.state(holder, this.now());
    if (s.state === "expired") return { action: "stop", message: s.message };
    if (s.state === "unconfirmed") return { action: "wait" };
    return undefined;
  }

  /**
   * The grace a fenced copy's workers get (SIGTERM to SIGKILL): the job's own, at most half the
   * lease, so they have stopped well before the control plane re-admits the job elsewhere.
   */
  graceSeconds(job: TrainingJob): number {
    const own = job.spec.terminationGracePeriodSeconds ?? 30;
    const holder = job.metadata.annotations?.[FLEET_HOLDER_ANNOTATION];
    const lease = holder ? this.clock.durationSeconds(holder) : undefined;
    return lease === undefined ? own : Math.min(own, Math.max(1, Math.floor(lease / 2)));
  }
}

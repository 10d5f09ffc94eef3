import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { AlreadyExistsError, ConflictError, NotFoundError } from "../../api/errors.js";
import type { KubeClient } from "./client.js";

/** controller-runtime's defaults: a lease lasts 15 s, the leader renews within 10 s, everyone retries every 2 s. */
export const LEASE_DEFAULTS = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  /** Who holds it: the pod's name plus a random suffix, as client-go's identities are. */
  identity?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  log: Logger;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}
interface Lease {
  apiVersion: "coordination.k8s.io/v1";
  kind: "Lease";
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: LeaseSpec;
}

/** A MicroTime as the API server parses it: exactly six fractional digits. */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/**
 * The Lease `init.metadata.name` in the leases collection at `path`, or undefined when there was
 * none and `init` was created instead (a racing creator makes this an AlreadyExists).
 */
export async function readOrCreateLease<L>(
  client: KubeClient,
  path: string,
  init: { metadata: { name: string } & Record<string, unknown>; spec: object },
): Promise<L | undefined> {
  try {
    return await client.request<L>("GET", `${path}/${init.metadata.name}`);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
    await client.request("POST", path, {
      body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...init },
    });
    return undefined;
  }
}

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it: a
 * candidate takes the Lease when it is free or when its record has not changed for a lease
 * duration *as this process observed it* (local clock only, so clock skew between nodes cannot
 * hand the lease to two holders); the leader renews every retry period and gives up leadership
 * when no renewal succeeded within the renew deadline (shorter than the lease, so it stops
 * before anyone else may start). Writes carry the resourceVersion: two candidates racing for
 * the same free lease cannot both win.
 */
export class LeaseElector {
  readonly identity: string;
  private readonly leaseMs: number;
  private readonly renewMs: number;
  private readonly retryMs: number;
  private readonly path: string;
  private observed: { record: string; at: number } | undefined;
  private lastRenew = 0;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: LeaderElectionOptions,
  ) {
    this.identity = opts.identity ?? `${hostname()}_${randomUUID()}`;
    this.leaseMs = opts.leaseDurationMs ?? LEASE_DEFAULTS.leaseDurationMs;
    this.renewMs = opts.renewDeadlineMs ?? LEASE_DEFAULTS.renewDeadlineMs;
    this.retryMs = opts.retryPeriodMs ?? LEASE_DEFAULTS.retryPeriodMs;
    if (!(this.renewMs < this.leaseMs && this.retryMs < this.renewMs))
      throw new Error("leader election: need retry period < renew deadline < lease duration");
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(opts.namespace)}/leases`;
  }

  /** Resolves once this process holds the lease (tries every retry period); rejects if stopped first. */
  async acquire(): Promise<void> {
    this.opts.log.info(
      { lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.identity },
      "waiting to lead",
    );
    while (!this.stopped) {
      if (await this.tryAcquireOrRenew()) {
        this.opts.log.info({ identity: this.identity }, "became the leader");
        return;
      }
      await this.sleep(this.retryMs);
    }
    throw new Error("leader election stopped before this process led");
  }

  /**
   * While leading: renews every retry period and calls onLost once when no renewal succeeded
   * within the renew deadline (the caller must then stop everything it runs as leader).
   */
  keepLeading(onLost: () => void): void {
    const tick = async () => {
      if (this.stopped) return;
      const ok = await this.tryAcquireOrRenew();
      if (this.stopped) return;
      if (!ok && Date.now() - this.lastRenew >= this.renewMs) {
        this.stopped = true;
        this.opts.log.error({ identity: this.identity }, "lost the leader lease: stopping");
        onLost();
        return;
      }
      this.schedule(tick);
    };
    this.schedule(tick);
  }

  /**
   * Renewal alone never keeps the process alive (unref): what the leader serves does, and a start
   * that failed after winning the lease must still let the process exit.
   */
  private schedule(tick: () => Promise<void>): void {
    this.timer = setTimeout(tick, this.retryMs);
    this.timer.unref();
  }

  /**
   * Stops renewing. With release, hands the lease back (holder cleared, 1 s duration) so a
   * standby takes over at its next retry instead of after a lease duration.
   */
  async stop(release: boolean): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.wake?.();
    if (!release) return;
    try {
      const lease = await this.client.request<Lease>("GET", `${this.path}/${this.opts.name}`);
      if (lease.spec.holderIdentity !== this.identity) return;
      const now = microTime(new Date());
      lease.spec = {
        ...lease.spec,
        holderIdentity: "",
        leaseDurationSeconds: 1,
        renewTime: now,
        acquireTime: now,
      };
      await this.client.request("PUT", `${this.path}/${this.opts.name}`, { body: lease });
    } catch (err) {
      this.opts.log.warn({ err }, "could not release the leader lease; a standby takes over when it expires");
    }
  }

  /** One round: create the lease, renew ours, or take an expired one. True when we hold it after. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    const mine: LeaseSpec = {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.leaseMs / 1000),
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    try {
      const lease = await readOrCreateLease<Lease>(this.client, this.path, {
        metadata: { name: this.opts.name, namespace: this.opts.namespace },
        spec: mine,
      });
      if (!lease) return this.renewed();
      const spec = lease.spec ?? {};
      const record = JSON.stringify([spec.holderIdentity, spec.renewTime, spec.leaseDurationSeconds]);
      if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
      const holder = spec.holderIdentity ?? "";
      const held = holder !== "" && holder !== this.identity;
      const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
      if (held && this.observed.at + durationMs > Date.now()) return false;
      const ours = holder === this.identity;
      lease.spec = {
        ...mine,
        acquireTime: ours ? (spec.acquireTime ?? mine.acquireTime) : mine.acquireTime,
        leaseTransitions: (spec.leaseTransitions ?? 0) + (ours ? 0 : 1),
      };
      // The resourceVersion read above rides along: a racing writer makes this a 409.
      await this.client.request("PUT", `${this.path}/${this.opts.name}`, { body: lease });
      return this.renewed();
    } catch (err) {
      if (!(err instanceof ConflictError || err instanceof AlreadyExistsError))
        this.opts.log.warn({ err }, "leader election: lease request failed");
      return false;
    }
  }

  private renewed(): true {
    this.lastRenew = Date.now();
    return true;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((done) => {
      const t = setTimeout(done, ms);
      this.wake = () => {
        clearTimeout(t);
        done();
      };
    });
  }
}

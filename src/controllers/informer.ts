import type { Logger } from "pino";
import { displayKey, type Resource } from "../api/meta.js";
import type { ResourceStore, StopWatch, WatchEvent } from "../store/port.js";
import type { ControllerMetrics } from "./metrics.js";

export interface InformerHandlers {
  /** Called for every add, update, delete and periodic resync, with the object's key. */
  onChange(key: string, obj: Resource | undefined, type: WatchEvent["type"] | "RESYNC"): void;
}

export interface InformerOptions {
  resyncMs?: number;
  /**
   * A full relist this often, even while the watch looks healthy: a watch that silently stops
   * delivering (client-node's informer is known for it) then costs minutes, not forever.
   */
  relistMs?: number;
  /** Backoff after a failed list or a broken watch, doubling up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * Keeps a local cache of one kind: list, then watch from the list's resourceVersion; relist when
 * the watch breaks or its revision expired; hand every key to the handler again every resync
 * period so a missed event is never fatal.
 */
export class Informer {
  private readonly cache = new Map<string, Resource>();
  private stopWatch: StopWatch | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private relistTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private synced = false;
  private backoffMs: number;
  private readonly syncWaiters: (() => void)[] = [];

  constructor(
    private readonly store: ResourceStore,
    readonly kind: string,
    private readonly handlers: InformerHandlers,
    private readonly log: Logger,
    private readonly metrics: ControllerMetrics,
    private readonly opts: InformerOptions = {},
  ) {
    this.backoffMs = opts.minBackoffMs ?? 100;
  }

  start(): void {
    void this.listAndWatch();
    this.resyncTimer = setInterval(() => {
      for (const [key, obj] of this.cache) this.handlers.onChange(key, obj, "RESYNC");
    }, this.opts.resyncMs ?? 30_000);
    this.resyncTimer.unref();
    this.relistTimer = setInterval(
      () => {
        if (this.stopped || !this.synced) return;
        this.stopWatch?.();
        this.stopWatch = undefined;
        void this.listAndWatch();
      },
      this.opts.relistMs ?? 5 * 60_000,
    );
    this.relistTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    this.stopWatch?.();
    clearInterval(this.resyncTimer);
    clearInterval(this.relistTimer);
    clearTimeout(this.retryTimer);
  }

  /** Resolves once the first list has filled the cache. */
  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  get(key: string): Resource | undefined {
    return this.cache.get(key);
  }

  list(): Resource[] {
    return [...this.cache.values()];
  }

  private async listAndWatch(): Promise<void> {
    if (this.stopped) return;
    try {
      const listed = await this.store.list(this.kind);
      const seen = new Set<string>();
      for (const obj of listed.items) {
        const key = displayKey(obj.metadata);
        seen.add(key);
        this.cache.set(key, obj);
        this.handlers.onChange(key, obj, "ADDED");
      }
      for (const [key, obj] of [...this.cache]) {
        if (seen.has(key)) continue;
        this.cache.delete(key);
        this.handlers.onChange(key, obj, "DELETED");
      }
      this.markEvent();
      this.stopWatch = await this.store.watch(
        this.kind,
        { resourceVersion: listed.resourceVersion },
        (e) => this.apply(e),
        (err) => {
          this.log.warn({ err: err.message, kind: this.kind }, "watch ended; relisting");
          this.retry();
        },
      );
      this.backoffMs = this.opts.minBackoffMs ?? 100;
      if (!this.synced) {
        this.synced = true;
        for (const w of this.syncWaiters.splice(0)) w();
      }
    } catch (err) {
      this.log.error({ err, kind: this.kind }, "list and watch failed; retrying");
      this.retry();
    }
  }

  private retry(): void {
    if (this.stopped) return;
    this.stopWatch?.();
    this.stopWatch = undefined;
    this.retryTimer = setTimeout(() => void this.listAndWatch(), this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, this.opts.maxBackoffMs ?? 30_000);
  }

  private apply(e: WatchEvent): void {
    const key = displayKey(e.object.metadata);
    if (e.type === "DELETED") this.cache.delete(key);
    else this.cache.set(key, e.object);
    this.markEvent();
    this.handlers.onChange(key, e.object, e.type);
  }

  private markEvent(): void {
    this.metrics.lastEventTimestamp.set({ kind: this.kind }, Date.now() / 1000);
  }
}

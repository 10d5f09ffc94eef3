import type { Logger } from "pino";
import { displayKey, type Resource } from "../api/meta.js";
import type { ResourceStore, StopWatch } from "../ports/store.js";
import type { ControllerMetrics } from "./metrics.js";

export type InformerEventType = "ADDED" | "MODIFIED" | "DELETED";

export interface InformerHandlers<T> {
  /** Called for every add, update, delete and periodic resync, with the object's key. */
  onChange(key: string, obj: T | undefined, type: InformerEventType | "RESYNC"): void;
}

/**
 * What an informer lists and watches: Loom kinds in a ResourceStore, or raw Kubernetes
 * collections (the Kubernetes runtime's pods and nodes).
 */
export interface ListWatchSource<T> {
  /** For logs and the last-event metric's `kind` label. */
  readonly kind: string;
  keyOf(obj: T): string;
  list(): Promise<{ items: T[]; resourceVersion: string }>;
  watch(
    resourceVersion: string,
    onEvent: (e: { type: InformerEventType; object: T }) => void,
    onEnd: (err: Error) => void,
  ): Promise<StopWatch>;
}

/** A Loom kind in a ResourceStore as an informer source, keyed "project/name". */
export function storeSource(store: ResourceStore, kind: string): ListWatchSource<Resource> {
  return {
    kind,
    keyOf: (o) => displayKey(o.metadata),
    list: () => store.list(kind),
    watch: (resourceVersion, onEvent, onEnd) => store.watch(kind, { resourceVersion }, onEvent, onEnd),
  };
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
export class Informer<T = Resource> {
  private readonly cache = new Map<string, T>();
  private stopWatch: StopWatch | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private relistTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private synced = false;
  private backoffMs: number;
  private readonly syncWaiters: (() => void)[] = [];

  readonly kind: string;

  constructor(
    private readonly source: ListWatchSource<T>,
    private readonly handlers: InformerHandlers<T>,
    private readonly log: Logger,
    private readonly metrics: Pick<ControllerMetrics, "lastEventTimestamp">,
    private readonly opts: InformerOptions = {},
  ) {
    this.kind = source.kind;
    this.backoffMs = opts.minBackoffMs ?? 100;
  }

  get hasSynced(): boolean {
    return this.synced;
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

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  private async listAndWatch(): Promise<void> {
    if (this.stopped) return;
    try {
      const listed = await this.source.list();
      const seen = new Set<string>();
      for (const obj of listed.items) {
        const key = this.source.keyOf(obj);
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
      this.stopWatch = await this.source.watch(
        listed.resourceVersion,
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

  private apply(e: { type: InformerEventType; object: T }): void {
    const key = this.source.keyOf(e.object);
    if (e.type === "DELETED") this.cache.delete(key);
    else this.cache.set(key, e.object);
    this.markEvent();
    this.handlers.onChange(key, e.object, e.type);
  }

  private markEvent(): void {
    this.metrics.lastEventTimestamp.set({ kind: this.kind }, Date.now() / 1000);
  }
}

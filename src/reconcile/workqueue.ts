/**
 * A work queue in the manner of client-go's: a key is queued at most once, is handed to one
 * worker at a time (a key added while it is being processed is processed again afterwards), and
 * failed keys come back with exponential backoff.
 */
export interface WorkQueueOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
}

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  /**
   * The background lane: periodic resyncs. Served only when the main lane is empty, so that a
   * resync of a thousand unchanged keys never delays a key that really changed. A key in this
   * lane that is added for real moves to the main lane (the stale entry is skipped later).
   */
  private readonly background: string[] = [];
  private readonly backgroundQueued = new Set<string>();
  private readonly processing = new Set<string>();
  /** Keys being processed that came from the background lane (resyncs), until done(). */
  private readonly processingBackground = new Set<string>();
  /** Keys re-added while being processed: they go back in the queue when done. */
  private readonly dirty = new Set<string>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(opts: WorkQueueOptions = {}) {
    this.baseDelayMs = opts.baseDelayMs ?? 50;
    this.maxDelayMs = opts.maxDelayMs ?? 60_000;
  }

  add(key: string): void {
    if (this.shuttingDown) return;
    this.backgroundQueued.delete(key);
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    const waiter = this.waiters.shift();
    if (waiter) {
      this.queued.delete(key);
      this.processing.add(key);
      waiter(key);
    } else this.queue.push(key);
  }

  /** Adds the key at low priority (a periodic resync): after everything in the main lane. */
  addBackground(key: string): void {
    if (this.shuttingDown) return;
    if (this.processing.has(key) || this.queued.has(key) || this.backgroundQueued.has(key)) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.processing.add(key);
      this.processingBackground.add(key);
      waiter(key);
      return;
    }
    this.backgroundQueued.add(key);
    this.background.push(key);
  }

  /** Adds the key after a delay; an earlier pending delay for the same key wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + delayMs;
    const existing = this.timers.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.timers.set(key, { at, timer });
  }

  /** Re-queues a failed key with exponential backoff; returns the delay used. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** n);
    this.addAfter(key, delay);
    return delay;
  }

  /** Clears the key's failure history after a success. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** The next key, waiting for one; undefined once shut down. Call done(key) when finished. */
  get(): Promise<string | undefined> {
    const key = this.queue.shift();
    if (key !== undefined) {
      this.queued.delete(key);
      this.processing.add(key);
      return Promise.resolve(key);
    }
    while (this.background.length > 0) {
      const next = this.background.shift()!;
      if (!this.backgroundQueued.delete(next)) continue; // moved to the main lane meanwhile
      this.processing.add(next);
      this.processingBackground.add(next);
      return Promise.resolve(next);
    }
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Whether the key being processed came from the background lane (a resync), not a change. */
  isResync(key: string): boolean {
    return this.processingBackground.has(key);
  }

  done(key: string): void {
    this.processing.delete(key);
    this.processingBackground.delete(key);
    if (this.dirty.delete(key)) this.add(key);
  }

  /** Keys waiting in the main lane (real changes). */
  get length(): number {
    return this.queue.length;
  }

  /** Keys waiting in the background lane (resyncs). */
  get backgroundLength(): number {
    return this.backgroundQueued.size;
  }

  shutdown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const w of this.waiters.splice(0)) w(undefined);
  }
}

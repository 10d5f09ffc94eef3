import type { Logger } from "pino";
import { ConflictError } from "../api/errors.js";
import type { ControllerMetrics } from "./metrics.js";
import { WorkQueue } from "./workqueue.js";

export interface ReconcileResult {
  /** Look at this key again after this long even if nothing changes (timers, polling). */
  requeueAfterMs?: number;
}

/** An idempotent reconciler: read desired and observed state, act, say when to look again. */
export interface Reconciler {
  readonly name: string;
  reconcile(key: string): Promise<ReconcileResult>;
}

/**
 * Drives one reconciler from a work queue with `concurrency` workers. Keys are serialised (never
 * two reconciles of one key at once), failures retried with backoff, conflicts retried at once.
 */
export class Controller {
  readonly queue: WorkQueue;
  private running: Promise<void>[] = [];

  constructor(
    private readonly reconciler: Reconciler,
    private readonly log: Logger,
    private readonly metrics: ControllerMetrics,
    private readonly concurrency = 1,
  ) {
    this.queue = new WorkQueue();
  }

  enqueue(key: string): void {
    this.queue.add(key);
    this.metrics.queueDepth.set({ controller: this.reconciler.name }, this.queue.length);
  }

  /** Enqueues at low priority: a periodic resync must not delay keys that really changed. */
  enqueueBackground(key: string): void {
    this.queue.addBackground(key);
  }

  /**
   * For loops whose one key stands for the whole world (admission): runs at once when the last
   * pass ended at least windowMs ago, else when the window has passed, so a burst of changes (a
   * thousand submissions) costs a pass per window, not a pass per change, while a lone change
   * (a job finished, its CPU is free) is acted on without waiting.
   */
  enqueueBatched(key: string, windowMs = 10): void {
    if (!this.lastDone.has(key)) this.lastDone.set(key, 0);
    // The window is no longer than the last pass took: a cheap pass runs again soon (a freed CPU
    // waited up to 10 ms for the next admission cycle in bench:scheduler), while passes that
    // cost more are spaced out, so the loop never takes much more than half of the time.
    const window = Math.min(windowMs, this.lastTook.get(key) ?? windowMs);
    const since = Date.now() - this.lastDone.get(key)!;
    if (since >= window) this.queue.add(key);
    else this.queue.addAfter(key, window - since);
  }

  /** When each batched key's last reconcile ended (only keys enqueueBatched has seen). */
  private readonly lastDone = new Map<string, number>();
  /** How long each batched key's last reconcile took. */
  private readonly lastTook = new Map<string, number>();

  start(): void {
    for (let i = 0; i < this.concurrency; i++) this.running.push(this.work());
  }

  async stop(): Promise<void> {
    this.queue.shutdown();
    await Promise.all(this.running);
    this.running = [];
  }

  private async work(): Promise<void> {
    const name = this.reconciler.name;
    while (true) {
      const key = await this.queue.get();
      if (key === undefined) return;
      this.metrics.queueDepth.set({ controller: name }, this.queue.length);
      const end = this.metrics.reconcileSeconds.startTimer({ controller: name });
      if (this.queue.isResync(key)) this.metrics.resyncs.inc({ controller: name });
      const began = Date.now();
      try {
        const result = await this.reconciler.reconcile(key);
        end({ result: "ok" });
        this.queue.forget(key);
        if (result.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        if (err instanceof ConflictError) {
          // Someone else wrote first: re-read and try again straight away (with light backoff).
          end({ result: "conflict" });
          this.queue.addRateLimited(key);
        } else {
          end({ result: "error" });
          this.metrics.reconcileErrors.inc({ controller: name });
          const delay = this.queue.addRateLimited(key);
          this.log.error({ err, key, retryInMs: delay }, "reconcile failed");
        }
      } finally {
        if (this.lastDone.has(key)) {
          const now = Date.now();
          this.lastDone.set(key, now);
          this.lastTook.set(key, now - began);
        }
        this.queue.done(key);
      }
    }
  }
}

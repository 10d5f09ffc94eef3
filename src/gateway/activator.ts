import { activationTimeout, ClientGoneError, queueFull, unavailable } from "./errors.js";

/**
 * Holds requests for a revision that has no ready replica (scaled to zero, or still loading its
 * model) until one is ready, as Knative's activator does. Bounded: a queue per key has a capacity
 * and every waiter a deadline, so a model that never comes up turns into clear 503s rather than
 * an unbounded pile of sockets. The first held request asks for a scale-up.
 */

export interface ActivatorOptions {
  /** Waiters per key before new requests are refused. Default 1000 (a burst from zero). */
  capacity?: number;
  /** How long one request may wait. Default 5 min (a cold model download and load). */
  timeoutMs?: number;
  /** Called when a key's queue goes from empty to non-empty: scale from zero here. */
  onHold?: (key: string) => void;
  /** Called on every change of a key's queue depth (metrics). */
  onDepth?: (key: string, depth: number) => void;
  now?: () => number;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  cleanup: () => void;
}

export interface WaitOptions {
  /** Aborted when the client disconnects; the waiter leaves the queue at once. */
  signal?: AbortSignal;
  /** Overrides the default timeout (the remaining part of a longer deadline, for instance). */
  timeoutMs?: number;
  /** How the held thing is named in error messages. Default: the key. */
  label?: string;
}

export class Activator {
  private readonly queues = new Map<string, Set<Waiter>>();
  private readonly capacity: number;
  private readonly timeoutMs: number;

  constructor(private readonly opts: ActivatorOptions = {}) {
    this.capacity = opts.capacity ?? 1000;
    this.timeoutMs = opts.timeoutMs ?? 300_000;
  }

  /** Waiters held for `key`. */
  depth(key: string): number {
    return this.queues.get(key)?.size ?? 0;
  }

  /**
   * Resolves when `ready(key)` is called. Rejects with a GatewayError when the queue is full (503,
   * Retry-After) or the wait times out (503), and with ClientGoneError when `signal` aborts.
   */
  wait(key: string, options: WaitOptions = {}): Promise<void> {
    const label = options.label ?? key;
    if (options.signal?.aborted) return Promise.reject(new ClientGoneError());
    let q = this.queues.get(key);
    if (q && q.size >= this.capacity) return Promise.reject(queueFull(label, this.capacity));
    if (!q) {
      q = new Set();
      this.queues.set(key, q);
    }
    const queue = q;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const started = (this.opts.now ?? Date.now)();
    return new Promise<void>((resolve, reject) => {
      const leave = () => {
        clearTimeout(w.timer);
        w.cleanup();
        queue.delete(w);
        if (!queue.size && this.queues.get(key) === queue) this.queues.delete(key);
        this.opts.onDepth?.(key, queue.size);
      };
      const onAbort = () => {
        leave();
        reject(new ClientGoneError());
      };
      const w: Waiter = {
        resolve: () => {
          leave();
          resolve();
        },
        reject: (err) => {
          leave();
          reject(err);
        },
        timer: setTimeout(() => {
          const waited = (this.opts.now ?? Date.now)() - started;
          w.reject(activationTimeout(label, waited));
        }, timeoutMs),
        cleanup: () => options.signal?.removeEventListener("abort", onAbort),
      };
      w.timer.unref?.();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      queue.add(w);
      this.opts.onDepth?.(key, queue.size);
      if (queue.size === 1) this.opts.onHold?.(key);
    });
  }

  /** A replica for `key` became ready: release every waiter. Returns how many were released. */
  ready(key: string): number {
    const q = this.queues.get(key);
    if (!q) return 0;
    const waiters = [...q];
    for (const w of waiters) w.resolve();
    return waiters.length;
  }

  /** Rejects every waiter for `key` (the revision was deleted or failed for good). */
  fail(key: string, err: Error): number {
    const q = this.queues.get(key);
    if (!q) return 0;
    const waiters = [...q];
    for (const w of waiters) w.reject(err);
    return waiters.length;
  }

  /** Keys that have waiters. */
  keys(): string[] {
    return [...this.queues.keys()];
  }

  /** Rejects everything (shutdown). */
  close(): void {
    for (const key of this.keys()) this.fail(key, unavailable("the gateway is shutting down; retry"));
  }
}

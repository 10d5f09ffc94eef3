import type { Resource } from "../api/meta.js";

/**
 * An informer's cache overlaid with what this loop itself wrote and the cache does not show
 * yet. Reads come from the cache (no request per reconcile); the overlay keeps a reconcile that
 * runs before its own write came back through the watch from acting on the older copy (the
 * admission loop would hand the same capacity out twice). A write is dropped as soon as the
 * cache holds it or anything newer, or no longer holds the object at all.
 */
export class WriteOverlay<T extends Resource> {
  private readonly written = new Map<string, T>();

  /** `keyOf` names an object as the cache does (e.g. "project/name", or its uid). */
  constructor(private readonly keyOf: (obj: T) => string) {}

  /** Notes an object as the store returned it from this loop's write; returns it. */
  remember(obj: T): T {
    this.written.set(this.keyOf(obj), obj);
    return obj;
  }

  /** Writes of this loop in flight, by key, and the events that came for the key meanwhile. */
  private readonly writing = new Map<string, { count: number; held: (() => void)[] }>();

  /**
   * Runs one write of this loop (`op` returns the object as stored) and remembers what it
   * stored. Events for the key that came while it was in flight (held by holdEcho) are handed
   * back once it ends, when whether they were this write's own echo can be told.
   */
  async write(key: string, op: () => Promise<T>): Promise<T> {
    const entry = this.writing.get(key) ?? { count: 0, held: [] };
    entry.count++;
    this.writing.set(key, entry);
    try {
      return this.remember(await op());
    } finally {
      if (--entry.count === 0) {
        this.writing.delete(key);
        for (const replay of entry.held) replay();
      }
    }
  }

  /**
   * Holds an informer event for `key` while one of this loop's writes of it is in flight (a
   * store may deliver a write's watch event before the write's own answer); `replay` runs once
   * the write has ended. False, and nothing held, when no write of the key is in flight.
   */
  holdEcho(key: string, replay: () => void): boolean {
    const entry = this.writing.get(key);
    if (!entry) return false;
    entry.held.push(replay);
    return true;
  }

  /**
   * Whether the watch's `obj` under `key` is no news to this loop: its own latest write coming
   * back, or a version older than that write (an earlier write of its own, such as the
   * finalizer's patch before the start's status write, or anyone's before it). The loop's writes
   * carry the version they were made from as a precondition, so a version older than its latest
   * write is one it had read and acted on when it wrote.
   */
  isOwn(key: string, obj: T): boolean {
    const mine = this.written.get(key);
    return (
      mine !== undefined &&
      mine.metadata.uid === obj.metadata.uid &&
      Number(obj.metadata.resourceVersion) <= Number(mine.metadata.resourceVersion)
    );
  }

  /** Drops what this loop wrote under `key` (the object is going away). */
  forget(key: string): void {
    this.written.delete(key);
  }

  /** The newer of the cache's copy and this loop's write; undefined when the cache has none. */
  get(key: string, cached: T | undefined): T | undefined {
    const mine = this.written.get(key);
    if (!cached) {
      this.written.delete(key);
      return undefined;
    }
    if (!mine) return cached;
    if (!isNewer(mine, cached)) {
      this.written.delete(key);
      return cached;
    }
    return mine;
  }

  /** Every cached object, each the newer of the two; writes for objects not listed are dropped. */
  list(cached: readonly T[]): T[] {
    const seen = new Set<string>();
    const objects = cached.map((obj) => {
      const key = this.keyOf(obj);
      seen.add(key);
      return this.get(key, obj)!;
    });
    for (const key of this.written.keys()) if (!seen.has(key)) this.written.delete(key);
    return objects;
  }
}

/**
 * Whether `mine` is a later version of the same object than `cached`: a namesake made again
 * (another uid) is not, whatever its version. Versions compare as numbers, which both stores'
 * counters are (SQLite's sequence, etcd's revision).
 */
function isNewer(mine: Resource, cached: Resource): boolean {
  return (
    mine.metadata.uid === cached.metadata.uid &&
    Number(mine.metadata.resourceVersion) > Number(cached.metadata.resourceVersion)
  );
}

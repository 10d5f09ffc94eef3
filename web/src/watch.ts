import { useCallback, useEffect, useState, useSyncExternalStore } from "react";
import { api, keyOf, type Resource, streamLines, type WatchEvent } from "./api.js";

interface List<T> {
  metadata: { resourceVersion: string; continue?: string };
  items: T[];
}

export interface Watched<T> {
  items: T[];
  loaded: boolean;
  error?: string;
  /** Bumps on every change (for views derived from the list, such as usage). */
  version: number;
  /** The first pages are shown and more are still being listed. */
  more?: boolean;
}

const EMPTY: Watched<never> = { items: [], loaded: false, version: 0 };
/** How long a list nobody shows is kept live, so going back to a page does not list again. */
const KEEP_MS = 60_000;
/**
 * Pages of a list (Kubernetes' limit/continue): a small first page shows at once, the rest follow
 * in larger ones (10,000 jobs are 7.8 MiB of JSON in one answer: 0.6 s before any row).
 */
const FIRST_PAGE = 250;
const NEXT_PAGE = 5000;

interface Entry {
  state: Watched<Resource>;
  listeners: Set<() => void>;
  abort: AbortController;
  idle?: ReturnType<typeof setTimeout>;
}

/** One live list per path, shared by every component that shows it. */
const entries = new Map<string, Entry>();

function acquire(path: string): Entry {
  let e = entries.get(path);
  if (!e) {
    e = { state: EMPTY, listeners: new Set(), abort: new AbortController() };
    entries.set(path, e);
    follow(path, e);
  }
  if (e.idle) clearTimeout(e.idle);
  e.idle = undefined;
  return e;
}

function release(path: string, e: Entry): void {
  if (e.listeners.size > 0) return;
  e.idle = setTimeout(() => {
    e.abort.abort();
    entries.delete(path);
  }, KEEP_MS);
}

/**
 * List once, then follow the API's watch from the list's revision (the same stream `loom get -w`
 * reads), relisting with capped backoff when it ends or expires. Changes arriving together are
 * applied in one render, so a burst of 10,000 events costs one.
 */
function follow(path: string, e: Entry): void {
  const map = new Map<string, Resource>();
  const signal = e.abort.signal;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const publish = (state: Watched<Resource>) => {
    e.state = state;
    for (const l of e.listeners) l();
  };
  const flush = (more = false) => {
    timer = undefined;
    publish({ items: [...map.values()], loaded: true, version: e.state.version + 1, more });
  };
  const sep = path.includes("?") ? "&" : "?";
  (async () => {
    let backoff = 500;
    while (!signal.aborted) {
      try {
        let list = await api<List<Resource>>("GET", `${path}${sep}limit=${FIRST_PAGE}`);
        map.clear();
        for (const item of list.items) map.set(keyOf(item), item);
        flush(Boolean(list.metadata.continue));
        // The rest behind the first page; every page carries the first page's revision.
        while (list.metadata.continue && !signal.aborted) {
          const cont = encodeURIComponent(list.metadata.continue);
          list = await api<List<Resource>>("GET", `${path}${sep}limit=${NEXT_PAGE}&continue=${cont}`);
          for (const item of list.items) map.set(keyOf(item), item);
          flush(Boolean(list.metadata.continue));
        }
        let expired = false;
        await streamLines(
          `${path}${sep}watch=1&resourceVersion=${encodeURIComponent(list.metadata.resourceVersion)}`,
          (lines) => {
            for (const line of lines) {
              if (!line) continue;
              const ev = JSON.parse(line) as WatchEvent<Resource>;
              if (ev.type === "ERROR") expired = true;
              else if (ev.type === "DELETED") map.delete(keyOf(ev.object));
              else if (ev.type === "ADDED" || ev.type === "MODIFIED") map.set(keyOf(ev.object), ev.object);
            }
            timer ??= setTimeout(() => flush(), 50);
          },
          signal,
        );
        backoff = expired ? 0 : 500;
      } catch (err) {
        if (signal.aborted) return;
        publish({ ...e.state, loaded: true, error: (err as Error).message });
        backoff = Math.min(Math.max(backoff * 2, 1000), 30_000);
      }
      await new Promise((ok) => setTimeout(ok, backoff));
    }
  })();
  signal.addEventListener("abort", () => timer && clearTimeout(timer));
}

/**
 * A live list of a path (undefined: none). Every page showing the same path shares one list and
 * one watch, kept a minute after the last page leaves.
 */
export function useWatchedList<T extends Resource>(path: string | undefined): Watched<T> {
  const subscribe = useCallback(
    (onChange: () => void) => {
      if (!path) return () => undefined;
      const e = acquire(path);
      e.listeners.add(onChange);
      return () => {
        e.listeners.delete(onChange);
        release(path, e);
      };
    },
    [path],
  );
  const snapshot = () => (path ? (entries.get(path)?.state ?? EMPTY) : EMPTY);
  return useSyncExternalStore(subscribe, snapshot) as Watched<T>;
}

/**
 * One object, live: read it, then follow its project's watch from its revision (newer changes
 * only, so a job page never relists a project of 10,000 jobs).
 */
export function useWatchedObject<T extends Resource>(
  listPath: string,
  name: string,
): { obj?: T; error?: string } {
  const [state, setState] = useState<{ obj?: T; error?: string }>({});
  useEffect(() => {
    const abort = new AbortController();
    setState({});
    (async () => {
      let backoff = 500;
      while (!abort.signal.aborted) {
        try {
          const obj = await api<T>("GET", `${listPath}/${encodeURIComponent(name)}`);
          setState({ obj });
          await streamLines(
            `${listPath}?watch=1&resourceVersion=${encodeURIComponent(obj.metadata.resourceVersion ?? "0")}`,
            (lines) => {
              for (const line of lines) {
                if (!line) continue;
                const e = JSON.parse(line) as WatchEvent<T>;
                if (e.type === "ERROR" || e.object?.metadata?.name !== name) continue;
                if (e.type === "DELETED") setState({ error: `${name} was deleted` });
                else setState({ obj: e.object });
              }
            },
            abort.signal,
          );
          backoff = 500;
        } catch (err) {
          if (abort.signal.aborted) return;
          setState((s) => ({ ...s, error: (err as Error).message }));
          backoff = Math.min(backoff * 2, 30_000);
        }
        await new Promise((ok) => setTimeout(ok, backoff));
      }
    })();
    return () => abort.abort();
  }, [listPath, name]);
  return state;
}

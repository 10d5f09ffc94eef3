import { useEffect, useRef, useState } from "react";
import { api, keyOf, type Resource, streamLines, type WatchEvent } from "./api.js";

interface List<T> {
  metadata: { resourceVersion: string };
  items: T[];
}

export interface Watched<T> {
  items: T[];
  loaded: boolean;
  error?: string;
  /** Bumps on every change (for views derived from the list, such as usage). */
  version: number;
}

/**
 * A live list: list once, then follow the API's watch from the list's revision (the same stream
 * `loom get -w` reads), relisting with capped backoff when it ends or expires. Changes arriving
 * together are applied in one render, so a burst of 10,000 events costs one.
 */
export function useWatchedList<T extends Resource>(path: string | undefined): Watched<T> {
  const [state, setState] = useState<Watched<T>>({ items: [], loaded: false, version: 0 });
  const byKey = useRef(new Map<string, T>());
  useEffect(() => {
    if (!path) return;
    const abort = new AbortController();
    const map = byKey.current;
    map.clear();
    setState({ items: [], loaded: false, version: 0 });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let version = 0;
    const flush = () => {
      timer = undefined;
      version += 1;
      setState({ items: [...map.values()], loaded: true, version });
    };
    const schedule = () => {
      timer ??= setTimeout(flush, 50);
    };
    const sep = path.includes("?") ? "&" : "?";
    (async () => {
      let backoff = 500;
      while (!abort.signal.aborted) {
        try {
          const list = await api<List<T>>("GET", path);
          map.clear();
          for (const item of list.items) map.set(keyOf(item), item);
          flush();
          let expired = false;
          await streamLines(
            `${path}${sep}watch=1&resourceVersion=${encodeURIComponent(list.metadata.resourceVersion)}`,
            (lines) => {
              for (const line of lines) {
                if (!line) continue;
                const e = JSON.parse(line) as WatchEvent<T>;
                if (e.type === "ERROR") expired = true;
                else if (e.type === "DELETED") map.delete(keyOf(e.object));
                else if (e.type === "ADDED" || e.type === "MODIFIED") map.set(keyOf(e.object), e.object);
              }
              schedule();
            },
            abort.signal,
          );
          backoff = expired ? 0 : 500;
        } catch (err) {
          if (abort.signal.aborted) return;
          setState((s) => ({ ...s, loaded: true, error: (err as Error).message }));
          backoff = Math.min(Math.max(backoff * 2, 1000), 30_000);
        }
        await new Promise((ok) => setTimeout(ok, backoff));
      }
    })();
    return () => {
      abort.abort();
      if (timer) clearTimeout(timer);
    };
  }, [path]);
  return state;
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

import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { ExpiredError, LoomError } from "../../api/errors.js";
import { forEachLine, type KubeClient } from "./client.js";

export interface KubeWatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: T;
}

/**
 * One long-lived watch on a collection path: resumes from the last revision seen when the server
 * ends a watch (timeoutSeconds) or the connection breaks, with capped backoff, and hands a 410
 * (revision too old) to onEnd so the caller relists. Returns a stop function.
 */
export function watchCollection<T extends { metadata: { resourceVersion?: string } }>(
  client: KubeClient,
  log: Logger,
  path: string,
  query: { resourceVersion: string; labelSelector?: string },
  onEvent: (e: KubeWatchEvent<T>) => void,
  onEnd?: (err: Error) => void,
): () => void {
  const abort = new AbortController();
  let stopped = false;
  let rv = query.resourceVersion;
  const run = async () => {
    let backoff = 200;
    while (!stopped) {
      try {
        const stream = await client.stream(
          path,
          {
            watch: 1,
            resourceVersion: rv,
            allowWatchBookmarks: true,
            labelSelector: query.labelSelector || undefined,
            timeoutSeconds: 240,
          },
          abort.signal,
        );
        backoff = 200;
        await forEachLine(stream, (line) => {
          const e = JSON.parse(line) as { type: string; object: T & { code?: number; message?: string } };
          if (e.type === "ERROR") {
            if (e.object.code === 410)
              throw new ExpiredError(e.object.message ?? "resourceVersion too old: relist");
            throw new LoomError("WatchError", 502, e.object.message ?? "watch error");
          }
          rv = e.object.metadata.resourceVersion ?? rv;
          if (e.type === "BOOKMARK") return;
          onEvent({ type: e.type as KubeWatchEvent<T>["type"], object: e.object });
        });
      } catch (err) {
        if (stopped) return;
        if (err instanceof ExpiredError) {
          stopped = true;
          onEnd?.(err);
          return;
        }
        log.warn({ err: (err as Error).message, path, retryInMs: backoff }, "watch broke; resuming");
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  };
  void run();
  return () => {
    stopped = true;
    abort.abort();
  };
}

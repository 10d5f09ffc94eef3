import type { FastifyReply, FastifyRequest } from "fastify";
import { parseLimit } from "../../api/listpage.js";
import { API_VERSION } from "../../api/meta.js";
import type { ResourceStore } from "../../ports/store.js";
import { statusBody } from "../errors.js";
import type { ResourceService } from "../resources.js";
import type { Params, Query } from "./params.js";

export interface ListOrWatchDeps {
  store: ResourceStore;
  resources: ResourceService;
}

/** Answers a list, or with ?watch=1 a stream of watch events, of one kind (the projects and resource routes share it). */
export type ListOrWatch = (
  req: FastifyRequest<{ Params: Params; Querystring: Query }>,
  reply: FastifyReply,
  plural: string,
  project: string | undefined,
  inProject?: boolean,
) => Promise<unknown>;

/** The list-or-watch handler over a store and the resource rules. */
export function listOrWatch(deps: ListOrWatchDeps): ListOrWatch {
  const { resources } = deps;
  return async (req, reply, plural, project, inProject = false) => {
    const def = inProject ? resources.namespacedKind(plural) : resources.kind(plural);
    const q = req.query;
    const opts = { project, labelSelector: q.labelSelector };
    if (q.watch === "1" || q.watch === "true")
      return watch(deps.store, req, reply, def.kind, { ...opts, resourceVersion: q.resourceVersion });
    // Paged as Kubernetes pages: ?limit=N, then ?continue= the previous page's metadata.continue.
    const limit = parseLimit(q.limit);
    const result = await resources.list(def, {
      ...opts,
      ...(limit !== undefined ? { limit } : {}),
      ...(q.continue ? { continue: q.continue } : {}),
    });
    return {
      apiVersion: API_VERSION,
      kind: `${def.kind}List`,
      metadata: {
        resourceVersion: result.resourceVersion,
        ...(result.continue ? { continue: result.continue } : {}),
      },
      items: result.items,
    };
  };
}

/** Streams a kind's watch events as JSON lines until the client goes, the timeout ends or the revision expires. */
async function watch(
  store: ResourceStore,
  req: FastifyRequest,
  reply: FastifyReply,
  kind: string,
  opts: { project?: string; labelSelector?: string; resourceVersion?: string },
): Promise<void> {
  const raw = reply.raw;
  let stop: (() => void) | undefined;
  let closed = false;
  const close = () => {
    closed = true;
    stop?.();
    if (!raw.writableEnded) raw.end();
  };
  const send = (obj: unknown) => {
    if (closed) return;
    raw.write(`${JSON.stringify(obj)}\n`);
    // A watcher that stops reading is cut off rather than allowed to grow server memory.
    if (raw.writableLength > 16 * 1024 * 1024) {
      req.log.warn({ kind }, "closing a watch whose client does not keep up");
      close();
    }
  };
  // Fails before any byte is sent when the revision expired: the client gets a plain 410.
  const buffered: unknown[] = [];
  let started = false;
  stop = await store.watch(
    kind,
    opts,
    (e) => (started ? send(e) : buffered.push(e)),
    (err) => {
      send({ type: "ERROR", object: statusBody(410, "Expired", err.message) });
      close();
    },
  );
  reply.hijack();
  raw.writeHead(200, {
    "content-type": "application/json",
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
  });
  raw.flushHeaders();
  started = true;
  for (const e of buffered) send(e);
  const timeout = Number(req.query && (req.query as Query).timeoutSeconds);
  if (timeout > 0) setTimeout(close, timeout * 1000).unref();
  raw.on("close", close);
}

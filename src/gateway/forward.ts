import { affinityKey } from "./affinity.js";
import { type GatewayContext, labels, type Route, recordConcurrency } from "./context.js";
import type { HandleOptions, HandleResult } from "./contract.js";
import type { GatewayRequest, GatewayResponse } from "./h1.js";
import { bound as boundMetrics, recordRequest } from "./recording.js";
import { fallback } from "./revisions.js";

/** How much of a traced answer is kept: a long generation's trace is cut, never the answer. */
const TRACE_CAPTURE_BYTES = 256 * 1024;

/** Steps 4–5: to a replica of the revision, with retries; metrics when the exchange is over. */
export function forward(
  g: GatewayContext,
  req: GatewayRequest,
  res: GatewayResponse,
  opts: HandleOptions,
  route: Route,
  started: number,
  done: ((result: HandleResult) => void) | undefined,
): void {
  const rev = route.st;
  const key = rev.affinityChars ? affinityKey(route.json, rev.affinityChars) : undefined;
  rev.inFlight++;
  const bound = boundMetrics(g, rev);
  bound.inFlight.inc();
  recordConcurrency(rev, g.now());
  g.proxy.send(
    req,
    res,
    {
      pick: (tried) => rev.balancer.pick({ key, exclude: tried }) ?? fallback(g, rev, tried),
      body: route.body,
      path: opts.path,
      label: route.label,
      maxRetries: g.opts.maxRetries,
      connectTimeoutMs: g.opts.connectTimeoutMs,
      responseTimeoutMs: g.opts.responseTimeoutMs,
      failOn5xx: g.opts.failOn5xx,
      dropRequestHeaders: g.opts.dropRequestHeaders,
      replicaHeader: g.opts.replicaHeader,
      setRequestHeaders: rev.upstreamHeaders,
      ...(rev.tracing ? { captureBytes: TRACE_CAPTURE_BYTES } : {}),
      onRetry: (reason, replica) => {
        const l = labels(rev.target);
        g.metrics.retries.inc({ project: l.project, service: l.service, reason });
        g.log?.warn({ ...l, replica, reason }, "upstream connection failed; retrying on another replica");
      },
      onFirstByte: (ms) => bound.ttfb.observe(ms / 1000),
    },
    (r) => {
      rev.inFlight--;
      bound.inFlight.dec();
      recordConcurrency(rev, g.now());
      const result: HandleResult = {
        status: r.status,
        ...rev.target,
        replica: r.replica,
        usage: r.usage,
      };
      if (rev.tracing)
        result.trace = {
          request: route.body,
          response: r.body ?? Buffer.alloc(0),
          startedMs: started,
          endedMs: g.now(),
          complete: r.complete,
        };
      recordRequest(g, rev, started, result);
      done?.(result);
    },
  );
}

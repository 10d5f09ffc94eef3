import { type GatewayContext, labels, type RevState } from "./context.js";
import type { HandleResult } from "./contract.js";

/** Request metrics, once the request is over (however it ended). */
export function recordRequest(
  g: GatewayContext,
  st: RevState | undefined,
  started: number,
  result: HandleResult,
): void {
  if (st) {
    const b = bound(g, st);
    const code = String(result.status);
    let counter = b.requests.get(code);
    if (!counter) {
      counter = g.metrics.requests.labels({ ...labels(st.target), code });
      b.requests.set(code, counter);
    }
    counter.inc();
    b.duration.observe((g.now() - started) / 1000);
    if (result.usage) {
      b.promptTokens.inc(result.usage.promptTokens);
      b.completionTokens.inc(result.usage.completionTokens);
    }
  } else {
    const l = { project: "", service: "", revision: "" };
    g.metrics.requests.inc({ ...l, code: String(result.status) });
    g.metrics.duration.observe(l, (g.now() - started) / 1000);
  }
}

/** The revision's metric children, bound to its labels on first use. */
export function bound(g: GatewayContext, st: RevState): NonNullable<RevState["bound"]> {
  if (!st.bound) {
    const l = labels(st.target);
    st.bound = {
      inFlight: g.metrics.inFlight.labels(l),
      duration: g.metrics.duration.labels(l),
      ttfb: g.metrics.ttfb.labels(l),
      promptTokens: g.metrics.tokens.labels({ project: l.project, service: l.service, kind: "prompt" }),
      completionTokens: g.metrics.tokens.labels({
        project: l.project,
        service: l.service,
        kind: "completion",
      }),
      requests: new Map(),
    };
  }
  return st.bound;
}

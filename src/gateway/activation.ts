import { type GatewayContext, type Route, type RouteContext, recordConcurrency } from "./context.js";
import type { HandleOptions } from "./contract.js";
import { ClientGoneError, GatewayError, unknownModel } from "./errors.js";
import type { GatewayResponse } from "./h1.js";
import { pickRevision, updateService } from "./revisions.js";

/**
 * Step 3, cold: holds the request until a replica is ready; the first hold starts a scale from
 * zero (the Activator's onHold). Woken, it asks the directory again, since a revision may have
 * gone or weights changed while it waited.
 */
export async function hold(
  g: GatewayContext,
  res: GatewayResponse,
  opts: HandleOptions,
  started: number,
  ctx: RouteContext,
  route: Route,
): Promise<Route> {
  const { model, label } = route;
  let st = route.st;
  const ac = new AbortController();
  const onClose = () => {
    if (!res.writableEnded) ac.abort();
  };
  res.on("close", onClose);
  const deadline = started + (g.opts.activator?.timeoutMs ?? 300_000);
  const heldAt = g.now();
  const waitLabels = { project: st.target.project, service: st.target.service };
  try {
    while (st.balancer.size === 0) {
      st.held++;
      recordConcurrency(st, g.now());
      try {
        await g.activator.wait(st.key, {
          signal: ac.signal,
          timeoutMs: Math.max(0, deadline - g.now()),
          label,
        });
      } finally {
        st.held--;
        recordConcurrency(st, g.now());
      }
      // Woken: the directory has the truth (a revision may have gone, weights changed).
      const ep = await g.deps.directory.resolve(model, opts.project);
      if (!ep) throw unknownModel(model);
      updateService(g, ep);
      const revision = st.target.revision;
      if (!ep.revisions.some((r) => r.name === revision)) st = pickRevision(g, ep, model, opts.project);
      ctx.st = st;
    }
    g.metrics.activatorWait.observe({ ...waitLabels, result: "released" }, (g.now() - heldAt) / 1000);
  } catch (err) {
    const result =
      err instanceof ClientGoneError
        ? "gone"
        : err instanceof GatewayError && err.code === "model_overloaded"
          ? "full"
          : "timeout";
    g.metrics.activatorWait.observe({ ...waitLabels, result }, (g.now() - heldAt) / 1000);
    throw err;
  } finally {
    res.off("close", onClose);
  }
  return { ...route, st };
}

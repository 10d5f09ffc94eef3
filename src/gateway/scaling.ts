import { type GatewayContext, labels, type RevState, revKey } from "./context.js";
import type { ConcurrencyReport, ScaleTarget } from "./contract.js";
import { updateService } from "./revisions.js";

/**
 * Autoscaling: the ticker's pass turning each revision's autoscaler decision into
 * `Scaler.setDesired`, scale from zero on a first hold, and the concurrency reports that
 * gateway replicas exchange (a follower reports, the deciding one adds them to its own).
 */

/** One autoscaling pass over every known revision. */
export async function autoscaleOnce(g: GatewayContext): Promise<void> {
  // Belt and braces for a missed `update`: re-resolve revisions that hold requests.
  for (const key of g.activator.keys()) {
    const st = g.states.get(key);
    if (!st?.model) continue;
    try {
      const ep = await g.deps.directory.resolve(st.model, st.projectHint);
      if (ep) updateService(g, ep);
    } catch (err) {
      g.log?.warn({ err, key }, "re-resolving a held revision failed");
    }
  }
  const now = g.now();
  const live = new Set<string>();
  const decides = g.opts.autoscale !== false;
  for (const st of g.states.values()) {
    for (const r of st.syncedRev?.replicas ?? []) live.add(`${r.host}:${r.port}`);
    if (!decides) continue;
    if (st.remote?.size) sumRemote(g, st);
    const d = st.autoscaler.decide(now, st.ready, st.starting);
    g.metrics.panic.set(labels(st.target), d.panic ? 1 : 0);
    setDesired(g, st, d.desired, d.reason);
  }
  // Replicas come and go on new ports: their connection pools go with them.
  g.proxy.retain(live);
}

/**
 * This gateway's load per revision since the last call (a follower sends it to the gateway
 * that decides, every second or so). Revisions idle over the whole window are left out,
 * after one report of zero.
 */
export function takeReport(g: GatewayContext): ConcurrencyReport[] {
  const now = g.now();
  const out: ConcurrencyReport[] = [];
  for (const st of g.states.values()) {
    const area = st.reportArea + st.prevLocal * (now - st.lastChange);
    const window = now - st.reportSince;
    st.reportArea = 0;
    st.reportSince = now;
    st.lastChange = now;
    const busy = area > 0 || st.held > 0;
    // An idle revision is reported once more, as zero, so that the deciding gateway stops
    // counting it at once rather than when the last report goes stale.
    if (!busy && !st.reportedBusy) continue;
    st.reportedBusy = busy;
    out.push({ ...st.target, concurrency: window > 0 ? area / window : st.prevLocal, held: st.held });
  }
  return out;
}

/**
 * Another gateway's load on a revision: added to this one's until that gateway reports again
 * (or stops reporting for `staleMs`). A held request there wakes a revision at zero here.
 */
export function recordRemote(
  g: GatewayContext,
  source: string,
  report: ConcurrencyReport,
  staleMs: number,
): void {
  const ep = { project: report.project, service: report.service, revision: report.revision };
  const st = g.states.get(revKey(ep));
  if (!st) return; // not published here (yet): the directory is the truth
  st.remote ??= new Map();
  st.remote.set(source, { concurrency: report.concurrency, at: g.now() });
  sumRemote(g, st, staleMs);
  if (report.held > 0 && st.ready === 0) scaleFromZero(g, st.key);
}

/** Another gateway holds a request for this revision: start a replica now. */
export function wake(g: GatewayContext, target: ScaleTarget): void {
  const st = g.states.get(revKey(target));
  if (st && st.ready === 0) scaleFromZero(g, st.key);
}

function sumRemote(g: GatewayContext, st: RevState, staleMs = 5000): void {
  const now = g.now();
  let sum = 0;
  for (const [source, r] of st.remote ?? []) {
    if (now - r.at > staleMs) st.remote!.delete(source);
    else sum += r.concurrency;
  }
  if (sum === st.remoteSum) return;
  st.remoteSum = sum;
  st.autoscaler.record(now, st.inFlight + st.held + sum);
}

/** A request is held for the revision (the first one, here or at another gateway): ask for a replica. */
export function scaleFromZero(g: GatewayContext, key: string): void {
  const st = g.states.get(key);
  if (!st) return;
  if (g.opts.autoscale === false) {
    // A follower only wakes the revision; the deciding gateway counts from there. Asked again
    // on every first hold: the deciding one may have scaled back to zero since.
    st.lastDesired = undefined;
    setDesired(g, st, 1, "scale from zero: a request is waiting at another gateway");
    return;
  }
  const d = st.autoscaler.decide(g.now(), st.ready, st.starting);
  setDesired(g, st, Math.max(1, d.desired), "scale from zero: a request is waiting");
}

function setDesired(g: GatewayContext, st: RevState, n: number, reason: string): void {
  if (st.lastDesired === n) return;
  st.lastDesired = n;
  g.metrics.replicas.set({ ...labels(st.target), state: "desired" }, n);
  g.log?.info({ ...labels(st.target), replicas: n, reason }, "scaling");
  try {
    const p = g.deps.scaler.setDesired(st.target, n, reason);
    if (p) {
      p.catch((err: unknown) => {
        // Forget it so that the next tick asks again.
        if (st.lastDesired === n) st.lastDesired = undefined;
        g.log?.warn({ err, ...labels(st.target) }, "scaler failed");
      });
    }
  } catch (err) {
    st.lastDesired = undefined;
    g.log?.warn({ err, ...labels(st.target) }, "scaler failed");
  }
}

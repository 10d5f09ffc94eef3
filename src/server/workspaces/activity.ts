import type { Duplex } from "node:stream";
import type { IdeActivity } from "../../ports/workspaces.js";

/**
 * Counts bytes either way on a proxied connection (a WebSocket through the workspace origin, a
 * `loom port-forward` or `loom ssh` tunnel) as use of the workspace, for idle culling: calls
 * `touch` on the first chunk and then at most once per `everyMs`, so a busy socket costs a
 * clock read per chunk, not a write. An open IDE tab is never silent for long: VS Code's
 * remote protocol sends a keep-alive every 5 s, Jupyter pings its kernel and terminal sockets
 * every 30 s (and any WebSocket that lives behind nginx must speak within its 60 s); a socket
 * whose far end vanished without closing stops counting once nothing flows on it.
 */
export function touchOnTraffic(streams: readonly Duplex[], touch: () => void, everyMs = 1000): void {
  let last = Number.NEGATIVE_INFINITY;
  const seen = () => {
    const now = Date.now();
    if (now - last < everyMs) return;
    last = now;
    touch();
  };
  for (const s of streams) s.on("data", seen);
}

/**
 * Jupyter's last activity from its `/api/status` (no token: Loom's origin is the gate), or now
 * when one of its kernels is busy (`/api/kernels`, execution_state): a kernel computing sends
 * nothing while it works (`time.sleep`, a long training step), so its last_activity stands still,
 * and Kubeflow's culler, like Jupyter's own (cull_busy off), counts a busy kernel as active.
 * Neither request counts as activity to Jupyter (/api/status never does; the kernel list is
 * asked with no_track_activity). Anything else, or no answer in 2 s: undefined, and the proxy's
 * own record decides.
 */
export const ideActivity: IdeActivity = async (ide, endpoint) => {
  const base = `http://${hostPart(endpoint.host)}:${endpoint.port}`;
  if (ide === "vscode") return codeServerActivity(base);
  if (ide !== "jupyter") return undefined;
  const status = (await getJson(`${base}/api/status`)) as { last_activity?: string } | undefined;
  const kernels = await getJson(`${base}/api/kernels?no_track_activity=1`);
  if (
    Array.isArray(kernels) &&
    kernels.some((k) => (k as { execution_state?: string } | null)?.execution_state === "busy")
  )
    return new Date();
  const at = new Date(status?.last_activity ?? "");
  return Number.isNaN(at.getTime()) ? undefined : at;
};

/**
 * code-server's own record: /healthz's lastHeartbeat, which it moves on every request but
 * /healthz itself and, every minute, while an editor's connection is open (its idle-timeout
 * logic, which Loom's culler reads instead).
 */
async function codeServerActivity(base: string): Promise<Date | undefined> {
  const health = (await getJson(`${base}/healthz`)) as { lastHeartbeat?: number } | undefined;
  const at =
    typeof health?.lastHeartbeat === "number" && health.lastHeartbeat > 0
      ? new Date(health.lastHeartbeat)
      : undefined;
  return at && !Number.isNaN(at.getTime()) ? at : undefined;
}

/** The JSON body of a GET that answers 2xx within 2 s; undefined otherwise. */
async function getJson(url: string): Promise<unknown> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return undefined;
    return await res.json();
  } catch {
    return undefined;
  }
}

function hostPart(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

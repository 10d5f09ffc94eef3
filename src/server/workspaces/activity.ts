import type { IdeActivity } from "../../ports/workspaces.js";

/**
 * Jupyter's last activity from its `/api/status` (no token: Loom's origin is the gate). Jupyter
 * does not count this request as activity. Anything else, or no answer in 2 s: undefined, and the
 * proxy's own record decides.
 */
export const ideActivity: IdeActivity = async (ide, endpoint) => {
  if (ide !== "jupyter") return undefined;
  try {
    const res = await fetch(`http://${hostPart(endpoint.host)}:${endpoint.port}/api/status`, {
      signal: AbortSignal.timeout(2000),
    });
    if (!res.ok) return undefined;
    const at = new Date(((await res.json()) as { last_activity?: string }).last_activity ?? "");
    return Number.isNaN(at.getTime()) ? undefined : at;
  } catch {
    return undefined;
  }
};

function hostPart(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

import { API_VERSION } from "../api/meta.js";
import { ForbiddenError } from "../errors.js";
import type { TokenInfo } from "../store/port.js";

const BASE = `/apis/${API_VERSION}`;
const READ = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * What a token may do on Loom's own API (the MLflow routes have theirs in tracking/tenancy.ts):
 * viewers read; a token scoped to a project reaches that project's objects only (the token a
 * job's workers get must not touch another tenant's jobs); changing projects themselves takes
 * an admin. Throws ForbiddenError saying what the token is and what it may do.
 */
export function authorizeApi(principal: TokenInfo, method: string, url: string): void {
  const path = url.split("?")[0]!;
  // API keys are for the gateway (OpenAI routes): not Loom's API, not tracking.
  if (principal.apiKey && !path.startsWith("/v1/") && !path.startsWith("/serving/"))
    throw new ForbiddenError(
      `API key "${principal.name}" reaches the inference gateway (/v1/…) only; use a token for Loom's API`,
    );
  if (!path.startsWith(`${BASE}/`)) return;
  const rest = path.slice(BASE.length);
  const read = READ.has(method);
  const who = `token "${principal.name}" (${principal.role}${principal.project ? ` in project ${principal.project}` : ""})`;
  if (principal.role === "viewer" && !read)
    throw new ForbiddenError(`${who} may read, not change: ask an admin for an editor token`);
  if (principal.project) {
    const inProject =
      rest === `/projects/${principal.project}` || rest.startsWith(`/projects/${principal.project}/`);
    const clusterRead = read && rest === "/nodes";
    if (!inProject && !clusterRead)
      throw new ForbiddenError(
        `${who} reaches project ${principal.project} only: use -p ${principal.project}`,
      );
  }
  // Projects themselves (quota, members): creating, changing or deleting one takes an admin.
  const projectItself = /^\/projects(\/[^/]+)?$/.test(rest) && !(rest === "/projects" && read);
  if (projectItself && !read && principal.role !== "admin")
    throw new ForbiddenError(`${who} cannot create, change or delete projects: that takes an admin token`);
}

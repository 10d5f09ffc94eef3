import { ForbiddenError, UnauthorizedError } from "../api/errors.js";
import { API_VERSION } from "../api/meta.js";
import type { TokenInfo } from "../ports/store.js";

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
  // The control routes other gateways use (endpoints, key checks, load): the platform's own.
  if (path.startsWith("/gateway/")) {
    if (principal.role !== "admin" || principal.project)
      throw new ForbiddenError(
        `token "${principal.name}" cannot use the gateway control routes: a gateway runs with an admin token`,
      );
    return;
  }
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

/**
 * Who the bearer token of an Authorization header is. Verified tokens are cached by value in
 * memory, for `ttlMs` if given (a gateway that asks Loom's API over the network), else for the
 * life of the process; a cached one costs a map lookup (the gateway calls this on every request).
 */
export function bearerAuthenticator(
  verify: (token: string) => Promise<TokenInfo | undefined>,
  opts: { ttlMs?: number; now?: () => number } = {},
): (header: string | undefined) => TokenInfo | Promise<TokenInfo> {
  const now = opts.now ?? Date.now;
  const verified = new Map<string, { info: TokenInfo; until: number }>();
  const check = async (token: string): Promise<TokenInfo> => {
    const info = await verify(token);
    if (!info)
      throw new UnauthorizedError(
        "invalid token: check LOOM_TOKEN or the context in ~/.loom/config.yaml (loom up prints the admin token)",
      );
    if (verified.size > 10_000) verified.clear();
    verified.set(token, { info, until: opts.ttlMs === undefined ? Infinity : now() + opts.ttlMs });
    return info;
  };
  return (header) => {
    if (!header?.startsWith("Bearer ")) {
      throw new UnauthorizedError(
        "missing bearer token: send 'Authorization: Bearer <token>' (the CLI reads it from ~/.loom/config.yaml or LOOM_TOKEN)",
      );
    }
    const token = header.slice(7).trim();
    const cached = verified.get(token);
    if (cached && cached.until > now()) return cached.info;
    return check(token);
  };
}

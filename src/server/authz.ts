import { UnauthorizedError } from "../api/errors.js";
import type { TokenInfo } from "../ports/store.js";

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

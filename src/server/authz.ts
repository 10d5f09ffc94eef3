import { UnauthorizedError } from "../api/errors.js";
import type { TokenInfo } from "../ports/store.js";

/**
 * The token an Authorization header carries: `Bearer <token>`, or `Basic base64(user:token)`
 * (the token as the password: what the mlflow client sends from ~/.mlflow/credentials, the file
 * a workload's credential is delivered in). Undefined if neither.
 */
export function tokenOfHeader(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const space = header.indexOf(" ");
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (space <= 0 || !value) return undefined;
  if (scheme === "bearer") return value;
  if (scheme !== "basic") return undefined;
  const decoded = Buffer.from(value, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon >= 0 && colon < decoded.length - 1 ? decoded.slice(colon + 1) : undefined;
}

/** How long a verified token is trusted before it is checked again: revocation's bound. */
export const DEFAULT_MAX_AGE_MS = 1000;

/**
 * Who the token of an Authorization header is (tokenOfHeader). Verified tokens are cached by
 * value for at most `maxAgeMs` (default 1 s: a revoked, expired or unbound token is refused within
 * that, in this process and in remote gateways alike), and never past their expiry; a cached one
 * costs a map lookup (the gateway calls this on every request). Past half its age an entry is
 * checked again in the background while it keeps serving, so a token in steady use never waits
 * on `verify` (a network call for a remote gateway) once it is known.
 */
export function bearerAuthenticator(
  verify: (token: string) => Promise<TokenInfo | undefined>,
  opts: { maxAgeMs?: number; now?: () => number } = {},
): (header: string | undefined) => TokenInfo | Promise<TokenInfo> {
  const now = opts.now ?? Date.now;
  const maxAge = opts.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
  const verified = new Map<string, { info: TokenInfo; at: number; until: number }>();
  const refreshing = new Map<string, Promise<TokenInfo | undefined>>();
  const invalid = () =>
    new UnauthorizedError(
      "invalid token: it is unknown, revoked or expired (loom token list / loom apikey list -p PROJECT show which are live). " +
        "Ask an admin for a new one: loom token create NAME for Loom's API (put it in LOOM_TOKEN or the context in ~/.loom/config.yaml; loom up prints the admin token), " +
        "loom apikey create NAME -p PROJECT for the inference gateway (the OpenAI client's api_key)",
    );
  // One verify per token at a time: a burst of requests with a new token asks once.
  const check = (token: string): Promise<TokenInfo | undefined> => {
    let pending = refreshing.get(token);
    if (pending) return pending;
    const at = now();
    pending = verify(token)
      .then((info) => {
        if (!info) {
          verified.delete(token);
          return undefined;
        }
        if (verified.size > 10_000) verified.clear();
        const expires = info.expiresAt ? Date.parse(info.expiresAt) : Infinity;
        verified.set(token, { info, at, until: Math.min(at + maxAge, expires) });
        return info;
      })
      .finally(() => refreshing.delete(token));
    refreshing.set(token, pending);
    return pending;
  };
  return (header) => {
    const token = tokenOfHeader(header);
    if (!token) {
      throw new UnauthorizedError(
        "missing bearer token: send 'Authorization: Bearer <token>' (the CLI reads it from ~/.loom/config.yaml or LOOM_TOKEN)",
      );
    }
    const cached = verified.get(token);
    const t = now();
    if (cached && cached.until > t) {
      if (t - cached.at >= maxAge / 2) check(token).catch(() => undefined);
      return cached.info;
    }
    return check(token).then((info) => {
      if (!info) throw invalid();
      return info;
    });
  };
}

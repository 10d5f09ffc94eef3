import { randomBytes, timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ForbiddenError } from "../../api/errors.js";
import { verbOf } from "../routetable.js";

/** The console's session cookie: the user's token, HttpOnly so no script on the page can read it. */
export const SESSION_COOKIE = "loom_console";
/** The double-submit CSRF cookie: readable by the console's script, which echoes it in CSRF_HEADER. */
export const CSRF_COOKIE = "loom_csrf";
export const CSRF_HEADER = "x-loom-csrf";
/** How long a console log-in lasts (the token's own expiry still applies). */
const SESSION_SECONDS = 12 * 3600;

/** The cookies of a Cookie header, by name (the first of a repeated name wins). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (header ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Refuses a request that another site (or another origin of this site, such as a workspace on
 * *.ws.localhost, which SameSite does not keep apart) made the browser send: its Origin must be
 * this host, and Sec-Fetch-Site, where the browser sends it, same-origin.
 */
export function refuseCrossOrigin(req: FastifyRequest): void {
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let host = "";
    try {
      host = new URL(origin).host;
    } catch {}
    if (host !== req.headers.host)
      throw new ForbiddenError(
        `a request from ${origin.slice(0, 100)} cannot use the console's session: only the console's own pages can`,
      );
  }
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin" && site !== "none")
    throw new ForbiddenError("a cross-site request cannot use the console's session");
}

/**
 * Lets the console's cookie stand for a bearer token: a request with no Authorization header and
 * a session cookie is authenticated as that cookie's token. A write must also carry the CSRF
 * cookie's value in the x-loom-csrf header (a page on another origin can neither read the cookie
 * nor send a custom header without a CORS grant, which Loom never gives). Any request carried by
 * the cookie must come from this origin. Installed before the guard, which then decides as for
 * any bearer token.
 */
export function acceptConsoleCookie(app: FastifyInstance): void {
  app.addHook("onRequest", async (req) => {
    if (req.headers.authorization !== undefined) return;
    const cookies = parseCookies(req.headers.cookie);
    const token = cookies.get(SESSION_COOKIE);
    if (!token) return;
    if (req.routeOptions.config.authz?.scope === "public") return;
    // Every verb: a WebSocket (port-forward's upgrade is a GET) is not held by CORS, and a page on
    // a workspace's origin is the same site, so its browser would send the cookie along.
    refuseCrossOrigin(req);
    if (verbOf(req.method) === "write") {
      const expected = cookies.get(CSRF_COOKIE);
      const sent = req.headers[CSRF_HEADER];
      if (!expected || typeof sent !== "string" || !sameString(sent, expected))
        throw new ForbiddenError(
          `a write with the console's session needs the ${CSRF_HEADER} header the console sends: reload the console and try again`,
        );
    }
    req.headers.authorization = `Bearer ${token}`;
  });
}

/** Sets the session and CSRF cookies (Secure when the request came over https). */
export function setSession(req: FastifyRequest, reply: FastifyReply, token: string): string {
  const csrf = randomBytes(24).toString("base64url");
  const secure = req.protocol === "https" ? "; Secure" : "";
  reply.header("set-cookie", [
    `${SESSION_COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_SECONDS}${secure}`,
    `${CSRF_COOKIE}=${csrf}; SameSite=Strict; Path=/; Max-Age=${SESSION_SECONDS}${secure}`,
  ]);
  return csrf;
}

/** Clears both cookies. */
export function clearSession(req: FastifyRequest, reply: FastifyReply): void {
  const secure = req.protocol === "https" ? "; Secure" : "";
  reply.header("set-cookie", [
    `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0${secure}`,
    `${CSRF_COOKIE}=; SameSite=Strict; Path=/; Max-Age=0${secure}`,
  ]);
}

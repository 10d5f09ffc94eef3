import {
  type IncomingHttpHeaders,
  type IncomingMessage,
  type RequestOptions,
  request,
  type ServerResponse,
} from "node:http";
import type { Duplex } from "node:stream";

/** The session cookie of workspace origins; never forwarded to the workspace. */
export const SESSION_COOKIE = "loom_ws";

/** Every cookie of Loom's on the user-content origin (workspaces', apps' session and affinity): never forwarded, never set upstream. */
const LOOM_COOKIES = new Set([SESSION_COOKIE, "loom_app", "loom_app_affinity", "loom_console", "loom_csrf"]);
const isLoomCookie = (c: string) => LOOM_COOKIES.has(c.split("=", 1)[0]!.trim());

/** Per-connection headers (RFC 9110 §7.6.1) that a proxy does not pass on. */
const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
];

/** Where a request goes: the workspace's host and port, the path there, and the prefix that was cut. */
export interface Target {
  host: string;
  port: number;
  path: string;
  /** "/proxy/P" when the request came in under it (told to the workspace as X-Forwarded-Prefix). */
  prefix?: string;
  /**
   * Opens the connection instead of dialing host:port (the runtime's dial into the workspace's
   * own network: a server bound to 127.0.0.1 there is reachable only so).
   */
  connect?: () => Promise<Duplex>;
  /** Set-Cookie values Loom adds to the response (an App's affinity cookie). */
  setCookies?: string[];
}

/** Where the request to `target` connects: host:port, or the target's own dial. */
function upstreamOptions(target: Target): RequestOptions {
  const { connect } = target;
  if (!connect) return { host: target.host, port: target.port };
  return {
    host: target.host,
    port: target.port,
    // No agent: one connection per request, made by the runtime (a failure is the request's error).
    createConnection: (_opts, done) => {
      connect().then(
        (socket) => done(null, socket),
        (err: Error) => done(err, undefined as unknown as Duplex),
      );
      return undefined;
    },
  };
}

/** Cookie header values without Loom's session cookie; undefined if nothing else is left. */
export function withoutSessionCookie(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const kept = header
    .split(";")
    .map((c) => c.trim())
    .filter((c) => c !== "" && !isLoomCookie(c));
  return kept.length ? kept.join("; ") : undefined;
}

/** Every value of Loom's session cookie in a Cookie header (a sibling origin may have added one). */
export function sessionCookies(header: string | undefined): string[] {
  if (!header) return [];
  const out: string[] = [];
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) out.push(part.slice(eq + 1).trim());
  }
  return out;
}

/**
 * The headers the workspace gets: the client's, less hop-by-hop ones, Loom's credentials (its
 * cookie and any Authorization, meant for Loom), plus X-Forwarded-*. Host is kept, so the
 * workspace's own same-origin checks (Jupyter's on WebSockets) see the origin the browser used.
 */
export function forwardedHeaders(
  req: IncomingMessage,
  target: Target,
  upgrade: boolean,
): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = { ...req.headers };
  for (const h of HOP_BY_HOP) delete headers[h];
  for (const h of (req.headers.connection ?? "").split(",")) delete headers[h.trim().toLowerCase()];
  delete headers.authorization;
  delete headers["proxy-authorization"];
  const cookie = withoutSessionCookie(req.headers.cookie);
  if (cookie) headers.cookie = cookie;
  else delete headers.cookie;
  if (upgrade) {
    headers.connection = "Upgrade";
    headers.upgrade = req.headers.upgrade;
  }
  const peer = req.socket.remoteAddress ?? "";
  const prior = req.headers["x-forwarded-for"];
  headers["x-forwarded-for"] = prior ? `${prior}, ${peer}` : peer;
  headers["x-forwarded-host"] = req.headers.host;
  headers["x-forwarded-proto"] = "http";
  if (target.prefix) headers["x-forwarded-prefix"] = target.prefix;
  else delete headers["x-forwarded-prefix"];
  return headers;
}

/** The workspace's response headers, less hop-by-hop ones and any attempt to set Loom's own cookie. */
function returnedHeaders(res: IncomingMessage): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = { ...res.headers };
  for (const h of HOP_BY_HOP) delete headers[h];
  const cookies = res.headers["set-cookie"];
  if (cookies) headers["set-cookie"] = cookies.filter((c) => !isLoomCookie(c));
  return headers;
}

/**
 * Forwards one HTTP request, streaming both ways (no buffering: uploads, downloads and
 * server-sent events flow as they come). `unreachable` answers when the workspace does not.
 */
export function forwardHttp(
  req: IncomingMessage,
  res: ServerResponse,
  target: Target,
  unreachable: (err: Error) => void,
): void {
  const upstream = request({
    ...upstreamOptions(target),
    method: req.method,
    path: target.path,
    headers: forwardedHeaders(req, target, false),
  });
  upstream.on("response", (ures) => {
    const headers = returnedHeaders(ures);
    if (target.setCookies) headers["set-cookie"] = [...(headers["set-cookie"] ?? []), ...target.setCookies];
    res.writeHead(ures.statusCode ?? 502, ures.statusMessage, headers);
    res.flushHeaders(); // an event stream's headers go out before its first event
    ures.pipe(res);
    ures.on("error", () => res.destroy());
  });
  upstream.on("error", (err) => {
    if (res.headersSent) res.destroy();
    else unreachable(err);
  });
  // The client went away: stop the workspace's side too.
  res.on("close", () => {
    if (!res.writableFinished) upstream.destroy();
  });
  req.pipe(upstream);
}

/**
 * Forwards an HTTP Upgrade (WebSocket) and then splices the two sockets. Calls `opened` with the
 * workspace's socket once it switched protocols and `closed` when either side ends; a workspace
 * that answers without upgrading has its response relayed as is.
 */
export function forwardUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: Target,
  hooks: { unreachable(err: Error): void; opened(upstream: Duplex): void; closed(): void },
): void {
  const upstream = request({
    ...upstreamOptions(target),
    method: req.method,
    path: target.path,
    headers: forwardedHeaders(req, target, true),
  });
  socket.on("error", () => upstream.destroy());
  upstream.on("upgrade", (ures, usock, uhead) => {
    socket.write(statusAndHeaders(ures));
    if (uhead.length) socket.write(uhead);
    if (head.length) usock.write(head);
    usock.pipe(socket);
    socket.pipe(usock);
    hooks.opened(usock);
    let done = false;
    const close = () => {
      if (done) return;
      done = true;
      usock.destroy();
      socket.destroy();
      hooks.closed();
    };
    usock.on("close", close);
    usock.on("error", close);
    socket.on("close", close);
    socket.on("error", close);
  });
  upstream.on("response", (ures) => {
    socket.write(statusAndHeaders(ures, true));
    ures.pipe(socket);
  });
  upstream.on("error", (err) => hooks.unreachable(err));
  upstream.end();
}

/** A response's status line and headers, raw (to write on an upgraded or about-to-close socket). */
function statusAndHeaders(res: IncomingMessage, closing = false): string {
  let out = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ""}\r\n`;
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (closing && (name === "connection" || name === "transfer-encoding" || name === "keep-alive")) continue;
    if (name === "set-cookie" && isLoomCookie(raw[i + 1]!)) continue;
    out += `${raw[i]}: ${raw[i + 1]}\r\n`;
  }
  return `${out}${closing ? "connection: close\r\n" : ""}\r\n`;
}

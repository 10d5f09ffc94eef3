import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { LoomError } from "../../api/errors.js";
import { withKeepAlive } from "../../lib/httpserver.js";
import type { Runtime } from "../../ports/runtime.js";
import type { WorkspaceDirectory, WorkspaceEndpoint } from "../../ports/workspaces.js";
import type { WorkspaceAccess, WorkspaceSession } from "./access.js";
import { touchOnTraffic } from "./activity.js";
import { parseWorkspaceHost, type WorkspaceHost, WS_DOMAIN } from "./host.js";
import { refuseUpgrade, sendPage } from "./pages.js";
import { forwardHttp, forwardUpgrade, SESSION_COOKIE, sessionCookies, type Target } from "./proxy.js";

export interface OriginDeps {
  access: WorkspaceAccess;
  directory: WorkspaceDirectory;
  log: Logger;
  now?: () => Date;
  /**
   * Dials a port inside a workload's own network (Runtime.connectPort): /proxy/P/ of a workspace
   * whose endpoint names its replica goes through it, so servers bound to 127.0.0.1 there answer.
   */
  connectPort?: Runtime["connectPort"];
  /** Apps (issue 20) on the same listener: requests whose Host names an app go there. */
  apps?: {
    serves(req: IncomingMessage): boolean;
    request(req: IncomingMessage, res: ServerResponse): void;
    upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  };
}

/** The log-in path on every workspace origin (a workspace's own server never sees it). */
export const LOGIN_PATH = "/_loom/login";

/** A refusal with its status and what to do, before anything reaches the workspace. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    message: string,
    readonly refresh?: number,
  ) {
    super(message);
  }
}

/**
 * The user-content origin (issue 19): a listener of its own, never the API's, that serves each
 * workspace at http://NAME--PROJECT.ws.localhost:PORT/. It logs browsers in with one-time
 * tickets, checks the session on every request and WebSocket, and proxies to the endpoint the
 * workspace controller published (and /proxy/P/ to the workspace's other ports).
 */
export function workspaceOriginServer(deps: OriginDeps): Server {
  const now = deps.now ?? (() => new Date());

  // No whole-request deadline (long uploads to a notebook); headersTimeout still bounds slow clients.
  const server = withKeepAlive(
    createServer({ requestTimeout: 0 }, (req, res) => {
      if (deps.apps?.serves(req)) return deps.apps.request(req, res);
      handle(req, res).catch((err: Error) => {
        const r = asRefusal(err, deps.log);
        sendPage(res, r.status, r.title, r.message, {}, r.refresh);
      });
    }),
  );

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const ws = workspaceOf(req);
    const url = new URL(req.url ?? "/", "http://origin");
    if (url.pathname === LOGIN_PATH) return login(req, res, ws, url);
    refuseCrossSite(req, false);
    await session(req, ws);
    const target = targetOf(url, endpointOf(ws), deps.connectPort);
    if ("redirect" in target) {
      res.writeHead(308, { location: target.redirect }).end();
      return;
    }
    deps.directory.touch?.(ws.project, ws.name, now());
    forwardHttp(req, res, target, (err) => {
      const r = unreachable(ws, target, err);
      sendPage(res, r.status, r.title, r.message, {}, r.refresh);
    });
  }

  async function login(
    req: IncomingMessage,
    res: ServerResponse,
    ws: WorkspaceHost,
    url: URL,
  ): Promise<void> {
    if (req.method !== "GET") throw new Refusal(400, "Log-in", "open the log-in link in a browser (GET)");
    const ticket = url.searchParams.get("ticket");
    if (!ticket)
      throw new Refusal(400, "Log-in", `no ticket: get a link with loom open ws/${ws.name} -p ${ws.project}`);
    const id = await deps.access.redeem(ticket, ws.project, ws.name);
    res.writeHead(302, {
      // Host-only (no Domain): sent back to this workspace's origin only, never to a sibling's.
      "set-cookie": `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Lax; Path=/; Max-Age=${12 * 3600}`,
      location: "/",
      "cache-control": "no-store",
      // The ticket is in this URL: do not let it leak to the next page as a Referer.
      "referrer-policy": "no-referrer",
    });
    res.end();
  }

  async function session(req: IncomingMessage, ws: WorkspaceHost): Promise<WorkspaceSession> {
    const ids = sessionCookies(req.headers.cookie);
    // A sibling origin can add a loom_ws cookie for all of ws.localhost: any value that is a
    // session of this workspace counts, the others are ignored.
    let refusal: unknown;
    for (const id of ids.length ? ids : [undefined]) {
      try {
        return await deps.access.check(id, ws.project, ws.name);
      } catch (err) {
        refusal ??= err;
      }
    }
    throw refusal;
  }

  function endpointOf(ws: WorkspaceHost): WorkspaceEndpoint {
    const ep = deps.directory.lookup(ws.project, ws.name);
    if (!ep)
      throw new Refusal(
        503,
        `Workspace ${ws.name} is not running`,
        `workspace ${ws.name} in project ${ws.project} is stopped, starting, or gone. ` +
          `loom get ws/${ws.name} -p ${ws.project} shows its phase; loom start ws/${ws.name} -p ${ws.project} starts a stopped one. ` +
          "This page reloads itself every 5 s.",
        5,
      );
    return ep;
  }

  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (deps.apps?.serves(req)) return deps.apps.upgrade(req, socket, head);
    socket.on("error", () => undefined);
    upgrade(req, socket, head).catch((err: Error) => {
      const r = asRefusal(err, deps.log);
      refuseUpgrade(socket, r.status, r.message);
    });
  });

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const ws = workspaceOf(req);
    refuseCrossSite(req, true);
    await session(req, ws);
    const target = targetOf(new URL(req.url ?? "/", "http://origin"), endpointOf(ws), deps.connectPort);
    if ("redirect" in target) throw new Refusal(404, "Not found", `connect to ${target.redirect}`);
    const touch = () => deps.directory.touch?.(ws.project, ws.name, now());
    forwardUpgrade(req, socket, head, target, {
      unreachable: (err) => refuseUpgrade(socket, 502, unreachable(ws, target, err).message),
      // What flows either way is use (an open IDE tab keeps talking), as on a port-forward tunnel.
      opened: (upstream) => {
        touch();
        touchOnTraffic([socket, upstream], touch);
      },
      closed: touch,
    });
  }

  return server;
}

/** The workspace the Host names; anything else is not served here. */
function workspaceOf(req: IncomingMessage): WorkspaceHost {
  const ws = parseWorkspaceHost(req.headers.host);
  if (!ws)
    throw new Refusal(
      404,
      "Not a workspace",
      `this is Loom's workspace origin: it serves workspaces at http://NAME--PROJECT.${WS_DOMAIN}:PORT/ only ` +
        `(Host ${JSON.stringify(req.headers.host ?? "")} names none). Get a workspace's link with: loom open ws/NAME -p PROJECT`,
    );
  return ws;
}

/**
 * Workspaces share a site (ws.localhost), so a sibling workspace's page can make the browser send
 * this origin's cookie. Only top-level navigations (safe methods) may come from elsewhere;
 * everything else must come from this origin itself (Fetch Metadata, and Origin where sent).
 */
export function refuseCrossSite(req: IncomingMessage, upgrade: boolean): void {
  const site = req.headers["sec-fetch-site"];
  const mode = req.headers["sec-fetch-mode"];
  const origin = req.headers.origin;
  const safe = req.method === "GET" || req.method === "HEAD";
  const own = `http://${(req.headers.host ?? "").toLowerCase()}`;
  const foreignOrigin = origin !== undefined && origin.toLowerCase() !== own;
  const crossSite = site === "same-site" || site === "cross-site";
  const navigation = mode === "navigate" && safe && !upgrade;
  if ((crossSite && !navigation) || (foreignOrigin && (upgrade || !safe)))
    throw new Refusal(
      403,
      "Cross-origin request refused",
      `a request from ${origin ?? "another site"} to this workspace was refused: a workspace accepts requests from its own pages only`,
    );
}

/**
 * Where the request goes: the IDE's port, or /proxy/P/… to port P (prefix cut) if the workspace
 * listens on it, dialed through the runtime where it can reach into the workspace's network.
 */
function targetOf(
  url: URL,
  ep: WorkspaceEndpoint,
  connectPort: OriginDeps["connectPort"],
): Target | { redirect: string } {
  const m = /^\/proxy\/(\d{1,5})(\/.*)?$/.exec(url.pathname);
  if (!m) return { host: ep.host, port: ep.port, path: url.pathname + url.search };
  const port = Number(m[1]);
  if (!m[2]) return { redirect: `/proxy/${port}/${url.search}` };
  if (!ep.ports.includes(port) && port !== ep.port)
    throw new Refusal(
      404,
      `Port ${port} is not open`,
      `the workspace does not listen on port ${port}` +
        (ep.ports.length
          ? ` (it listens on ${ep.ports.join(", ")}: status.ports)`
          : " (status.ports is empty)") +
        "; start a server on it inside the workspace, then reload",
      5,
    );
  const target: Target = { host: ep.host, port, path: m[2] + url.search, prefix: `/proxy/${port}` };
  const { replica } = ep;
  // Only listed ports (above), and only the replica's own worker 0: the fence is the same either way.
  if (replica && connectPort && port !== ep.port) target.connect = () => connectPort(replica, 0, port);
  return target;
}

function unreachable(ws: WorkspaceHost, target: Target, err: Error): Refusal {
  return new Refusal(
    502,
    `Workspace ${ws.name} does not answer`,
    `workspace ${ws.project}/${ws.name} is running but nothing answers on port ${target.port} (${(err as NodeJS.ErrnoException).code ?? err.message}); ` +
      `its server may still be starting (this page reloads every 3 s), or it stopped: loom logs ws/${ws.name} -p ${ws.project} says why`,
    3,
  );
}

function asRefusal(err: Error, log: Logger): Refusal {
  if (err instanceof Refusal) return err;
  if (err instanceof LoomError) {
    const title = err.httpStatus === 401 ? "Log in to this workspace" : "Access refused";
    return new Refusal(err.httpStatus, title, err.message);
  }
  log.error({ err }, "workspace origin failed");
  return new Refusal(500, "Error", "the workspace origin failed; the server log has the details");
}

import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { ForbiddenError, LoomError, NotFoundError, UnauthorizedError } from "../../api/errors.js";
import { ClientGoneError } from "../../gateway/errors.js";
import type { Gateway } from "../../gateway/gateway.js";
import type { TokenInfo } from "../../ports/store.js";
import type { WorkspaceAccess } from "../workspaces/access.js";
import type { WorkspaceHost } from "../workspaces/host.js";
import { LOGIN_PATH, refuseCrossSite } from "../workspaces/origin.js";
import { refuseUpgrade, sendPage } from "../workspaces/pages.js";
import { forwardHttp, forwardUpgrade, type Target } from "../workspaces/proxy.js";
import { parseAppHost } from "./host.js";
import type { AppServingTable } from "./table.js";

/** The session cookie of app origins (access: project); never forwarded to the app. */
export const APP_SESSION_COOKIE = "loom_app";
/** The session-affinity cookie: its value is the lease's affinity key (a session stays on one replica). */
export const AFFINITY_COOKIE = "loom_app_affinity";

export interface AppOriginDeps {
  /** Tickets and sessions for apps (any member of the project, viewers included). */
  access: WorkspaceAccess;
  /** The server's authenticator over its token store: API keys for `access: apikey`. */
  authenticate(header: string | undefined): TokenInfo | Promise<TokenInfo>;
  table: Pick<AppServingTable, "access">;
  /** The apps' gateway: the activator hold, the balancer's affinity, in-flight counting. */
  gateway: Pick<Gateway, "lease">;
  log: Logger;
}

/** What the user-content listener hands requests whose Host names an App. */
export interface HostHandler {
  serves(req: IncomingMessage): boolean;
  request(req: IncomingMessage, res: ServerResponse): void;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

/** Every value of a cookie in a Cookie header (a sibling app can add one for all of app.localhost). */
export function cookieValues(header: string | undefined, name: string): string[] {
  const out: string[] = [];
  for (const part of (header ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) out.push(part.slice(eq + 1).trim());
  }
  return out;
}

/**
 * Apps on the user-content origin (issue 20): `http://NAME--PROJECT.app.localhost:PORT/`. Each
 * request is admitted by the App's access mode (project: a member's session cookie from a
 * one-time log-in link; apikey: a project API key as a bearer token; public: anyone), then
 * leases a replica from the apps' gateway (held while the app scales from zero, by the session's
 * affinity cookie) and is proxied there, WebSockets and event streams included; the lease is
 * held until the exchange ends, so the autoscaler counts open sessions.
 */
export function appOriginHandler(deps: AppOriginDeps): HostHandler {
  async function admit(req: IncomingMessage, app: WorkspaceHost, upgrade: boolean): Promise<void> {
    const mode = deps.table.access(app.project, app.name);
    if (!mode)
      throw new NotFoundError(
        `there is no app ${app.name} in project ${app.project} (or it is not published yet): loom get apps -p ${app.project} lists them`,
      );
    if (mode === "public") return;
    if (mode === "apikey") return checkKey(req.headers.authorization, app);
    refuseCrossSite(req, upgrade);
    const ids = cookieValues(req.headers.cookie, APP_SESSION_COOKIE);
    let refusal: unknown;
    for (const id of ids.length ? ids : [undefined]) {
      try {
        await deps.access.check(id, app.project, app.name);
        return;
      } catch (err) {
        refusal ??= err;
      }
    }
    throw refusal;
  }

  async function checkKey(header: string | undefined, app: WorkspaceHost): Promise<void> {
    const use = `send Authorization: Bearer <an API key of project ${app.project}> (loom apikey create NAME -p ${app.project})`;
    if (!header) throw new UnauthorizedError(`app ${app.project}/${app.name} takes API keys: ${use}`);
    const p = await deps.authenticate(header);
    if (!p.apiKey || p.project !== app.project)
      throw new ForbiddenError(
        `app ${app.project}/${app.name} takes API keys of its own project only: ${use}`,
      );
    if (p.apiKey.services && !p.apiKey.services.includes(app.name))
      throw new ForbiddenError(
        `API key ${p.name} is limited to services ${p.apiKey.services.join(", ")}; app ${app.name} is not one of them`,
      );
  }

  async function login(
    req: IncomingMessage,
    res: ServerResponse,
    app: WorkspaceHost,
    url: URL,
  ): Promise<void> {
    if (req.method !== "GET")
      throw new LoomError("BadRequest", 400, "open the log-in link in a browser (GET)");
    const ticket = url.searchParams.get("ticket");
    if (!ticket)
      throw new LoomError(
        "BadRequest",
        400,
        `no ticket: get a link with loom open app/${app.name} -p ${app.project}`,
      );
    const id = await deps.access.redeem(ticket, app.project, app.name);
    res.writeHead(302, {
      // Host-only (no Domain): sent back to this app's origin only, never to a sibling's.
      "set-cookie": `${APP_SESSION_COOKIE}=${id}; HttpOnly; SameSite=Lax; Path=/; Max-Age=${12 * 3600}`,
      location: "/",
      "cache-control": "no-store",
      "referrer-policy": "no-referrer",
    });
    res.end();
  }

  /** The session's affinity key, and the cookie that sets a new one. */
  function affinity(req: IncomingMessage): { key: string; cookie?: string } {
    const key = cookieValues(req.headers.cookie, AFFINITY_COOKIE)[0];
    if (key && /^[A-Za-z0-9_-]{8,64}$/.test(key)) return { key };
    const fresh = randomBytes(16).toString("base64url");
    return { key: fresh, cookie: `${AFFINITY_COOKIE}=${fresh}; HttpOnly; SameSite=Lax; Path=/` };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const app = parseAppHost(req.headers.host)!;
    const url = new URL(req.url ?? "/", "http://origin");
    if (url.pathname === LOGIN_PATH) return login(req, res, app, url);
    await admit(req, app, false);
    const { key, cookie } = affinity(req);
    const ac = new AbortController();
    const onClose = () => ac.abort();
    res.once("close", onClose);
    const lease = await deps.gateway.lease(app.project, app.name, { affinityKey: key, signal: ac.signal });
    res.off("close", onClose);
    res.once("close", () => lease.release());
    const target: Target = {
      host: lease.host,
      port: lease.port,
      path: url.pathname + url.search,
      ...(cookie ? { setCookies: [cookie] } : {}),
    };
    forwardHttp(req, res, target, (err) => {
      lease.release("failure");
      page(res, unreachable(app, err));
    });
  }

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const app = parseAppHost(req.headers.host)!;
    await admit(req, app, true);
    const ac = new AbortController();
    const onClose = () => ac.abort();
    socket.once("close", onClose);
    const lease = await deps.gateway.lease(app.project, app.name, {
      affinityKey: affinity(req).key,
      signal: ac.signal,
    });
    socket.off("close", onClose);
    // Held for the WebSocket's lifetime: the autoscaler sees open sessions.
    socket.once("close", () => lease.release());
    const target: Target = { host: lease.host, port: lease.port, path: req.url ?? "/" };
    forwardUpgrade(req, socket, head, target, {
      unreachable: (err) => {
        lease.release("failure");
        refuseUpgrade(socket, 502, unreachable(app, err).message);
      },
      opened: () => undefined,
      closed: () => lease.release(),
    });
  }

  return {
    serves: (req) => parseAppHost(req.headers.host) !== undefined,
    request(req, res) {
      handle(req, res).catch((err: Error) => {
        if (err instanceof ClientGoneError) return void res.destroy();
        page(res, refusalOf(err, deps.log));
      });
    },
    upgrade(req, socket, head) {
      socket.on("error", () => undefined);
      upgrade(req, socket, head).catch((err: Error) => {
        if (err instanceof ClientGoneError) return void socket.destroy();
        const r = refusalOf(err, deps.log);
        refuseUpgrade(socket, r.status, r.message);
      });
    },
  };
}

interface Refusal {
  status: number;
  title: string;
  message: string;
}

function page(res: ServerResponse, r: Refusal): void {
  sendPage(res, r.status, r.title, r.message, {}, r.status === 503 || r.status === 502 ? 5 : undefined);
}

function unreachable(app: WorkspaceHost, err: Error): Refusal {
  return {
    status: 502,
    title: `App ${app.name} does not answer`,
    message: `a replica of app ${app.project}/${app.name} did not answer (${(err as NodeJS.ErrnoException).code ?? err.message}); it may have just stopped: this page reloads every 5 s; loom describe app ${app.name} -p ${app.project} shows its replicas`,
  };
}

/** Any failure as a page: Loom's errors say what to do; the origin's refusals carry their status. */
function refusalOf(err: Error, log: Logger): Refusal {
  const e = err as Error & { status?: number; title?: string };
  if (err instanceof LoomError) {
    const title =
      err.httpStatus === 401
        ? "Log in to this app"
        : err.httpStatus === 503
          ? "The app is not ready"
          : err.httpStatus === 404
            ? "No such app"
            : "Access refused";
    return { status: err.httpStatus, title, message: err.message };
  }
  if (typeof e.status === "number" && e.title)
    return { status: e.status, title: e.title, message: err.message };
  log.error({ err }, "app origin failed");
  return { status: 500, title: "Error", message: "the app origin failed; the server log has the details" };
}

import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { BadRequestError, ForbiddenError, NotFoundError, UnauthorizedError } from "../../api/errors.js";
import type { TokenInfo } from "../../ports/store.js";
import { BASE } from "../routes/params.js";
import { route, rule } from "../routetable.js";
import { clearSession, refuseCrossOrigin, setSession } from "./session.js";
import { type Asset, loadAssets, NOT_BUILT, pickEncoding, SECURITY_HEADERS } from "./static.js";

export interface ConsoleDeps {
  /** Checks a token as the guard does (the token store's verify). */
  verify(token: string): Promise<TokenInfo | undefined>;
  /** Where the built console lies; default dist/console beside the compiled server. */
  dir?: string;
}

/** The built console beside the compiled server: dist/server/console/ → dist/console/. */
export const DEFAULT_CONSOLE_DIR = fileURLToPath(new URL("../../console/", import.meta.url));

/** Who the caller is, as the console needs it to show or hide what they may do. */
export function whoami(p: TokenInfo) {
  const unscoped = !p.project;
  return {
    name: p.name,
    role: p.role,
    ...(p.project ? { project: p.project } : {}),
    /** May create, change and delete objects in its project(s). */
    canWrite: p.role !== "viewer",
    /** An admin of every project: manages projects and API tokens. */
    admin: p.role === "admin" && unscoped,
    /** Reaches every project (lists across projects, usage). */
    allProjects: unscoped,
  };
}

/**
 * The web console on the control origin: its static files at / and /assets/ (public: they hold no
 * data), log-in (a token exchanged for an HttpOnly cookie), log-out, and whoami.
 */
export function consoleRoutes(app: FastifyInstance, deps: ConsoleDeps): void {
  const assets = loadAssets(deps.dir ?? DEFAULT_CONSOLE_DIR);
  const send = (req: FastifyRequest, reply: FastifyReply, asset: Asset) => {
    const { body, encoding } = pickEncoding(asset, req.headers["accept-encoding"]);
    reply.headers(SECURITY_HEADERS);
    reply.header("content-type", asset.type);
    reply.header("vary", "accept-encoding");
    reply.header("cache-control", asset.immutable ? "public, max-age=31536000, immutable" : "no-cache");
    if (encoding) reply.header("content-encoding", encoding);
    return reply.send(body);
  };
  route(app, {
    method: "GET",
    url: "/",
    rule: rule.public("console"),
    handler: (req, reply) => {
      const index = assets.get("/index.html");
      if (index) return send(req, reply, index);
      reply.headers(SECURITY_HEADERS);
      return reply.type("text/html; charset=utf-8").header("cache-control", "no-cache").send(NOT_BUILT);
    },
  });
  route<{ Params: { "*": string } }>(app, {
    method: "GET",
    url: "/assets/*",
    rule: rule.public("console assets"),
    handler: (req, reply) => {
      const asset = assets.get(`/assets/${req.params["*"]}`);
      if (!asset)
        throw new NotFoundError("no such console asset: reload the console (it may have been upgraded)");
      return send(req, reply, asset);
    },
  });
  route<{ Body: { token?: unknown } }>(app, {
    method: "POST",
    url: "/console/login",
    // Public: the token in the body is what is checked, here.
    rule: rule.public("console log-in"),
    handler: async (req, reply) => {
      refuseCrossOrigin(req);
      const token = req.body?.token;
      if (typeof token !== "string" || token === "" || token.length > 512 || /[\s;,]/.test(token))
        throw new BadRequestError(
          'log-in needs {"token": "…"}: the token loom up printed, or one from loom token create',
        );
      const info = await deps.verify(token);
      if (!info)
        throw new UnauthorizedError(
          "that token is unknown, revoked or expired: use the admin token loom up printed, or ask an admin for one (loom token create NAME)",
        );
      if (info.apiKey || info.workload)
        throw new ForbiddenError(
          "an API key or a workload's credential cannot log in to the console: use a user token (loom token create NAME)",
        );
      const csrf = setSession(req, reply, token);
      return { ...whoami(info), csrf };
    },
  });
  route(app, {
    method: "POST",
    url: "/console/logout",
    rule: rule.public("console log-out"),
    handler: async (req, reply) => {
      refuseCrossOrigin(req);
      clearSession(req, reply);
      return reply.code(204).send();
    },
  });
  route(app, {
    method: "GET",
    url: `${BASE}/whoami`,
    rule: rule.cluster("whoami"),
    handler: async (req) => whoami(req.principal!),
  });
}

import type { IncomingMessage } from "node:http";
import { hold } from "./activation.js";
import type { GatewayContext, Route, RouteContext } from "./context.js";
import type { HandleOptions } from "./contract.js";
import { badRequest, bodyTooLarge, keyNotAllowed, unknownModel } from "./errors.js";
import type { GatewayRequest, GatewayResponse } from "./h1.js";
import { readBody } from "./proxy.js";
import { pickRevision } from "./revisions.js";

/**
 * Steps 1–3: the revision that serves the request, with the body and model name. Synchronous
 * in the usual case (the front buffered the body, the directory and the access check answer
 * at once, a replica is ready); a promise only when some step has to wait.
 */
export function route(
  g: GatewayContext,
  req: GatewayRequest,
  res: GatewayResponse,
  opts: HandleOptions,
  started: number,
  ctx: RouteContext,
): Route | Promise<Route> {
  const max = g.opts.maxBodyBytes ?? 8 * 1024 * 1024;
  // Only Node's own requests come without a buffered body (the front always buffers).
  return then(opts.body ?? readBody(req as IncomingMessage, max), (body) => {
    if (!body) throw bodyTooLarge(max);
    const json = lazyJson(body);
    const model = opts.model ?? json().model;
    if (typeof model !== "string" || !model) {
      throw badRequest(
        "you must provide a model parameter: the name of an InferenceService's model",
        "model",
      );
    }
    return then(g.deps.directory.resolve(model, opts.project), (ep) => {
      if (!ep) throw unknownModel(model);
      return then(opts.authorize ? opts.authorize(ep) : true, (allowed) => {
        if (!allowed) throw keyNotAllowed(model, ep.project);
        const st = pickRevision(g, ep, model, opts.project);
        ctx.st = st;
        const route: Route = { st, body, json, model, label: `model '${model}'` };
        return st.balancer.size === 0 ? hold(g, res, opts, started, ctx, route) : route;
      });
    });
  });
}

/** `f(v)`, at once when `v` is a value, after it when it is a promise. */
function then<T, U>(v: T | Promise<T>, f: (v: T) => U | Promise<U>): U | Promise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

/** The body parsed as a JSON object on first call; a 400 if it is not JSON. */
function lazyJson(body: Buffer): () => Record<string, unknown> {
  let parsed: Record<string, unknown> | undefined;
  return () => {
    if (parsed) return parsed;
    try {
      const v: unknown = JSON.parse(body.toString("utf8"));
      parsed = v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
    } catch {
      throw badRequest("the request body is not valid JSON: send an OpenAI-style JSON request");
    }
    return parsed;
  };
}

import type { Server } from "node:http";

/**
 * How long every HTTP listener Loom opens (the API with the gateway's front, `loom gateway`, the
 * user-content origin of workspaces and apps, the operator's metrics) keeps an idle keep-alive
 * connection open: nginx's 75 s. A connection is reused by the client until its own idle timeout;
 * if the server closes it first, a request sent at that moment meets a closed socket, and most
 * clients do not send it again (undici's fetch, Node's http.Agent and httpx never retry a POST).
 * So the server must outlast the clients: undici 4 s (or the Keep-Alive hint Node sends, less 2 s),
 * httpx and Node's agent 5 s — Node's own default, which is exactly that race — and load
 * balancers in front (AWS ALB 60 s). Clients that keep connections longer (Go 90 s, browsers,
 * urllib3) notice a closed idle socket or retry on their own.
 *
 * headersTimeout stays Node's (60 s): on Node ≥ 18 it times a request from its first byte only,
 * never an idle connection, so it need not exceed this (the old advice, for Node ≤ 16, would
 * give slow-header clients 75 s).
 */
export const KEEP_ALIVE_TIMEOUT_MS = 75_000;

/** Sets Loom's server-side keep-alive (KEEP_ALIVE_TIMEOUT_MS) on a Node http server; returns it. */
export function withKeepAlive<S extends Server>(server: S): S {
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  return server;
}

import {
  Agent,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type ServerResponse,
} from "node:http";
import type { Lease } from "./balancer.js";
import {
  ClientGoneError,
  type GatewayError,
  noReplicas,
  sendGatewayError,
  upstreamFailed,
  upstreamTimeout,
} from "./errors.js";
import { findUsage, TailBuffer, type Usage } from "./usage.js";

/**
 * HTTP forwarding to one replica at a time, with retries on another replica when the connection
 * fails before any response. Streams both ways with backpressure (pipe); server-sent events pass
 * chunk by chunk with headers flushed at once, which is what makes token streaming feel live.
 */

/** Errors that mean the request never reached a working server, so sending it elsewhere is safe. */
const RETRYABLE = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "EAI_AGAIN",
]);

/** RFC 9110 §7.6.1: these describe one connection, never the message, so a proxy drops them. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

export interface ForwardOptions {
  /** The next replica, never one in `tried`; undefined when none is left. */
  pick(tried: ReadonlySet<string>): Lease | undefined;
  /** The whole request body, read already; without it the body is streamed and never retried. */
  body?: Buffer;
  /** Path and query sent upstream. Default: the incoming URL. */
  path?: string;
  /** How the target is named in error messages, e.g. "model 'llama'". */
  label: string;
  /** Further replicas tried after a connection failure. Default 2. */
  maxRetries?: number;
  /** Default 5 s. */
  connectTimeoutMs?: number;
  /** Time to the upstream's response headers before a 504. Default 5 min. */
  responseTimeoutMs?: number;
  /** Whether a 5xx counts against the replica's health. Default true. */
  failOn5xx?: boolean;
  /**
   * Request headers not forwarded. Default ["authorization"]: the caller's Loom key must not reach
   * a model server, which runs the user's code.
   */
  dropRequestHeaders?: string[];
  /** Request headers set upstream (an upstream API key, say). */
  setRequestHeaders?: Record<string, string>;
  /** Response header naming the replica that answered; false for none. Default "x-loom-replica". */
  replicaHeader?: string | false;
  /** Read `usage` from the response's tail. Default true. */
  captureUsage?: boolean;
  /** Told before each retry. */
  onRetry?: (reason: string, replicaId: string) => void;
  /** Told when the upstream's response headers arrive. */
  onFirstByte?: (ms: number) => void;
}

export interface ForwardResult {
  /** The status the client got; 499 when it left first (nginx's convention, for metrics). */
  status: number;
  /** The replica that answered last (or failed last). */
  replica?: string;
  attempts: number;
  error?: GatewayError;
  usage?: Usage;
  /** Whether the response ended cleanly (false: cut off by either side). */
  complete: boolean;
}

export interface ForwarderOptions {
  /** Connection pool; default keep-alive with 256 sockets per replica. */
  agent?: Agent;
  now?: () => number;
}

type Attempt =
  | { kind: "error"; code: string; reused: boolean }
  | { kind: "timeout"; afterMs: number }
  | { kind: "client-gone"; responded: boolean; status?: number }
  | { kind: "done"; status: number; complete: boolean; usage?: Usage };

export class HttpForwarder {
  readonly agent: Agent;
  private readonly now: () => number;
  private readonly ownsAgent: boolean;

  constructor(opts: ForwarderOptions = {}) {
    this.ownsAgent = !opts.agent;
    // LIFO keeps a few sockets hot; the idle rest time out server-side instead of going stale.
    // 256 per replica: every streamed generation holds one socket for its whole length.
    this.agent =
      opts.agent ??
      new Agent({
        keepAlive: true,
        keepAliveMsecs: 1000,
        maxSockets: 256,
        // As many idle sockets as the pool may open: a burst of N clients leaves N warm sockets
        // instead of closing most of them (bench:gateway saw thousands of TIME_WAITs at 64 clients).
        maxFreeSockets: 256,
        scheduling: "lifo",
      });
    this.now = opts.now ?? Date.now;
  }

  /** Forwards `req` and writes the answer (or an OpenAI-style error) to `res`. Never throws. */
  async forward(req: IncomingMessage, res: ServerResponse, o: ForwardOptions): Promise<ForwardResult> {
    const maxRetries = o.body ? (o.maxRetries ?? 2) : 0;
    const tried = new Set<string>();
    const staleRetried = new Set<string>();
    let lastCode = "";
    for (let attempt = 0; ; attempt++) {
      if (res.destroyed || res.writableEnded) return { status: 499, attempts: attempt, complete: false };
      const lease = o.pick(tried);
      if (!lease) {
        const err = attempt === 0 ? noReplicas(o.label) : upstreamFailed(o.label, lastCode);
        sendGatewayError(res, err);
        return { status: err.httpStatus, attempts: attempt, error: err, complete: false };
      }
      const id = lease.replica.id;
      const a = await this.attempt(req, res, lease, o);
      if (a.kind === "error") {
        lastCode = a.code;
        // A keep-alive socket the server had already closed: not the replica's fault, and Node's
        // own advice is to retry such a request on a fresh connection. Once per replica.
        const stale = a.reused && a.code === "ECONNRESET" && !staleRetried.has(id);
        if (stale) staleRetried.add(id);
        else tried.add(id);
        lease.release(stale ? "neutral" : "failure");
        if (RETRYABLE.has(a.code) && attempt < maxRetries + staleRetried.size) {
          o.onRetry?.(a.code, id);
          continue;
        }
        const err = upstreamFailed(o.label, a.code);
        sendGatewayError(res, err);
        return { status: err.httpStatus, replica: id, attempts: attempt + 1, error: err, complete: false };
      }
      if (a.kind === "timeout") {
        lease.release("failure");
        const err = upstreamTimeout(o.label, a.afterMs);
        sendGatewayError(res, err);
        return { status: err.httpStatus, replica: id, attempts: attempt + 1, error: err, complete: false };
      }
      if (a.kind === "client-gone") {
        lease.release(a.responded ? "success" : "neutral");
        return { status: 499, replica: id, attempts: attempt + 1, complete: false };
      }
      const failed = !a.complete || (a.status >= 500 && o.failOn5xx !== false);
      lease.release(failed ? "failure" : "success");
      return { status: a.status, replica: id, attempts: attempt + 1, usage: a.usage, complete: a.complete };
    }
  }

  /** Closes pooled connections (only those of an agent this proxy made). */
  close(): void {
    if (this.ownsAgent) this.agent.destroy();
  }

  private attempt(
    req: IncomingMessage,
    res: ServerResponse,
    lease: Lease,
    o: ForwardOptions,
  ): Promise<Attempt> {
    const r = lease.replica;
    const started = this.now();
    return new Promise<Attempt>((resolve) => {
      let settled = false;
      let responded = false;
      let status: number | undefined;
      const timers: NodeJS.Timeout[] = [];
      const finish = (a: Attempt) => {
        if (settled) return;
        settled = true;
        for (const t of timers) clearTimeout(t);
        res.off("close", onClientClose);
        resolve(a);
      };

      const up = request({
        host: r.host,
        port: r.port,
        method: req.method,
        path: o.path ?? req.url ?? "/",
        headers: requestHeaders(req, r, o),
        agent: this.agent,
      });

      // The client left: stop the upstream (a generation nobody reads still burns a GPU).
      const onClientClose = () => {
        if (res.writableFinished) return;
        up.destroy();
        finish({ kind: "client-gone", responded, status });
      };
      res.on("close", onClientClose);

      const responseTimeoutMs = o.responseTimeoutMs ?? 300_000;
      timers.push(
        setTimeout(() => {
          up.destroy();
          finish({ kind: "timeout", afterMs: responseTimeoutMs });
        }, responseTimeoutMs),
      );
      up.on("socket", (socket) => {
        if (!socket.connecting) return;
        const t = setTimeout(() => {
          const err = Object.assign(new Error("connect timeout"), { code: "ETIMEDOUT" });
          up.destroy(err);
        }, o.connectTimeoutMs ?? 5000);
        timers.push(t);
        socket.once("connect", () => clearTimeout(t));
      });

      up.on("error", (err: NodeJS.ErrnoException) => {
        if (!responded) finish({ kind: "error", code: err.code ?? err.message, reused: up.reusedSocket });
        // After the response began, the response's own close handler decides.
      });

      up.on("response", (ur) => {
        responded = true;
        status = ur.statusCode ?? 502;
        for (const t of timers) clearTimeout(t);
        o.onFirstByte?.(this.now() - started);
        const headers = responseHeaders(ur.headers);
        if (o.replicaHeader !== false) headers[o.replicaHeader ?? "x-loom-replica"] = r.id;
        const type = String(ur.headers["content-type"] ?? "");
        const sse = type.startsWith("text/event-stream");
        if (sse) headers["x-accel-buffering"] = "no"; // tell any proxy in front not to buffer either
        res.writeHead(status, headers);
        if (sse) {
          // Headers now, not with the first event; and no Nagle delay on each small token chunk.
          res.flushHeaders();
          res.socket?.setNoDelay(true);
        }
        const tail =
          o.captureUsage !== false && !ur.headers["content-encoding"] && (sse || type.includes("json"))
            ? new TailBuffer(8192)
            : undefined;
        if (tail) ur.on("data", (c: Buffer) => tail.push(c));
        res.once("finish", () =>
          finish({
            kind: "done",
            status: status!,
            complete: true,
            usage: tail ? findUsage(tail.toString()) : undefined,
          }),
        );
        ur.once("close", () => {
          if (ur.complete) return;
          // The upstream reset mid-response: cut the client off too, so it sees a broken stream
          // rather than a short one that looks complete.
          res.destroy();
          finish({ kind: "done", status: status!, complete: false });
        });
        ur.on("error", () => {}); // reported through 'close' with complete false
        ur.pipe(res);
      });

      if (o.body) up.end(o.body);
      else req.pipe(up);
    });
  }
}

function connectionListed(h: IncomingHttpHeaders): Set<string> {
  const c = h.connection;
  const out = new Set<string>();
  for (const v of Array.isArray(c) ? c : c ? [c] : []) {
    for (const name of v.split(",")) out.add(name.trim().toLowerCase());
  }
  return out;
}

function requestHeaders(
  req: IncomingMessage,
  r: Lease["replica"],
  o: ForwardOptions,
): Record<string, string | string[]> {
  const drop = new Set((o.dropRequestHeaders ?? ["authorization"]).map((h) => h.toLowerCase()));
  const listed = connectionListed(req.headers);
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || listed.has(k) || drop.has(k) || k === "host") continue;
    // The body is in hand: a 100-continue handshake upstream would only add a round trip.
    if (o.body && (k === "expect" || k === "content-length")) continue;
    out[k] = v;
  }
  if (o.body) out["content-length"] = String(o.body.length);
  out.host = `${r.host}:${r.port}`;
  const prior = req.headers["x-forwarded-for"];
  const client = req.socket.remoteAddress ?? "";
  out["x-forwarded-for"] = prior ? `${prior}, ${client}` : client;
  out["x-forwarded-proto"] ??= "encrypted" in req.socket && req.socket.encrypted ? "https" : "http";
  if (req.headers.host) out["x-forwarded-host"] ??= req.headers.host;
  for (const [k, v] of Object.entries(o.setRequestHeaders ?? {})) out[k.toLowerCase()] = v;
  return out;
}

function responseHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const listed = connectionListed(h);
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || HOP_BY_HOP.has(k) || listed.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Reads a request body up to `limit` bytes; resolves undefined when it is larger (the rest is drained). */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? -1);
    if (declared > limit) {
      req.resume();
      resolve(undefined);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        return;
      }
      chunks.push(c);
    });
    req.once("end", () => resolve(over ? undefined : Buffer.concat(chunks)));
    req.once("error", reject);
    req.once("close", () => {
      if (!req.complete) reject(new ClientGoneError("while sending its request"));
    });
  });
}

import type { IncomingMessage } from "node:http";
import type { Readable } from "node:stream";
import type { Lease } from "./balancer.js";
import {
  ClientGoneError,
  type GatewayError,
  noReplicas,
  sendGatewayError,
  upstreamFailed,
  upstreamTimeout,
} from "./errors.js";
import type { GatewayRequest, GatewayResponse } from "./h1.js";
import { type UpstreamHandler, UpstreamPool } from "./upstream.js";
import { TailBuffer, type Usage } from "./usage.js";

/**
 * HTTP forwarding to one replica at a time, with retries on another replica when the connection
 * fails before the client has any of the response (a non-streamed head is held until its body).
 * Streams both ways with backpressure; server-sent events pass chunk
 * by chunk with headers flushed at once, which is what makes token streaming feel live.
 *
 * The upstream side is a hand-rolled keep-alive pool per replica (upstream.ts): Node's own http
 * client cost about 3× as much CPU per request here, and undici about 1.5×, which capped the
 * gateway at a fraction of nginx's throughput (bench:gateway).
 */

/**
 * Errors that mean the request never reached a working server, so sending it elsewhere is safe
 * (besides any `lost` connection: see send).
 */
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
  /** Keep a copy of the response body, up to this many bytes (a recorded trace's completion). */
  captureBytes?: number;
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
  /** The response body as far as `captureBytes` (set only then). */
  body?: Buffer;
}

export interface ForwarderOptions {
  /** Connections per replica (each streamed generation holds one for its whole length). Default 256. */
  connectionsPerReplica?: number;
  /** Default 5 s; a request may set its own. */
  connectTimeoutMs?: number;
  /**
   * How long requests in flight on a replica that left the routing table may still finish (its
   * drain and graceful stop) before their connections are dropped. Default 30 s: longer than a
   * replica's drain plus termination grace, after which it cannot answer any more. A replica whose
   * network vanished with it sends no FIN: without this its requests would wait out the response
   * timeout; dropped, those that had nothing back yet are retried on another replica.
   */
  drainTimeoutMs?: number;
  now?: () => number;
}

type Attempt =
  /** Failed with nothing sent to the client; `lost`: the replica's connection failed. */
  | { kind: "error"; code: string; reused: boolean; lost: boolean }
  | { kind: "timeout"; afterMs: number }
  | { kind: "client-gone"; responded: boolean; status?: number }
  | { kind: "done"; status: number; complete: boolean; usage?: Usage; body?: Buffer };

/**
 * The pool's error codes, in the node:net vocabulary the retry rules and messages use. A reused
 * socket the other side closed before answering (UND_ERR_SOCKET) is the stale keep-alive race:
 * it gets the stale rule (once per replica, without blame).
 */
function errorCode(err: Error): { code: string; reused: boolean; lost: boolean } {
  const code = (err as { code?: string }).code ?? "";
  const cause = (err.cause as { code?: string } | undefined)?.code;
  const lost = (err as { lost?: boolean }).lost === true;
  if (code === "UND_ERR_CONNECT_TIMEOUT") return { code: "ETIMEDOUT", reused: false, lost: true };
  if (code === "UND_ERR_SOCKET") return { code: cause ?? "ECONNRESET", reused: true, lost };
  if (code.startsWith("UND_ERR_") && cause) return { code: cause, reused: false, lost };
  return { code: code || err.message, reused: false, lost };
}

const NONE_TRIED: ReadonlySet<string> = new Set();

/** Why a dispatch was aborted by this side (the client left, or the response deadline). */
class Cancelled extends Error {}

export class HttpForwarder {
  private readonly pools = new Map<string, UpstreamPool>();
  private readonly now: () => number;

  constructor(private readonly opts: ForwarderOptions = {}) {
    this.now = opts.now ?? Date.now;
  }

  /** Forwards `req` and writes the answer (or an OpenAI-style error) to `res`. Never rejects. */
  forward(req: GatewayRequest, res: GatewayResponse, o: ForwardOptions): Promise<ForwardResult> {
    return new Promise((resolve) => this.send(req, res, o, resolve));
  }

  /**
   * `forward` with a callback: the gateway's per-request path, which makes no promise at all
   * (a promise and its microtask per layer cost several µs a request: bench:gateway). `done` is
   * called exactly once; never throws.
   */
  send(req: GatewayRequest, res: GatewayResponse, o: ForwardOptions, done: (r: ForwardResult) => void): void {
    const maxRetries = o.body ? (o.maxRetries ?? 2) : 0;
    // Made on the first failure: most requests never need them.
    let tried: Set<string> | undefined;
    let staleRetried: Set<string> | undefined;
    let lastCode = "";
    const step = (attempt: number): void => {
      if (res.destroyed || res.writableEnded) {
        done({ status: 499, attempts: attempt, complete: false });
        return;
      }
      const lease = o.pick(tried ?? NONE_TRIED);
      if (!lease) {
        const err = attempt === 0 ? noReplicas(o.label) : upstreamFailed(o.label, lastCode);
        sendGatewayError(res, err);
        done({ status: err.httpStatus, attempts: attempt, error: err, complete: false });
        return;
      }
      const id = lease.replica.id;
      this.attempt(req, res, lease, o, (a) => {
        if (a.kind === "error") {
          lastCode = a.code;
          // A keep-alive socket the server had already closed: not the replica's fault, and Node's
          // own advice is to retry such a request on a fresh connection. Once per replica.
          const stale = a.reused && a.code === "ECONNRESET" && !staleRetried?.has(id);
          if (stale) {
            staleRetried ??= new Set();
            staleRetried.add(id);
          } else {
            tried ??= new Set();
            tried.add(id);
          }
          lease.release(stale ? "neutral" : "failure");
          // The client has nothing yet (Exchange holds a non-streamed head until its body), so
          // a lost connection is retried whatever its errno: no request is lost to a dying replica.
          const retryable = a.lost || RETRYABLE.has(a.code);
          if (retryable && attempt < maxRetries + (staleRetried?.size ?? 0)) {
            o.onRetry?.(a.code, id);
            // Not from inside the failed connection's callback: the pool finishes its own
            // bookkeeping of that connection first.
            queueMicrotask(() => step(attempt + 1));
            return;
          }
          const err = upstreamFailed(o.label, a.code);
          sendGatewayError(res, err);
          done({ status: err.httpStatus, replica: id, attempts: attempt + 1, error: err, complete: false });
          return;
        }
        if (a.kind === "timeout") {
          lease.release("failure");
          const err = upstreamTimeout(o.label, a.afterMs);
          sendGatewayError(res, err);
          done({ status: err.httpStatus, replica: id, attempts: attempt + 1, error: err, complete: false });
          return;
        }
        if (a.kind === "client-gone") {
          lease.release(a.responded ? "success" : "neutral");
          done({ status: 499, replica: id, attempts: attempt + 1, complete: false });
          return;
        }
        const failed = !a.complete || (a.status >= 500 && o.failOn5xx !== false);
        lease.release(failed ? "failure" : "success");
        done({
          status: a.status,
          replica: id,
          attempts: attempt + 1,
          usage: a.usage,
          complete: a.complete,
          ...(a.body ? { body: a.body } : {}),
        });
      });
    };
    step(0);
  }

  /** Closes the pools of replicas not in `keep` ("host:port"): replicas come and go on new ports. */
  retain(keep: ReadonlySet<string>): void {
    for (const [origin, pool] of this.pools) {
      if (keep.has(origin)) continue;
      this.pools.delete(origin);
      void pool.close(this.opts.drainTimeoutMs ?? 30_000).catch(() => undefined);
    }
  }

  /** Closes every pooled connection. */
  close(): void {
    for (const pool of this.pools.values()) pool.destroy();
    this.pools.clear();
  }

  private pool(host: string, port: number, connectTimeoutMs: number): UpstreamPool {
    const key = `${host}:${port}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new UpstreamPool(host, port, {
        connections: this.opts.connectionsPerReplica ?? 256,
        connectTimeoutMs,
      });
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** One try on one replica; `resolve` is called exactly once, when the exchange is over. */
  private attempt(
    req: GatewayRequest,
    res: GatewayResponse,
    lease: Lease,
    o: ForwardOptions,
    resolve: (a: Attempt) => void,
  ): void {
    const r = lease.replica;
    const responseTimeoutMs = o.responseTimeoutMs ?? 300_000;
    const exchange = new Exchange(res, r.id, o, this.now, resolve);
    const connectTimeoutMs = o.connectTimeoutMs ?? this.opts.connectTimeoutMs ?? 5000;
    try {
      this.pool(r.host, r.port, connectTimeoutMs).dispatch(
        {
          path: o.path ?? req.url ?? "/",
          method: req.method ?? "GET",
          headers: requestHeaders(req, r, o),
          // Only Node's own requests come without a buffered body (the front always buffers).
          body: o.body ?? (req as IncomingMessage as Readable),
          headersTimeout: responseTimeoutMs,
          // Between two chunks of a response: a generation that stalls this long is stuck.
          bodyTimeout: responseTimeoutMs,
        },
        exchange,
      );
    } catch (err) {
      exchange.finish({ kind: "error", ...errorCode(err as Error) });
    }
  }
}

/**
 * One attempt's exchange, as the upstream pool's handler: the response goes to the client as it
 * comes, with backpressure both ways. One object per attempt rather than a closure per callback
 * (this runs for every proxied request).
 */
class Exchange implements UpstreamHandler {
  private readonly started: number;
  private settled = false;
  private responded = false;
  private cancelled = false;
  private status = 0;
  /**
   * A non-streamed response's head, held until its first body byte: until then the client has
   * nothing, so a replica that dies between its head and its body (Python's http.server writes
   * them apart) costs a retry elsewhere, not the request.
   */
  private held: string[] | undefined;
  /** Whether anything reached the client: from then on the attempt can no longer be retried. */
  private forwarded = false;
  private abortUpstream: ((err?: Error) => void) | undefined;
  private resumeUpstream: (() => void) | undefined;
  private tail: TailBuffer | undefined;
  /** The body so far, for a traced service only (captureBytes). */
  private captured: Buffer[] | undefined;
  private capturedBytes = 0;

  constructor(
    private readonly res: GatewayResponse,
    private readonly replicaId: string,
    private readonly o: ForwardOptions,
    private readonly now: () => number,
    private readonly resolve: (a: Attempt) => void,
  ) {
    this.started = now();
    res.on("close", this.onClientClose);
  }

  finish(a: Attempt): void {
    if (this.settled) return;
    this.settled = true;
    this.res.off("close", this.onClientClose);
    this.resolve(a);
  }

  /** The client left: stop the upstream (a generation nobody reads still burns a GPU). */
  private readonly onClientClose = () => {
    if (this.res.writableFinished) return;
    this.cancelled = true;
    this.abortUpstream?.(new Cancelled("the client went away"));
    this.finish({
      kind: "client-gone",
      responded: this.responded,
      status: this.responded ? this.status : undefined,
    });
  };

  private readonly onDrain = () => this.resumeUpstream?.();

  /** The last byte reached the client (or its socket). */
  private readonly done = () =>
    this.finish({
      kind: "done",
      status: this.status,
      complete: true,
      usage: this.tail?.usage(),
      ...(this.captured ? { body: this.capturedBody() } : {}),
    });

  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort;
    if (this.cancelled) abort(new Cancelled("the client went away"));
  }

  onHeaders(statusCode: number, raw: string[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: informational, the real answer follows
    const { o, res } = this;
    this.responded = true;
    this.status = statusCode;
    this.resumeUpstream = resume;
    o.onFirstByte?.(this.now() - this.started);
    // The gateway's replica header replaces one the runtime may send itself.
    const replicaHeader = o.replicaHeader === false ? false : (o.replicaHeader ?? "x-loom-replica");
    const { headers, type, encoded } = responseHeaders(raw, replicaHeader);
    if (replicaHeader) headers.push(replicaHeader, this.replicaId);
    const sse = type.startsWith("text/event-stream");
    if (sse) headers.push("x-accel-buffering", "no"); // tell any proxy in front not to buffer either
    if (sse) {
      // Headers now, not with the first event; and no Nagle delay on each small token chunk.
      this.forwarded = true;
      res.writeHead(statusCode, headers);
      res.flushHeaders();
      res.socket?.setNoDelay(true);
    } else this.held = headers;
    if (o.captureUsage !== false && !encoded && (sse || type.includes("json")))
      this.tail = new TailBuffer(8192);
    if (o.captureBytes && !encoded) this.captured = [];
    return true;
  }

  /** Sends the held head: the response now belongs to the client. */
  private sendHead(): void {
    this.forwarded = true;
    if (this.held === undefined) return;
    this.res.writeHead(this.status, this.held);
    this.held = undefined;
  }

  onData(chunk: Buffer): boolean {
    this.tail?.push(chunk);
    if (this.captured) this.capture(chunk);
    if (!this.forwarded) this.sendHead();
    // The pool's chunk is a view of its read buffer: a response that may queue it gets a copy.
    const res = this.res;
    // Backpressure: a slow client pauses the upstream read instead of buffering here.
    if (res.write(res.writeCopies ? chunk : Buffer.from(chunk))) return true;
    this.res.once("drain", this.onDrain);
    return false;
  }

  /** What was captured as one buffer (a one-chunk answer, the usual, is not copied again). */
  private capturedBody(): Buffer {
    const c = this.captured!;
    return c.length === 1 ? c[0]! : Buffer.concat(c, this.capturedBytes);
  }

  /** A copy (the pool reuses the chunk's memory), up to captureBytes in all. */
  private capture(chunk: Buffer): void {
    const room = (this.o.captureBytes ?? 0) - this.capturedBytes;
    if (room <= 0) return;
    const kept = Buffer.from(chunk.length > room ? chunk.subarray(0, room) : chunk);
    this.captured!.push(kept);
    this.capturedBytes += kept.length;
  }

  onComplete(): void {
    if (!this.forwarded) this.sendHead();
    const res = this.res;
    res.end();
    // Settle when the client has the last byte (or left): the lease and metrics see it whole.
    if (res.writableFinished) this.done();
    else res.once("finish", this.done);
  }

  onError(err: Error): void {
    if (this.cancelled) return; // settled already by the close handler
    // Nothing reached the client yet (no head, or one still held): the request is not lost, it
    // may go to another replica.
    if (!this.forwarded) {
      const e = err as Error & { code?: string };
      if (e.code === "UND_ERR_HEADERS_TIMEOUT" || e.code === "UND_ERR_BODY_TIMEOUT")
        this.finish({ kind: "timeout", afterMs: this.o.responseTimeoutMs ?? 300_000 });
      else this.finish({ kind: "error", ...errorCode(e) });
      return;
    }
    // The upstream reset mid-response: cut the client off too, so it sees a broken stream
    // rather than a short one that looks complete.
    this.res.destroy();
    this.finish({ kind: "done", status: this.status, complete: false });
  }
}

const DEFAULT_DROP = new Set(["authorization"]);
const dropSets = new WeakMap<readonly string[], Set<string>>();

function dropSet(names: readonly string[] | undefined): Set<string> {
  if (!names) return DEFAULT_DROP;
  let set = dropSets.get(names);
  if (!set) {
    set = new Set(names.map((h) => h.toLowerCase()));
    dropSets.set(names, set);
  }
  return set;
}

/**
 * The upstream request's headers as a flat [name, value, …] list made straight from the raw
 * headers (no header object per request; undici takes the list as it is).
 */
function requestHeaders(req: GatewayRequest, r: Lease["replica"], o: ForwardOptions): string[] {
  const drop = dropSet(o.dropRequestHeaders);
  const raw = req.rawHeaders;
  let listed: Set<string> | undefined;
  let host: string | undefined;
  let priorFor: string | undefined;
  let proto = false;
  let forwardedHost = false;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 10 && raw[i]!.toLowerCase() === "connection") {
      listed ??= new Set();
      for (const name of raw[i + 1]!.split(",")) listed.add(name.trim().toLowerCase());
    }
  }
  const set = o.setRequestHeaders;
  const own = r.headers;
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    const v = raw[i + 1]!;
    if (k === "host") {
      host = v;
      continue;
    }
    if (k === "x-forwarded-for") {
      priorFor = priorFor === undefined ? v : `${priorFor}, ${v}`;
      continue;
    }
    if (HOP_BY_HOP.has(k) || listed?.has(k) || drop.has(k)) continue;
    // A 100-continue handshake upstream would only add a round trip (and undici refuses it).
    if (k === "expect" || (o.body && k === "content-length")) continue;
    if (set && Object.hasOwn(set, k)) continue; // replaced below
    if (own && Object.hasOwn(own, k)) continue;
    if (k === "x-forwarded-proto") proto = true;
    else if (k === "x-forwarded-host") forwardedHost = true;
    out.push(k, v);
  }
  if (o.body) out.push("content-length", String(o.body.length));
  out.push("host", `${r.host}:${r.port}`);
  const client = req.socket.remoteAddress ?? "";
  out.push("x-forwarded-for", priorFor ? `${priorFor}, ${client}` : client);
  if (!proto)
    out.push("x-forwarded-proto", "encrypted" in req.socket && req.socket.encrypted ? "https" : "http");
  if (host && !forwardedHost) out.push("x-forwarded-host", host);
  if (set) for (const k in set) if (!own || !Object.hasOwn(own, k)) out.push(k.toLowerCase(), set[k]!);
  if (own) for (const k in own) out.push(k, own[k]!);
  return out;
}

/** The upstream's response headers as a flat list for writeHead, hop-by-hop ones dropped. */
function responseHeaders(
  raw: string[],
  replaced: string | false,
): { headers: string[]; type: string; encoded: boolean } {
  let listed: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i] === "connection") {
      listed ??= new Set();
      for (const name of raw[i + 1]!.split(",")) listed.add(name.trim().toLowerCase());
    }
  }
  const headers: string[] = [];
  let type = "";
  let encoded = false;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!; // lower-cased by the parser
    if (HOP_BY_HOP.has(k) || listed?.has(k) || k === replaced) continue;
    const v = raw[i + 1]!;
    if (k === "content-type") type = v;
    else if (k === "content-encoding") encoded = true;
    headers.push(k, v);
  }
  return { headers, type, encoded };
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

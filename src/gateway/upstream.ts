import { connect, type Socket } from "node:net";
import type { Readable } from "node:stream";
import {
  ChunkedDecoder,
  fieldsLength,
  findHeadEnd,
  MAX_HEAD_BYTES,
  MalformedResponse,
  parseResponseHead,
  writeFields,
} from "./h1.js";

/**
 * Keep-alive HTTP/1.1 connections to one replica, one request at a time on each (no pipelining:
 * model servers answer in order anyway, and one slow generation must not hold up others).
 * A request is written with one syscall when its body is buffered; the response is parsed by
 * hand (h1.ts) and handed on as views of what the socket read, never copied.
 *
 * Error codes follow node:net (ECONNREFUSED, …) except for the cases Node has no code for, which
 * use undici's names: UND_ERR_SOCKET (a reused connection closed before any answer — the stale
 * keep-alive race), UND_ERR_CONNECT_TIMEOUT, UND_ERR_HEADERS_TIMEOUT and UND_ERR_BODY_TIMEOUT.
 * The error of a connection that failed also says `lost`, whatever its code.
 */

export interface UpstreamRequest {
  method: string;
  /** Path and query. */
  path: string;
  /** Flat [name, value, …]; must name the host. Content-Length is added for a Buffer body. */
  headers: string[];
  /** A whole body, or a stream (sent chunked unless `headers` declare its Content-Length). */
  body?: Buffer | Readable;
  /** Time to the response head. */
  headersTimeout: number;
  /** Longest silence between two pieces of the response body. */
  bodyTimeout: number;
}

export interface UpstreamHandler {
  /** Called first; `abort` stops the exchange (the connection is dropped, onError follows). */
  onConnect(abort: (err?: Error) => void): void;
  /** The response head. Return false to pause until `resume`. */
  onHeaders(status: number, headers: string[], resume: () => void): boolean;
  /**
   * A piece of the body: a view of a buffer the next read overwrites, so copy what you keep past
   * this call. Return false to pause until `resume`.
   */
  onData(chunk: Buffer): boolean;
  onComplete(): void;
  onError(err: Error): void;
}

export interface UpstreamPoolOptions {
  /** Connections at most; further requests wait for one. Default 256. */
  connections?: number;
  /** Default 5 s. */
  connectTimeoutMs?: number;
  /** An idle connection is closed after this long (before servers close theirs, at 5 s typically). Default 3 s. */
  idleTimeoutMs?: number;
}

/** `lost`: the connection failed (closed, reset, refused) before the exchange ended. */
type CodedError = Error & { code?: string; cause?: unknown; lost?: boolean };

function coded(message: string, code: string, cause?: unknown): CodedError {
  const err: CodedError = new Error(message);
  err.code = code;
  if (cause !== undefined) err.cause = cause;
  return err;
}

/** One request and its response on one connection. */
interface Exchange {
  req: UpstreamRequest;
  handler: UpstreamHandler;
  /** Response head bytes gathered so far. */
  pending: Buffer | undefined;
  status: number;
  /** Body bytes still to come (Content-Length), or -1 (chunked or until close). */
  remaining: number;
  chunked: ChunkedDecoder | undefined;
  untilClose: boolean;
  /** The connection may not be reused after this response. */
  close: boolean;
  responded: boolean;
  finished: boolean;
  /** Deadline of the current wait (head, or the next body piece). */
  deadline: number;
  deadlineCode: string;
  paused: boolean;
}

class Connection {
  exchange: Exchange | undefined;
  /** Requests this connection has carried: a failure on a used one may be the stale keep-alive race. */
  served = 0;
  idleSince = 0;
  connected = false;
  dead = false;

  constructor(
    readonly socket: Socket,
    private readonly pool: UpstreamPool,
  ) {
    socket.setNoDelay(true);
    // Reads arrive through onData (net's `onread` option, set by the pool), not 'data' events.
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => this.fail(undefined));
    socket.on("end", () => this.onEnd());
  }

  start(x: Exchange): void {
    this.exchange = x;
    x.deadline = Date.now() + x.req.headersTimeout;
    x.deadlineCode = "UND_ERR_HEADERS_TIMEOUT";
    x.handler.onConnect((err) => this.abort(x, err));
    if (this.exchange !== x) return; // aborted at once
    writeRequest(this.socket, x.req);
  }

  private abort(x: Exchange, err?: Error): void {
    if (this.exchange !== x || x.finished) return;
    x.finished = true;
    this.exchange = undefined;
    this.dead = true;
    this.socket.destroy();
    x.handler.onError(err ?? coded("the request was aborted", "UND_ERR_ABORTED"));
    this.pool.released(this);
  }

  /** What one read brought: a view of READ_BUFFER, valid only during this call. */
  onData(d: Buffer): void {
    const x = this.exchange;
    if (!x) {
      // Bytes nobody asked for: the connection is out of step, never reuse it.
      this.dead = true;
      this.socket.destroy();
      return;
    }
    try {
      this.consume(x, d);
    } catch (err) {
      this.finish(x, err as Error);
    }
  }

  private consume(x: Exchange, d: Buffer): void {
    let buf = d;
    while (!x.responded) {
      const from = x.pending ? x.pending.length : 0;
      buf = x.pending ? Buffer.concat([x.pending, buf]) : buf;
      const end = findHeadEnd(buf, from);
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) throw new MalformedResponse("a head larger than 16 KiB");
        x.pending = Buffer.from(buf); // the read buffer is reused by the next read
        return;
      }
      x.pending = undefined;
      const head = parseResponseHead(buf, end);
      buf = buf.subarray(end + 4);
      if (head.status < 200) continue; // 1xx: informational, the real answer follows
      x.responded = true;
      x.status = head.status;
      x.close = head.close;
      const bodiless = x.req.method === "HEAD" || head.status === 204 || head.status === 304;
      if (bodiless) x.remaining = 0;
      else if (head.chunked) x.chunked = new ChunkedDecoder();
      else if (head.contentLength >= 0) x.remaining = head.contentLength;
      else {
        x.untilClose = true;
        x.close = true;
      }
      x.deadline = Date.now() + x.req.bodyTimeout;
      x.deadlineCode = "UND_ERR_BODY_TIMEOUT";
      if (!x.handler.onHeaders(head.status, head.headers, () => this.resume(x))) this.pause(x);
      if (x.finished) return;
    }
    this.body(x, buf);
  }

  private body(x: Exchange, buf: Buffer): void {
    if (buf.length > 0) x.deadline = Date.now() + x.req.bodyTimeout;
    if (x.chunked) {
      const used = x.chunked.push(buf, (p) => {
        if (!x.finished && !x.handler.onData(p)) this.pause(x);
      });
      if (x.chunked.done) {
        if (used < buf.length) x.close = true; // more than the response: out of step
        this.finish(x);
      }
      return;
    }
    if (x.untilClose) {
      if (buf.length > 0 && !x.handler.onData(buf)) this.pause(x);
      return;
    }
    if (buf.length > x.remaining) {
      x.close = true;
      buf = buf.subarray(0, x.remaining);
    }
    if (buf.length > 0) {
      x.remaining -= buf.length;
      if (!x.handler.onData(buf)) this.pause(x);
    }
    if (x.remaining === 0) this.finish(x);
  }

  private pause(x: Exchange): void {
    if (x.finished || x.paused) return;
    x.paused = true;
    this.socket.pause();
  }

  private resume(x: Exchange): void {
    if (!x.paused) return;
    x.paused = false;
    x.deadline = Date.now() + x.req.bodyTimeout;
    if (this.exchange === x) this.socket.resume();
  }

  private onEnd(): void {
    const x = this.exchange;
    if (x?.untilClose && x.responded) this.finish(x);
    else if (!x && !this.dead) {
      // An idle connection the replica closed (its keep-alive timeout, or it died): out of the
      // idle list now, not at 'close' a loop turn later, so no request is sent on it meanwhile.
      this.dead = true;
      this.socket.destroy();
      this.pool.released(this);
    }
  }

  /** Ends the current exchange: cleanly (no err) or with an error; frees or drops the connection. */
  private finish(x: Exchange, err?: Error): void {
    if (x.finished) return;
    x.finished = true;
    this.exchange = undefined;
    this.served++;
    if (err || x.close) {
      this.dead = true;
      this.socket.destroy();
    }
    if (x.paused) this.socket.resume();
    if (err) x.handler.onError(err);
    else x.handler.onComplete();
    this.pool.released(this);
  }

  /** The socket failed or closed. */
  fail(err: Error | undefined): void {
    const wasDead = this.dead;
    this.dead = true;
    const x = this.exchange;
    if (!x) {
      if (!wasDead) this.pool.released(this);
      return;
    }
    if (x.untilClose && x.responded && !err) {
      this.finish(x);
      return;
    }
    let e: CodedError;
    if (!this.connected) {
      const code = (err as CodedError | undefined)?.code ?? "ECONNREFUSED";
      e = coded(err?.message ?? "the connection closed while connecting", code);
    } else if (!x.responded && this.served > 0) {
      // A keep-alive connection the replica had already closed: safe to send again elsewhere.
      e = coded("the replica closed a reused connection before answering", "UND_ERR_SOCKET", {
        code: (err as CodedError | undefined)?.code ?? "ECONNRESET",
      });
    } else {
      const code = (err as CodedError | undefined)?.code ?? "ECONNRESET";
      e = coded(err?.message ?? "the replica closed the connection", code);
    }
    e.lost = true;
    this.finish(x, e);
  }

  /** Called each second by the pool: deadlines and idle time. */
  sweep(now: number, idleTimeoutMs: number): void {
    const x = this.exchange;
    if (x) {
      if (!x.paused && now > x.deadline) {
        const code = x.deadlineCode;
        this.finish(
          x,
          coded(code === "UND_ERR_BODY_TIMEOUT" ? "the body stalled" : "no response in time", code),
        );
      }
    } else if (this.connected && !this.dead && now - this.idleSince > idleTimeoutMs) {
      this.dead = true;
      this.socket.destroy();
      this.pool.released(this);
    }
  }
}

/**
 * "M P HTTP/1.1", the header lines, `extra` (whole lines) and the blank line, written straight
 * into a buffer with `room` bytes left after them (no head string is built: one concatenated a
 * piece at a time was a fifth of the gateway's garbage per request). Heads are latin1.
 */
function headBuffer(req: UpstreamRequest, extra: string, room: number): Buffer {
  const h = req.headers;
  const size = req.method.length + req.path.length + 14 + fieldsLength(h) + extra.length;
  const out = Buffer.allocUnsafe(size + room);
  let at = out.write(req.method, 0, "latin1");
  out[at++] = 32;
  at += out.write(req.path, at, "latin1");
  at += out.write(" HTTP/1.1\r\n", at, "latin1");
  at = writeFields(out, at, h);
  if (extra) at += out.write(extra, at, "latin1");
  out[at++] = 13;
  out[at] = 10;
  return out;
}

/** Writes the head and, for a Buffer body, the body in one write. */
function writeRequest(socket: Socket, req: UpstreamRequest): void {
  const h = req.headers;
  const body = req.body;
  let declared = false;
  for (let i = 0; i < h.length; i += 2) if (h[i] === "content-length") declared = true;
  if (body === undefined || Buffer.isBuffer(body)) {
    const len = body?.length ?? 0;
    const lengthLine =
      !declared && (len > 0 || (req.method !== "GET" && req.method !== "HEAD"))
        ? `content-length: ${len}\r\n`
        : "";
    const out = headBuffer(req, lengthLine, len);
    if (body) body.copy(out, out.length - len);
    socket.write(out);
    return;
  }
  // A streamed body: as it comes, with backpressure both ways.
  const chunked = !declared;
  socket.write(headBuffer(req, chunked ? "transfer-encoding: chunked\r\n" : "", 0));
  body.on("data", (c: Buffer) => {
    if (socket.destroyed) return;
    const ok = chunked
      ? socket.write(Buffer.concat([Buffer.from(`${c.length.toString(16)}\r\n`), c, CRLF]))
      : socket.write(c);
    if (!ok) {
      body.pause();
      socket.once("drain", () => body.resume());
    }
  });
  body.once("end", () => {
    if (chunked && !socket.destroyed) socket.write("0\r\n\r\n");
  });
  body.once("error", () => socket.destroy());
}

const CRLF = Buffer.from("\r\n");

/**
 * One read buffer for every upstream socket (net's `onread` option): each read is handled to
 * the end before the next one can happen, so no two ever share it, and nothing is allocated per
 * read (Node's default allocates 64 KiB and shrinks it to fit, then wraps it in a stream push).
 * What the pool hands on is a view of it, valid only during the call: UpstreamHandler.onData.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

export class UpstreamPool {
  private readonly idle: Connection[] = [];
  private readonly all = new Set<Connection>();
  private readonly waiting: { req: UpstreamRequest; handler: UpstreamHandler }[] = [];
  private readonly max: number;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly opts: UpstreamPoolOptions = {},
  ) {
    this.max = opts.connections ?? 256;
    // One coarse timer for every deadline: a timer per request costs more than the request.
    this.timer = setInterval(() => this.sweep(), 1000);
    this.timer.unref();
  }

  /** Connections open now (busy or idle). */
  get size(): number {
    return this.all.size;
  }

  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void {
    if (this.closed) {
      handler.onError(coded("the pool is closed", "UND_ERR_DESTROYED"));
      return;
    }
    const x = exchange(req, handler);
    let c = this.idle.pop();
    while (c?.dead) c = this.idle.pop();
    if (c) {
      c.start(x);
      return;
    }
    if (this.all.size >= this.max) {
      this.waiting.push({ req, handler });
      return;
    }
    this.open(x);
  }

  private open(x: Exchange): void {
    const timeoutMs = this.opts.connectTimeoutMs ?? 5000;
    let c: Connection | undefined;
    const socket = connect({
      host: this.host,
      port: this.port,
      onread: {
        buffer: READ_BUFFER,
        // true: keep reading; a connection that must wait pauses its socket itself.
        callback: (n: number) => {
          c?.onData(READ_BUFFER.subarray(0, n));
          return true;
        },
      },
    });
    c = new Connection(socket, this);
    this.all.add(c);
    const timer = setTimeout(() => {
      if (c.connected) return;
      c.fail(coded(`connect timed out after ${timeoutMs} ms`, "UND_ERR_CONNECT_TIMEOUT"));
      socket.destroy();
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      c.connected = true;
    });
    socket.once("close", () => clearTimeout(timer));
    c.start(x);
  }

  /** A connection finished an exchange, or died. */
  released(c: Connection): void {
    if (c.dead) {
      this.all.delete(c);
      const i = this.idle.indexOf(c);
      if (i >= 0) this.idle.splice(i, 1);
    }
    const next = this.waiting.shift();
    if (next) {
      const x = exchange(next.req, next.handler);
      if (!c.dead && !c.exchange) c.start(x);
      else if (this.closed) next.handler.onError(coded("the pool is closed", "UND_ERR_DESTROYED"));
      else this.open(x);
      return;
    }
    if (c.dead || c.exchange) return;
    if (this.closed) {
      // close() was called while this one was busy: it goes now that its exchange is over.
      c.dead = true;
      c.socket.destroy();
      this.all.delete(c);
      return;
    }
    c.idleSince = Date.now();
    this.idle.push(c);
  }

  private sweep(): void {
    const now = Date.now();
    const idleMs = this.opts.idleTimeoutMs ?? 3000;
    for (const c of [...this.all]) c.sweep(now, idleMs);
  }

  /**
   * Closes idle connections now and busy ones when their exchange ends, or, given `drainMs`, at
   * the latest that long from now (their exchanges fail as lost connections: retryable while the
   * client has nothing).
   */
  async close(drainMs?: number): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    for (const c of this.idle.splice(0)) c.socket.destroy();
    for (const w of this.waiting.splice(0))
      w.handler.onError(coded("the pool is closed", "UND_ERR_DESTROYED"));
    if (drainMs === undefined || this.all.size === 0) return;
    setTimeout(() => {
      for (const c of [...this.all]) c.socket.destroy();
    }, drainMs).unref();
  }

  /** Drops every connection, busy or not. */
  destroy(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const w of this.waiting.splice(0))
      w.handler.onError(coded("the pool is closed", "UND_ERR_DESTROYED"));
    for (const c of [...this.all]) c.socket.destroy();
    this.idle.length = 0;
  }
}

function exchange(req: UpstreamRequest, handler: UpstreamHandler): Exchange {
  return {
    req,
    handler,
    pending: undefined,
    status: 0,
    remaining: -1,
    chunked: undefined,
    untilClose: false,
    close: false,
    responded: false,
    finished: false,
    deadline: 0,
    deadlineCode: "",
    paused: false,
  };
}

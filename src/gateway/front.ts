import { type Server, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import { badRequest, sendGatewayError } from "./errors.js";
import {
  fieldsLength,
  findHeadEnd,
  type GatewayRequest,
  type GatewayResponse,
  MAX_HEAD_BYTES,
  parseRequestHead,
  type RequestHead,
  writeFields,
} from "./h1.js";

/**
 * The gateway's hand-rolled HTTP/1.1 front on Loom's own port. Each connection starts here: a
 * request the lane claims (an OpenAI-style POST, a /serving/ route) is parsed by hand and served
 * without Node's http machinery; the first request it does not claim — or cannot parse simply —
 * hands the whole connection, bytes already read included, to Node's http server for good, so
 * Fastify serves everything else exactly as before. bench:gateway measured Node's http server
 * with undici behind it at about half the requests/s of this path on the same cores.
 */

export interface FastLane {
  /** Whether the lane serves this request (decided on method and URL alone). */
  claims(method: string, url: string): boolean;
  /**
   * Serves one claimed request with its whole body: a Buffer (empty when the request has none)
   * from the front; undefined from Node's server, whose request stream the lane reads itself.
   * Must always answer; never throws.
   */
  serve(
    req: GatewayRequest,
    res: GatewayResponse,
    authorization: string | undefined,
    body: Buffer | undefined,
  ): void;
}

export interface FrontOptions {
  /** Larger bodies go to Node's server (whose route answers 413). Default 8 MiB. */
  maxBodyBytes?: number;
}

const NO_BODY = Buffer.alloc(0);

/** Date header value, refreshed each second by the sweep (nobody needs it finer). */
let dateHeader = new Date().toUTCString();

/** A request as the front parsed it. */
class FrontRequest implements GatewayRequest {
  constructor(
    readonly method: string,
    readonly url: string,
    readonly rawHeaders: string[],
    readonly socket: { remoteAddress?: string },
  ) {}
}

type ResponseEvent = "close" | "finish" | "drain";
interface Listener {
  event: ResponseEvent;
  fn: () => void;
  once: boolean;
}

const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");

/**
 * A response written straight to the socket: the head waits for the first body bytes so that
 * a short answer leaves in one write; bodies without a Content-Length go chunked.
 */
export class FrontResponse implements GatewayResponse {
  statusCode = 200;
  /** write() frames each chunk into a buffer of its own. */
  readonly writeCopies = true;
  headersSent = false;
  destroyed = false;
  writableEnded = false;
  writableFinished = false;
  /** The head not sent yet: the status line, then name, value, … */
  private head: string[] | undefined;
  private chunked = false;
  private bodiless = false;
  private closeEmitted = false;
  /**
   * Listeners of 'close', 'finish' and 'drain', in the order added: what the gateway needs of an
   * EventEmitter, without one per request.
   */
  private listeners: Listener[] | undefined;

  constructor(
    private readonly conn: FrontConnection,
    readonly socket: Socket,
    private readonly method: string,
  ) {}

  on(event: ResponseEvent, fn: () => void): this {
    if (!this.listeners) this.listeners = [];
    this.listeners.push({ event, fn, once: false });
    return this;
  }

  once(event: ResponseEvent, fn: () => void): this {
    if (!this.listeners) this.listeners = [];
    this.listeners.push({ event, fn, once: true });
    return this;
  }

  /** Removes the last matching listener, as EventEmitter does. */
  off(event: ResponseEvent, fn: () => void): this {
    const list = this.listeners;
    if (!list) return this;
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i]!.event === event && list[i]!.fn === fn) {
        list.splice(i, 1);
        break;
      }
    }
    return this;
  }

  /** Calls the event's listeners (those added meanwhile wait for the next time, as with EventEmitter). */
  emit(event: ResponseEvent): void {
    const list = this.listeners;
    if (!list) return;
    for (const l of list.filter((x) => x.event === event)) {
      if (l.once) {
        const i = list.indexOf(l);
        if (i < 0) continue; // removed by an earlier listener
        list.splice(i, 1);
      }
      l.fn();
    }
  }

  writeHead(status: number, headers?: string[] | Record<string, string | number>): this {
    if (this.headersSent) throw new Error("the response head was sent already");
    this.statusCode = status;
    // The status line, then name, value, …: written straight into the first buffer that goes
    // out (frame), with no head string built a piece at a time.
    const head = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Unknown"}\r\n`];
    let length = false;
    let date = false;
    // The forwarder passes a flat list; an object comes only from error answers.
    const list: readonly (string | number)[] = Array.isArray(headers)
      ? headers
      : headers
        ? Object.entries(headers).flat()
        : [];
    for (let i = 0; i < list.length; i += 2) {
      const k = String(list[i]);
      const name = k.toLowerCase();
      if (name === "content-length") length = true;
      else if (name === "date") date = true;
      else if (name === "connection" || name === "transfer-encoding" || name === "keep-alive") continue;
      head.push(k, String(list[i + 1]));
    }
    this.bodiless = this.method === "HEAD" || status === 204 || status === 304 || status < 200;
    if (!length && !this.bodiless) {
      this.chunked = true;
      head.push("transfer-encoding", "chunked");
    }
    if (!date) head.push("date", dateHeader);
    if (this.conn.closing) head.push("connection", "close");
    this.head = head;
    this.headersSent = true;
    return this;
  }

  flushHeaders(): void {
    if (!this.headersSent) this.writeHead(this.statusCode);
    if (this.head === undefined) return;
    this.socket.write(this.frame(undefined, false));
  }

  write(chunk: Buffer | string): boolean {
    if (this.writableEnded || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    const data = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    if (this.bodiless || data.length === 0) {
      if (this.head !== undefined) this.flushHeaders();
      return true;
    }
    return this.socket.write(this.frame(data, false));
  }

  end(chunk?: string | Buffer): this {
    if (this.writableEnded) return this;
    if (!this.headersSent) this.writeHead(this.statusCode);
    this.writableEnded = true;
    const data = chunk === undefined ? undefined : typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    const out = this.bodiless ? this.frame(undefined, false) : this.frame(data, true);
    if (this.destroyed) return this;
    if (out.length === 0) this.finish();
    else {
      this.socket.write(out);
      // In the kernel already (the usual case on a socket keeping up): finished now, with no
      // callback or extra tick; otherwise when the socket has flushed.
      if (this.socket.writableLength === 0) this.finish();
      else this.socket.once("drain", () => this.finish());
    }
    return this;
  }

  /** The pending head, then `data` framed as the body requires, then the last chunk if `last`. */
  private frame(data: Buffer | undefined, last: boolean): Buffer {
    const head = this.head;
    this.head = undefined;
    // The status line, the header lines, and the blank line at the end.
    const headLen = head === undefined ? 0 : head[0]!.length + fieldsLength(head, 1) + 2;
    const len = data?.length ?? 0;
    const prefix = this.chunked && len > 0 ? `${len.toString(16)}\r\n` : "";
    const tail = this.chunked ? (len > 0 ? 2 : 0) + (last ? 5 : 0) : 0;
    const out = Buffer.allocUnsafe(headLen + prefix.length + len + tail);
    let at = 0;
    if (head !== undefined) {
      at = writeFields(out, out.write(head[0]!, 0, "latin1"), head, 1);
      out[at++] = 13;
      out[at++] = 10;
    }
    if (prefix) at += out.write(prefix, at, "latin1");
    if (data && len > 0) at += data.copy(out, at);
    if (this.chunked && len > 0) at += CRLF.copy(out, at);
    if (this.chunked && last) LAST_CHUNK.copy(out, at);
    return out;
  }

  private finish(): void {
    if (this.writableFinished || this.destroyed) return;
    this.closeEmitted = true;
    this.writableFinished = true;
    this.emit("finish");
    this.emit("close");
    this.conn.responseDone(this);
  }

  /** The connection is gone: tell whoever waits on this response. */
  gone(): void {
    if (this.closeEmitted) return;
    this.closeEmitted = true;
    this.destroyed = true;
    if (!this.writableFinished) this.emit("close");
  }

  /** Cuts the connection; 'close' follows when the socket has closed (later, as with Node's). */
  destroy(): this {
    this.destroyed = true;
    this.conn.socket.destroy();
    return this;
  }
}

class FrontConnection {
  private buf: Buffer | undefined;
  /** How far the head search got in `buf`. */
  private searched = 0;
  private head: RequestHead | undefined;
  private bodyStart = 0;
  private active: FrontResponse | undefined;
  /** No further request on this connection: the client asked, or the server is closing. */
  closing = false;
  private handedOff = false;
  lastActive = Date.now();
  /** When an incomplete request started arriving (0: none pending). */
  partialSince = 0;
  /** The peer, read once: a socket that is closing no longer knows it. */
  private readonly peer: { remoteAddress?: string };

  constructor(
    readonly socket: Socket,
    private readonly front: Front,
  ) {
    this.peer = { remoteAddress: socket.remoteAddress };
    socket.setNoDelay(true);
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onClose);
    socket.on("error", this.onError);
    socket.on("drain", this.onDrain);
  }

  get idle(): boolean {
    return !this.active && !this.buf;
  }

  private readonly onData = (d: Buffer) => {
    this.buf = this.buf ? Buffer.concat([this.buf, d]) : d;
    this.lastActive = Date.now();
    if (this.active) {
      // Pipelined requests wait for the current answer; a client that floods is paused.
      if (this.buf.length > MAX_HEAD_BYTES + this.front.maxBodyBytes) this.socket.pause();
      return;
    }
    this.next();
  };

  private readonly onEnd = () => {
    // The client will send nothing more. As Node's server does by default (httpAllowHalfOpen
    // false), that counts as leaving: a request in flight is abandoned when the socket closes.
    this.closing = true;
    this.socket.end();
  };

  private readonly onClose = () => {
    this.front.forget(this);
    this.active?.gone();
  };

  private readonly onError = () => {
    // 'close' follows and does the rest.
  };

  private readonly onDrain = () => {
    this.active?.emit("drain");
  };

  /** Serves the requests in `buf`, one at a time, or hands the connection to Node. */
  private next(): void {
    // Once closing, nothing more is read as a request (as Node ignores data after a close).
    while (this.buf && !this.active && !this.handedOff && !this.closing) {
      const buf = this.buf;
      if (!this.head) {
        const end = findHeadEnd(buf, this.searched);
        if (end < 0) {
          // A head with bare LF line ends never shows a CRLFCRLF: Node refuses it at once (400),
          // so it goes there rather than waiting here for the head timeout.
          if (buf.length > MAX_HEAD_BYTES || hasBareLF(buf, this.searched)) {
            this.handOff();
            return;
          }
          this.searched = buf.length;
          if (!this.partialSince) this.partialSince = Date.now();
          return;
        }
        const head = end > MAX_HEAD_BYTES ? undefined : parseRequestHead(buf, end);
        if (head?.duplicate && this.front.lane.claims(head.method, head.url)) {
          this.refuseDuplicate(head);
          return;
        }
        if (
          head?.duplicate ||
          !head ||
          head.contentLength > this.front.maxBodyBytes ||
          !this.front.lane.claims(head.method, head.url)
        ) {
          this.handOff();
          return;
        }
        this.head = head;
        this.bodyStart = end + 4;
      }
      const head = this.head;
      const bodyEnd = this.bodyStart + head.contentLength;
      if (buf.length < bodyEnd) {
        if (!this.partialSince) this.partialSince = Date.now();
        return;
      }
      // Bodyless requests (GET, HEAD, DELETE, an empty POST) get an empty body, never undefined:
      // undefined tells the lane to read a stream, and a FrontRequest is none.
      const body = head.contentLength > 0 ? buf.subarray(this.bodyStart, bodyEnd) : NO_BODY;
      this.buf = bodyEnd < buf.length ? buf.subarray(bodyEnd) : undefined;
      this.head = undefined;
      this.searched = 0;
      this.partialSince = 0;
      if (head.close) this.closing = true;
      const res = new FrontResponse(this, this.socket, head.method);
      this.active = res;
      const req = new FrontRequest(head.method, head.url, head.headers, this.peer);
      this.front.lane.serve(req, res, head.authorization, body);
    }
  }

  /**
   * A claimed request with a header that must come once (h1.ts SINGLE_HEADERS) came twice: 400,
   * and the connection closes, as Node's server does after a request it cannot frame, so nothing
   * pipelined behind it is read either. Node's side of the same port refuses it too (serverWith).
   */
  private refuseDuplicate(head: RequestHead): void {
    this.buf = undefined;
    this.closing = true;
    this.socket.pause();
    const res = new FrontResponse(this, this.socket, head.method);
    this.active = res;
    sendGatewayError(res, duplicateHeaderError(head.duplicate!));
  }

  responseDone(res: FrontResponse): void {
    if (this.active !== res) return;
    this.active = undefined;
    this.lastActive = Date.now();
    if (this.closing) {
      this.socket.end();
      return;
    }
    if (this.socket.isPaused()) this.socket.resume();
    this.next();
  }

  /**
   * Node's server takes the connection from here on: what was read goes back into the socket,
   * and the socket is switched to plain stream reads (`_consumed`), since Node would otherwise
   * read the handle directly, past the bytes given back.
   */
  private handOff(): void {
    this.handedOff = true;
    this.front.forget(this);
    const s = this.socket;
    s.off("data", this.onData);
    s.off("end", this.onEnd);
    s.off("close", this.onClose);
    s.off("error", this.onError);
    s.off("drain", this.onDrain);
    s.pause();
    if (this.buf) s.unshift(this.buf);
    this.buf = undefined;
    const handle = (s as unknown as { _handle?: { _consumed?: boolean } })._handle;
    if (handle) handle._consumed = true;
    this.front.handToNode(s);
    s.resume();
  }

  /** Closes now if idle; otherwise after the current answer. */
  shut(force: boolean): void {
    this.closing = true;
    if (force || this.idle) this.socket.destroy();
  }
}

/** Whether buf holds, from `from` on, an LF with no CR before it. */
function hasBareLF(buf: Buffer, from: number): boolean {
  for (let i = buf.indexOf(10, from); i >= 0; i = buf.indexOf(10, i + 1)) {
    if (i === 0 || buf[i - 1] !== 13) return true;
  }
  return false;
}

/** The 400 for a request that repeats a header it may carry once: which one, and what to do. */
export function duplicateHeaderError(name: string) {
  return badRequest(
    `the request has more than one ${name} header: send it exactly once (a request with two is refused rather than guessing which one counts)`,
  );
}

class Front {
  readonly maxBodyBytes: number;
  private readonly connections = new Set<FrontConnection>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly server: Server,
    readonly lane: FastLane,
    private readonly nodeListeners: ((socket: Socket) => void)[],
    opts: FrontOptions,
  ) {
    this.maxBodyBytes = opts.maxBodyBytes ?? 8 * 1024 * 1024;
    this.timer = setInterval(() => this.sweep(), 1000);
    this.timer.unref();
  }

  accept(socket: Socket): void {
    this.connections.add(new FrontConnection(socket, this));
  }

  forget(c: FrontConnection): void {
    this.connections.delete(c);
  }

  handToNode(socket: Socket): void {
    for (const l of this.nodeListeners) l.call(this.server, socket);
  }

  /** Node's keep-alive and head timeouts, applied to the connections this front still holds. */
  private sweep(): void {
    dateHeader = new Date().toUTCString();
    const now = Date.now();
    const keepAlive = this.server.keepAliveTimeout || 5000;
    const headers = this.server.headersTimeout || 60_000;
    for (const c of this.connections) {
      if (c.idle && now - c.lastActive > keepAlive) c.shut(false);
      else if (c.partialSince && now - c.partialSince > headers) c.shut(true);
    }
  }

  closeIdle(): void {
    for (const c of this.connections) c.shut(false);
  }

  closeAll(): void {
    for (const c of this.connections) c.shut(true);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * Puts the front before `server`'s own connection handling. Closing the server closes the
 * front's idle connections too (and the busy ones after their answer), as Node does for its own.
 */
export function attachFront(server: Server, lane: FastLane, opts: FrontOptions = {}): void {
  const nodeListeners = server.listeners("connection") as ((socket: Socket) => void)[];
  server.removeAllListeners("connection");
  const front = new Front(server, lane, nodeListeners, opts);
  server.on("connection", (socket: Socket) => front.accept(socket));
  const closeIdle = server.closeIdleConnections.bind(server);
  const closeAll = server.closeAllConnections.bind(server);
  server.closeIdleConnections = () => {
    front.closeIdle();
    closeIdle();
  };
  server.closeAllConnections = () => {
    front.closeAll();
    closeAll();
  };
  server.once("close", () => front.stop());
}

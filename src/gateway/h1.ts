/**
 * HTTP/1.1 message heads and chunked bodies, parsed by hand for the gateway's data path
 * (front.ts on the client side, upstream.ts on the replica side). Node's http server and undici
 * together cost about 2–3× the CPU per proxied request of a hand-rolled path (bench:gateway),
 * which capped the gateway far below nginx. Deliberately narrow: a request head with anything
 * unusual in it is refused here, and the front hands that connection to Node's own server, which
 * answers every edge case (HTTP/1.0, chunked uploads, Expect, Upgrade, bad syntax) as it always did.
 */

const CRLFCRLF = Buffer.from("\r\n\r\n");

/** Node's default maxHeaderSize: a larger head goes to Node, which answers 431. */
export const MAX_HEAD_BYTES = 16 * 1024;

/** Index of the \r\n\r\n that ends a head, searching from about `from`; -1 when not there yet. */
export function findHeadEnd(buf: Buffer, from = 0): number {
  return buf.indexOf(CRLFCRLF, from > 3 ? from - 3 : 0);
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/*
 * Heads are read with sticky regular expressions over one latin1 string, a line at a time: the
 * character classes below are the whole syntax check (a name is a token; a value or a reason
 * phrase holds no control character but tab, so no stray CR or LF either; every line ends in
 * CRLF), and the engine's compiled matcher does it in one pass per line. bench:gateway: the
 * split-and-check version cost about 3 µs a request.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: ruling out control characters is the point
const FIELD_LINE = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n/y;
// biome-ignore lint/suspicious/noControlCharactersInRegex: ruling out control characters is the point
const REQUEST_LINE = /([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\/[^\x00-\x20\x7f]*) HTTP\/1\.1\r\n/y;
// biome-ignore lint/suspicious/noControlCharactersInRegex: ruling out control characters is the point
const STATUS_LINE = /HTTP\/1\.([01]) (\d{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\r\n/y;
const DIGITS = /^\d{1,15}$/;
/** Bytes of the `name: value\r\n` lines of a flat [name, value, …] list, pairs from index `from`. */
export function fieldsLength(fields: readonly string[], from = 0): number {
  let n = 0;
  for (let i = from; i < fields.length; i += 2) n += fields[i]!.length + fields[i + 1]!.length + 4;
  return n;
}

/**
 * Writes those lines into `out` at `at` and returns the offset after them. Heads are latin1, one
 * byte per character, so `fieldsLength` is their size; no head string is built on the way.
 */
export function writeFields(out: Buffer, at: number, fields: readonly string[], from = 0): number {
  for (let i = from; i < fields.length; i += 2) {
    at += out.write(fields[i]!, at, "latin1");
    out[at++] = 58; // ":"
    out[at++] = 32;
    at += out.write(fields[i + 1]!, at, "latin1");
    out[at++] = 13;
    out[at++] = 10;
  }
  return at;
}

export interface RequestHead {
  method: string;
  url: string;
  /** Flat [name, value, …], names lower-cased, in order. */
  headers: string[];
  /** The declared body length; 0 when none is declared. */
  contentLength: number;
  /** The client asked to close the connection after this exchange. */
  close: boolean;
  authorization: string | undefined;
  /**
   * A header that must appear once but came twice or more (authorization, content-length, host):
   * the request is refused with 400, never served. Two parsers that pick different copies (Node
   * takes the first Authorization; a naive reader the last) would otherwise decide differently.
   */
  duplicate?: string;
}

interface Fields {
  /** Flat [name, value, …], names lower-cased, values trimmed, in order. */
  headers: string[];
  /** -1: none declared. */
  contentLength: number;
  /** How many Content-Length lines there were (a request with two is refused, as Node's parser does). */
  contentLengths: number;
}

const CLOSE_TOKEN = /(^|,)\s*close\s*(,|$)/;
const KEEP_ALIVE_TOKEN = /(^|,)\s*keep-alive\s*(,|$)/;

/**
 * The header lines of `text` from `at` on (each ending in CRLF), read the same strict way for
 * requests and responses; a string saying what is wrong with them otherwise.
 */
function readFields(text: string, at: number): Fields | string {
  const headers: string[] = [];
  let contentLength = -1;
  let contentLengths = 0;
  FIELD_LINE.lastIndex = at;
  while (FIELD_LINE.lastIndex < text.length) {
    const from = FIELD_LINE.lastIndex;
    // test(), not exec(): no match array per line. A matching line has its first colon right
    // after the name (a token holds none) and ends in CRLF.
    if (!FIELD_LINE.test(text)) return whatIsWrong(text.slice(from, text.indexOf("\n", from) >>> 0));
    const colon = text.indexOf(":", from);
    const name = text.slice(from, colon).toLowerCase();
    const value = text.slice(colon + 1, FIELD_LINE.lastIndex - 2).trim();
    if (name === "content-length") {
      if (!DIGITS.test(value)) return "content-length";
      const n = Number(value);
      if (contentLength >= 0 && contentLength !== n) return "two content-lengths";
      contentLength = n;
      contentLengths++;
    }
    headers.push(name, value);
  }
  return { headers, contentLength, contentLengths };
}

/** Why a header line did not match FIELD_LINE (only ever on the error path). */
function whatIsWrong(line: string): string {
  const colon = line.indexOf(":");
  if (colon <= 0) return "a header line";
  const name = line.slice(0, colon);
  // Also an obs-fold line, or a space before the colon.
  if (!TOKEN.test(name)) return `header name ${JSON.stringify(name.toLowerCase().slice(0, 40))}`;
  return "a control character in a header line";
}

/**
 * The head in buf[0, end) (end: the index of its \r\n\r\n), or undefined when this path does not
 * take it: not plain HTTP/1.1 with a Content-Length body, no Host (Node answers 400), or anything
 * malformed. Node's server then decides, so the two parsers cannot differ on what is odd.
 */
export function parseRequestHead(buf: Buffer, end: number): RequestHead | undefined {
  // With the CRLF that ends the last header line.
  const text = buf.toString("latin1", 0, end + 2);
  REQUEST_LINE.lastIndex = 0;
  const first = REQUEST_LINE.exec(text);
  if (!first) return undefined;
  const method = first[1]!;
  const url = first[2]!;
  const fields = readFields(text, REQUEST_LINE.lastIndex);
  if (typeof fields === "string") return undefined;
  const { headers } = fields;
  let close = false;
  let authorization: string | undefined;
  let authorizations = 0;
  let hosts = 0;
  for (let i = 0; i < headers.length; i += 2) {
    const value = headers[i + 1]!;
    switch (headers[i]) {
      case "transfer-encoding":
      case "expect":
      case "upgrade":
        return undefined;
      case "connection": {
        const v = value.toLowerCase();
        if (v.includes("upgrade")) return undefined;
        if (CLOSE_TOKEN.test(v)) close = true;
        break;
      }
      case "authorization":
        // The first, as Node's req.headers has it; a second makes the request a 400 anyway.
        if (authorizations++ === 0) authorization = value;
        break;
      case "host":
        hosts++;
        break;
    }
  }
  // Node refuses an HTTP/1.1 request without Host (requireHostHeader): let it say so.
  if (hosts === 0) return undefined;
  const head: RequestHead = {
    method,
    url,
    headers,
    contentLength: Math.max(0, fields.contentLength),
    close,
    authorization,
  };
  const duplicate =
    authorizations > 1
      ? "authorization"
      : fields.contentLengths > 1
        ? "content-length"
        : hosts > 1
          ? "host"
          : undefined;
  if (duplicate) head.duplicate = duplicate;
  return head;
}

/** The headers a request may carry once only: two of any of them make it a 400, on every path. */
export const SINGLE_HEADERS = ["authorization", "content-length", "host"] as const;

/**
 * The first of SINGLE_HEADERS that `rawHeaders` (flat [name, value, …], any case, as Node's
 * IncomingMessage has them) carries more than once; undefined when none is repeated.
 */
export function duplicateHeader(rawHeaders: readonly string[]): string | undefined {
  let seen = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    // Most names are none of the three: a length check before lower-casing.
    if (name.length !== 4 && name.length !== 13 && name.length !== 14) continue;
    const bit = SINGLE_HEADERS.indexOf(name.toLowerCase() as (typeof SINGLE_HEADERS)[number]);
    if (bit < 0) continue;
    if (seen & (1 << bit)) return SINGLE_HEADERS[bit];
    seen |= 1 << bit;
  }
  return undefined;
}

export interface ResponseHead {
  status: number;
  /** Flat [name, value, …], names lower-cased, in order. */
  headers: string[];
  /** -1: none declared. */
  contentLength: number;
  chunked: boolean;
  /** The connection cannot carry another request after this response. */
  close: boolean;
}

/** A replica's response head in buf[0, end); throws on one that cannot be read safely. */
export function parseResponseHead(buf: Buffer, end: number): ResponseHead {
  const text = buf.toString("latin1", 0, end + 2);
  STATUS_LINE.lastIndex = 0;
  const m = STATUS_LINE.exec(text);
  if (!m) {
    const first = text.slice(0, text.indexOf("\r\n") >>> 0);
    throw new MalformedResponse(`status line ${JSON.stringify(first.slice(0, 40))}`);
  }
  const fields = readFields(text, STATUS_LINE.lastIndex);
  if (typeof fields === "string") throw new MalformedResponse(fields);
  const { headers } = fields;
  let { contentLength } = fields;
  const http10 = m[1] === "0";
  let chunked = false;
  let close = http10;
  for (let i = 0; i < headers.length; i += 2) {
    const value = headers[i + 1]!;
    if (headers[i] === "transfer-encoding") {
      const codings = value.toLowerCase().split(",");
      if (codings[codings.length - 1]!.trim() !== "chunked")
        throw new MalformedResponse(`transfer-encoding ${value}`);
      chunked = true;
    } else if (headers[i] === "connection") {
      const v = value.toLowerCase();
      if (CLOSE_TOKEN.test(v)) close = true;
      else if (http10 && KEEP_ALIVE_TOKEN.test(v)) close = false;
    }
  }
  // RFC 9112 §6.3: chunked wins over a Content-Length, and the connection must not be reused.
  if (chunked && contentLength >= 0) {
    contentLength = -1;
    close = true;
  }
  return { status: Number(m[2]), headers, contentLength, chunked, close };
}

export class MalformedResponse extends Error {
  readonly code = "EPROTO";
  constructor(what: string) {
    super(`the replica sent a malformed HTTP response: ${what}`);
  }
}

enum Chunk {
  Size,
  Data,
  DataEnd,
  Trailer,
  Done,
}

/**
 * Decodes a chunked body incrementally, in whatever pieces the socket gives. Payload comes out as
 * views of the input (no copies); `done` once the last chunk and the trailer have passed.
 */
export class ChunkedDecoder {
  private state = Chunk.Size;
  private line = "";
  private remaining = 0;

  get done(): boolean {
    return this.state === Chunk.Done;
  }

  /** Feeds `buf`; returns how many bytes belong to the body (the rest is the next message). */
  push(buf: Buffer, onData: (payload: Buffer) => void): number {
    let i = 0;
    while (i < buf.length && this.state !== Chunk.Done) {
      switch (this.state) {
        case Chunk.Data: {
          const n = Math.min(this.remaining, buf.length - i);
          onData(buf.subarray(i, i + n));
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = Chunk.DataEnd;
          break;
        }
        case Chunk.Size:
        case Chunk.DataEnd:
        case Chunk.Trailer: {
          const lf = buf.indexOf(10, i);
          const stop = lf < 0 ? buf.length : lf + 1;
          this.line += buf.toString("latin1", i, stop);
          i = stop;
          if (this.line.length > 4096) throw new MalformedResponse("a chunk line longer than 4 KiB");
          if (lf < 0) break;
          const line = this.line.endsWith("\r\n") ? this.line.slice(0, -2) : undefined;
          this.line = "";
          if (line === undefined) throw new MalformedResponse("a chunk line without CRLF");
          if (this.state === Chunk.DataEnd) {
            if (line !== "") throw new MalformedResponse("chunk data longer than its size");
            this.state = Chunk.Size;
          } else if (this.state === Chunk.Trailer) {
            if (line === "") this.state = Chunk.Done;
          } else {
            const semi = line.indexOf(";");
            const hex = (semi < 0 ? line : line.slice(0, semi)).trim();
            if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw new MalformedResponse("a chunk size");
            this.remaining = Number.parseInt(hex, 16);
            this.state = this.remaining === 0 ? Chunk.Trailer : Chunk.Data;
          }
          break;
        }
      }
    }
    return i;
  }
}

/**
 * What the gateway uses of a request: Node's IncomingMessage has it, and so does the hand-rolled
 * front's (front.ts). A request without a buffered body must be Node's (it is read as a stream).
 */
export interface GatewayRequest {
  method?: string;
  url?: string;
  /** Flat [name, value, …] as received. */
  rawHeaders: string[];
  socket: { remoteAddress?: string };
}

/** What the gateway uses of a response: Node's ServerResponse, or the front's. */
export interface GatewayResponse {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  readonly socket: { setNoDelay(noDelay?: boolean): unknown } | null;
  writeHead(status: number, headers?: string[] | Record<string, string | number>): unknown;
  write(chunk: Buffer): boolean;
  /**
   * True when write() is done with a chunk once it returns (it copied or sent it). Node's
   * ServerResponse may keep a chunk queued, so the forwarder hands it a copy.
   */
  readonly writeCopies?: boolean;
  end(chunk?: string | Buffer): unknown;
  flushHeaders(): void;
  destroy(): unknown;
  on(event: "close" | "finish" | "drain", listener: () => void): unknown;
  once(event: "close" | "finish" | "drain", listener: () => void): unknown;
  off(event: "close" | "finish" | "drain", listener: () => void): unknown;
}

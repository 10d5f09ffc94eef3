import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";

/**
 * A tiny workspace server for the origin's tests: a page, a header echo, a server-sent event
 * stream that stays open until released, and a WebSocket echo (RFC 6455, small frames), written
 * out here so the test depends on nothing but Node. It records what reached it.
 */
export class Upstream {
  readonly seen: { method: string; url: string; headers: IncomingMessage["headers"] }[] = [];
  readonly sockets: string[] = [];
  private releaseEvents: (() => void) | undefined;
  private readonly open = new Set<Duplex>();
  private readonly server: Server;
  port = 0;

  constructor(label: string) {
    this.server = createServer((req, res) => {
      this.seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
      if (req.url === "/headers") {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(req.headers));
      } else if (req.url === "/events") {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        res.write("data: one\n\n");
        // The stream stays open until the test releases it: "one" must arrive before it ends.
        this.releaseEvents = () => res.end("data: two\n\n");
      } else if (req.url === "/") {
        res.writeHead(200, { "content-type": "text/html", "set-cookie": "app=1; Path=/" });
        res.end(`<!doctype html><title>${label}</title><h1 id="who">hello from ${label}</h1>`);
      } else res.writeHead(404).end("no such page\n");
    });
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex) => {
      this.sockets.push(req.url ?? "");
      const key = req.headers["sec-websocket-key"] ?? "";
      const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      this.open.add(socket);
      socket.on("close", () => this.open.delete(socket));
      echoFrames(socket);
    });
  }

  async start(): Promise<number> {
    await new Promise<void>((ok) => this.server.listen(0, "127.0.0.1", ok));
    this.port = (this.server.address() as AddressInfo).port;
    return this.port;
  }

  /** Sends a short (under 126 bytes) text frame of its own on every open WebSocket, as a server push would. */
  push(text: string): void {
    const payload = Buffer.from(text);
    for (const s of this.open) s.write(Buffer.concat([Buffer.from([0x81, payload.length]), payload]));
  }

  /** Ends the open event stream with its second event. */
  release(): void {
    this.releaseEvents?.();
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((done) => this.server.close(done));
  }
}

/** Echoes each (masked) client frame back unmasked; answers a close frame and ends. */
function echoFrames(socket: Duplex): void {
  let buf = Buffer.alloc(0);
  socket.on("error", () => undefined);
  socket.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0]! & 0x0f;
      let len = buf[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      }
      if (buf.length < at + 4 + len) return;
      const mask = buf.subarray(at, at + 4);
      const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
      buf = buf.subarray(at + 4 + len);
      const head =
        len < 126
          ? Buffer.from([0x80 | opcode, len])
          : Buffer.from([0x80 | opcode, 126, len >> 8, len & 255]);
      socket.write(Buffer.concat([head, payload]));
      if (opcode === 8) {
        socket.end();
        return;
      }
    }
  });
}

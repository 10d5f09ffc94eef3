import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";

/**
 * A minimal WebSocket client (RFC 6455: handshake, masked text frames out, unfragmented or
 * fragmented frames in, ping answered) for bench:workspaces: Node 20 has no WebSocket global and
 * the project has no `ws` dependency. Enough for Jupyter's kernel channels; not for general use.
 */
export class MiniWebSocket {
  private buf = Buffer.alloc(0);
  private parts: Buffer[] = [];
  private waiters: ((msg: string) => void)[] = [];
  private queue: string[] = [];

  private constructor(private readonly sock: Socket) {}

  /** Opens ws://host:port/path with the given Host and extra headers; rejects unless 101. */
  static open(
    host: string,
    port: number,
    path: string,
    headers: Record<string, string>,
  ): Promise<MiniWebSocket> {
    return new Promise((ok, fail) => {
      const sock = connect({ host, port });
      sock.setNoDelay(true);
      const key = randomBytes(16).toString("base64");
      const lines = [
        `GET ${path} HTTP/1.1`,
        "Upgrade: websocket",
        "Connection: Upgrade",
        `Sec-WebSocket-Key: ${key}`,
        "Sec-WebSocket-Version: 13",
        ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      ];
      sock.once("connect", () => sock.write(`${lines.join("\r\n")}\r\n\r\n`));
      sock.once("error", fail);
      let head = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        head = Buffer.concat([head, d]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        sock.off("data", onData);
        const status = head.subarray(0, end).toString().split("\r\n")[0] ?? "";
        if (!/^HTTP\/1\.1 101/.test(status)) {
          sock.destroy();
          fail(new Error(`WebSocket upgrade of ${path} refused: ${head.toString().slice(0, 500)}`));
          return;
        }
        const ws = new MiniWebSocket(sock);
        sock.on("data", (more: Buffer) => ws.onData(more));
        ws.onData(head.subarray(end + 4));
        ok(ws);
      };
      sock.on("data", onData);
    });
  }

  /** Sends one text frame (masked, as a client must). */
  send(text: string): void {
    const payload = Buffer.from(text);
    const mask = randomBytes(4);
    const n = payload.length;
    const head = n < 126 ? Buffer.alloc(2) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    head[0] = 0x81;
    if (n < 126) head[1] = 0x80 | n;
    else if (n < 65536) {
      head[1] = 0x80 | 126;
      head.writeUInt16BE(n, 2);
    } else {
      head[1] = 0x80 | 127;
      head.writeBigUInt64BE(BigInt(n), 2);
    }
    for (let i = 0; i < n; i++) payload[i]! ^= mask[i % 4]!;
    this.sock.write(Buffer.concat([head, mask, payload]));
  }

  /** The next text message. */
  next(): Promise<string> {
    const m = this.queue.shift();
    if (m !== undefined) return Promise.resolve(m);
    return new Promise((ok) => this.waiters.push(ok));
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) return;
      const fin = (this.buf[0]! & 0x80) !== 0;
      const op = this.buf[0]! & 0x0f;
      let n = this.buf[1]! & 0x7f;
      let at = 2;
      if (n === 126) {
        if (this.buf.length < 4) return;
        n = this.buf.readUInt16BE(2);
        at = 4;
      } else if (n === 127) {
        if (this.buf.length < 10) return;
        n = Number(this.buf.readBigUInt64BE(2));
        at = 10;
      }
      if (this.buf.length < at + n) return;
      const payload = this.buf.subarray(at, at + n);
      this.buf = this.buf.subarray(at + n);
      if (op === 9) this.pong(payload);
      else if (op === 0 || op === 1 || op === 2) {
        this.parts.push(Buffer.from(payload));
        if (fin) {
          const msg = Buffer.concat(this.parts).toString();
          this.parts = [];
          const w = this.waiters.shift();
          if (w) w(msg);
          else this.queue.push(msg);
        }
      }
    }
  }

  private pong(payload: Buffer): void {
    const mask = randomBytes(4);
    const p = Buffer.from(payload);
    for (let i = 0; i < p.length; i++) p[i]! ^= mask[i % 4]!;
    this.sock.write(Buffer.concat([Buffer.from([0x8a, 0x80 | p.length]), mask, p]));
  }
}

import { randomBytes } from "node:crypto";
import { request } from "node:http";
import type { Socket } from "node:net";

/** A Jupyter message as the kernel WebSocket carries it (the default, JSON text protocol). */
export interface JupyterMessage {
  channel: string;
  header: { msg_id: string; msg_type: string };
  parent_header: { msg_id?: string };
  content: Record<string, unknown>;
}

/**
 * A Jupyter kernel's WebSocket (/api/kernels/ID/channels) opened through a workspace's origin,
 * written out (RFC 6455: masked text frames out, unmasked frames in) so the test depends on
 * nothing but Node. No Origin header: what a non-browser client sends, which Jupyter allows.
 */
export class KernelSocket {
  private buffered = Buffer.alloc(0);
  private readonly received: JupyterMessage[] = [];
  private waiters: (() => void)[] = [];
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (d: Buffer) => this.feed(d));
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Opens the socket at `path` on the origin of `wsUrl` (its status.url) with the session cookie. */
  static open(wsUrl: string, path: string, cookie: string, connectHost = "127.0.0.1"): Promise<KernelSocket> {
    const { host, port } = new URL(wsUrl);
    return new Promise((ok, fail) => {
      const req = request({
        host: connectHost,
        port,
        path,
        headers: {
          host,
          cookie,
          connection: "Upgrade",
          upgrade: "websocket",
          "sec-websocket-version": "13",
          "sec-websocket-key": randomBytes(16).toString("base64"),
        },
      });
      req.on("upgrade", (_res, socket) => ok(new KernelSocket(socket as Socket)));
      req.on("response", (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => fail(new Error(`no upgrade: ${res.statusCode} ${body.slice(0, 500)}`)));
      });
      req.on("error", fail);
      req.end();
    });
  }

  /** Sends one message on the shell channel; returns its msg_id. */
  execute(code: string, session: string): string {
    const msgId = randomBytes(8).toString("hex");
    this.sendText(
      JSON.stringify({
        channel: "shell",
        header: {
          msg_id: msgId,
          msg_type: "execute_request",
          session,
          username: "test",
          version: "5.3",
          date: new Date().toISOString(),
        },
        parent_header: {},
        metadata: {},
        content: { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false },
        buffers: [],
      }),
    );
    return msgId;
  }

  /** The first message (already received or to come) that `pred` accepts; throws after `ms`. */
  async next(pred: (m: JupyterMessage) => boolean, ms: number): Promise<JupyterMessage> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.received.find(pred);
      if (found) return found;
      if (this.closed) throw new Error("the kernel socket closed");
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(
          `no such message in ${ms} ms; got ${this.received.map((m) => `${m.channel}/${m.header?.msg_type}`).join(", ")}`,
        );
      await new Promise<void>((ok) => {
        const t = setTimeout(ok, left);
        this.waiters.push(() => {
          clearTimeout(t);
          ok();
        });
      });
    }
  }

  /** A close frame, then the TCP connection ends: nothing of this client stays open. */
  close(): Promise<void> {
    return new Promise((ok) => {
      if (this.closed) return ok();
      this.socket.once("close", () => ok());
      this.socket.end(this.frame(0x8, Buffer.from([0x03, 0xe8])));
      setTimeout(() => this.socket.destroy(), 2000).unref();
    });
  }

  /** Sends any JSON value as one text frame (a terminal's ["stdin", "…"]). */
  send(value: unknown): void {
    this.sendText(JSON.stringify(value));
  }

  /** Everything received so far, as parsed (a terminal's frames are JSON arrays, not messages). */
  all(): unknown[] {
    return [...this.received];
  }

  private sendText(text: string): void {
    this.socket.write(this.frame(0x1, Buffer.from(text)));
  }

  /** One final, masked frame (clients must mask). */
  private frame(opcode: number, payload: Buffer): Buffer {
    const mask = randomBytes(4);
    const len = payload.length;
    const head =
      len < 126
        ? Buffer.from([0x80 | opcode, 0x80 | len])
        : len < 65536
          ? Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff])
          : (() => {
              const h = Buffer.alloc(10);
              h[0] = 0x80 | opcode;
              h[1] = 0x80 | 127;
              h.writeBigUInt64BE(BigInt(len), 2);
              return h;
            })();
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i]! ^= mask[i % 4]!;
    return Buffer.concat([head, mask, body]);
  }

  /** Parses whole frames from what arrived; text frames are Jupyter messages, the rest ignored. */
  private feed(d: Buffer): void {
    this.buffered = Buffer.concat([this.buffered, d]);
    for (;;) {
      const b = this.buffered;
      if (b.length < 2) return;
      const opcode = b[0]! & 0x0f;
      let len = b[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      if (b.length < at + len) return;
      const payload = b.subarray(at, at + len);
      this.buffered = b.subarray(at + len);
      if (opcode === 0x1) this.received.push(JSON.parse(payload.toString()) as JupyterMessage);
      this.wake();
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

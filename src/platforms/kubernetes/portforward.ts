import { randomBytes } from "node:crypto";
import { Duplex } from "node:stream";
import type { KubeClient } from "./client.js";

/**
 * `pods/portforward` over a WebSocket, as kubectl's WebSocket client speaks it to the kubelet
 * behind the API server (k8s.io/cri-streaming's portforward, protocol v4.channel.k8s.io): one
 * port per connection, on two channels, data (0) and error (1). Every binary message starts with
 * its channel's byte; the first message on each channel is the port, two bytes little-endian.
 * Written on node:http's upgrade (no WebSocket package): client frames masked, as RFC 6455 asks.
 */
export const PORTFORWARD_PROTOCOL = "v4.channel.k8s.io";

const DATA = 0;
const ERROR = 1;

/** Opens a TCP tunnel to `port` of pod `pod` in namespace `ns`; rejects with the API server's reason. */
export async function openPortForward(
  client: KubeClient,
  ns: string,
  pod: string,
  port: number,
): Promise<Duplex> {
  const { socket, head } = await client.upgrade(
    `/api/v1/namespaces/${ns}/pods/${pod}/portforward`,
    { ports: String(port) },
    {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": randomBytes(16).toString("base64"),
      "sec-websocket-protocol": PORTFORWARD_PROTOCOL,
    },
  );
  return new PortForwardStream(socket, head, port);
}

/** The tunnel as a byte stream: writes become data-channel messages, data messages are read. */
export class PortForwardStream extends Duplex {
  private buffer: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private readonly seenPort = new Set<number>();
  private error = "";

  constructor(
    private readonly socket: Duplex,
    head: Buffer,
    private readonly port: number,
  ) {
    super();
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.finish());
    socket.on("close", () => this.finish());
    socket.on("error", (err: Error) => this.destroy(err));
    if (head.length) this.onData(head);
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.socket.write(frame(0x2, Buffer.concat([Buffer.from([DATA]), chunk])), done);
  }

  override _final(done: (err?: Error | null) => void): void {
    // The protocol has no half-close: the end of what we send is the end of the tunnel.
    this.socket.end(frame(0x8, Buffer.from([0x03, 0xe8])), () => done());
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    this.socket.destroy();
    done(err);
  }

  private finish(): void {
    if (this.error) this.destroy(new Error(`port-forward to port ${this.port}: ${this.error}`));
    else this.push(null);
  }

  /** Parses whole frames out of what arrived; a partial frame waits for the rest. */
  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    for (;;) {
      const f = parseFrame(this.buffer);
      if (!f) return;
      this.buffer = this.buffer.subarray(f.size);
      if (f.opcode === 0x9) this.socket.write(frame(0xa, f.payload));
      else if (f.opcode === 0x8) this.finish();
      else if (f.opcode === 0x0 || f.opcode === 0x1 || f.opcode === 0x2) {
        this.fragments.push(f.payload);
        if (f.fin) {
          const message = Buffer.concat(this.fragments);
          this.fragments = [];
          this.onMessage(message);
        }
      }
    }
  }

  private onMessage(message: Buffer): void {
    if (message.length === 0) return;
    const channel = message[0]!;
    let body = message.subarray(1);
    // Each channel's first two bytes are the port it carries, not the port's bytes.
    if (!this.seenPort.has(channel)) {
      if (body.length < 2) return;
      this.seenPort.add(channel);
      body = body.subarray(2);
    }
    if (!body.length) return;
    if (channel === DATA) {
      if (!this.push(body)) this.socket.pause();
    } else if (channel === ERROR) this.error += body.toString("utf8");
  }
}

/** A client frame (FIN, masked) with this opcode and payload. */
export function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const header = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  header[0] = 0x80 | opcode;
  if (len < 126) header[1] = 0x80 | len;
  else if (len < 65536) {
    header[1] = 0x80 | 126;
    header.writeUInt16BE(len, 2);
  } else {
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  const mask = randomBytes(4);
  const masked = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) masked[i] = payload[i]! ^ mask[i & 3]!;
  return Buffer.concat([header, mask, masked]);
}

/** One frame at the start of `buf`, or undefined until all of it has arrived. */
export function parseFrame(
  buf: Buffer,
): { fin: boolean; opcode: number; payload: Buffer; size: number } | undefined {
  if (buf.length < 2) return undefined;
  const fin = (buf[0]! & 0x80) !== 0;
  const opcode = buf[0]! & 0x0f;
  const masked = (buf[1]! & 0x80) !== 0;
  let len = buf[1]! & 0x7f;
  let offset = 2;
  if (len === 126) {
    if (buf.length < 4) return undefined;
    len = buf.readUInt16BE(2);
    offset = 4;
  } else if (len === 127) {
    if (buf.length < 10) return undefined;
    len = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  const maskKey = masked ? buf.subarray(offset, offset + 4) : undefined;
  if (masked) offset += 4;
  if (buf.length < offset + len) return undefined;
  let payload = buf.subarray(offset, offset + len);
  if (maskKey) payload = Buffer.from(payload.map((b, i) => b ^ maskKey[i & 3]!));
  return { fin, opcode, payload, size: offset + len };
}

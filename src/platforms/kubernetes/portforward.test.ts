import { randomBytes } from "node:crypto";
import { connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { PortForwardStream, parseFrame } from "./portforward.js";

/** A server (kubelet) frame: unmasked, FIN unless told otherwise. */
function serverFrame(payload: Buffer, opcode = 0x2, fin = true): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (len < 126) head[1] = len;
  else if (len < 65536) {
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, payload]);
}

const msg = (channel: number, body: Buffer) => serverFrame(Buffer.concat([Buffer.from([channel]), body]));
const PORT_BYTES = Buffer.from([0xb8, 0x22]); // 8888, little-endian

/** A loopback connection: our side for the stream, and the "API server" side the test drives. */
async function pair(): Promise<{ ours: Socket; theirs: Socket; server: Server }> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const theirs = new Promise<Socket>((ok) => server.once("connection", ok));
  const ours = connect((server.address() as { port: number }).port, "127.0.0.1");
  await new Promise((ok) => ours.once("connect", ok));
  return { ours, theirs: await theirs, server };
}

describe("pods/portforward over a WebSocket (v4.channel.k8s.io)", () => {
  let cleanup: (() => void) | undefined;
  afterEach(() => cleanup?.());

  it("reads the data channel byte-exact: port prefixes cut, frames split across TCP reads and fragments", async () => {
    const { ours, theirs, server } = await pair();
    cleanup = () => {
      ours.destroy();
      theirs.destroy();
      server.close();
    };
    const stream = new PortForwardStream(ours, Buffer.alloc(0), 8888);
    const data = randomBytes(200_000);
    const wire = Buffer.concat([
      msg(0, PORT_BYTES),
      msg(1, PORT_BYTES),
      msg(0, data.subarray(0, 100)),
      // A fragmented message: first fragment carries the channel byte.
      serverFrame(Buffer.concat([Buffer.from([0]), data.subarray(100, 70_000)]), 0x2, false),
      serverFrame(data.subarray(70_000, 150_000), 0x0, true),
      msg(0, data.subarray(150_000)),
    ]);
    // Dribbled in odd-sized pieces, as TCP may deliver them.
    for (let i = 0; i < wire.length; i += 7919) theirs.write(wire.subarray(i, i + 7919));
    theirs.end();
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
  });

  it("sends masked data-channel frames, and fails with the error channel's text", async () => {
    const { ours, theirs, server } = await pair();
    cleanup = () => {
      ours.destroy();
      theirs.destroy();
      server.close();
    };
    const stream = new PortForwardStream(ours, Buffer.alloc(0), 8888);
    const got: Buffer[] = [];
    const framed = new Promise<void>((ok) =>
      theirs.on("data", (d: Buffer) => {
        got.push(d);
        if (parseFrame(Buffer.concat(got))) ok();
      }),
    );
    stream.write(Buffer.from("hello"));
    await framed;
    const f = parseFrame(Buffer.concat(got))!;
    expect(f.opcode).toBe(0x2);
    expect(Buffer.concat(got)[1]! & 0x80).toBe(0x80); // masked, as a client must
    expect(f.payload.equals(Buffer.concat([Buffer.from([0]), Buffer.from("hello")]))).toBe(true);
    const failed = new Promise<Error>((ok) => stream.on("error", ok));
    theirs.end(
      Buffer.concat([msg(1, PORT_BYTES), msg(1, Buffer.from("no forward found for port 8888 in pod"))]),
    );
    stream.resume();
    expect((await failed).message).toBe("port-forward to port 8888: no forward found for port 8888 in pod");
  });
});

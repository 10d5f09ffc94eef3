import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { UpstreamPool } from "./upstream.js";

const servers: Server[] = [];
const pools: UpstreamPool[] = [];

afterEach(async () => {
  for (const p of pools.splice(0)) p.destroy();
  for (const s of servers.splice(0)) await new Promise<void>((resolve) => s.close(() => resolve()));
});

/** A raw TCP server: `answer` gets each request's bytes (one read) and the socket. */
async function raw(answer: (request: string, socket: Socket) => void): Promise<number> {
  const s = createServer((socket) => socket.on("data", (d: Buffer) => answer(d.toString("latin1"), socket)));
  servers.push(s);
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  return (s.address() as AddressInfo).port;
}

interface Got {
  status?: number;
  headers?: string[];
  body: string;
  error?: { code?: string; cause?: { code?: string }; lost?: boolean };
}

function send(pool: UpstreamPool, body = "{}", method = "POST"): Promise<Got> {
  return new Promise((resolve) => {
    const got: Got = { body: "" };
    pool.dispatch(
      {
        method,
        path: "/v1/x",
        headers: ["host", "h"],
        body: Buffer.from(body),
        headersTimeout: 2000,
        bodyTimeout: 2000,
      },
      {
        onConnect: () => {},
        onHeaders: (status, headers) => {
          got.status = status;
          got.headers = headers;
          return true;
        },
        onData: (c) => {
          got.body += c.toString();
          return true;
        },
        onComplete: () => resolve(got),
        onError: (err) => {
          got.error = err as Got["error"];
          resolve(got);
        },
      },
    );
  });
}

function pool(port: number): UpstreamPool {
  const p = new UpstreamPool("127.0.0.1", port);
  pools.push(p);
  return p;
}

describe("UpstreamPool", () => {
  it("writes one request with its length, reads a chunked answer, and reuses the connection", async () => {
    const seen: string[] = [];
    const sockets = new Set<Socket>();
    const port = await raw((req, socket) => {
      seen.push(req);
      sockets.add(socket);
      socket.write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      socket.write("3\r\nabc\r\n");
      socket.write("2\r\nde\r\n0\r\n\r\n");
    });
    const p = pool(port);
    const a = await send(p, "hello");
    const b = await send(p, "again");
    expect(a).toMatchObject({ status: 200, body: "abcde" });
    expect(b.body).toBe("abcde");
    expect(seen[0]).toBe("POST /v1/x HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello");
    expect(sockets.size).toBe(1);
  });

  it("reads a body that ends with the connection, and does not reuse that connection", async () => {
    const port = await raw((_req, socket) => socket.end("HTTP/1.1 200 OK\r\n\r\nuntil close"));
    const p = pool(port);
    expect((await send(p)).body).toBe("until close");
    expect((await send(p)).body).toBe("until close");
  });

  it("says UND_ERR_SOCKET for a reused connection closed before any answer (the stale keep-alive race)", async () => {
    let n = 0;
    const port = await raw((_req, socket) => {
      n++;
      if (n === 1) socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      else socket.destroy();
    });
    const p = pool(port);
    expect((await send(p)).body).toBe("ok");
    const second = await send(p);
    expect(second.error?.code).toBe("UND_ERR_SOCKET");
    expect(second.error?.cause?.code).toBe("ECONNRESET");
    expect(second.error?.lost).toBe(true);
  });

  it("says ECONNRESET for a fresh connection that dies, and refuses a malformed answer", async () => {
    const dies = await raw((_req, socket) => socket.destroy());
    const died = (await send(pool(dies))).error;
    expect(died?.code).toBe("ECONNRESET");
    expect(died?.lost).toBe(true); // retried elsewhere whatever the code, while the client has nothing
    const garbage = await raw((_req, socket) => socket.write("NOT HTTP\r\n\r\n"));
    const malformed = (await send(pool(garbage))).error;
    expect(malformed?.code).toBe("EPROTO");
    expect(malformed?.lost).toBeUndefined(); // an answer, if a bad one: not a connection that failed
  });

  it("expects no body after HEAD even with a Content-Length", async () => {
    const port = await raw((_req, socket) => socket.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"));
    const got = await send(pool(port), "", "HEAD");
    expect(got).toMatchObject({ status: 200, body: "" });
  });

  it("closes a busy connection once its exchange ends after close()", async () => {
    let socketOf: Socket | undefined;
    const port = await raw((_req, socket) => {
      socketOf = socket;
      setTimeout(() => socket.write("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"), 50);
    });
    const p = pool(port);
    const pending = send(p);
    await new Promise((r) => setTimeout(r, 20));
    await p.close();
    expect((await pending).body).toBe("x");
    await new Promise((r) => setTimeout(r, 50));
    expect(p.size).toBe(0);
    expect(socketOf?.destroyed || socketOf?.readableEnded).toBe(true);
  });

  it("drops a busy connection whose replica never answers once the drain after close(drainMs) is over", async () => {
    // A replica whose network went with it: the connection stays up and nothing ever comes back.
    const port = await raw(() => {});
    const p = pool(port);
    const pending = send(p);
    await new Promise((r) => setTimeout(r, 20));
    await p.close(100);
    const got = await pending;
    expect(got.status).toBeUndefined();
    expect(got.error?.lost).toBe(true); // retried on another replica while the client has nothing
    expect(p.size).toBe(0);
  });
});

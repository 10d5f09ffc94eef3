import { describe, expect, it } from "vitest";
import { ChunkedDecoder, duplicateHeader, findHeadEnd, parseRequestHead, parseResponseHead } from "./h1.js";

function req(text: string) {
  const buf = Buffer.from(text, "latin1");
  return parseRequestHead(buf, findHeadEnd(buf));
}

function res(text: string) {
  const buf = Buffer.from(text, "latin1");
  return parseResponseHead(buf, findHeadEnd(buf));
}

describe("parseRequestHead", () => {
  it("reads a plain HTTP/1.1 request with lower-cased names", () => {
    const h = req(
      "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k \r\nContent-Length: 12\r\nX-A: 1\r\n\r\n",
    );
    expect(h).toEqual({
      method: "POST",
      url: "/v1/completions?x=1",
      headers: ["host", "a", "authorization", "Bearer k", "content-length", "12", "x-a", "1"],
      contentLength: 12,
      close: false,
      authorization: "Bearer k",
    });
  });

  it("takes a tab and latin1 text in values, and a head with no header at all", () => {
    const h = req("GET /a?b=%20 HTTP/1.1\r\nX-A:\ta\tb\t\r\nX-B: caf\u00e9\r\nHost: h\r\n\r\n");
    expect(h?.headers).toEqual(["x-a", "a\tb", "x-b", "caf\u00e9", "host", "h"]);
    // No Host: Node answers 400 (requireHostHeader); the front leaves it to Node.
    expect(req("GET / HTTP/1.1\r\n\r\n")).toBeUndefined();
  });

  it("notes Connection: close", () => {
    const h = req("POST / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n");
    expect(h).toMatchObject({ close: true, contentLength: 2 });
  });

  it.each([
    ["authorization", "Authorization: Bearer a\r\nauthorization: Bearer b\r\nHost: h\r\n"],
    ["authorization", "Authorization: \r\nAUTHORIZATION: Bearer b\r\nHost: h\r\n"],
    ["content-length", "Host: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n"],
    ["host", "Host: h\r\nHOST: evil\r\n"],
  ])("marks a repeated %s (the request is refused, whichever copy a parser would take)", (name, fields) => {
    const h = req(`POST / HTTP/1.1\r\n${fields}\r\n`);
    expect(h?.duplicate).toBe(name);
    // The first Authorization, as Node's req.headers has it.
    if (name === "authorization")
      expect(h?.authorization).toBe(fields.includes("Bearer a") ? "Bearer a" : "");
  });

  it("duplicateHeader finds the same repeats in Node's rawHeaders, in any case", () => {
    expect(duplicateHeader(["Host", "h", "Authorization", "a", "AUTHORIZATION", "b"])).toBe("authorization");
    expect(duplicateHeader(["host", "h", "Content-Length", "1", "content-length", "1"])).toBe(
      "content-length",
    );
    expect(duplicateHeader(["Host", "h", "hOST", "x"])).toBe("host");
    expect(
      duplicateHeader(["Host", "h", "Authorization", "a", "X-Authorization", "b", "Accept", "x"]),
    ).toBeUndefined();
  });

  it.each([
    ["HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n"],
    ["a chunked body", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ["Expect", "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"],
    ["Upgrade", "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"],
    ["two different lengths", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
    ["a signed length", "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"],
    ["an absolute URL", "GET http://a/ HTTP/1.1\r\n\r\n"],
    ["a folded header", "GET / HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n"],
    ["a space before the colon", "GET / HTTP/1.1\r\nX-A : 1\r\n\r\n"],
    ["a bare LF", "GET / HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n"],
    ["a NUL", "GET / HTTP/1.1\r\nX-A: 1\u0000\r\n\r\n"],
    ["a line without a colon", "GET / HTTP/1.1\r\nnonsense\r\n\r\n"],
    ["a bad method", "G(T / HTTP/1.1\r\n\r\n"],
    ["a control character in the URL", "GET /a\u0001 HTTP/1.1\r\n\r\n"],
    ["a bare CR in a value", "GET / HTTP/1.1\r\nX-A: 1\r2\r\n\r\n"],
    ["DEL in a value", "GET / HTTP/1.1\r\nX-A: 1\u007f\r\n\r\n"],
  ])("leaves %s to Node's server", (_what, text) => {
    expect(req(text)).toBeUndefined();
  });
});

describe("parseResponseHead", () => {
  it("reads status, length and keep-alive", () => {
    expect(res("HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 5\r\n\r\n")).toEqual({
      status: 200,
      headers: ["content-type", "a/b", "content-length", "5"],
      contentLength: 5,
      chunked: false,
      close: false,
    });
  });

  it("reads chunked, close, a status without a reason, and HTTP/1.0's default", () => {
    expect(
      res("HTTP/1.1 201\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"),
    ).toMatchObject({
      status: 201,
      chunked: true,
      contentLength: -1,
      close: true,
    });
    expect(res("HTTP/1.0 200 OK\r\n\r\n").close).toBe(true);
    expect(res("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").close).toBe(false);
  });

  it("lets chunked win over a length and never reuses that connection", () => {
    expect(res("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")).toMatchObject({
      chunked: true,
      contentLength: -1,
      close: true,
    });
  });

  it.each([
    ["a garbage status line", "HTTP/2 200\r\n\r\n"],
    ["a bad length", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"],
    ["two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
    ["an unknown transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"],
    ["a header without a colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n"],
    ["a control character in the reason", "HTTP/1.1 200 O\u0002K\r\n\r\n"],
    ["a bare LF between headers", "HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\n\r\n"],
  ])("refuses %s", (_what, text) => {
    expect(() => res(text)).toThrow(/malformed HTTP response/);
  });
});

describe("ChunkedDecoder", () => {
  const body = "5;ext=1\r\nhello\r\n1\r\n \r\nC\r\nworld, again\r\n0\r\nX-Trailer: 1\r\n\r\n";

  it("decodes a body fed in one piece and says where it ends", () => {
    const d = new ChunkedDecoder();
    const out: string[] = [];
    const used = d.push(Buffer.from(`${body}NEXT`), (p) => out.push(p.toString()));
    expect(out.join("")).toBe("hello world, again");
    expect(d.done).toBe(true);
    expect(used).toBe(body.length);
  });

  it("decodes the same body fed one byte at a time", () => {
    const d = new ChunkedDecoder();
    let out = "";
    for (const byte of Buffer.from(body)) d.push(Buffer.from([byte]), (p) => (out += p.toString()));
    expect(out).toBe("hello world, again");
    expect(d.done).toBe(true);
  });

  it.each([
    ["a bad size", "zz\r\n"],
    ["data longer than its size", "2\r\nabc\r\n"],
    ["a size line without CR", "2\nab\r\n"],
  ])("refuses %s", (_what, text) => {
    expect(() => new ChunkedDecoder().push(Buffer.from(text), () => {})).toThrow(/malformed/);
  });
});

import { PassThrough, Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { interleaveLines } from "./interleave.js";

async function text(r: Readable): Promise<string> {
  let out = "";
  for await (const chunk of r) out += String(chunk);
  return out;
}

describe("interleaveLines", () => {
  it("prefixes whole lines of every source, in arrival order, and ends when all have ended", async () => {
    const a = new PassThrough();
    const b = new PassThrough();
    const merged = interleaveLines([
      { prefix: "[worker 0]", stream: a },
      { prefix: "[worker 1]", stream: b },
    ]);
    const done = text(merged);
    a.write("one\ntw");
    await new Promise((r) => setImmediate(r));
    b.write("x\n");
    await new Promise((r) => setImmediate(r));
    a.end("o\n");
    await new Promise((r) => setImmediate(r));
    b.end("last without newline");
    expect(await done).toBe(
      "[worker 0] one\n[worker 1] x\n[worker 0] two\n[worker 1] last without newline\n",
    );
  });

  it("ends at once with no sources", async () => {
    expect(await text(interleaveLines([]))).toBe("");
  });

  it("stops reading every source when the reader goes away", async () => {
    const a = Readable.from(["x\n"]);
    const b = new PassThrough();
    const merged = interleaveLines([
      { prefix: "a", stream: a },
      { prefix: "b", stream: b },
    ]);
    merged.destroy();
    await new Promise((r) => setImmediate(r));
    expect(b.destroyed).toBe(true);
  });
});

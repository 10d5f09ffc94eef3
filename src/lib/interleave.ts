import { createInterface } from "node:readline";
import { PassThrough, type Readable } from "node:stream";

/**
 * Several workers' logs as one stream, whole lines at a time, each prefixed as kubectl logs
 * --prefix does ("[worker 1] …"), in the order lines arrive. Ends when every source has ended.
 */
export function interleaveLines(sources: { prefix: string; stream: Readable }[]): Readable {
  const out = new PassThrough();
  let open = sources.length;
  if (open === 0) out.end();
  for (const { prefix, stream } of sources) {
    const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
    lines.on("line", (line) => out.write(`${prefix} ${line}\n`));
    lines.on("close", () => {
      if (--open === 0) out.end();
    });
    stream.on("error", (err) => out.destroy(err));
  }
  out.on("close", () => {
    for (const s of sources) s.stream.destroy();
  });
  return out;
}

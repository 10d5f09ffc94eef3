import { createReadStream, existsSync } from "node:fs";
import { open } from "node:fs/promises";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A log file as a stream. Without follow: its current content. With follow: new bytes as they
 * are written, ending once `finished()` says the writer is gone and nothing more is left to read.
 */
export function tailFile(
  file: string | undefined,
  opts: { follow: boolean; finished: () => boolean; pollMs?: number },
): Readable {
  if (!opts.follow) return file && existsSync(file) ? createReadStream(file) : Readable.from([]);
  const pollMs = opts.pollMs ?? 200;
  async function* follow(): AsyncGenerator<Buffer> {
    let offset = 0;
    const buf = Buffer.alloc(64 * 1024);
    while (true) {
      // Read "finished" before reading the file: bytes written before the exit are then never missed.
      const done = opts.finished();
      if (file) {
        const fh = await open(file, "r").catch(() => undefined);
        if (fh) {
          try {
            while (true) {
              const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
              if (bytesRead === 0) break;
              offset += bytesRead;
              yield Buffer.from(buf.subarray(0, bytesRead));
            }
          } finally {
            await fh.close();
          }
        }
      }
      if (done) return;
      await sleep(pollMs);
    }
  }
  return Readable.from(follow());
}

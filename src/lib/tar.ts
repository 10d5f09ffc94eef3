/**
 * Just enough of the tar format to move a checkpoint directory through a pod's stdin/stdout
 * (issue 23: checkpoints out of and into Kubernetes members): regular files only. What GNU and
 * busybox tar write is read (ustar, GNU long names, pax path records); symlinks, hard links,
 * devices and anything else are refused, since a checkpoint read from a member is untrusted.
 */

const BLOCK = 512;

/** A tar stream of these files (names relative, '/'-separated), as `tar -x` reads it. */
export function packTar(files: Map<string, Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, data] of files) {
    const nameBytes = Buffer.from(name, "utf8");
    if (nameBytes.length > 100)
      parts.push(
        header("././@LongLink", nameBytes.length + 1, "L"),
        pad(Buffer.concat([nameBytes, Buffer.alloc(1)])),
      );
    parts.push(header(name, data.length, "0"), pad(data));
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

/**
 * The regular files of a tar stream (name → contents; directories skipped). Throws, saying
 * which entry, on anything else, on a checksum that does not match, or past `maxBytes` of data.
 */
export function unpackTar(buf: Buffer, maxBytes = Number.POSITIVE_INFINITY): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  let offset = 0;
  let longName: string | undefined;
  let total = 0;
  while (offset + BLOCK <= buf.length) {
    const h = buf.subarray(offset, offset + BLOCK);
    if (h.every((b) => b === 0)) break;
    if (checksum(h) !== octal(h.subarray(148, 156)))
      throw new Error(`not a tar stream (bad header checksum at byte ${offset})`);
    const size = octal(h.subarray(124, 136));
    const type = String.fromCharCode(h[156] || 0x30);
    const prefix = cstr(h.subarray(345, 500));
    const name = longName ?? (prefix ? `${prefix}/${cstr(h.subarray(0, 100))}` : cstr(h.subarray(0, 100)));
    const data = buf.subarray(offset + BLOCK, offset + BLOCK + size);
    if (data.length < size) throw new Error(`tar stream cut short in ${JSON.stringify(name)}`);
    offset += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    longName = undefined;
    if (type === "L") {
      longName = cstr(data);
      continue;
    }
    if (type === "x") {
      longName = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(data.toString("utf8"))?.[1];
      continue;
    }
    if (type === "g" || type === "5") continue;
    if (type !== "0" && type !== "7")
      throw new Error(
        `checkpoint entry ${JSON.stringify(name)} is not a regular file (tar type ${type}): refused`,
      );
    total += size;
    if (total > maxBytes) throw new Error(`checkpoint is larger than ${maxBytes} bytes`);
    files.set(name.replace(/^(\.\/)+/, ""), Buffer.from(data));
  }
  return files;
}

function header(name: string, size: number, type: string): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name.slice(0, 100), 0, 100, "utf8");
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(`${size.toString(8).padStart(11, "0")}\0`, 124);
  h.write(
    `${Math.floor(Date.now() / 1000)
      .toString(8)
      .padStart(11, "0")}\0`,
    136,
  );
  h.write(type, 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  h.write(`${checksum(h).toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}

function checksum(h: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum;
}

function octal(b: Buffer): number {
  const s = cstr(b).trim();
  return s ? Number.parseInt(s, 8) : 0;
}

function cstr(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString("utf8");
}

function pad(b: Buffer): Buffer {
  const rest = b.length % BLOCK;
  return rest ? Buffer.concat([b, Buffer.alloc(BLOCK - rest)]) : b;
}

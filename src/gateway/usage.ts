/**
 * Token usage from OpenAI-style responses without parsing them: the proxy keeps only the last
 * few KB of a response, and `usage` is found there — at the end of a non-streamed completion, and
 * in the final chunk of a stream (`stream_options.include_usage`). Parsing every SSE chunk would
 * cost more than the proxying itself.
 */

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/** Keeps the tail of a byte stream. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit = 8192) {}

  /** Keeps a copy of (the end of) `chunk`: the caller may reuse its memory. */
  push(chunk: Buffer): void {
    const kept = chunk.length > this.limit ? chunk.subarray(chunk.length - this.limit) : chunk;
    this.chunks.push(Buffer.from(kept));
    this.size += kept.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0]!.length >= this.limit) {
      this.size -= this.chunks.shift()!.length;
    }
  }

  toString(): string {
    return this.bytes().toString("utf8");
  }

  /**
   * The usage block in the tail. Searches the bytes first and decodes only from the last
   * `"usage"` on: decoding and scanning a whole response cost a tenth of the gateway's CPU on
   * small completions (bench:gateway).
   */
  usage(): Usage | undefined {
    const all = this.bytes();
    let at = all.lastIndexOf(USAGE_KEY);
    while (at >= 0) {
      const found = findUsage(all.subarray(at).toString("utf8"));
      if (found) return found;
      at = at > 0 ? all.lastIndexOf(USAGE_KEY, at - 1) : -1;
    }
    return undefined;
  }

  private bytes(): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    return all.length > this.limit ? all.subarray(all.length - this.limit) : all;
  }
}

const USAGE_KEY = Buffer.from('"usage"');

/** The last `"usage": {...}` object in `text`, or undefined (null usage, none, or cut off). */
export function findUsage(text: string): Usage | undefined {
  let at = text.lastIndexOf('"usage"');
  while (at >= 0) {
    const open = text.indexOf("{", at);
    const between = open < 0 ? "" : text.slice(at + 7, open);
    if (open >= 0 && /^\s*:\s*$/.test(between)) {
      const close = matchBrace(text, open);
      if (close > 0) {
        try {
          const u = JSON.parse(text.slice(open, close + 1)) as Record<string, unknown>;
          const prompt = Number(u.prompt_tokens ?? 0);
          const completion = Number(u.completion_tokens ?? 0);
          if (Number.isFinite(prompt) && Number.isFinite(completion)) {
            return { promptTokens: prompt, completionTokens: completion };
          }
        } catch {
          // Not JSON after all (a prompt quoting "usage"); look further back.
        }
      }
    }
    // lastIndexOf clamps a negative start to 0: it would find the same match again.
    at = at > 0 ? text.lastIndexOf('"usage"', at - 1) : -1;
  }
  return undefined;
}

function matchBrace(text: string, open: number): number {
  let depth = 0;
  let inString = false;
  // Character codes, not one-character strings: this runs on every response with a usage block.
  for (let i = open; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \\ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */) depth++;
    else if (c === 125 /* } */ && --depth === 0) return i;
  }
  return -1;
}

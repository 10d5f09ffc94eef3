import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DocBlock, docFiles, parseBlocks, readBlocks, sessions } from "./docs/blocks.js";
import { DocSession, steps } from "./docs/session.js";
import { ROOT } from "./helpers.js";

/**
 * Docs as tests: every shell block of README.md and docs/*.md marked `<!-- doc-test: run -->`
 * runs, in order, in a fresh session per doc (a new HOME, `loom` on PATH through the quick
 * start's `npm link --ignore-scripts`, a `loom up` on a free port), and its output is checked
 * against the doc's `expect` markers. See test/docs/blocks.ts for the markers.
 */

const BLOCK_TIMEOUT_MS = 240_000;
const docs = docFiles(ROOT).map((doc) => ({ doc, blocks: readBlocks(ROOT, doc) }));

function where(b: DocBlock): string {
  return `${b.doc}:${b.line}`;
}

describe("the docs' shell blocks", () => {
  it("are each marked run or skip (with a reason)", () => {
    const unmarked = docs.flatMap((d) => d.blocks.filter((b) => b.mode === "unmarked").map(where));
    expect(unmarked, "mark each with <!-- doc-test: run --> or <!-- doc-test: skip: WHY -->").toEqual([]);
  });

  it("use one form of the CLI: `loom` (on PATH from the quick start), never `npx loom`", () => {
    const files = [...docFiles(ROOT), "src/cli/commands/up.ts", "examples/pretrain/pretrain.yaml"];
    const hits = files.filter((f) => /npx loom/.test(readFileSync(join(ROOT, f), "utf8")));
    expect(hits).toEqual([]);
    const quick = docs[0]!.blocks[0]!;
    expect(quick.source).toMatch(/^npm ci && npm link --ignore-scripts && loom up\b/);
  });

  it("runs `loom up` in the background and checks rather than installs packages", () => {
    expect(steps("npm ci && npm link --ignore-scripts && loom up   # comment\nnpm test  # all")).toEqual([
      { kind: "script", text: "npm link --ignore-scripts" },
      { kind: "up", args: "" },
    ]);
    expect(steps("apt-get install python3-torch python3-venv  # x\nloom get tj")).toEqual([
      { kind: "script", text: "dpkg -s python3-torch python3-venv >/dev/null\nloom get tj" },
    ]);
    expect(() => parseBlocks("x.md", "<!-- doc-test: skip -->\n```sh\nls\n```\n")).toThrow(/needs a reason/);
  });
});

for (const chain of sessions(ROOT)) {
  const run = chain.flatMap((d) => d.blocks.filter((b) => b.mode === "run"));
  if (!run.length) continue;
  describe(chain.map((d) => d.doc).join(", then "), () => {
    let session: DocSession;
    beforeAll(async () => {
      session = new DocSession(ROOT);
      await session.link();
    }, 180_000);
    afterAll(async () => session?.close(), 180_000);

    for (const block of run) {
      it(`${where(block)}: ${block.source.split("\n")[0]}`, { timeout: 2 * BLOCK_TIMEOUT_MS }, async () => {
        let r = await session.run(block, BLOCK_TIMEOUT_MS);
        // A user re-runs the command until it says what the doc waits for (a bound, not a timing).
        // A command that fails is not waited on: it fails the block at once.
        for (
          let n = 0;
          block.retryUntil && r.code === 0 && !block.retryUntil.test(r.output) && n < 240;
          n++
        ) {
          await new Promise((ok) => setTimeout(ok, 1000));
          r = await session.run(block, BLOCK_TIMEOUT_MS);
        }
        const context = `${where(block)} printed:\n${r.output}\n--- loom up:\n${session.upOutput.slice(-3000)}`;
        expect(r.code, context).toBe(0);
        if (block.retryUntil) expect(r.output, context).toMatch(block.retryUntil);
        for (const re of block.expect) expect(r.output, context).toMatch(re);
      });
    }
  });
}

import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";

/**
 * The shell blocks of the docs, with the markers that say how test/docs.e2e.test.ts runs them.
 *
 * A marker is an HTML comment (invisible once rendered) on the lines right above a fence:
 *   <!-- doc-test: run -->                  run this block, in order, in the doc's session
 *   <!-- doc-test: skip: REASON -->         not run here; the reason stays visible in the source
 *   <!-- doc-test: expect: REGEX -->        the block's output (stdout and stderr) must match (repeatable)
 *   <!-- doc-test: retry-until: REGEX -->   run again, as a user would, until the output matches
 * Every ```sh (bash, shell, console) block must be marked run or skip, so a new command in a doc
 * is either tested or says why not. A doc that starts where another guide ends says so once:
 *   <!-- doc-test: continues: docs/training.md -->   run in that doc's session, after it
 */
export interface DocBlock {
  /** The doc's path from the repository root, e.g. "docs/training.md". */
  doc: string;
  /** 1-based line of the opening fence. */
  line: number;
  source: string;
  mode: "run" | "skip" | "unmarked";
  reason?: string;
  expect: RegExp[];
  retryUntil?: RegExp;
}

const SHELL = new Set(["sh", "bash", "shell", "console"]);
const MARKER = /^<!--\s*doc-test:\s*([a-z-]+)\s*(?::\s*(.*?))?\s*-->\s*$/;

/** The docs whose shell blocks are tested: README.md and docs/*.md. */
export function docFiles(root: string): string[] {
  const docs = readdirSync(join(root, "docs"))
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((f) => join(root, "docs", f));
  return [join(root, "README.md"), ...docs].map((f) => relative(root, f));
}

/** Every shell block of one markdown text, with its markers; throws on a malformed marker. */
export function parseBlocks(doc: string, text: string): DocBlock[] {
  const lines = text.split("\n");
  const blocks: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```(\S*)/.exec(lines[i]!);
    if (!fence) continue;
    const end = lines.findIndex((l, j) => j > i && l.startsWith("```"));
    if (end < 0) throw new Error(`${doc}:${i + 1}: a fence that is never closed`);
    const lang = fence[1]!;
    if (SHELL.has(lang)) {
      const block: DocBlock = {
        doc,
        line: i + 1,
        source: lines.slice(i + 1, end).join("\n"),
        mode: "unmarked",
        expect: [],
      };
      for (let k = i - 1; k >= 0 && MARKER.test(lines[k]!); k--) applyMarker(block, lines[k]!, k + 1);
      blocks.push(block);
    }
    i = end;
  }
  return blocks;
}

function applyMarker(block: DocBlock, line: string, lineNo: number): void {
  const [, verb, arg] = MARKER.exec(line)!;
  const where = `${block.doc}:${lineNo}`;
  switch (verb) {
    case "run":
      block.mode = "run";
      return;
    case "skip":
      if (!arg) throw new Error(`${where}: doc-test: skip needs a reason (doc-test: skip: WHY)`);
      block.mode = "skip";
      block.reason = arg;
      return;
    case "expect":
      block.expect.unshift(new RegExp(arg ?? "", "m"));
      return;
    case "continues":
      return; // the doc's, not the block's: see continues()
    case "retry-until":
      block.retryUntil = new RegExp(arg ?? "", "m");
      return;
    default:
      throw new Error(`${where}: unknown doc-test marker "${verb}" (run, skip, expect, retry-until)`);
  }
}

/** The blocks of one doc file. */
export function readBlocks(root: string, doc: string): DocBlock[] {
  return parseBlocks(doc, readFileSync(join(root, doc), "utf8"));
}

/** The doc a doc continues (its `<!-- doc-test: continues: DOC -->` line), if any. */
export function continues(text: string): string | undefined {
  return /^<!--\s*doc-test:\s*continues:\s*(\S+)\s*-->\s*$/m.exec(text)?.[1];
}

/** The docs in sessions: each session a doc and the docs that continue it, in order. */
export function sessions(root: string): { doc: string; blocks: DocBlock[] }[][] {
  const docs = docFiles(root).map((doc) => {
    const text = readFileSync(join(root, doc), "utf8");
    return { doc, blocks: parseBlocks(doc, text), after: continues(text) };
  });
  const chains: { doc: string; blocks: DocBlock[] }[][] = [];
  const chainOf = new Map<string, { doc: string; blocks: DocBlock[] }[]>();
  const place = (d: (typeof docs)[number], seen: string[]): void => {
    if (chainOf.has(d.doc)) return;
    if (seen.includes(d.doc)) throw new Error(`doc-test: continues makes a cycle: ${seen.join(" → ")}`);
    let chain: { doc: string; blocks: DocBlock[] }[];
    if (d.after) {
      const prev = docs.find((x) => x.doc === d.after);
      if (!prev) throw new Error(`${d.doc}: doc-test: continues names ${d.after}, which is not a tested doc`);
      place(prev, [...seen, d.doc]);
      chain = chainOf.get(prev.doc)!;
    } else {
      chain = [];
      chains.push(chain);
    }
    chain.push({ doc: d.doc, blocks: d.blocks });
    chainOf.set(d.doc, chain);
  };
  for (const d of docs) place(d, []);
  return chains;
}

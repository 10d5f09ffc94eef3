import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, posix, relative } from "node:path";
import ts from "typescript";

/**
 * The import rules of docs/architecture.md ("Dependency rules"), checked over src/'s real
 * imports (value, type and dynamic alike): who may import whom, and no cycles.
 */

/** A file's imports, as repository-relative paths of .ts files under src/. */
export type ImportGraph = Map<string, string[]>;

/** Reads every .ts file under `dir` (tests included) and resolves its relative imports. */
export function importGraph(root: string, dir = "src"): ImportGraph {
  const graph: ImportGraph = new Map();
  const walk = (d: string) => {
    for (const entry of readdirSync(join(root, d))) {
      const path = posix.join(d, entry);
      if (statSync(join(root, path)).isDirectory()) walk(path);
      else if (path.endsWith(".ts")) graph.set(path, importsOf(root, path));
    }
  };
  walk(dir);
  return graph;
}

function importsOf(root: string, file: string): string[] {
  const info = ts.preProcessFile(readFileSync(join(root, file), "utf8"), true, true);
  const out: string[] = [];
  for (const { fileName } of info.importedFiles) {
    if (!fileName.startsWith(".")) continue; // packages and node: builtins
    const target = posix.normalize(posix.join(posix.dirname(file), fileName)).replace(/\.js$/, ".ts");
    out.push(relative(".", target).split("\\").join("/"));
  }
  return out;
}

/** The layer a file belongs to: its folder under src/, two deep for controllers/ and platforms/. */
export function layerOf(file: string): string {
  const parts = file.split("/");
  if (parts[0] !== "src") return parts[0]!; // test/, bench/
  if (parts.length === 2) return "src"; // a file at the root of src/ (there should be none)
  if (parts[1] === "platforms" && parts.length > 3) return `platforms/${parts[2]}`;
  return parts[1]!;
}

export interface Rule {
  /** Layers the rule applies to. */
  from: (layer: string) => boolean;
  /** Whether `from` may import `to` (only imports across layers are asked). */
  allows: (to: string, from: string) => boolean;
  why: string;
}

const only =
  (...layers: string[]) =>
  (to: string) =>
    layers.includes(to);
const isPlatform = (layer: string) => layer.startsWith("platforms/");

/** The rules, each with the reason a reader of a violation needs. */
export const RULES: Rule[] = [
  {
    from: (l) => l === "api" || l === "lib",
    allows: (to, from) => to === "lib" || (from === "api" && to === "api"),
    why: "api/ (kinds, shared types) and lib/ (small utilities) are the bottom: they import nothing of Loom above them",
  },
  {
    from: (l) => l === "core",
    allows: only("api"),
    why: "core/ is pure policy (scheduler, sweep search): it imports only api/",
  },
  {
    from: (l) => l === "ports",
    allows: only("api", "lib", "core"),
    why: "ports/ are interfaces over api/ and core/ types; they know no implementation",
  },
  {
    from: (l) => l === "reconcile",
    allows: only("api", "lib", "ports"),
    why: "reconcile/ (informer, work queue, controller) sits below controllers and platforms: nothing above ports/",
  },
  {
    from: (l) => l === "controllers",
    allows: only("api", "lib", "core", "ports", "reconcile"),
    why: "controllers never know the platform, the server or tracking's implementation: they talk to ports",
  },
  {
    from: isPlatform,
    allows: (to) => !isPlatform(to) && !["controllers", "server", "main", "cli", "gateway"].includes(to),
    why: "a platform is an adapter: it never imports controllers, the server, the composition roots or the other platform",
  },
  {
    from: (l) => l === "gateway",
    allows: only("api", "lib"),
    why: "the gateway's data path is platform-agnostic: it imports only api/ and lib/ (the server adapts it)",
  },
  {
    from: (l) => l !== "cli" && l !== "test" && l !== "bench",
    allows: (to) => to !== "cli",
    why: "nothing imports the CLI",
  },
  {
    from: (l) => l !== "main" && l !== "cli" && l !== "test" && l !== "bench",
    allows: (to) => to !== "main",
    why: "main/ holds the composition roots: only the CLI (and tests) start them",
  },
];

/** Imports of one file that no one outside `allowedFrom` may import, whatever the layers. */
export interface Gate {
  /** Files behind the gate (a path prefix under src/). */
  prefix: string;
  /** Who may import them directly: layers, or file paths. */
  allowedFrom: (from: string, layer: string) => boolean;
  why: string;
}

export const GATES: Gate[] = [
  {
    prefix: "src/core/scheduler/",
    allowedFrom: (from, layer) => layer === "core" || from === "src/ports/scheduler.ts",
    why: "the scheduler core is reached through its port (ports/scheduler.ts), which re-exports its vocabulary",
  },
];

export interface Violation {
  from: string;
  to: string;
  why: string;
}

/** Every import across layers that a rule forbids. */
export function violations(graph: ImportGraph, rules: Rule[] = RULES, gates: Gate[] = GATES): Violation[] {
  const out: Violation[] = [];
  for (const [from, targets] of graph) {
    // Tests may use real implementations and test helpers (a controller against SQLite).
    if (from.endsWith(".test.ts")) continue;
    const fl = layerOf(from);
    for (const to of targets) {
      for (const gate of gates)
        if (to.startsWith(gate.prefix) && !gate.allowedFrom(from, fl)) out.push({ from, to, why: gate.why });
      const tl = layerOf(to);
      if (tl === fl && fl !== "src") continue;
      for (const rule of rules) {
        if (rule.from(fl) && !rule.allows(tl, fl)) out.push({ from, to, why: rule.why });
      }
    }
  }
  return out;
}

/** Import cycles (strongly connected components of more than one file, or a self-import). */
export function cycles(graph: ImportGraph): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const connect = (v: string) => {
    indices.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!indices.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, indices.get(w)!));
    }
    if (low.get(v) === indices.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!indices.has(v)) connect(v);
  return out;
}

/** Limits that keep a file and a function readable in one sitting (tests and benches excepted). */
export const MAX_FILE_LINES = 600;
export const MAX_FUNCTION_LINES = 150;

export interface SizeViolation {
  file: string;
  line: number;
  what: string;
  lines: number;
}

/** Files over MAX_FILE_LINES and functions (methods, arrows) over MAX_FUNCTION_LINES in `files`. */
export function sizeViolations(root: string, files: string[]): SizeViolation[] {
  const out: SizeViolation[] = [];
  for (const file of files) {
    const text = readFileSync(join(root, file), "utf8");
    const total = text.split("\n").length;
    if (total > MAX_FILE_LINES) out.push({ file, line: 1, what: "file", lines: total });
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    const lineOf = (pos: number) => sf.getLineAndCharacterOfPosition(pos).line + 1;
    const visit = (node: ts.Node) => {
      if (ts.isFunctionLike(node) && "body" in node && node.body) {
        const first = lineOf(node.getStart(sf));
        const lines = lineOf(node.getEnd()) - first + 1;
        const name = "name" in node && node.name ? (node.name as ts.Node).getText(sf) : "(anonymous)";
        if (lines > MAX_FUNCTION_LINES) out.push({ file, line: first, what: `function ${name}`, lines });
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return out;
}

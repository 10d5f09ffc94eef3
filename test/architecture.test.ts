import { describe, expect, it } from "vitest";
import { cycles, type ImportGraph, importGraph, sizeViolations, violations } from "./architecture.js";
import { ROOT } from "./helpers.js";

/** The dependency rules of docs/architecture.md, over the real tree, and proof that they bite. */

const graph = importGraph(ROOT);
const sources = [...graph.keys()].filter((f) => !f.endsWith(".test.ts"));

/** The real graph with one more import. */
function withImport(from: string, to: string): ImportGraph {
  expect(graph.has(from), from).toBe(true);
  expect(graph.has(to), to).toBe(true);
  const g = new Map(graph);
  g.set(from, [...(g.get(from) ?? []), to]);
  return g;
}

describe("the import rules", () => {
  it("hold over src/", () => {
    expect(graph.size).toBeGreaterThan(100);
    expect(violations(graph).map((v) => `${v.from} -> ${v.to}: ${v.why}`)).toEqual([]);
  });

  it("leave no import cycle in src/", () => {
    expect(cycles(graph)).toEqual([]);
  });

  it("fail on an injected violation of each rule", () => {
    const injected: [string, string][] = [
      ["src/core/scheduler/schedule.ts", "src/ports/runtime.ts"], // core imports only api/
      ["src/reconcile/informer.ts", "src/controllers/manager.ts"], // reconcile: nothing above ports/
      ["src/platforms/embedded/runtime.ts", "src/controllers/manager.ts"], // platforms never import controllers
      ["src/platforms/kubernetes/runtime.ts", "src/platforms/embedded/runtime.ts"], // nor each other
      ["src/controllers/manager.ts", "src/platforms/embedded/store.ts"], // controllers talk to ports
      ["src/server/app.ts", "src/cli/main.ts"], // nothing imports cli/
      ["src/api/kinds.ts", "src/ports/store.ts"], // api/ is the bottom
      ["src/server/scheduling.ts", "src/core/scheduler/model.ts"], // the scheduler core through its port
    ];
    for (const [from, to] of injected) {
      expect(
        violations(withImport(from, to)).map((v) => `${v.from} -> ${v.to}`),
        `${from} -> ${to}`,
      ).toEqual([`${from} -> ${to}`]);
    }
  });

  it("find an injected cycle", () => {
    const g = withImport("src/api/meta.ts", "src/api/kinds.ts");
    expect(cycles(g).some((c) => c.includes("src/api/meta.ts") && c.includes("src/api/kinds.ts"))).toBe(true);
  });
});

describe("sizes", () => {
  it("no file in src/ over 600 lines, no function over 150 (tests aside)", () => {
    expect(
      sizeViolations(ROOT, sources).map((v) => `${v.file}:${v.line} ${v.what}: ${v.lines} lines`),
    ).toEqual([]);
  });
});

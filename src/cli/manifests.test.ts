import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { CliError } from "./errors.js";
import { parseManifests, prepare, readManifests } from "./manifests.js";

/** What `-` reads: stdin is file descriptor 0, replaced here by this text. */
const stdin = vi.hoisted(() => ({ text: "" }));
vi.mock("node:fs", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs")>();
  return {
    ...fs,
    readFileSync: ((path: unknown, ...rest: unknown[]) =>
      path === 0
        ? stdin.text
        : (fs.readFileSync as (...a: unknown[]) => unknown)(path, ...rest)) as typeof fs.readFileSync,
  };
});

const tj = (name: string) =>
  `apiVersion: loom.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: ${name}\nspec: {}\n`;

function dir(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), "loom-manifests-"));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(d, name, ".."), { recursive: true });
    writeFileSync(join(d, name), text);
  }
  return d;
}

describe("parseManifests", () => {
  it("splits multi-document YAML, skips empty documents and numbers the sources", () => {
    const docs = parseManifests(`${tj("a")}---\n---\n${tj("b")}`, "f.yaml");
    expect(docs.map((d) => [d.source, (d.body.metadata as { name: string }).name])).toEqual([
      ["f.yaml", "a"],
      ["f.yaml (document 3)", "b"],
    ]);
  });

  it("reads JSON, which is YAML too", () => {
    const docs = parseManifests(JSON.stringify({ kind: "TrainingJob", metadata: { name: "j" } }), "f.json");
    expect(docs).toEqual([{ source: "f.json", body: { kind: "TrainingJob", metadata: { name: "j" } } }]);
  });

  it("applies a List's items, as `loom get -o yaml` prints them", () => {
    const list = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJobList",
      items: [{ kind: "A" }, { kind: "B" }],
    };
    expect(parseManifests(JSON.stringify(list), "l.json")).toEqual([
      { source: "l.json (item 1)", body: { kind: "A" } },
      { source: "l.json (item 2)", body: { kind: "B" } },
    ]);
  });

  it("a syntax error names the file, line and column", () => {
    expect(() => parseManifests("kind: TrainingJob\nmetadata: {name: [\n", "bad.yaml")).toThrow(
      /^bad\.yaml: line \d+, column \d+: invalid YAML: /,
    );
    expect(() => parseManifests("kind: TrainingJob\nmetadata: {name: [\n", "bad.yaml")).toThrow(CliError);
  });

  it("a document that is not a mapping says what a manifest must be", () => {
    expect(() => parseManifests(`${tj("a")}---\n- a\n- b\n`, "f.yaml")).toThrow(
      new CliError(
        "f.yaml (document 2): a manifest must be a mapping with apiVersion, kind, metadata and spec",
      ),
    );
    expect(() => parseManifests("just text", "s.yaml")).toThrow(/must be a mapping/);
  });
});

describe("readManifests", () => {
  it("reads a directory's .yaml, .yml and .json files in name order, and nothing else", () => {
    const d = dir({
      "b.yml": tj("b"),
      "a.yaml": tj("a"),
      "c.json": JSON.stringify({ kind: "X" }),
      "README.md": "# no",
    });
    expect(readManifests([d]).map((m) => m.source)).toEqual([
      join(d, "a.yaml"),
      join(d, "b.yml"),
      join(d, "c.json"),
    ]);
  });

  it("reads several paths in the order given", () => {
    const d = dir({ "one.yaml": tj("one"), "two.yaml": tj("two") });
    const names = readManifests([join(d, "two.yaml"), join(d, "one.yaml")]).map(
      (m) => (m.body.metadata as { name: string }).name,
    );
    expect(names).toEqual(["two", "one"]);
  });

  it("- reads stdin", () => {
    stdin.text = `${tj("from-stdin")}---\n${tj("second")}`;
    expect(readManifests(["-"]).map((m) => m.source)).toEqual(["stdin", "stdin (document 2)"]);
  });

  it("says which path is missing, which directory is empty, and when nothing was found", () => {
    const d = dir({ "notes.txt": "x", "empty.yaml": "" });
    expect(() => readManifests([join(d, "nope.yaml")])).toThrow(
      new CliError(`${join(d, "nope.yaml")}: no such file or directory`),
    );
    const empty = dir({ "sub/notes.txt": "x" });
    expect(() => readManifests([join(empty, "sub")])).toThrow(
      new CliError(`${join(empty, "sub")}: no .yaml, .yml or .json files in this directory`),
    );
    expect(() => readManifests([join(d, "empty.yaml")])).toThrow(
      new CliError("no objects found in the given manifests"),
    );
  });
});

describe("prepare", () => {
  const doc = (body: Record<string, unknown>) => ({ source: "m.yaml", body });

  it("fills in the project, keeps a document's own, and drops resourceVersion", () => {
    const p = prepare(
      doc({ kind: "TrainingJob", metadata: { name: "a", resourceVersion: "9" }, spec: {} }),
      "team-a",
    );
    expect(p).toMatchObject({ source: "m.yaml", name: "a", project: "team-a" });
    expect(p.def.kind).toBe("TrainingJob");
    expect(p.body).toEqual({ kind: "TrainingJob", metadata: { name: "a", project: "team-a" }, spec: {} });
    expect(
      prepare(doc({ kind: "TrainingJob", metadata: { name: "a", project: "own" } }), "team-a").project,
    ).toBe("own");
  });

  it("leaves the original document untouched", () => {
    const body = { kind: "TrainingJob", metadata: { name: "a", resourceVersion: "9" } };
    prepare(doc(body), "p");
    expect(body.metadata).toEqual({ name: "a", resourceVersion: "9" });
  });

  it("gives a cluster-scoped kind no project", () => {
    expect(prepare(doc({ kind: "Project", metadata: { name: "p1" } }), "team-a").body.metadata).toEqual({
      name: "p1",
    });
  });

  it("names the field that is missing or wrong", () => {
    expect(() => prepare(doc({ metadata: { name: "a" } }), "p")).toThrow(
      new CliError("m.yaml: kind: required field is missing"),
    );
    expect(() => prepare(doc({ kind: "TrainingJob", metadata: {} }), "p")).toThrow(
      new CliError("m.yaml: metadata.name: required field is missing"),
    );
    // A short name is for the command line; a manifest spells the kind out.
    expect(() => prepare(doc({ kind: "tj", metadata: { name: "a" } }), "p")).toThrow(
      /^m\.yaml: kind: unknown kind "tj"; known kinds: Project/,
    );
  });
});

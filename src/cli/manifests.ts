import { readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import { parseAllDocuments } from "yaml";
import { findKind, type KindDef, knownKindsText } from "../api/kinds.js";
import { CliError } from "./errors.js";

export interface ManifestDoc {
  /** "file.yaml#2" for messages. */
  source: string;
  body: Record<string, unknown>;
}

const MANIFEST_EXT = new Set([".yaml", ".yml", ".json"]);

function readStdin(): string {
  try {
    return readFileSync(0, "utf8");
  } catch (err) {
    throw new CliError(`cannot read manifests from stdin: ${(err as Error).message}`);
  }
}

/** Reads manifests from files, directories (their .yaml/.yml/.json files, sorted) or "-" (stdin). */
export function readManifests(paths: string[]): ManifestDoc[] {
  const docs: ManifestDoc[] = [];
  for (const p of paths) {
    if (p === "-") {
      docs.push(...parseManifests(readStdin(), "stdin"));
      continue;
    }
    let files: string[];
    try {
      files = statSync(p).isDirectory()
        ? readdirSync(p)
            .filter((f) => MANIFEST_EXT.has(extname(f)))
            .sort()
            .map((f) => join(p, f))
        : [p];
    } catch {
      throw new CliError(`${p}: no such file or directory`);
    }
    if (files.length === 0) throw new CliError(`${p}: no .yaml, .yml or .json files in this directory`);
    for (const f of files) docs.push(...parseManifests(readFileSync(f, "utf8"), f));
  }
  if (docs.length === 0) throw new CliError("no objects found in the given manifests");
  return docs;
}

/** Multi-document YAML (JSON is YAML too). Syntax errors name the file and line. */
export function parseManifests(text: string, source: string): ManifestDoc[] {
  const docs: ManifestDoc[] = [];
  let i = 0;
  for (const doc of parseAllDocuments(text)) {
    i++;
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      const line = e.linePos?.[0] ? ` line ${e.linePos[0].line}, column ${e.linePos[0].col}` : "";
      throw new CliError(
        `${source}:${line}: invalid YAML: ${e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`,
      );
    }
    let body: unknown;
    try {
      // maxAliasCount (the yaml package's default, said here): an alias bomb ("billion laughs")
      // is refused instead of expanded.
      body = doc.toJS({ maxAliasCount: 100 }) as unknown;
    } catch (err) {
      throw new CliError(
        `${source}${i > 1 ? ` (document ${i})` : ""}: invalid YAML: ${(err as Error).message.split("\n")[0]}`,
      );
    }
    if (body === null || body === undefined) continue; // an empty document between '---'
    if (typeof body !== "object" || Array.isArray(body)) {
      throw new CliError(
        `${source} (document ${i}): a manifest must be a mapping with apiVersion, kind, metadata and spec`,
      );
    }
    const obj = body as Record<string, unknown>;
    // A List (as `loom get -o yaml` prints) applies its items.
    if (typeof obj.kind === "string" && obj.kind.endsWith("List") && Array.isArray(obj.items)) {
      for (const [j, item] of obj.items.entries()) {
        docs.push({ source: `${source} (item ${j + 1})`, body: item as Record<string, unknown> });
      }
      continue;
    }
    docs.push({ source: `${source}${i > 1 ? ` (document ${i})` : ""}`, body: obj });
  }
  return docs;
}

/** A manifest's object, checked and ready to send: its kind, name and project resolved. */
export interface Prepared {
  source: string;
  def: KindDef;
  name: string;
  project: string;
  body: Record<string, unknown>;
}

/** Checks a manifest's kind and name and fills in its project (the document's own, or `project`). */
export function prepare(doc: ManifestDoc, project: string): Prepared {
  const kind = doc.body.kind;
  if (typeof kind !== "string") throw new CliError(`${doc.source}: kind: required field is missing`);
  const def = findKind(kind);
  if (!def || def.kind !== kind)
    throw new CliError(`${doc.source}: kind: unknown kind "${kind}"; known kinds: ${knownKindsText()}`);
  const meta = (doc.body.metadata ?? {}) as Record<string, unknown>;
  const name = typeof meta.name === "string" ? meta.name : "";
  if (!name) throw new CliError(`${doc.source}: metadata.name: required field is missing`);
  const proj = typeof meta.project === "string" ? meta.project : project;
  const body = structuredClone(doc.body);
  const bodyMeta = (body.metadata ?? {}) as Record<string, unknown>;
  // A manifest from `get -o yaml` carries a resourceVersion; apply means "make it so", not "if unchanged".
  delete bodyMeta.resourceVersion;
  if (def.namespaced) bodyMeta.project = proj;
  body.metadata = bodyMeta;
  return { source: doc.source, def, name, project: proj, body };
}

#!/usr/bin/env node
// The CLI entry point. It runs the compiled dist/ (npm ci compiles it once, via prepare) and never
// compiles at start-up: a missing build is an error that says how to build, a stale one a warning.
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { distState, ENTRY } from "./dist.js";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const state = distState(root);
if (state === "missing") {
  process.stderr.write(
    `loom: not built yet (${join(root, ENTRY)} is missing). Build it once, then run loom again:\n  cd ${root} && npm run build\n`,
  );
  process.exit(1);
}
if (state === "stale")
  process.stderr.write(
    `loom: warning: src/ changed since dist/ was built; running the old build (npm run build updates it)\n`,
  );

const { main } = await import(pathToFileURL(join(root, ENTRY)).href);
await main(process.argv);

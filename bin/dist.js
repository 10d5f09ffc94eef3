// Whether dist/ (the compiled CLI and server) is there and as new as src/. Shared by bin/loom.js,
// which must never compile at start-up, and bin/prepare.js, which compiles at install only when
// dist/ is missing or older than the sources.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/** The file every build writes (tsc rewrites all outputs each run): its age is the build's. */
export const ENTRY = join("dist", "cli", "main.js");

/** The newest modification time among what tsc compiles (src/ less tests, tsconfig.json), in ms. */
export function newestSource(root) {
  let newest = statSync(join(root, "tsconfig.json")).mtimeMs;
  for (const f of readdirSync(join(root, "src"), { recursive: true })) {
    const file = String(f);
    if (!file.endsWith(".ts") || file.endsWith(".test.ts")) continue;
    newest = Math.max(newest, statSync(join(root, "src", file)).mtimeMs);
  }
  return newest;
}

/**
 * "missing" (never built), "stale" (a source changed since the last build), or "fresh". An
 * install without src/ (a packed copy) counts as fresh: there is nothing to compile.
 */
export function distState(root) {
  let built;
  try {
    built = statSync(join(root, ENTRY)).mtimeMs;
  } catch {
    return "missing";
  }
  try {
    return newestSource(root) > built ? "stale" : "fresh";
  } catch {
    return "fresh";
  }
}

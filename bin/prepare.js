#!/usr/bin/env node
// package.json's "prepare": compiles src/ to dist/ at install (npm ci, npm install, npm link),
// saying so first, and skips the compile when dist/ is already as new as src/. npx runs prepare
// again whenever it links this directory into its cache (the first `npx loom` in a clone): that
// is start-up, not install, so it never compiles there; bin/loom.js says how to build if needed.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { distState } from "./dist.js";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const state = distState(root);
if (process.env.npm_command === "exec") process.exit(0);
// The sandbox launcher (native/loom-sandbox.c), where there is a C compiler; never fails install.
spawnSync(process.execPath, [join(root, "bin", "native.js")], { cwd: root, stdio: "inherit" });
if (state === "fresh") {
  console.log("loom: dist/ is up to date with src/; not compiling again (npm run build forces it)");
  process.exit(0);
}
console.log(
  `loom: compiling TypeScript (src/ -> dist/) with tsc${state === "stale" ? ", sources changed since the last build" : ""}; about a minute, more on a busy machine…`,
);
const started = Date.now();
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const result = spawnSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" });
if (result.status !== 0) {
  console.error(
    `loom: tsc failed (exit ${result.status ?? result.signal}); fix the errors above, then: npm run build`,
  );
  process.exit(1);
}
// The web console (issue 21) is served from dist/console: bundled here too, so `npx loom up` serves it
// (where its sources are: a package that ships dist/console built has no web/).
const hasWeb = existsSync(join(root, "web", "build.mjs"));
const web = hasWeb
  ? spawnSync(process.execPath, ["web/build.mjs"], { cwd: root, stdio: "inherit" })
  : { status: 0 };
if (web.status !== 0) {
  console.error(
    `loom: the web console's build failed (exit ${web.status ?? web.signal}); fix it, then: npm run build`,
  );
  process.exit(1);
}
console.log(`loom: compiled in ${Math.round((Date.now() - started) / 1000)} s`);

#!/usr/bin/env node
// Builds Loom's sandbox launcher (native/loom-sandbox.c) into native/build/ with the machine's C
// compiler, part of `npm run build` and of install (bin/prepare.js). Never fails the build: where
// there is no compiler, or it fails, `loom up` starts sandboxes through bubblewrap's chain instead
// (slower, the same fences) and says so. Skipped when the binary is newer than its source.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const source = join(root, "native", "loom-sandbox.c");
const out = join(root, "native", "build", "loom-sandbox");

if (!existsSync(source)) process.exit(0); // a package shipped without native/ keeps bwrap's chain
if (existsSync(out) && statSync(out).mtimeMs >= statSync(source).mtimeMs) process.exit(0);
if (process.platform !== "linux") process.exit(0);
mkdirSync(dirname(out), { recursive: true });
const cc = process.env.CC || "cc";
const flags = ["-O2", "-Wall", "-Wextra", "-Werror", "-o", `${out}.tmp`, source];
// Static first: no dynamic loader to run at every start (about a tenth of the launcher's time).
let result = spawnSync(cc, ["-static", ...flags], { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
if (result.status !== 0)
  result = spawnSync(cc, flags, { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
if (result.status !== 0) {
  rmSync(`${out}.tmp`, { force: true });
  const why = result.error ? `${cc} not found` : (result.stderr || "").trim().split("\n")[0];
  console.log(
    `loom: the sandbox launcher was not built (${why}); sandboxes start through bubblewrap's chain`,
  );
  process.exit(0);
}
renameSync(`${out}.tmp`, out);
console.log(`loom: built the sandbox launcher (${out})`);

import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** code-server as this machine has it: the command that runs it and the folder sandboxes are lent. */
export interface CodeServerInstall {
  /** node and code-server's entry script: run without a shell, inside the sandbox too. */
  command: string[];
  /** code-server's package folder. */
  root: string;
  /**
   * What sandboxes are lent, read-only, as runtimes/ is: the node_modules folder holding the
   * package, where npm hoists its dependencies (an `npm install --prefix` does; -g nests them).
   */
  lend: string;
  version: string;
}

/**
 * code-server for `ide: vscode`: LOOM_CODE_SERVER (the `code-server` executable or its package
 * folder), else `code-server` on PATH. Undefined, with why, where there is none or it is not an
 * npm install Loom can run with its own Node.js. code-server 4.100.3 is the last line whose
 * engines accept Node.js 20 (4.104 wants 22, 4.13x wants 24).
 */
export function findCodeServer(
  env: NodeJS.ProcessEnv = process.env,
): { found: CodeServerInstall } | { missing: string } {
  const given = env.LOOM_CODE_SERVER?.trim();
  let start: string | undefined = given || undefined;
  if (!start) {
    try {
      start = execFileSync("/bin/sh", ["-c", "command -v code-server"], { encoding: "utf8", env }).trim();
    } catch {
      return { missing: "code-server is not installed on this server (not on PATH, LOOM_CODE_SERVER unset)" };
    }
  }
  if (!start || !existsSync(start)) return { missing: `code-server not found at ${start}` };
  // From the executable (npm's bin link → out/node/entry.js) up to the package's own package.json.
  let dir = realpathSync(start);
  for (let i = 0; i < 6; i++) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      const meta = JSON.parse(readFileSync(pkg, "utf8")) as { name?: string; version?: string };
      if (meta.name === "code-server") {
        const entry = join(dir, "out", "node", "entry.js");
        if (!existsSync(entry))
          return { missing: `${dir} has no out/node/entry.js (not an npm code-server)` };
        const lend = basename(dirname(dir)) === "node_modules" ? dirname(dir) : dir;
        return {
          found: { command: [process.execPath, entry], root: dir, lend, version: meta.version ?? "?" },
        };
      }
    }
    if (dirname(dir) === dir) break;
    dir = dirname(dir);
  }
  return {
    missing: `${start} is not code-server's npm package (no package.json named code-server above it)`,
  };
}

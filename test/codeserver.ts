import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The code-server the vscode workspace code was checked on: the last line whose engines take Node.js 20. */
export const CODE_SERVER = "code-server@4.100.3";

/**
 * The @vscode/ripgrep that code-server 4.100.3 pins (npm-shrinkwrap) fetches rg from GitHub's
 * releases in its postinstall; this machine reaches only package registries. It reads a cache
 * in the temp dir first, so Debian's rg (package ripgrep) is put there under the name it asks for.
 */
const RIPGREP_CACHE = {
  dir: "vscode-ripgrep-cache-1.15.11",
  asset: "ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz",
};

/**
 * code-server's npm package for the vscode workspace tests, built once (native modules: about
 * three minutes; needs libkrb5-dev, as code-server's npm docs say) into LOOM_TEST_CODE_SERVER
 * (default: the machine's temp dir, which sandboxed workloads may read). Returns the package
 * folder, what LOOM_CODE_SERVER names for `loom up`. Test files run in parallel: the build
 * holds a lock and looks again once it has it.
 */
export function codeServerPackage(): string {
  const prefix = process.env.LOOM_TEST_CODE_SERVER ?? join(tmpdir(), "loom-test-code-server");
  const pkg = join(prefix, "node_modules", "code-server");
  if (existsSync(join(prefix, ".loom-test-ready"))) return pkg;
  const build = [
    "set -e",
    `if [ -e "$1/.loom-test-ready" ]; then exit 0; fi`,
    `echo "installing ${CODE_SERVER} in $1 (native modules: minutes, once)" >&2`,
    `rg=$(command -v rg) || { echo "ripgrep (Debian package) is needed to install code-server here" >&2; exit 1; }`,
    `cache="${tmpdir()}/${RIPGREP_CACHE.dir}"; mkdir -p "$cache" "$1.rg"; cp "$rg" "$1.rg/rg"`,
    `tar czf "$cache/${RIPGREP_CACHE.asset}" -C "$1.rg" rg`,
    `rm -rf "$1" && mkdir -p "$1"`,
    // node-pty's install runs `npx node-gyp`, which asks before fetching: yes.
    `npm_config_yes=true npm install --prefix "$1" --no-audit --no-fund --unsafe-perm "${CODE_SERVER}" >"$1.log" 2>&1 || { tail -40 "$1.log" >&2; exit 1; }`,
    `node "$1/node_modules/code-server/out/node/entry.js" --version > "$1/.loom-test-ready"`,
  ].join("\n");
  execFileSync("flock", [`${prefix}.lock`, "sh", "-c", build, "sh", prefix], {
    stdio: "inherit",
    timeout: 900_000,
  });
  return pkg;
}

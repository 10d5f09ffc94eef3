import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The JupyterLab the workspace code's flags were checked on (src/controllers/workspace/command.ts). */
export const JUPYTERLAB = "jupyterlab==4.6.6";

/**
 * A Python environment with JupyterLab for workspace tests and bench:workspaces, built once
 * (pip install jupyterlab: minutes) and kept in LOOM_TEST_JUPYTER_VENV (default: the machine's
 * temp dir, which sandboxed workloads may read), then given to a Workspace as spec.python.venv.
 */
export const JUPYTER_VENV = process.env.LOOM_TEST_JUPYTER_VENV ?? join(tmpdir(), "loom-test-jupyterlab-venv");

/**
 * The venv's path, built first if it is not there yet. Test files run in parallel: the build
 * holds a lock (flock) and looks again once it has it, so two files never pip into one venv.
 */
export function jupyterVenv(): string {
  const marker = join(JUPYTER_VENV, ".loom-test-ready");
  if (existsSync(marker)) return JUPYTER_VENV;
  const build = [
    "set -e",
    `if [ -e "$1/.loom-test-ready" ]; then exit 0; fi`,
    `echo "building JupyterLab's environment in $1 (pip install ${JUPYTERLAB}: minutes, once)" >&2`,
    `rm -rf "$1"`,
    `python3 -m venv "$1"`,
    `"$1/bin/pip" install -q --disable-pip-version-check "${JUPYTERLAB}"`,
    `"$1/bin/jupyter" lab --version > "$1/.loom-test-ready"`,
  ].join("\n");
  execFileSync("flock", [`${JUPYTER_VENV}.lock`, "sh", "-c", build, "sh", JUPYTER_VENV], {
    stdio: "inherit",
    timeout: 900_000,
  });
  return JUPYTER_VENV;
}

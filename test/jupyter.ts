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
  return buildVenv(JUPYTER_VENV, [JUPYTERLAB]);
}

/** The official mlflow client beside JupyterLab: what a notebook logs to tracking with (examples/workspace). */
export const MLFLOW_SKINNY = "mlflow-skinny==3.17.2";

/**
 * JupyterLab with the mlflow client, for the zero-configuration tracking tests (a kernel and a
 * terminal log with no setup): its own venv, kept in LOOM_TEST_JUPYTER_MLFLOW_VENV.
 */
export const JUPYTER_MLFLOW_VENV =
  process.env.LOOM_TEST_JUPYTER_MLFLOW_VENV ?? join(tmpdir(), "loom-test-jupyterlab-mlflow-venv");

/** The venv's path, built first (under the same kind of lock) if it is not there yet. */
export function jupyterMlflowVenv(): string {
  return buildVenv(JUPYTER_MLFLOW_VENV, [JUPYTERLAB, MLFLOW_SKINNY]);
}

function buildVenv(dir: string, packages: string[]): string {
  const marker = join(dir, ".loom-test-ready");
  if (existsSync(marker)) return dir;
  const pins = packages.map((p) => `"${p}"`).join(" ");
  const build = [
    "set -e",
    `if [ -e "$1/.loom-test-ready" ]; then exit 0; fi`,
    `echo "building JupyterLab's environment in $1 (pip install ${packages.join(" ")}: minutes, once)" >&2`,
    `rm -rf "$1"`,
    `python3 -m venv "$1"`,
    `"$1/bin/pip" install -q --disable-pip-version-check ${pins}`,
    `"$1/bin/jupyter" lab --version > "$1/.loom-test-ready"`,
  ].join("\n");
  execFileSync("flock", [`${dir}.lock`, "sh", "-c", build, "sh", dir], {
    stdio: "inherit",
    timeout: 900_000,
  });
  return dir;
}

import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A Python environment with JupyterLab for workspace tests and bench:workspaces, built once
 * (pip install jupyterlab: minutes) and kept in LOOM_TEST_JUPYTER_VENV (default: the machine's
 * temp dir), then given to a Workspace as spec.python.venv.
 */
export const JUPYTER_VENV = process.env.LOOM_TEST_JUPYTER_VENV ?? join(tmpdir(), "loom-test-jupyterlab-venv");

/** The venv's path, built first if it is not there yet. */
export function jupyterVenv(): string {
  const marker = join(JUPYTER_VENV, ".loom-test-ready");
  if (existsSync(marker)) return JUPYTER_VENV;
  execFileSync("python3", ["-m", "venv", JUPYTER_VENV], { stdio: "inherit" });
  execFileSync(
    join(JUPYTER_VENV, "bin", "pip"),
    ["install", "-q", "--disable-pip-version-check", "jupyterlab"],
    {
      stdio: "inherit",
      timeout: 900_000,
    },
  );
  writeFileSync(marker, execFileSync(join(JUPYTER_VENV, "bin", "jupyter"), ["lab", "--version"]).toString());
  return JUPYTER_VENV;
}

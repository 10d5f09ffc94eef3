import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The Gradio and Streamlit that the App kind's commands were checked on (src/controllers/app/command.ts). */
export const GRADIO = "gradio==6.31.0";
export const STREAMLIT = "streamlit==1.67.0";
/** The openai client the playground example (examples/playground) calls the project's models with. */
export const OPENAI = "openai==3.57.0";
/** The mlflow client the playground loads its registry prompt and records traces with. */
export const MLFLOW = "mlflow-skinny==3.17.2";

/**
 * A Python environment with Gradio and Streamlit for the App tests, built once (pip install:
 * about a minute) and kept in LOOM_TEST_APPS_VENV (default: the machine's temp dir, which
 * sandboxed workloads may read), then given to an App as spec.python.venv.
 */
export const APPS_VENV = process.env.LOOM_TEST_APPS_VENV ?? join(tmpdir(), "loom-test-apps-venv");

/**
 * The venv's path, built first unless it already has both packages at these versions. Test
 * files run in parallel: the build holds a lock (flock) and looks again once it has it.
 */
export function appsVenv(): string {
  const pins = [GRADIO, STREAMLIT, OPENAI, MLFLOW];
  const versions = pins.map((p) => p.split("==")[1]).join(" ");
  const check = `[ "$("$1/bin/python" -c 'import gradio, streamlit, openai, mlflow; print(gradio.__version__, streamlit.__version__, openai.__version__, mlflow.__version__)' 2>/dev/null)" = "${versions}" ]`;
  const build = [
    "set -e",
    `if ${check}; then exit 0; fi`,
    `echo "building the apps' environment in $1 (pip install ${pins.join(" ")}: about a minute, once)" >&2`,
    // Pinned installs into what is there: a package added to the list never rebuilds the rest.
    `[ -x "$1/bin/python" ] || python3 -m venv "$1"`,
    `"$1/bin/pip" install -q --disable-pip-version-check ${pins.map((p) => `"${p}"`).join(" ")}`,
    check,
  ].join("\n");
  execFileSync("flock", [`${APPS_VENV}.lock`, "sh", "-c", build, "sh", APPS_VENV], {
    stdio: "inherit",
    timeout: 900_000,
  });
  return APPS_VENV;
}

import type { AppSpec } from "../../api/app.js";
import type { PythonEnvironmentSpec } from "../../ports/runtime.js";
import { SUBSTITUTE_SHIM } from "../workspace/command.js";

/** The port an app listens on where the platform gives each replica its own address. */
export const APP_PORT = 8080;

/** What an App's replicas run: the command, the readiness path and the Python environment. */
export interface AppProgram {
  command: string[];
  env: Record<string, string>;
  readinessPath: string;
  python?: PythonEnvironmentSpec;
}

/** `$PORT` and `$HOST` in the arguments replaced with the replica's, then exec'd (no shell otherwise). */
const wrap = (args: string[]) => ["/bin/sh", "-c", SUBSTITUTE_SHIM, "loom-app", ...args];

/**
 * Streamlit served at `/` of the app's own origin: Loom's proxy keeps the browser's Host, so
 * Streamlit's own CORS and XSRF checks see the origin the browser used and stay on.
 */
export function streamlitCommand(file: string): string[] {
  return [
    "python3",
    "-m",
    "streamlit",
    "run",
    file,
    "--server.port",
    "$PORT",
    "--server.address",
    "$HOST",
    "--server.baseUrlPath",
    "",
    "--server.headless",
    "true",
    "--browser.gatherUsageStats",
    "false",
  ];
}

/** The framework's package added to an environment Loom builds, when the requirements lack it. */
function withPackage(python: AppSpec["python"], pkg: string): PythonEnvironmentSpec {
  if (!python) return { interpreter: "python3", requirements: [pkg], systemSitePackages: false };
  if ("venv" in python) return python;
  const has = python.requirements.some((r) => new RegExp(`^${pkg}\\b`, "i").test(r.trim()));
  return { ...python, requirements: has ? python.requirements : [...python.requirements, pkg] };
}

/**
 * The program for an App's spec: Loom starts Gradio and Streamlit itself on the replica's port,
 * bound to its host, with the base path "/" (the app is at the root of its own origin).
 */
export function appProgram(spec: AppSpec): AppProgram {
  switch (spec.framework) {
    case "gradio":
      return {
        // Gradio reads its address from the environment; the port is known only at start.
        command: wrap([
          "env",
          "GRADIO_SERVER_NAME=$HOST",
          "GRADIO_SERVER_PORT=$PORT",
          ...(spec.command ?? ["python3", spec.file!]),
        ]),
        env: {
          GRADIO_ROOT_PATH: "",
          GRADIO_ANALYTICS_ENABLED: "False",
        },
        readinessPath: spec.readinessPath ?? "/config",
        python: withPackage(spec.python, "gradio"),
      };
    case "streamlit":
      return {
        command: wrap(spec.command ?? streamlitCommand(spec.file!)),
        env: { STREAMLIT_BROWSER_GATHER_USAGE_STATS: "false" },
        readinessPath: spec.readinessPath ?? "/_stcore/health",
        python: withPackage(spec.python, "streamlit"),
      };
    case "custom":
      return {
        command: wrap(spec.command!),
        env: {},
        readinessPath: spec.readinessPath ?? "/",
        ...(spec.python ? { python: spec.python } : {}),
      };
  }
}

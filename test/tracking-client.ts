import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { ROOT, spawnAsync } from "./helpers.js";

/** The official MLflow client (pinned), with pandas for mlflow.pyfunc, in a venv cached across runs. */
export const MLFLOW = "mlflow-skinny==3.17.2";
const EXTRAS = ["pandas==3.1.1"];
export const VENV = join(homedir(), ".cache", "loom", "test-envs", `${MLFLOW.replace("==", "-")}-pandas`);
/**
 * The same client for mlflow.pytorch: CPU torch here is Debian's python3-torch (torch 1.13, numpy
 * 1.x) for /usr/bin/python3 only, so this venv is made from that Python with its site packages,
 * and pins a pandas and numpy that keep Debian's numpy 1.x (numpy 2 breaks that torch).
 */
const SYSTEM_PYTHON = "/usr/bin/python3";
const TORCH_EXTRAS = ["pandas==2.2.3", "numpy<2"];
const TORCH_VENV = join(
  homedir(),
  ".cache",
  "loom",
  "test-envs",
  `${MLFLOW.replace("==", "-")}-debian-torch`,
);

/** Makes the venv once (marked .ready when whole), and returns its python. */
function venvPython(dir: string, base: string, args: string[], packages: string[], verify?: string): string {
  const python = join(dir, "bin", "python");
  if (!existsSync(join(dir, ".ready"))) {
    const steps = [
      [base, "-m", "venv", ...args, dir],
      [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", ...packages],
      ...(verify ? [[python, "-c", verify]] : []),
      ["touch", join(dir, ".ready")],
    ];
    for (const cmd of steps) {
      const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 900_000 });
      if (r.status !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.error ?? ""}${r.stdout}${r.stderr}`);
    }
  }
  return python;
}

export function mlflowPython(): string {
  return venvPython(VENV, "python3", [], [MLFLOW, ...EXTRAS]);
}

/** The same client with the openai one (genai.evaluate's predict_fn calls Loom's gateway with it). */
export const OPENAI_PY = "openai==3.57.0";
const GENAI_VENV = join(
  homedir(),
  ".cache",
  "loom",
  "test-envs",
  `${MLFLOW.replace("==", "-")}-pandas-openai`,
);

export function genaiPython(): string {
  return venvPython(GENAI_VENV, "python3", [], [MLFLOW, ...EXTRAS, OPENAI_PY]);
}

/**
 * The full `mlflow` package (its `mlflow server`) as the peer the GenAI client scripts also run
 * against (test/genai-peer.e2e.test.ts): the venv bench:tracking makes and reuses, at the same
 * place with the same marker (~/.cache/loom/bench-envs/mlflow-3.17.2, or LOOM_MLFLOW_SERVER_VENV).
 */
export const MLFLOW_SERVER_VENV =
  process.env.LOOM_MLFLOW_SERVER_VENV ??
  join(homedir(), ".cache", "loom", "bench-envs", `mlflow-${MLFLOW.split("==")[1]}`);

/** That venv, built once (pip install mlflow: about a minute and ~850 MB); returns its `mlflow`. */
export function mlflowServer(): string {
  venvPython(MLFLOW_SERVER_VENV, "python3", [], [`mlflow==${MLFLOW.split("==")[1]}`], "import mlflow.server");
  return join(MLFLOW_SERVER_VENV, "bin", "mlflow");
}

export function torchPython(): string {
  const probe = spawnSync(SYSTEM_PYTHON, ["-c", "import torch, numpy"], { encoding: "utf8" });
  if (probe.status !== 0)
    throw new Error(
      `the mlflow.pytorch round trip needs CPU torch for ${SYSTEM_PYTHON} (Debian: apt-get install python3-torch): ${probe.error ?? probe.stderr}`,
    );
  return venvPython(
    TORCH_VENV,
    SYSTEM_PYTHON,
    ["--system-site-packages"],
    [MLFLOW, ...TORCH_EXTRAS],
    "import numpy, torch, pandas, mlflow.pytorch; assert int(numpy.__version__.split('.')[0]) < 2, numpy.__version__",
  );
}

/**
 * Runs test/fixtures/tracking/client_suite.py (the official client against every endpoint) at a
 * tracking URI; it prints "OK N checks" when all pass.
 */
export async function clientSuite(python: string, uri: string, token: string, suffix: string) {
  // Not spawnSync: the test's own fetches after it would reuse a socket the server closed meanwhile.
  const r = await spawnAsync(python, [join(ROOT, "test/fixtures/tracking/client_suite.py")], {
    env: { ...process.env, MLFLOW_TRACKING_URI: uri, MLFLOW_TRACKING_TOKEN: token, SUFFIX: suffix },
    timeout: 120_000,
  });
  return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
}

/** Runs a Python script (a fixture path or inline code) with the official client pointed at a tracking URI. */
export async function py(
  python: string,
  script: string,
  uri: string,
  token: string,
  env: Record<string, string> = {},
) {
  const args = script.endsWith(".py") ? [join(ROOT, script)] : ["-c", script];
  // Not spawnSync: the test's fetches after it would reuse a socket the server closed meanwhile.
  const r = await spawnAsync(python, args, {
    env: {
      ...process.env,
      // MLflow 3's usage telemetry (a background thread; nothing to send to from here) failed a
      // traced function in CI with KeyError '_MLFLOW_TELEMETRY_SESSION_ID': off, as its docs say.
      MLFLOW_DISABLE_TELEMETRY: "true",
      DO_NOT_TRACK: "true",
      MLFLOW_TRACKING_URI: uri,
      MLFLOW_TRACKING_TOKEN: token,
      ...env,
    },
    timeout: 120_000,
  });
  return { code: r.status, out: `${r.stdout}\n${r.stderr}`, stdout: r.stdout.trim() };
}

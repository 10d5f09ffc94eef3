import type { WorkspaceSpec } from "../../api/workspace.js";
import type { PythonEnvironmentSpec } from "../../ports/runtime.js";

/** The port a workspace's server listens on where the platform gives each replica its own address. */
export const WORKSPACE_PORT = 8888;

/**
 * Replaces `$PORT` and `$HOST` in the arguments with the replica's values, then execs them: a
 * command is run without a shell (spec.command says so), yet its port is only known when the
 * platform starts the replica (embedded: a fresh loopback port each start).
 */
export const SUBSTITUTE_SHIM =
  // biome-ignore lint/suspicious/noTemplateCurlyInString: ${a%%…} is the shell's parameter expansion
  'for a; do shift; for v in PORT HOST; do eval "x=\\$$v"; while :; do case $a in *"\\$$v"*) a="${a%%"\\$$v"*}$x${a#*"\\$$v"}";; *) break;; esac; done; done; set -- "$@" "$a"; done; exec "$@"';

/**
 * Starts runtimes/loom-sshd ($LOOM_SSHD) in the background where OpenSSH's sshd is installed, for
 * `loom ssh ws/NAME` (127.0.0.1:2222 inside the workspace's own network, reached by Loom's tunnel);
 * its output goes to ~/.loom-sshd.log. Never waited for: an sshd that fails, or none at all, never
 * keeps the IDE from starting.
 */
export const SSHD_BESIDE =
  '[ -x /usr/sbin/sshd ] && [ -r "$LOOM_SSHD" ] && { sh "$LOOM_SSHD" >>"$HOME/.loom-sshd.log" 2>&1 & }; ';

/**
 * Points ~/.mlflow/credentials in the persistent home at the replica's own credentials file
 * ($LOOM_MLFLOW_CREDENTIALS, under its private HOME, gone with the replica), so the mlflow client
 * in every process (a kernel, a terminal) finds it with no configuration. Only a link made by
 * Loom (or none) is replaced: a user's own credentials file wins. The link holds a path, never
 * the token; once the replica goes it dangles until the next start re-points it.
 */
export const MLFLOW_LINK =
  'c="$HOME/.mlflow/credentials"; if [ -n "$LOOM_MLFLOW_CREDENTIALS" ] && [ "$LOOM_MLFLOW_CREDENTIALS" != "$c" ] && { [ -L "$c" ] || [ ! -e "$c" ]; }; then mkdir -p "$HOME/.mlflow" && ln -sfn "$LOOM_MLFLOW_CREDENTIALS" "$c"; fi; ';

/**
 * The shell of JupyterLab's terminals: an interactive, non-login one (bash where there is one).
 * Jupyter's default is a login shell, and /etc/profile resets PATH: the workspace's environment
 * (its `python`, `pip`, `jupyter`) fell off it, leaving the machine's python3 only.
 */
export const TERMINAL_SHELL =
  '/bin/sh -c \'if [ -z "$SHELL" ]; then SHELL=$(command -v bash || command -v sh); export SHELL; fi; exec "$SHELL"\'';

/** What a workspace runs: its server's command, readiness path and Python environment. */
export type WorkspaceProgram =
  | { command: string[]; readinessPath: string; python?: PythonEnvironmentSpec }
  | { unsupported: string };

/**
 * JupyterLab served at `/` of the workspace's own origin, without its token or password (Loom's
 * origin is the gate), accepting the origin's Host (`--ServerApp.allow_remote_access`; the
 * workspace listens only where Loom's proxy reaches it).
 */
export function jupyterCommand(): string[] {
  return [
    "jupyter",
    "lab",
    "--ip=$HOST",
    "--port=$PORT",
    "--no-browser",
    // Unsandboxed on a machine where Loom runs as root, the workspace does too.
    "--allow-root",
    "--ServerApp.base_url=/",
    "--IdentityProvider.token=",
    "--ServerApp.password=",
    "--ServerApp.allow_origin=*",
    "--ServerApp.allow_remote_access=True",
    "--ServerApp.root_dir=.",
    `--ServerApp.terminado_settings=shell_command=${TERMINAL_SHELL}`,
  ];
}

/**
 * code-server served at `/` of the workspace's own origin without its password (Loom's origin is
 * the gate), opening the home. Its user data and extensions stay in the home (its defaults under
 * ~/.local/share/code-server), so settings survive stop/start like the files do.
 */
export function vscodeCommand(codeServer: string[]): string[] {
  return [
    ...codeServer,
    "--bind-addr=$HOST:$PORT",
    "--auth=none",
    "--disable-telemetry",
    "--disable-update-check",
    "--disable-workspace-trust",
    ".",
  ];
}

/** JupyterLab comes with the workspace's environment: added to its requirements when missing. */
function withJupyter(python: WorkspaceSpec["python"]): PythonEnvironmentSpec {
  if (!python) return { interpreter: "python3", requirements: ["jupyterlab"], systemSitePackages: false };
  if ("venv" in python) return python;
  const has = python.requirements.some((r) => /^jupyterlab\b/i.test(r.trim()));
  return { ...python, requirements: has ? python.requirements : [...python.requirements, "jupyterlab"] };
}

/**
 * The program for a workspace's spec, or why this platform cannot run it. `sshd`: the platform
 * gives the replica LOOM_SSHD, and the wrapper starts it beside the server (SSHD_BESIDE).
 * `codeServer`: how this platform runs code-server (embedded: node and its entry script; on
 * Kubernetes the image's `code-server`); absent, `ide: vscode` is refused with what to do.
 */
export function workspaceProgram(
  spec: WorkspaceSpec,
  opts: { sshd?: boolean; codeServer?: string[] } = {},
): WorkspaceProgram {
  const shim = MLFLOW_LINK + (opts.sshd ? SSHD_BESIDE : "") + SUBSTITUTE_SHIM;
  const wrap = (args: string[]) => ["/bin/sh", "-c", shim, "loom-workspace", ...args];
  switch (spec.ide) {
    case "jupyter":
      return { command: wrap(jupyterCommand()), readinessPath: "/api", python: withJupyter(spec.python) };
    case "vscode":
      if (!opts.codeServer)
        return {
          unsupported:
            "ide: vscode needs code-server on the server, and it has none: install it (npm install -g code-server@4.100.3 --unsafe-perm, the last line that runs on Node.js 20; it builds with libkrb5-dev) and restart, or point LOOM_CODE_SERVER at it; or use ide: jupyter",
        };
      return {
        command: wrap(vscodeCommand(opts.codeServer)),
        readinessPath: "/healthz",
        ...(spec.python ? { python: spec.python } : {}),
      };
    case "none":
      return {
        command: wrap(spec.command ?? []),
        readinessPath: "/",
        ...(spec.python ? { python: spec.python } : {}),
      };
  }
}

import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WorkspaceSpec } from "../../api/workspace.js";
import { jupyterCommand, TERMINAL_SHELL, workspaceProgram } from "./command.js";

/**
 * The workspace's wrapper shell and JupyterLab's terminal shell, run by the real /bin/sh: an
 * sshd that fails (or is missing) never keeps the server from starting, and a terminal keeps the
 * environment's bin first on PATH.
 */
describe("workspace command", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loom-wscmd-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const run = (command: string[], env: Record<string, string>) =>
    execFileSync(command[0]!, command.slice(1), {
      env: { PATH: process.env.PATH!, HOME: dir, PORT: "4242", HOST: "127.0.0.1", ...env },
      encoding: "utf8",
    });

  const program = (sshd: boolean) => {
    const p = workspaceProgram(WorkspaceSpec.parse({ ide: "none", command: ["/bin/echo", "up on $PORT"] }), {
      sshd,
    });
    if ("unsupported" in p) throw new Error(p.unsupported);
    return p.command;
  };

  it("links ~/.mlflow/credentials to the replica's file, re-points a dangling link at the next start, and keeps a user's own file", () => {
    const link = join(dir, ".mlflow", "credentials");
    const first = join(dir, "replica-1", "credentials");
    mkdirSync(join(dir, "replica-1"));
    writeFileSync(first, "[mlflow]\nmlflow_tracking_password = one\n");
    expect(run(program(false), { LOOM_MLFLOW_CREDENTIALS: first })).toBe("up on 4242\n");
    expect(readlinkSync(link)).toBe(first);
    expect(readFileSync(link, "utf8")).toContain("= one");
    // The replica went (its private HOME with it): the link dangles, holding only a path.
    rmSync(join(dir, "replica-1"), { recursive: true });
    expect(existsSync(link)).toBe(false);
    const second = join(dir, "replica-2-credentials");
    writeFileSync(second, "[mlflow]\nmlflow_tracking_password = two\n");
    run(program(false), { LOOM_MLFLOW_CREDENTIALS: second });
    expect(readFileSync(link, "utf8")).toContain("= two");
    // A user's own credentials file (an external server's) is theirs: never replaced.
    rmSync(link);
    writeFileSync(link, "[mlflow]\nmlflow_tracking_password = mine\n");
    run(program(false), { LOOM_MLFLOW_CREDENTIALS: second });
    expect(lstatSync(link).isSymbolicLink()).toBe(false);
    expect(readFileSync(link, "utf8")).toContain("= mine");
    // No credential given (a platform without tracking): nothing made, the server still starts.
    const bare = mkdtempSync(join(tmpdir(), "loom-wscmd-bare-"));
    try {
      execFileSync(program(false)[0]!, program(false).slice(1), {
        env: { PATH: process.env.PATH!, HOME: bare, PORT: "1", HOST: "h" },
      });
      expect(existsSync(join(bare, ".mlflow"))).toBe(false);
    } finally {
      rmSync(bare, { recursive: true, force: true });
    }
  });

  it("an sshd that fails, or a LOOM_SSHD that is not there, never stops the server", () => {
    const failing = join(dir, "failing-sshd.sh");
    writeFileSync(failing, "echo sshd says no >&2; exit 1\n");
    expect(run(program(true), { LOOM_SSHD: failing })).toBe("up on 4242\n");
    expect(run(program(true), { LOOM_SSHD: join(dir, "missing.sh") })).toBe("up on 4242\n");
    expect(run(program(true), {})).toBe("up on 4242\n");
    expect(run(program(false), { LOOM_SSHD: failing })).toBe("up on 4242\n");
  });

  it.runIf(process.platform === "linux")(
    "where sshd is installed, LOOM_SSHD runs in the background with its output in ~/.loom-sshd.log",
    () => {
      let installed = true;
      try {
        execFileSync("test", ["-x", "/usr/sbin/sshd"]);
      } catch {
        installed = false;
      }
      const started = join(dir, "started-sshd.sh");
      writeFileSync(started, 'echo "sshd for $HOME"\n');
      expect(run(program(true), { LOOM_SSHD: started })).toBe("up on 4242\n");
      // In the background: the server does not wait for it; it has written by the time we look.
      const log = join(dir, ".loom-sshd.log");
      for (let i = 0; i < 600 && installed; i++) {
        try {
          if (readFileSync(log, "utf8")) break;
        } catch {}
        execFileSync("sleep", ["0.05"]);
      }
      if (installed) expect(readFileSync(log, "utf8")).toBe(`sshd for ${dir}\n`);
    },
  );

  it("JupyterLab's terminals are non-login shells: the environment's python stays first on PATH", () => {
    expect(jupyterCommand()).toContain(`--ServerApp.terminado_settings=shell_command=${TERMINAL_SHELL}`);
    // shlex (Jupyter's split) and sh agree on this quoting: sh runs the same words.
    const words = ["/bin/sh", "-c", /^\/bin\/sh -c '(.*)'$/.exec(TERMINAL_SHELL)![1]!];
    const bin = join(dir, "venv", "bin");
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, "python"), "#!/bin/sh\necho venv python\n");
    chmodSync(join(bin, "python"), 0o755);
    const out = execFileSync(words[0]!, words.slice(1), {
      env: { PATH: `${bin}:/usr/bin:/bin`, HOME: dir },
      input: 'python\necho "shell $SHELL"\n',
      encoding: "utf8",
    });
    expect(out).toMatch(/^venv python\nshell \/\S+\n$/);
  });

  it("ide: vscode runs code-server on the replica's address without its password, or is refused saying how to get it", () => {
    const spec = WorkspaceSpec.parse({ ide: "vscode" });
    const refused = workspaceProgram(spec);
    expect("unsupported" in refused && refused.unsupported).toMatch(
      /code-server@4\.100\.3.*LOOM_CODE_SERVER/,
    );
    const p = workspaceProgram(spec, { codeServer: ["/bin/echo", "code-server"] });
    if ("unsupported" in p) throw new Error(p.unsupported);
    expect(p.readinessPath).toBe("/healthz");
    expect(run(p.command, {})).toBe(
      "code-server --bind-addr=127.0.0.1:4242 --auth=none --disable-telemetry --disable-update-check --disable-workspace-trust .\n",
    );
  });
});

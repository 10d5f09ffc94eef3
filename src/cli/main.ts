import { Command } from "commander";
import { DEFAULT_PROJECT } from "../api/project.js";
import { createLogger } from "../lib/log.js";
import { ApiClient } from "./client.js";
import { registerApply } from "./commands/apply.js";
import { registerAudit } from "./commands/audit.js";
import { registerChat } from "./commands/chat.js";
import { registerCrds } from "./commands/crds.js";
import { registerApikey, registerToken } from "./commands/credentials.js";
import { registerDelete } from "./commands/delete.js";
import { registerDescribe } from "./commands/describe.js";
import { registerGateway } from "./commands/gateway.js";
import { registerGet } from "./commands/get.js";
import { registerLogs } from "./commands/logs.js";
import { registerOpen } from "./commands/open.js";
import { registerOperator } from "./commands/operator.js";
import { registerPortForward } from "./commands/portforward.js";
import { registerRun } from "./commands/run.js";
import { registerSsh } from "./commands/ssh.js";
import { registerSshKey } from "./commands/sshkey.js";
import { registerTop } from "./commands/top.js";
import { registerUp } from "./commands/up.js";
import { registerVersion } from "./commands/version.js";
import { registerWorkspaceCommands } from "./commands/workspace.js";
import { resolveContext } from "./config.js";
import type { CliDeps, Connection, GlobalOpts, Output } from "./deps.js";
import { CliError } from "./errors.js";

/** Commands that talk to a platform; with --kubeconfig they talk to the cluster. */
const CLUSTER_COMMANDS = new Set([
  "apply",
  "get",
  "describe",
  "logs",
  "delete",
  "top",
  "stop",
  "start",
  "run",
]);

/** What {@link buildProgram} may be given instead of the real thing (tests pass fakes). */
export interface ProgramOptions {
  /** Replaces the connection to Loom (the config file's context, or the cluster's in-process API). */
  client?: (globals: GlobalOpts) => Connection;
  stdout?: Output;
  stderr?: Output;
  /** Receives what must be closed once the command is done (the in-process API of --kubeconfig). */
  closers?: (() => Promise<void>)[];
}

/** The `loom` program: global options, then one registration per command. */
export function buildProgram(options: ProgramOptions = {}): Command {
  /** Set when the CLI targets a cluster: Loom's API served in this process for its lifetime. */
  let clusterContext: { url: string; token: string } | undefined;
  const closers = options.closers ?? [];
  const globals = () => program.opts() as GlobalOpts;
  const connect = (g: GlobalOpts): Connection => {
    if (clusterContext)
      return {
        api: new ApiClient({ name: "kubernetes", ...clusterContext }),
        defaultProject: DEFAULT_PROJECT,
      };
    const ctx = resolveContext(g.context);
    return { api: new ApiClient(ctx), defaultProject: ctx.project ?? DEFAULT_PROJECT };
  };
  const deps: CliDeps = {
    client: () => (options.client ?? connect)(globals()),
    globals,
    stdout: options.stdout ?? process.stdout,
    stderr: options.stderr ?? process.stderr,
  };

  async function targetCluster(command: string, args: string[] = []): Promise<void> {
    const opts = globals();
    const kubeconfig = opts.kubeconfig ?? process.env.LOOM_KUBECONFIG;
    if (!kubeconfig || !CLUSTER_COMMANDS.has(command)) return;
    const { startKubeApi } = await import("../main/kubeapi.js");
    const api = await startKubeApi({
      kubeconfig,
      context: opts.kubeContext,
      // Capacity views count every pod on the nodes, not only Loom's: list them once.
      watchPods: command === "top" || (command === "get" && ["nodes", "node", "no"].includes(args[0] ?? "")),
      // Only warnings: the in-process API must not mix its logs into command output.
      log: createLogger("warn"),
      ...(process.env.LOOM_SYSTEM_NAMESPACE ? { systemNamespace: process.env.LOOM_SYSTEM_NAMESPACE } : {}),
    });
    clusterContext = api;
    closers.push(() => api.close());
  }

  const program: Command = new Command("loom")
    .description("Loom: the generative-AI lifecycle on Kubernetes, or embedded on this machine.")
    .option("--context <name>", "use this context from the config file")
    .option(
      "--kubeconfig <file>",
      "target a Kubernetes cluster (Loom's CRDs and operator installed) instead of loom up",
    )
    .option("--kube-context <name>", "context in the kubeconfig")
    .hook("preAction", async (_program: Command, action: Command) =>
      targetCluster(action.name(), action.args),
    )
    // A usage error is one line, its hint (see oneLineErrors) finishing it.
    .configureOutput({ outputError: (s, write) => write(`${s.trim().replace(/\s*\n\s*/g, " ")} `) });

  registerUp(program, deps);
  registerApply(program, deps);
  registerGet(program, deps);
  registerTop(program, deps);
  registerDescribe(program, deps);
  registerLogs(program, deps);
  registerOpen(program, deps);
  registerPortForward(program, deps);
  registerRun(program, deps);
  registerSsh(program, deps);
  registerSshKey(program, deps);
  registerDelete(program, deps);
  registerWorkspaceCommands(program, deps);
  registerOperator(program, deps);
  registerGateway(program, deps);
  registerCrds(program, deps);
  registerToken(program, deps);
  registerChat(program, deps);
  registerApikey(program, deps);
  registerAudit(program, deps);
  registerVersion(program, deps);
  oneLineErrors(program, "loom");
  return program;
}

/**
 * Every misuse (unknown command or option, missing argument) is one line on stderr, exit code 1:
 * commander's message, then where the usage is, rather than the whole help.
 */
function oneLineErrors(command: Command, path: string): void {
  command.showHelpAfterError(`(see '${path} --help')`);
  for (const sub of command.commands) oneLineErrors(sub, `${path} ${sub.name()}`);
}

/** Runs the CLI; user errors become one line on stderr and exit code 1. */
export async function main(argv: string[]): Promise<void> {
  const closers: (() => Promise<void>)[] = [];
  const program = buildProgram({ closers });
  program.exitOverride();
  try {
    await run(program, argv);
  } finally {
    for (const close of closers.splice(0)) await close().catch(() => undefined);
  }
}

async function run(program: Command, argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number };
    if (typeof e.code === "string" && e.code.startsWith("commander.")) {
      process.exitCode = e.exitCode ?? 1;
      return;
    }
    if (err instanceof CliError) {
      const lines = err.message.split("\n");
      process.stderr.write(`error: ${lines.join("\n")}\n`);
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 2;
  }
}

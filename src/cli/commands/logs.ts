import type { Command } from "commander";
import { findKind, type KindDef, TRAININGJOB } from "../../api/kinds.js";
import type { CliDeps } from "../deps.js";
import { itemPath, kindAndName, kindOf } from "../resources.js";

/**
 * What `loom logs` prints the output of. Only TrainingJobs have logs, so a lone word that is not
 * a kind ("loom logs hello") can only mean one: it is taken as tj/hello.
 */
export function logTarget(target: string, name: string | undefined): { def: KindDef; name: string } {
  if (target.includes("/") || name !== undefined || findKind(target))
    return kindAndName(target, name, "logs");
  return { def: kindOf(TRAININGJOB), name: target };
}

/** `loom logs KIND/NAME`: a worker's output, streamed as the server sends it. */
export function registerLogs(program: Command, deps: CliDeps): void {
  program
    .command("logs")
    .description("print a training job's worker output (tj/NAME, or just NAME)")
    .argument("<target>", "tj/NAME, tj NAME or NAME (only training jobs have logs)")
    .argument("[name]")
    .option("-p, --project <project>", "project to look in")
    .option("--worker <n>", "only this worker (default: every worker, each line prefixed [worker K])")
    .option("--attempt <n>", "attempt number (default: the latest)")
    .option("-f, --follow", "keep printing until the worker exits")
    .action(
      async (
        target: string,
        nameArg: string | undefined,
        opts: { project?: string; worker?: string; attempt?: string; follow?: boolean },
      ) => {
        const { def, name } = logTarget(target, nameArg);
        const { api, defaultProject } = deps.client();
        const q = new URLSearchParams();
        if (opts.worker !== undefined) q.set("worker", opts.worker);
        if (opts.attempt) q.set("attempt", opts.attempt);
        if (opts.follow) q.set("follow", "true");
        const stream = await api.stream(`${itemPath(def, opts.project ?? defaultProject, name)}/log?${q}`);
        for await (const chunk of stream) deps.stdout.write(chunk as Buffer);
      },
    );
}

import type { Command } from "commander";
import type { CliDeps } from "../deps.js";
import { itemPath, kindAndName } from "../resources.js";

/** `loom logs KIND/NAME`: a worker's output, streamed as the server sends it. */
export function registerLogs(program: Command, deps: CliDeps): void {
  program
    .command("logs")
    .description("print a worker's output (KIND/NAME, e.g. tj/hello)")
    .argument("<target>", "KIND/NAME")
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
        const { def, name } = kindAndName(target, nameArg);
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

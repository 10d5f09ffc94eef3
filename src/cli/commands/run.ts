import { randomBytes } from "node:crypto";
import type { Command } from "commander";
import { TRAININGJOB, WORKSPACE } from "../../api/kinds.js";
import { API_VERSION } from "../../api/meta.js";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { collectionPath, kindAndName, kindOf, ref } from "../resources.js";

interface RunOptions {
  from?: string;
  workers?: string;
  name?: string;
  project?: string;
  framework?: string;
  gpu?: string;
}

/**
 * `loom run --from ws/NAME [--workers N] [--name JOB] -- COMMAND...`: the notebook's code as a
 * TrainingJob in one step. The API resolves spec.fromWorkspace when it creates the job: the
 * workspace's environment and env, and a snapshot of its home taken now as the working dir.
 */
export function registerRun(program: Command, deps: CliDeps): void {
  program
    .command("run")
    .description("run a command as a TrainingJob from a workspace's code and environment (--from ws/NAME)")
    .requiredOption(
      "--from <workspace>",
      "ws/NAME: the workspace whose home (a snapshot) and environment to use",
    )
    .option("-w, --workers <n>", "workers started together as a gang", "1")
    .option("--name <job>", "the job's name (default: the workspace's name and a random suffix)")
    .option("--framework <framework>", "how workers find each other: pytorch (default), none, …", "pytorch")
    .option("--gpu <n>", "GPUs per worker (a fraction below 1 shares one)")
    .option("-p, --project <project>", "project of the workspace (and of the job)")
    .argument(
      "<command...>",
      "the program and its arguments, after --: loom run --from ws/NAME -- python train.py",
    )
    .action(async (command: string[], opts: RunOptions) => {
      const [kind, ...rest] = opts.from!.split("/");
      if (rest.length !== 1 || kindOf(kind!).kind !== WORKSPACE) {
        throw new CliError(`--from takes a workspace as ws/NAME (got "${opts.from}")`);
      }
      const { name: workspace } = kindAndName(opts.from!, undefined, "run --from");
      const workers = Number(opts.workers);
      if (!Number.isInteger(workers) || workers < 1)
        throw new CliError(`--workers must be a whole number of at least 1 (got "${opts.workers}")`);
      const gpu = opts.gpu === undefined ? undefined : Number(opts.gpu);
      if (gpu !== undefined && !(gpu >= 0)) throw new CliError(`--gpu must be a number (got "${opts.gpu}")`);
      const name = opts.name ?? `${workspace.slice(0, 50)}-${randomBytes(3).toString("hex")}`;
      const def = kindOf(TRAININGJOB);
      const { api, defaultProject } = deps.client();
      const project = opts.project ?? defaultProject;
      await api.request("POST", collectionPath(def, project), {
        apiVersion: API_VERSION,
        kind: TRAININGJOB,
        metadata: { name, project },
        spec: {
          command,
          workers,
          framework: opts.framework,
          fromWorkspace: workspace,
          ...(gpu !== undefined ? { resources: { gpu } } : {}),
        },
      });
      deps.stdout.write(`${ref(def, name)} created (from ${ref(kindOf(WORKSPACE), workspace)})\n`);
    });
}

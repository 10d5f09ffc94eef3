import { randomBytes } from "node:crypto";
import { basename } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import { TRAININGJOB, WORKSPACE } from "../../api/kinds.js";
import { API_VERSION } from "../../api/meta.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { collectionPath, itemPath, kindAndName, kindOf, ref } from "../resources.js";
import { waitForStart } from "./logs.js";

interface RunOptions {
  from?: string;
  image?: string;
  workdir?: string;
  workers?: string;
  name?: string;
  project?: string;
  framework?: string;
  gpu?: string;
  cpu?: string;
  memory?: string;
  env: string[];
  follow?: boolean;
}

/**
 * `loom run [--from ws/NAME] [options] -- COMMAND...`: a command as a TrainingJob in one step, as
 * `kubectl run` or `runai submit` users expect. With --from, the API resolves spec.fromWorkspace
 * when it creates the job: the workspace's environment and env, and a snapshot of its home taken
 * now as the working dir. Without it, the job runs in the current directory (embedded: the
 * server shares this machine) or in --image's --workdir (Kubernetes). -f follows its output and
 * exits with the job's outcome, so `loom run -f -- python train.py` reads like running it here.
 */
export function registerRun(program: Command, deps: CliDeps): void {
  program
    .command("run")
    .description(
      "run a command as a TrainingJob: here (the current directory), from a workspace (--from), or in an image",
    )
    .option("--from <workspace>", "ws/NAME: the workspace whose home (a snapshot) and environment to use")
    .option("--image <image>", "Kubernetes: the container image of every worker")
    .option(
      "--workdir <dir>",
      "working directory (default: the current directory; with --image, the image's own)",
    )
    .option("-w, --workers <n>", "workers started together as a gang", "1")
    .option(
      "--name <job>",
      "the job's name (default: the workspace's or directory's name and a random suffix)",
    )
    .option("--framework <framework>", "how workers find each other: pytorch (default), none, …", "pytorch")
    .option("--gpu <n>", "GPUs per worker (a fraction below 1 shares one)")
    .option("--cpu <cpu>", 'CPU per worker (e.g. 2 or "500m")')
    .option("--memory <memory>", 'memory per worker (e.g. "4Gi")')
    .option("-e, --env <KEY=VALUE>", "an environment variable for every worker (repeatable)", collect, [])
    .option("-f, --follow", "print the workers' output until the job ends; exit 0 if it succeeded, 1 if not")
    .option("-p, --project <project>", "project of the job (and of the workspace)")
    .argument("<command...>", "the program and its arguments, after --: loom run -- python train.py")
    .action(async (command: string[], opts: RunOptions) => {
      const spec = runSpec(command, opts, process.cwd());
      const source = opts.from
        ? kindAndName(opts.from, undefined, "run --from").name
        : basename(process.cwd());
      const name = opts.name ?? `${dnsLabel(source).slice(0, 50) || "run"}-${randomBytes(3).toString("hex")}`;
      const def = kindOf(TRAININGJOB);
      const { api, defaultProject } = deps.client();
      const project = opts.project ?? defaultProject;
      await api.request("POST", collectionPath(def, project), {
        apiVersion: API_VERSION,
        kind: TRAININGJOB,
        metadata: { name, project },
        spec,
      });
      const from = opts.from ? ` (from ${ref(kindOf(WORKSPACE), source)})` : "";
      if (!opts.follow) {
        deps.stdout.write(
          `${ref(def, name)} created${from}; follow it with: loom logs ${ref(def, name)} -f\n`,
        );
        return;
      }
      deps.stderr.write(`${ref(def, name)} created${from}\n`);
      const path = itemPath(def, project, name);
      await waitForStart(api, path, ref(def, name), deps.stderr);
      // Each attempt's output until it ends; a restart's next attempt is followed too.
      let followed = 0;
      for (;;) {
        const job = await api.request<TrainingJob>("GET", path);
        const attempt = job.status?.attempts ?? 0;
        if (attempt > followed) {
          followed = attempt;
          const stream = await api.stream(`${path}/log?follow=true&attempt=${attempt}`);
          for await (const chunk of stream) deps.stdout.write(chunk as Buffer);
          continue;
        }
        const phase = job.status?.phase;
        if (phase === "Succeeded") return;
        if (phase === "Failed") {
          const why = job.status?.conditions?.find((c) => c.type === "Failed")?.message;
          throw new CliError(
            `${ref(def, name)} failed${why ? `: ${why}` : ""} (loom describe ${ref(def, name)})`,
          );
        }
        // The attempt's workers exited; its outcome (or a restart) is a status write away.
        await sleep(500);
      }
    });
}

/** The TrainingJob spec `loom run` submits, from its options (validated here, so errors name the flag). */
export function runSpec(command: string[], opts: RunOptions, cwd: string): Record<string, unknown> {
  if (command.length === 0) throw new CliError("nothing to run: loom run [options] -- COMMAND [ARGS...]");
  const workers = Number(opts.workers ?? "1");
  if (!Number.isInteger(workers) || workers < 1)
    throw new CliError(`--workers must be a whole number of at least 1 (got "${opts.workers}")`);
  const gpu = opts.gpu === undefined ? undefined : Number(opts.gpu);
  if (gpu !== undefined && !(gpu >= 0)) throw new CliError(`--gpu must be a number (got "${opts.gpu}")`);
  const env: Record<string, string> = {};
  for (const pair of opts.env ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new CliError(`--env takes KEY=VALUE (got "${pair}")`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const resources = {
    ...(gpu !== undefined ? { gpu } : {}),
    ...(opts.cpu !== undefined ? { cpu: opts.cpu } : {}),
    ...(opts.memory !== undefined ? { memory: opts.memory } : {}),
  };
  const spec: Record<string, unknown> = {
    command,
    workers,
    framework: opts.framework ?? "pytorch",
    ...(Object.keys(resources).length ? { resources } : {}),
    ...(Object.keys(env).length ? { env } : {}),
  };
  if (opts.from) {
    const [kind, ...rest] = opts.from.split("/");
    if (rest.length !== 1 || kindOf(kind!).kind !== WORKSPACE)
      throw new CliError(`--from takes a workspace as ws/NAME (got "${opts.from}")`);
    if (opts.image || opts.workdir)
      throw new CliError(
        "--from brings the workspace's environment and home: leave out --image and --workdir",
      );
    spec.fromWorkspace = kindAndName(opts.from, undefined, "run --from").name;
    return spec;
  }
  if (opts.image) spec.image = opts.image;
  const workdir = opts.workdir ?? (opts.image ? undefined : cwd);
  if (workdir) spec.workingDir = workdir;
  return spec;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A directory name as the start of a job name (lowercase letters, digits and dashes). */
function dnsLabel(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

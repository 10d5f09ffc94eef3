import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import { findKind, type KindDef, TRAININGJOB } from "../../api/kinds.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { Api, CliDeps, Output } from "../deps.js";
import { CliError } from "../errors.js";
import { itemPath, kindAndName, kindOf, ref } from "../resources.js";

/**
 * What `loom logs` prints the output of. A lone word that is not a kind ("loom logs hello") is
 * taken as a training job, tj/hello, as before workspaces, apps and services had logs.
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
    .description(
      "print a training job's worker output (tj/NAME, or just NAME), or a replica's output of a workspace, app or inference service (ws/NAME, app/NAME, isvc/NAME)",
    )
    .argument("<target>", "tj/NAME, ws/NAME, app/NAME, isvc/NAME, KIND NAME, or NAME (a training job)")
    .argument("[name]")
    .option("-p, --project <project>", "project to look in")
    .option(
      "--worker <n>",
      "training jobs: only this worker (default: every worker, each line prefixed [worker K])",
    )
    .option("--attempt <n>", "training jobs: attempt number (default: the latest)")
    .option(
      "--replica <id>",
      "workspaces, apps, services: this replica (its id, or its index among the running ones; default: the first ready, else the newest)",
    )
    .option("--previous", "workspaces, apps, services: the last replica that exited (why it crashed)")
    .option("-f, --follow", "keep printing until the worker or replica exits")
    .action(
      async (
        target: string,
        nameArg: string | undefined,
        opts: {
          project?: string;
          worker?: string;
          attempt?: string;
          replica?: string;
          previous?: boolean;
          follow?: boolean;
        },
      ) => {
        const { def, name } = logTarget(target, nameArg);
        const { api, defaultProject } = deps.client();
        if (def.kind !== TRAININGJOB) {
          if (opts.worker !== undefined || opts.attempt !== undefined)
            throw new CliError(
              `--worker and --attempt are for training jobs; a ${def.kind} has replicas: use --replica or --previous`,
            );
          const q = new URLSearchParams();
          if (opts.replica !== undefined) q.set("replica", opts.replica);
          if (opts.previous) q.set("previous", "true");
          if (opts.follow) q.set("follow", "true");
          const stream = await api.stream(`${itemPath(def, opts.project ?? defaultProject, name)}/log?${q}`);
          // Nothing runs, so the server sent the last exited replica's output: say whose it is.
          const headers = (stream as { headers?: Headers }).headers;
          if (!opts.previous && headers?.get("x-loom-previous") === "true")
            deps.stderr.write(
              `no replica of ${ref(def, name)} runs; this is the output of ${headers.get("x-loom-replica")}, the last one that exited\n`,
            );
          for await (const chunk of stream) deps.stdout.write(chunk as Buffer);
          return;
        }
        if (opts.replica !== undefined || opts.previous)
          throw new CliError(
            "--replica and --previous are for workspaces, apps and services; use --worker or --attempt",
          );
        const q = new URLSearchParams();
        if (opts.worker !== undefined) q.set("worker", opts.worker);
        if (opts.attempt) q.set("attempt", opts.attempt);
        if (opts.follow) q.set("follow", "true");
        const path = itemPath(def, opts.project ?? defaultProject, name);
        // -f right after apply: the job may not have started; wait for it, saying why, as a user
        // would expect of "follow" (without this it printed nothing and exited at once).
        if (opts.follow && opts.attempt === undefined)
          await waitForStart(api, path, ref(def, name), deps.stderr);
        const stream = await api.stream(`${path}/log?${q}`);
        for await (const chunk of stream) deps.stdout.write(chunk as Buffer);
      },
    );
}

/** Waits until the job has an attempt or has ended, telling the user why it waits when that changes. */
export async function waitForStart(
  api: Api,
  path: string,
  name: string,
  stderr: Output,
  pollMs = 1000,
): Promise<void> {
  let said = "";
  for (;;) {
    const job = await api.request<TrainingJob>("GET", path);
    const phase = job.status?.phase ?? "Pending";
    if ((job.status?.attempts ?? 0) > 0 || phase === "Succeeded" || phase === "Failed") return;
    const why = waitingReason(job);
    if (why !== said) {
      stderr.write(`waiting for ${name} to start (${why}); Ctrl-C to stop\n`);
      said = why;
    }
    await sleep(pollMs);
  }
}

/** The newest False condition's reason and message, as `loom describe` shows why a job waits. */
function waitingReason(job: TrainingJob): string {
  const waiting = (job.status?.conditions ?? []).filter((c) => c.status === "False");
  const last = waiting[waiting.length - 1];
  if (!last) return "not admitted yet";
  return last.message ? `${last.reason}: ${last.message}` : (last.reason ?? "waiting");
}

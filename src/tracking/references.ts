import { posix } from "node:path";
import type { Kysely } from "kysely";
import { invalidParameter } from "./errors.js";
import type { LoggedSchema, RunsSchema } from "./schema.js";

/**
 * References stay inside their project: what a model version names (its source, its run) must be
 * the caller's project's, or it is refused with a message naming the field. A registry version
 * is what an InferenceService serves, so a source reaching into another project's artifacts would
 * serve that project's files.
 */

type Tables = Pick<RunsSchema, "tr_runs" | "tr_experiments"> & Pick<LoggedSchema, "tr_logged_models">;

/** A run id that must be a run of `project`; `field` names it in the message. */
export async function checkRunInProject(
  db: Kysely<unknown>,
  project: string,
  runId: string,
  field: string,
): Promise<void> {
  const row = await (db as Kysely<Tables>)
    .selectFrom("tr_runs")
    .select("project")
    .where("run_uuid", "=", runId)
    .executeTakeFirst();
  if (row?.project !== project)
    throw invalidParameter(
      `'${field}' names run ${runId}, which is not a run of project ${project}: a model version may only name its own project's runs`,
    );
}

/**
 * A model version's source, checked: runs:/RUN/PATH names a run of the project, models:/m-…
 * one of its logged models, mlflow-artifacts:/EXP/… one of its experiments, with no `..` segment
 * anywhere; local paths (and file:) are refused, as MLflow's server refuses them, since they
 * could name any project's files on this machine. Other stores (s3://, gs://, …) are the
 * client's own and pass.
 */
export async function checkVersionSource(
  db: Kysely<unknown>,
  project: string,
  source: string,
): Promise<void> {
  const tables = db as Kysely<Tables>;
  const bad = (why: string) =>
    invalidParameter(`Invalid model version source '${source}' ('source'): ${why}`);
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(source)?.[1]?.toLowerCase();
  const rest = scheme ? source.slice(scheme.length + 1) : source;
  let path = rest;
  try {
    path = decodeURIComponent(rest);
  } catch {
    throw bad("it is not a valid URI");
  }
  if (path.split(/[/\\]/).includes("..")) throw bad("'..' segments are not allowed");
  if (!scheme || scheme === "file" || /^[a-zA-Z]:[/\\]/.test(source))
    throw bad("local paths are not allowed; use runs:/, models:/ or mlflow-artifacts:/ of this project");
  if (scheme === "runs") {
    const run = /^\/([^/]+)(\/.*)?$/.exec(path)?.[1];
    if (!run) throw bad("write runs:/RUN_ID/PATH");
    await checkRunInProject(db, project, run, "source");
  } else if (scheme === "models") {
    const id = /^\/(m-[0-9a-f]+)\/?$/.exec(path)?.[1];
    if (id) {
      const row = await tables
        .selectFrom("tr_logged_models")
        .select("project")
        .where("model_id", "=", id)
        .executeTakeFirst();
      if (row?.project !== project) throw bad(`logged model ${id} is not in project ${project}`);
    }
  } else if (scheme === "mlflow-artifacts") {
    const clean = posix.normalize(path.replace(/^\/+/, ""));
    const experiment = clean.split("/")[0] ?? "";
    if (!/^\d+$/.test(experiment)) throw bad("write mlflow-artifacts:/EXPERIMENT_ID/…");
    const row = await tables
      .selectFrom("tr_experiments")
      .select("project")
      .where("experiment_id", "=", Number(experiment))
      .executeTakeFirst();
    if (row?.project !== project) throw bad(`experiment ${experiment} is not in project ${project}`);
  }
}

import type { Command } from "commander";
import type { Resource } from "../../api/meta.js";
import { ApiError } from "../client.js";
import type { Api, CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { type Prepared, prepare, readManifests } from "../manifests.js";
import { collectionPath, itemPath, ref } from "../resources.js";

/** `loom apply -f FILE...`: create or update, all or nothing (every document is validated first). */
export function registerApply(program: Command, deps: CliDeps): void {
  program
    .command("apply")
    .description("create or update the objects in manifests (multi-document YAML or JSON)")
    .requiredOption("-f, --filename <path...>", "file, directory or - for stdin")
    .option("-p, --project <project>", "project for objects that do not name one")
    .option(
      "--dry-run",
      "validate and change nothing; for TrainingJobs, say whether each would start now and what it would preempt",
    )
    .action(async (opts: { filename: string[]; project?: string; dryRun?: boolean }) =>
      apply(deps, opts.filename, opts.project, !!opts.dryRun),
    );
}

async function apply(
  deps: CliDeps,
  files: string[],
  projectOpt: string | undefined,
  dryRunOnly = false,
): Promise<void> {
  const { api, defaultProject } = deps.client();
  const docs = readManifests(files);
  const prepared = docs.map((d) => prepare(d, projectOpt ?? defaultProject));
  // Validate everything first (server-side dry run), so a bad document stores nothing.
  const problems: string[] = [];
  const previews = new Map<Prepared, string | undefined>();
  await Promise.all(
    prepared.map(async (p) => {
      try {
        const answer = await api.request<{ status?: { admissionPreview?: { message: string } } }>(
          "POST",
          `${collectionPath(p.def, p.project)}?dryRun=All${dryRunOnly ? "&preview=admission" : ""}`,
          p.body,
        );
        previews.set(p, answer?.status?.admissionPreview?.message);
      } catch (err) {
        if (err instanceof ApiError && err.status !== 401 && err.status < 500) {
          for (const line of err.message.split("\n"))
            problems.push(`${p.source}: ${p.def.kind} "${p.name}": ${line}`);
        } else throw err;
      }
    }),
  );
  if (problems.length > 0) throw new CliError(`nothing was applied:\n${problems.join("\n")}`);
  if (dryRunOnly) {
    for (const p of prepared) {
      const preview = previews.get(p);
      deps.stdout.write(`${ref(p.def, p.name)} valid (dry run)${preview ? `: ${preview}` : ""}\n`);
    }
    return;
  }
  for (const p of prepared) {
    const outcome = await createOrUpdate(api, p);
    deps.stdout.write(`${ref(p.def, p.name)} ${outcome}\n`);
  }
}

async function createOrUpdate(api: Api, p: Prepared): Promise<string> {
  for (let i = 0; i < 10; i++) {
    try {
      await api.request("POST", collectionPath(p.def, p.project), p.body);
      return "created";
    } catch (err) {
      if (!(err instanceof ApiError && err.reason === "AlreadyExists")) throw err;
    }
    const current = await api.request<Resource>("GET", itemPath(p.def, p.project, p.name));
    const body = {
      ...p.body,
      metadata: { ...(p.body.metadata as object), resourceVersion: current.metadata.resourceVersion },
    };
    try {
      const updated = await api.request<Resource>("PUT", itemPath(p.def, p.project, p.name), body);
      return updated.metadata.resourceVersion === current.metadata.resourceVersion
        ? "unchanged"
        : "configured";
    } catch (err) {
      if (err instanceof ApiError && (err.reason === "Conflict" || err.reason === "NotFound")) continue;
      throw err;
    }
  }
  throw new CliError(`${ref(p.def, p.name)}: gave up after repeated conflicting writes; try again`);
}
